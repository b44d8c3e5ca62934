//! The retention planner: a pure function from (backups, policy, now) to a
//! keep/delete decision per backup, each with its reasons.
//!
//! Semantics follow restic's `forget`: backups are walked newest first; each
//! `keep_<period>` rule keeps the newest backup of each of the last N periods
//! that hold a backup (periods in the policy's time zone, UTC by default);
//! `keep_last` keeps the N newest; `keep_within` keeps everything younger
//! than the duration. A backup is kept when any rule keeps it. The newest
//! backup is always kept, whatever the policy says.

mod config;
pub use config::RetentionConfig;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_within: Option<Duration>,
    pub keep_all: bool,
    pub timezone: Tz,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            keep_within: None,
            keep_all: false,
            timezone: chrono_tz::UTC,
        }
    }
}

impl Policy {
    /// True when no rule would keep anything (a config error unless keep_all).
    pub fn is_empty(&self) -> bool {
        !self.keep_all
            && self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none()
    }
}

/// A backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept ("daily 2026-03-08", "last 2", ...); empty when deleted.
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The label of the period a time falls in, in `tz`.
    fn bucket(self, t: DateTime<Utc>, tz: Tz) -> String {
        let local = tz.from_utc_datetime(&t.naive_utc());
        match self {
            Period::Hourly => format!("{} {:02}h", local.format("%Y-%m-%d"), local.hour()),
            Period::Daily => local.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = local.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => local.format("%Y-%m").to_string(),
            Period::Yearly => local.format("%Y").to_string(),
        }
    }
}

/// Decide for every backup; the result is ordered newest first.
pub fn plan(backups: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut decisions: Vec<Decision> = sorted
        .iter()
        .map(|c| Decision {
            id: c.id.clone(),
            time: c.time,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();

    if let Some(newest) = decisions.first_mut() {
        newest.reasons.push("newest backup".into());
    }
    if policy.keep_all {
        for d in &mut decisions {
            d.reasons.push("keep_all".into());
        }
    }
    for d in decisions.iter_mut().take(policy.keep_last as usize) {
        d.reasons.push(format!("last {}", policy.keep_last));
    }
    if let Some(within) = policy.keep_within {
        let cutoff = now - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        for d in &mut decisions {
            if d.time >= cutoff {
                d.reasons
                    .push(format!("within {}", humantime::format_duration(within)));
            }
        }
    }
    for (period, count) in [
        (Period::Hourly, policy.keep_hourly),
        (Period::Daily, policy.keep_daily),
        (Period::Weekly, policy.keep_weekly),
        (Period::Monthly, policy.keep_monthly),
        (Period::Yearly, policy.keep_yearly),
    ] {
        let mut left = count;
        let mut last_bucket: Option<String> = None;
        for d in &mut decisions {
            if left == 0 {
                break;
            }
            let bucket = period.bucket(d.time, policy.timezone);
            if last_bucket.as_ref() != Some(&bucket) {
                d.reasons.push(format!("{} {bucket}", period.name()));
                last_bucket = Some(bucket);
                left -= 1;
            }
        }
    }
    for d in &mut decisions {
        d.keep = !d.reasons.is_empty();
    }
    decisions
}

/// A readable rendering of a plan, one line per backup (used by `prune` and
/// by the snapshot tests).
pub fn render(decisions: &[Decision]) -> String {
    decisions
        .iter()
        .map(|d| {
            format!(
                "{} {} {}{}",
                if d.keep { "keep  " } else { "delete" },
                d.time.format("%Y-%m-%dT%H:%M:%SZ"),
                d.id,
                if d.reasons.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", d.reasons.join(", "))
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
