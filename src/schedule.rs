//! Next fire times of a cron expression in a time zone.
//!
//! Read in the configured zone, so "0 2 * * *" in America/Chicago stays 2 AM
//! Central through DST (the seed's fixed 08:00 UTC drifted an hour). Across
//! transitions croner follows Vixie cron: a fixed time that falls in the
//! spring-forward gap runs right after the gap, once; one in the repeated
//! fall-back hour runs once, at its first occurrence.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

pub fn next_after(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let local = after.with_timezone(&tz);
    let next = cron
        .find_next_occurrence(&local, false)
        .map_err(|e| anyhow::anyhow!("no next time for `{}`: {e}", cron.pattern))?;
    Ok(next.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::Chicago;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let cron: Cron = expr.parse().unwrap();
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = next_after(&cron, tz, t).unwrap();
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .collect()
    }

    #[test]
    fn two_am_central_follows_dst_where_fixed_utc_drifted() {
        // Winter: 2 AM CST = 08:00Z; summer: 2 AM CDT = 07:00Z.
        assert_eq!(
            fires("0 2 * * *", Chicago, "2026-01-10T12:00:00Z", 1),
            vec!["2026-01-11T08:00:00Z"]
        );
        assert_eq!(
            fires("0 2 * * *", Chicago, "2026-07-10T12:00:00Z", 1),
            vec!["2026-07-11T07:00:00Z"]
        );
        assert_eq!(
            fires("0 2 * * *", chrono_tz::UTC, "2026-07-10T12:00:00Z", 1),
            vec!["2026-07-11T02:00:00Z"]
        );
    }

    #[test]
    fn spring_forward_gap_runs_once_right_after_the_gap() {
        // 2026-03-08: 02:00 CST jumps to 03:00 CDT; 02:00 never happens.
        assert_eq!(
            fires("0 2 * * *", Chicago, "2026-03-07T12:00:00Z", 3),
            vec![
                "2026-03-08T08:00:00Z",
                "2026-03-09T07:00:00Z",
                "2026-03-10T07:00:00Z"
            ],
            "March 8 runs at 03:00 CDT (08:00Z), once; then 2 AM CDT"
        );
    }

    #[test]
    fn fall_back_repeated_hour_runs_once() {
        // 2026-11-01: 01:30 happens at 06:30Z (CDT) and again at 07:30Z (CST).
        assert_eq!(
            fires("30 1 * * *", Chicago, "2026-10-31T12:00:00Z", 2),
            vec!["2026-11-01T06:30:00Z", "2026-11-02T07:30:00Z"]
        );
    }

    #[test]
    fn seconds_field_is_accepted() {
        assert_eq!(
            fires("*/2 * * * * *", chrono_tz::UTC, "2026-01-01T00:00:00Z", 2),
            vec!["2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z"]
        );
    }
}
