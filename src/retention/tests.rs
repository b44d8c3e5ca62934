use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn backups(times: &[&str]) -> Vec<Candidate> {
    times
        .iter()
        .map(|t| Candidate {
            id: format!("db-{}", at(t).format("%Y%m%dT%H%M%SZ")),
            time: at(t),
        })
        .collect()
}

fn kept(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.time.format("%Y-%m-%dT%H:%MZ").to_string())
        .collect()
}

fn daily(from_day: u32, days: u32, hour: u32) -> Vec<String> {
    (0..days)
        .map(|i| {
            let d = chrono::NaiveDate::from_ymd_opt(2026, 1, from_day).unwrap()
                + chrono::Duration::days(i as i64);
            format!("{}T{hour:02}:00:00Z", d.format("%Y-%m-%d"))
        })
        .collect()
}

#[test]
fn table_of_rules() {
    let now = at("2026-02-01T12:00:00Z");
    let thirty: Vec<String> = daily(1, 31, 8);
    let thirty: Vec<&str> = thirty.iter().map(String::as_str).collect();
    struct Case {
        name: &'static str,
        policy: Policy,
        times: Vec<&'static str>,
        kept: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "empty policy keeps only the newest",
            policy: Policy::default(),
            times: vec!["2026-01-01T08:00:00Z", "2026-01-02T08:00:00Z"],
            kept: vec!["2026-01-02T08:00Z"],
        },
        Case {
            name: "keep_last",
            policy: Policy {
                keep_last: 2,
                ..Policy::default()
            },
            times: vec![
                "2026-01-01T08:00:00Z",
                "2026-01-02T08:00:00Z",
                "2026-01-03T08:00:00Z",
            ],
            kept: vec!["2026-01-03T08:00Z", "2026-01-02T08:00Z"],
        },
        Case {
            name: "daily keeps the newest of each day",
            policy: Policy {
                keep_daily: 2,
                ..Policy::default()
            },
            times: vec![
                "2026-01-01T08:00:00Z",
                "2026-01-01T20:00:00Z",
                "2026-01-02T08:00:00Z",
                "2026-01-02T20:00:00Z",
                "2026-01-03T01:00:00Z",
            ],
            kept: vec!["2026-01-03T01:00Z", "2026-01-02T20:00Z"],
        },
        Case {
            name: "days without a backup do not use up the count",
            policy: Policy {
                keep_daily: 3,
                ..Policy::default()
            },
            times: vec![
                "2026-01-01T08:00:00Z",
                "2026-01-05T08:00:00Z",
                "2026-01-20T08:00:00Z",
                "2026-01-21T08:00:00Z",
            ],
            kept: vec![
                "2026-01-21T08:00Z",
                "2026-01-20T08:00Z",
                "2026-01-05T08:00Z",
            ],
        },
        Case {
            name: "keep_within keeps everything younger",
            policy: Policy {
                keep_within: Some(Duration::from_secs(2 * 86400)),
                ..Policy::default()
            },
            times: vec![
                "2026-01-29T08:00:00Z",
                "2026-01-30T13:00:00Z",
                "2026-01-31T08:00:00Z",
                "2026-02-01T08:00:00Z",
            ],
            kept: vec![
                "2026-02-01T08:00Z",
                "2026-01-31T08:00Z",
                "2026-01-30T13:00Z",
            ],
        },
        Case {
            name: "weekly uses ISO weeks across the year boundary",
            policy: Policy {
                keep_weekly: 3,
                ..Policy::default()
            },
            // 2026-12-31 (Thu) is in 2026-W53; 2027-01-03 (Sun) too; 2027-01-04 starts W01.
            times: vec![
                "2026-12-27T08:00:00Z",
                "2026-12-31T08:00:00Z",
                "2027-01-03T08:00:00Z",
                "2027-01-04T08:00:00Z",
            ],
            kept: vec![
                "2027-01-04T08:00Z",
                "2027-01-03T08:00Z",
                "2026-12-27T08:00Z",
            ],
        },
        Case {
            name: "monthly and yearly pick the newest of each",
            policy: Policy {
                keep_monthly: 2,
                keep_yearly: 2,
                ..Policy::default()
            },
            times: vec![
                "2025-06-30T08:00:00Z",
                "2025-12-31T23:00:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-31T08:00:00Z",
                "2026-02-01T08:00:00Z",
            ],
            kept: vec![
                "2026-02-01T08:00Z",
                "2026-01-31T08:00Z",
                "2025-12-31T23:00Z",
            ],
        },
    ];
    for case in cases {
        let got = plan(&backups(&case.times), &case.policy, now);
        assert_eq!(kept(&got), case.kept, "{}", case.name);
        assert_eq!(
            got.len(),
            case.times.len(),
            "{}: every backup gets a decision",
            case.name
        );
    }
    // A month of dailies with a typical policy.
    let typical = Policy {
        keep_last: 3,
        keep_daily: 7,
        keep_weekly: 4,
        keep_monthly: 12,
        ..Policy::default()
    };
    let got = plan(&backups(&thirty), &typical, now);
    // 7 dailies (Jan 25-31) plus the weeklies of W03 (Jan 18) and W02 (Jan 11).
    assert_eq!(got.iter().filter(|d| d.keep).count(), 9, "{}", render(&got));
}

#[test]
fn snapshot_of_a_typical_plan_with_reasons() {
    let times = daily(1, 10, 8);
    let times: Vec<&str> = times.iter().map(String::as_str).collect();
    let policy = Policy {
        keep_last: 2,
        keep_daily: 3,
        keep_weekly: 2,
        ..Policy::default()
    };
    let got = render(&plan(&backups(&times), &policy, at("2026-01-11T00:00:00Z")));
    let expected = "\
keep   2026-01-10T08:00:00Z db-20260110T080000Z  (newest backup, last 2, daily 2026-01-10, weekly 2026-W02)
keep   2026-01-09T08:00:00Z db-20260109T080000Z  (last 2, daily 2026-01-09)
keep   2026-01-08T08:00:00Z db-20260108T080000Z  (daily 2026-01-08)
delete 2026-01-07T08:00:00Z db-20260107T080000Z
delete 2026-01-06T08:00:00Z db-20260106T080000Z
delete 2026-01-05T08:00:00Z db-20260105T080000Z
keep   2026-01-04T08:00:00Z db-20260104T080000Z  (weekly 2026-W01)
delete 2026-01-03T08:00:00Z db-20260103T080000Z
delete 2026-01-02T08:00:00Z db-20260102T080000Z
delete 2026-01-01T08:00:00Z db-20260101T080000Z";
    assert_eq!(got, expected);
}

#[test]
fn daily_periods_follow_the_policy_time_zone() {
    // 05:30 UTC on March 8 is still March 7 in Chicago (CST, UTC-6).
    let times = [
        "2026-03-07T12:00:00Z",
        "2026-03-08T05:30:00Z",
        "2026-03-08T12:00:00Z",
    ];
    let utc = Policy {
        keep_daily: 3,
        ..Policy::default()
    };
    let chicago = Policy {
        timezone: chrono_tz::America::Chicago,
        ..utc.clone()
    };
    let now = at("2026-03-09T00:00:00Z");
    assert_eq!(
        kept(&plan(&backups(&times), &utc, now)),
        vec!["2026-03-08T12:00Z", "2026-03-07T12:00Z"],
        "in UTC the 05:30 backup shares March 8 with the later one"
    );
    assert_eq!(
        kept(&plan(&backups(&times), &chicago, now)),
        vec!["2026-03-08T12:00Z", "2026-03-08T05:30Z"],
        "in Chicago the 05:30Z backup is the newest of March 7"
    );
}

#[test]
fn dst_spring_forward_and_fall_back_in_chicago() {
    let tz = chrono_tz::America::Chicago;
    // Spring forward 2026-03-08 02:00 CST -> 03:00 CDT: 2 AM local never
    // happens; a 2 AM-local schedule fires at 08:00Z before and 07:00Z after.
    let times = [
        "2026-03-07T08:00:00Z",
        "2026-03-08T08:00:00Z",
        "2026-03-09T07:00:00Z",
    ];
    let p = Policy {
        keep_daily: 3,
        timezone: tz,
        ..Policy::default()
    };
    let got = plan(&backups(&times), &p, at("2026-03-10T00:00:00Z"));
    assert_eq!(
        got.iter().filter(|d| d.keep).count(),
        3,
        "three local days: {}",
        render(&got)
    );

    // Fall back 2026-11-01: 01:30 CDT (06:30Z) and 01:30 CST (07:30Z) are
    // the same local hour, so one hourly slot.
    let times = [
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
        "2026-11-01T07:30:00Z",
    ];
    let p = Policy {
        keep_hourly: 2,
        timezone: tz,
        ..Policy::default()
    };
    let got = plan(&backups(&times), &p, at("2026-11-01T09:00:00Z"));
    assert_eq!(
        render(&got),
        "\
keep   2026-11-01T07:30:00Z db-20261101T073000Z  (newest backup, hourly 2026-11-01 01h)
delete 2026-11-01T06:30:00Z db-20261101T063000Z
keep   2026-11-01T05:30:00Z db-20261101T053000Z  (hourly 2026-11-01 00h)"
    );
}

#[test]
fn newest_is_kept_even_when_old_and_rules_are_narrow() {
    let times = ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"];
    let p = Policy {
        keep_within: Some(Duration::from_secs(3600)),
        ..Policy::default()
    };
    let got = plan(&backups(&times), &p, at("2026-01-01T00:00:00Z"));
    assert_eq!(kept(&got), vec!["2020-01-02T00:00Z"]);
    assert!(plan(&[], &p, at("2026-01-01T00:00:00Z")).is_empty());
}

#[test]
fn policy_emptiness() {
    assert!(Policy::default().is_empty());
    assert!(!Policy {
        keep_all: true,
        ..Policy::default()
    }
    .is_empty());
    assert!(!Policy {
        keep_yearly: 1,
        ..Policy::default()
    }
    .is_empty());
}
