//! The backup history report (`backstop report`): what the storages hold
//! for each target, gathered from listings, manifests and verify records
//! alone — no database, no state file — so any machine that can read the
//! storages draws the same page.
//!
//! [`gather`] builds the data ([`History`], which `--json` prints as is);
//! [`page`] renders it as one self-contained HTML file with [`plot`]'s
//! inline SVG charts. (Named `history`, not `report`: `crate::report` is a
//! run's own report.)

pub mod page;
pub mod plot;

use crate::catalog::{list_target, verified, Backup, Layout, Listing};
use crate::retention::{Decision, Policy};
use crate::storage::Storage;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct History {
    pub generated_at: DateTime<Utc>,
    /// Backups started before this are left out of the plots and tables
    /// (counted in `older`); the retention plan covers every backup.
    pub since: DateTime<Utc>,
    pub tool_version: String,
    pub targets: Vec<TargetHistory>,
}

#[derive(Debug, Serialize)]
pub struct TargetHistory {
    pub name: String,
    pub engine: String,
    /// The storages the target's backups go to, in config order.
    pub storages: Vec<String>,
    /// The newest backup complete in at least one storage.
    pub newest: Option<Moment>,
    /// The backup a verify last proved restorable, and when.
    pub newest_proven: Option<Moment>,
    /// Since `since`, oldest first: one entry per backup id, whatever
    /// storages hold it.
    pub backups: Vec<BackupEntry>,
    /// Backups started before `since` (not shown).
    pub older: usize,
    /// Per storage: its retention plan now and its restorable window.
    pub plans: Vec<StoragePlan>,
    /// UTC days since the first backup (or `since`) up to yesterday on
    /// which no backup completed in any storage, as ranges.
    pub days_without_backup: Vec<DayRange>,
    /// What needs a person: listings that failed, damaged backups, failed
    /// verifies, missing copies, days without a backup.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub backup: String,
    pub at: DateTime<Utc>,
    pub age_seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct BackupEntry {
    pub id: String,
    /// `dump`, or `base` for a point-in-time recovery base backup.
    pub kind: &'static str,
    pub started_at: DateTime<Utc>,
    /// From the first readable manifest; None when no storage holds one
    /// that parses.
    pub figures: Option<Figures>,
    /// Per storage of the target (and any other that holds it).
    pub copies: BTreeMap<String, CopyState>,
    /// Every verify recorded beside it, oldest first.
    pub verifications: Vec<VerifyEntry>,
}

/// What a manifest says of a backup (in clear, or opened with --identity).
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Raw bytes per second of the run; None for a run of no measurable
    /// length.
    pub throughput_bytes_per_second: Option<f64>,
    pub format: String,
    pub compression: String,
    /// Compression levels used, lowest first (several with `level = "auto"`).
    pub levels: Vec<i32>,
    pub encrypted: bool,
    /// Empty when sealed and no identity opened it.
    pub database: String,
    pub server_version: String,
}

/// One storage's copy of a backup.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CopyState {
    /// Complete; `kept_by` the retention rules that keep it (empty: the
    /// next prune deletes it; None: no retention configured).
    Complete {
        kept_by: Option<Vec<String>>,
    },
    Damaged {
        why: String,
    },
    /// Complete elsewhere, absent here.
    Missing,
    /// The storage could not be listed.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyEntry {
    pub storage: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
    /// The record's body, when it could be read.
    pub record: Option<verified::VerifyRecord>,
}

#[derive(Debug, Serialize)]
pub struct StoragePlan {
    pub storage: String,
    /// Why the plan is missing (the listing failed).
    pub error: Option<String>,
    /// The policy in words; None when no retention is configured.
    pub policy: Option<String>,
    /// Rule → the backups it keeps (`daily 2026-03-08` → id), newest first.
    pub kept: Vec<Kept>,
    /// What the next prune deletes, oldest first.
    pub prune_next: Vec<String>,
    /// Point-in-time recovery: the moments restorable from this storage.
    pub restorable: Option<crate::pitr::window::Window>,
}

#[derive(Debug, Serialize)]
pub struct Kept {
    pub rule: String,
    pub bucket: String,
    pub backup: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: i64,
}

/// One storage of a target, opened.
pub struct Source<'a> {
    pub name: &'a str,
    pub storage: &'a dyn Storage,
    pub layout: &'a Layout,
    pub policy: Option<Policy>,
}

pub struct TargetInput<'a> {
    pub name: &'a str,
    pub engine: &'a str,
    pub sources: Vec<Source<'a>>,
}

/// Read every storage of every target and put the history together.
pub async fn gather(
    targets: Vec<TargetInput<'_>>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    identity: Option<&Path>,
) -> History {
    let mut out = Vec::new();
    for t in targets {
        out.push(gather_target(t, since, now, identity).await);
    }
    History {
        generated_at: now,
        since,
        tool_version: crate::TOOL_VERSION.to_string(),
        targets: out,
    }
}

async fn gather_target(
    t: TargetInput<'_>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    identity: Option<&Path>,
) -> TargetHistory {
    let mut problems = Vec::new();
    let mut entries: BTreeMap<String, BackupEntry> = BTreeMap::new();
    let mut plans = Vec::new();
    let mut listed = Vec::new();
    let mut unsealing_failed = None;
    for s in &t.sources {
        let listing = match list_target(s.storage, s.layout, t.name).await {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("storage {}: listing failed: {e:#}", s.name));
                plans.push(StoragePlan {
                    storage: s.name.to_string(),
                    error: Some(format!("{e:#}")),
                    policy: s.policy.as_ref().map(describe_policy),
                    kept: Vec::new(),
                    prune_next: Vec::new(),
                    restorable: None,
                });
                continue;
            }
        };
        listed.push(s.name);
        let decisions: Option<Vec<Decision>> = s
            .policy
            .as_ref()
            .map(|p| crate::prune::plan_listing(&listing, p, now));
        for b in &listing.backups {
            let entry = entry_for(&mut entries, b);
            if entry.figures.is_none() {
                match figures(b, identity) {
                    Ok(f) => entry.figures = Some(f),
                    Err(e) => {
                        unsealing_failed.get_or_insert(format!("{e:#}"));
                        entry.figures = figures(b, None).ok();
                    }
                }
            }
            let kept_by = decisions.as_ref().map(|ds| {
                ds.iter()
                    .find(|d| d.id == b.manifest.id.0)
                    .map(|d| d.reasons.clone())
                    .unwrap_or_default()
            });
            entry
                .copies
                .insert(s.name.to_string(), CopyState::Complete { kept_by });
            if b.manifest.started_at >= since {
                for v in &b.verifications {
                    let record = verified::read(s.storage, &v.key).await.ok();
                    entry.verifications.push(VerifyEntry {
                        storage: s.name.to_string(),
                        at: v.at,
                        passed: v.passed,
                        record,
                    });
                }
            }
        }
        for d in &listing.damaged {
            problems.push(format!(
                "storage {}: backup {} is damaged: {}",
                s.name, d.id, d.why
            ));
            let entry = entries.entry(d.id.0.clone()).or_insert_with(|| {
                BackupEntry::new(&d.id.0, "dump", d.time.unwrap_or(DateTime::UNIX_EPOCH))
            });
            entry.copies.insert(
                s.name.to_string(),
                CopyState::Damaged { why: d.why.clone() },
            );
        }
        plans.push(plan_of(s, t.name, &listing, decisions.as_deref()).await);
    }
    if let Some(why) = unsealing_failed {
        problems.push(format!(
            "the sealed part of a manifest could not be opened ({why}): its database details are left out"
        ));
    }
    for e in entries.values_mut() {
        e.verifications.sort_by_key(|v| v.at);
        for s in &t.sources {
            let state = match listed.contains(&s.name) {
                true => CopyState::Missing,
                false => CopyState::Unknown,
            };
            e.copies.entry(s.name.to_string()).or_insert(state);
        }
    }
    let all: Vec<BackupEntry> = entries.into_values().collect();
    let complete = |e: &&BackupEntry| {
        e.copies
            .values()
            .any(|c| matches!(c, CopyState::Complete { .. }))
    };
    let newest = all
        .iter()
        .filter(complete)
        .filter_map(|e| Some((e, e.figures.as_ref()?.finished_at)))
        .max_by_key(|(_, at)| *at)
        .map(|(e, at)| moment(&e.id, at, now));
    let newest_proven = all
        .iter()
        .flat_map(|e| e.verifications.iter().map(move |v| (e, v)))
        .filter(|(_, v)| v.passed)
        .max_by_key(|(_, v)| v.at)
        .map(|(e, v)| moment(&e.id, v.at, now));
    let first_day = all
        .iter()
        .filter(complete)
        .map(|e| e.started_at.date_naive())
        .min();
    let completed_days: std::collections::HashSet<NaiveDate> = all
        .iter()
        .filter(complete)
        .filter_map(|e| Some(e.figures.as_ref()?.finished_at.date_naive()))
        .collect();
    let days_without_backup = match first_day {
        Some(first) => missing_days(
            first.max(since.date_naive()),
            now.date_naive() - Duration::days(1),
            &completed_days,
        ),
        None => Vec::new(),
    };
    let (older, backups): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.started_at < since);
    for e in &backups {
        for (storage, c) in &e.copies {
            if matches!(c, CopyState::Missing) {
                problems.push(format!("backup {}: no copy in storage {storage}", e.id));
            }
        }
        for v in e.verifications.iter().filter(|v| !v.passed) {
            let why = v
                .record
                .as_ref()
                .and_then(|r| r.why.clone())
                .unwrap_or_else(|| "the record gives no reason".into());
            problems.push(format!(
                "backup {}: verify failed {} (storage {}): {why}",
                e.id,
                v.at.format("%Y-%m-%d %H:%M UTC"),
                v.storage
            ));
        }
    }
    for r in &days_without_backup {
        problems.push(match r.days {
            1 => format!("no backup completed on {}", r.from),
            n => format!("no backup completed on {n} days, {} to {}", r.from, r.to),
        });
    }
    if newest.is_some() && newest_proven.is_none() {
        problems.push("no verify has passed for any backup shown".into());
    }
    TargetHistory {
        name: t.name.to_string(),
        engine: t.engine.to_string(),
        storages: t.sources.iter().map(|s| s.name.to_string()).collect(),
        newest,
        newest_proven,
        backups,
        older: older.len(),
        plans,
        days_without_backup,
        problems,
    }
}

fn entry_for<'a>(
    entries: &'a mut BTreeMap<String, BackupEntry>,
    b: &Backup,
) -> &'a mut BackupEntry {
    let kind = match b.manifest.format.as_str() {
        "basebackup" => "base",
        _ => "dump",
    };
    entries
        .entry(b.manifest.id.0.clone())
        .or_insert_with(|| BackupEntry::new(&b.manifest.id.0, kind, b.manifest.started_at))
}

impl BackupEntry {
    fn new(id: &str, kind: &'static str, started_at: DateTime<Utc>) -> BackupEntry {
        BackupEntry {
            id: id.to_string(),
            kind,
            started_at,
            figures: None,
            copies: BTreeMap::new(),
            verifications: Vec::new(),
        }
    }
}

fn moment(id: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Moment {
    Moment {
        backup: id.to_string(),
        at,
        age_seconds: (now - at).num_seconds(),
    }
}

/// A backup's figures; its sealed part opened with `identity` when given.
fn figures(b: &Backup, identity: Option<&Path>) -> anyhow::Result<Figures> {
    let mut m = b.manifest.clone();
    if identity.is_some() {
        m.unseal(identity, &b.manifest_key)?;
    }
    let duration = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
    let raw = m.raw_bytes();
    let mut levels = m.compression.levels.clone();
    if levels.is_empty() {
        levels.push(m.compression.level);
    }
    Ok(Figures {
        finished_at: m.finished_at,
        duration_seconds: duration,
        raw_bytes: raw,
        stored_bytes: m.stored_bytes(),
        throughput_bytes_per_second: (duration > 0.0).then(|| raw as f64 / duration),
        format: m.format.clone(),
        compression: m.compression.algorithm.name().to_string(),
        levels,
        encrypted: !m.encryption_recipients.is_empty(),
        database: m.database,
        server_version: m.server_version,
    })
}

async fn plan_of(
    s: &Source<'_>,
    target: &str,
    listing: &Listing,
    decisions: Option<&[Decision]>,
) -> StoragePlan {
    let mut kept = Vec::new();
    let mut prune_next = Vec::new();
    for d in decisions.unwrap_or_default() {
        for reason in &d.reasons {
            let (rule, bucket) = reason.split_once(' ').unwrap_or((reason, ""));
            kept.push(Kept {
                rule: rule.to_string(),
                bucket: bucket.to_string(),
                backup: d.id.clone(),
            });
        }
        if !d.keep {
            prune_next.push((d.time, d.id.clone()));
        }
    }
    kept.sort_by(|a, b| (&a.rule, &b.backup).cmp(&(&b.rule, &a.backup)));
    prune_next.sort();
    let archive = crate::pitr::archive::WalArchive::new(s.storage, s.layout, target);
    let restorable = crate::pitr::window::window(&archive, &listing.backups)
        .await
        .ok()
        .flatten();
    StoragePlan {
        storage: s.name.to_string(),
        error: None,
        policy: s.policy.as_ref().map(describe_policy),
        kept,
        prune_next: prune_next.into_iter().map(|(_, id)| id).collect(),
        restorable,
    }
}

/// A policy in the words of the config.
pub fn describe_policy(p: &Policy) -> String {
    if p.keep_all {
        return "keep_all".into();
    }
    let mut parts: Vec<String> = [
        ("keep_last", p.keep_last),
        ("keep_hourly", p.keep_hourly),
        ("keep_daily", p.keep_daily),
        ("keep_weekly", p.keep_weekly),
        ("keep_monthly", p.keep_monthly),
        ("keep_yearly", p.keep_yearly),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} = {n}"))
    .collect();
    if let Some(w) = p.keep_within {
        parts.push(format!(
            "keep_within = \"{}\"",
            humantime::format_duration(w)
        ));
    }
    if p.timezone != chrono_tz::UTC {
        parts.push(format!("timezone = \"{}\"", p.timezone));
    }
    parts.join(", ")
}

/// The days from `first` to `last` (inclusive) not in `done`, as ranges.
fn missing_days(
    first: NaiveDate,
    last: NaiveDate,
    done: &std::collections::HashSet<NaiveDate>,
) -> Vec<DayRange> {
    let mut out: Vec<DayRange> = Vec::new();
    let mut day = first;
    while day <= last {
        if !done.contains(&day) {
            match out.last_mut() {
                Some(r) if r.to + Duration::days(1) == day => {
                    r.to = day;
                    r.days += 1;
                }
                _ => out.push(DayRange {
                    from: day,
                    to: day,
                    days: 1,
                }),
            }
        }
        day += Duration::days(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_without_a_backup_are_grouped_into_ranges() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let done: std::collections::HashSet<_> =
            ["2026-03-01", "2026-03-02", "2026-03-05", "2026-03-07"]
                .map(d)
                .into();
        assert_eq!(
            missing_days(d("2026-03-01"), d("2026-03-08"), &done),
            vec![
                DayRange {
                    from: d("2026-03-03"),
                    to: d("2026-03-04"),
                    days: 2
                },
                DayRange {
                    from: d("2026-03-06"),
                    to: d("2026-03-06"),
                    days: 1
                },
                DayRange {
                    from: d("2026-03-08"),
                    to: d("2026-03-08"),
                    days: 1
                },
            ]
        );
        assert!(missing_days(d("2026-03-02"), d("2026-03-01"), &done).is_empty());
    }

    #[test]
    fn policies_read_as_their_config_keys() {
        let p = Policy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_within: Some(std::time::Duration::from_secs(2 * 86400)),
            ..Policy::default()
        };
        assert_eq!(
            describe_policy(&p),
            "keep_daily = 7, keep_weekly = 4, keep_within = \"2days\""
        );
    }
}
