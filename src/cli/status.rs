use super::{select_targets, ConfigArg};
use crate::catalog::list_target;
use crate::config::HumanDuration;
use crate::error::ExitKind;
use crate::report::{hostname, human_bytes, RunReport, Stage, TargetReport};
use chrono::Utc;
use clap::Args;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// Fail (exit 1) when a target has no complete backup newer than this,
    /// in any of its storages (each storage is judged on its own).
    #[arg(long, default_value = "26h")]
    pub max_age: HumanDuration,
    /// JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Send the configured notifiers a failure report when a target is stale:
    /// once when it becomes stale, then at most every --repeat.
    #[arg(long)]
    pub notify: bool,
    /// How often this command runs (the watchdog's schedule). With it the
    /// alerting needs no state: a target is reported in the run just after
    /// it became stale, then again every --repeat.
    #[arg(long, default_value = "1h")]
    pub interval: HumanDuration,
    /// Repeat the alert for a target that stays stale this often.
    #[arg(long, default_value = "24h")]
    pub repeat: HumanDuration,
    /// Also notify once when a stale target has a fresh backup again.
    #[arg(long, requires = "notify")]
    pub notify_recovery: bool,
}

/// Whether a target stale for `stale_for` is alerted in this run: in the
/// first run after it became stale, then once per `repeat`. Derived from
/// the backup's age alone, so every fresh pod decides the same.
pub fn alert_due(stale_for: Duration, interval: Duration, repeat: Duration) -> bool {
    let interval = interval.max(Duration::from_secs(1));
    let repeat = repeat.max(interval);
    let into_period = stale_for.as_secs() % repeat.as_secs();
    into_period < interval.as_secs()
}

#[derive(Serialize)]
struct Row {
    target: String,
    storage: String,
    fresh: bool,
    newest: Option<String>,
    finished_at: Option<String>,
    age_seconds: Option<i64>,
    stored_bytes: Option<u64>,
    /// The newest backup attempt, when it is damaged (and why).
    damaged_newest: Option<String>,
    /// The backup a verify last proved restorable, and when.
    proven: Option<Proven>,
    /// Point-in-time recovery: the moments restorable (targets with base
    /// backups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pitr: Option<crate::pitr::window::Window>,
    /// A stale target whose alert is due in this run.
    #[serde(skip)]
    alert: bool,
    /// A target that was stale and has a fresh backup since the last run.
    #[serde(skip)]
    recovered: bool,
}

#[derive(Serialize)]
struct Proven {
    backup: String,
    verified_at: String,
    age_seconds: i64,
}

/// From the storage listing alone: the newest complete backup of each
/// target and whether it is recent enough. For a watchdog CronJob or any
/// monitoring that can run a command.
pub async fn run(args: StatusArgs) -> anyhow::Result<ExitKind> {
    // Without --notify a status reads storages only (see `list`).
    let config = args.config.load_for(crate::config::Uses {
        target: args.target.as_deref(),
        storage: args.storage.storage.as_deref(),
        notify: args.notify,
        source_credentials: false,
    })?;
    let names: Vec<String> = args.target.into_iter().collect();
    let targets = select_targets(&config, &names)?;
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let several = config.storages.len() > 1;
    let now = Utc::now();
    let started_at = now;
    let max_age = chrono::Duration::from_std(args.max_age.0).unwrap_or(chrono::Duration::MAX);
    let mut rows = Vec::new();
    let pairs = targets.into_iter().flat_map(|t| {
        args.storage
            .of_target(&config, &opened, t)
            .into_iter()
            .map(move |s| (t, s))
    });
    for (t, s) in pairs {
        let listing = list_target(s.storage.as_ref(), &s.layout, t.name()).await?;
        let newest = listing.backups.last();
        let age = newest.map(|b| now - b.manifest.finished_at);
        let interval = chrono::Duration::from_std(args.interval.0).unwrap_or(chrono::Duration::MAX);
        // Stale since the newest backup's age passed --max-age. A target
        // with no backup at all has no such moment: it is alerted every run.
        let stale_for = age.and_then(|a| (a - max_age).to_std().ok());
        // Recovered: the newest backup arrived within the last interval and
        // the one before it had already gone stale by then.
        let recovered = match listing.backups.as_slice() {
            [.., before, newest] => {
                newest.manifest.finished_at > now - interval
                    && newest.manifest.finished_at - before.manifest.finished_at > max_age
            }
            [only] => only.manifest.finished_at > now - interval,
            [] => false,
        };
        let damaged_newest = listing
            .damaged_newest()
            .map(|d| format!("{} ({})", d.id, d.why));
        let archive =
            crate::pitr::archive::WalArchive::new(s.storage.as_ref(), &s.layout, t.name());
        let pitr = crate::pitr::window::window(&archive, &listing.backups).await?;
        let fresh = age.is_some_and(|a| a <= max_age) && damaged_newest.is_none();
        rows.push(Row {
            alert: !fresh
                && (damaged_newest.is_some()
                    || age.is_none()
                    || stale_for.is_some_and(|s| alert_due(s, args.interval.0, args.repeat.0))),
            recovered: fresh && recovered,
            target: t.name().to_string(),
            storage: s.name.clone(),
            fresh,
            damaged_newest,
            newest: newest.map(|b| b.manifest.id.0.clone()),
            finished_at: newest.map(|b| b.manifest.finished_at.to_rfc3339()),
            age_seconds: age.map(|a| a.num_seconds()),
            stored_bytes: newest.map(|b| b.manifest.stored_bytes()),
            proven: listing.last_proven().map(|(b, v)| Proven {
                backup: b.manifest.id.0.clone(),
                verified_at: v.at.to_rfc3339(),
                age_seconds: (now - v.at).num_seconds(),
            }),
            pitr,
        });
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else {
        for r in &rows {
            let label = match several {
                true => format!("{} ({})", r.target, r.storage),
                false => r.target.clone(),
            };
            let newest = match (&r.newest, r.age_seconds) {
                (Some(id), Some(age)) => Some(format!(
                    "{id}, {} old, {}",
                    humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64)),
                    human_bytes(r.stored_bytes.unwrap_or(0))
                )),
                _ => None,
            };
            match (&r.damaged_newest, newest) {
                // The newest attempt is what is judged: not an age.
                (Some(d), intact) => crate::outln!(
                    "{label:<20} {:<7} newest backup {d}; newest intact: {}",
                    "DAMAGED",
                    intact.as_deref().unwrap_or("none")
                ),
                (None, Some(newest)) => crate::outln!(
                    "{label:<20} {:<7} newest {newest}",
                    if r.fresh { "ok" } else { "STALE" }
                ),
                (None, None) => crate::outln!("{label:<20} {:<7} no complete backup", "STALE"),
            }
            if r.newest.is_some() {
                crate::outln!(
                    "{:<20} {:<7} {}",
                    "",
                    "",
                    match &r.proven {
                        Some(p) => format!(
                            "proven: {} restored and checked {} ago",
                            p.backup,
                            humantime::format_duration(std::time::Duration::from_secs(
                                p.age_seconds.max(0) as u64
                            ))
                        ),
                        None => "proven: never (no verify has passed; `backstop verify`)".into(),
                    }
                );
            }
            if let Some(w) = &r.pitr {
                let behind = (now - w.to).to_std().unwrap_or_default();
                crate::outln!(
                    "{:<20} {:<7} point in time: {} … {} (WAL stored {} ago, {} segments){}",
                    "",
                    "",
                    w.from.format("%Y-%m-%d %H:%M:%S UTC"),
                    w.to.format("%Y-%m-%d %H:%M:%S UTC"),
                    humantime::format_duration(std::time::Duration::from_secs(behind.as_secs())),
                    w.wal_segments,
                    match &w.gap_before {
                        Some(g) => format!("; GAP: WAL from {g} on is after missing segments"),
                        None => String::new(),
                    }
                );
            }
        }
    }
    if args.notify && args.notify_recovery {
        let recovered: Vec<&Row> = rows.iter().filter(|r| r.recovered).collect();
        if !recovered.is_empty() {
            let report = RunReport {
                event: "recovered",
                tool_version: crate::TOOL_VERSION.to_string(),
                host: hostname(),
                started_at,
                finished_at: Utc::now(),
                targets: recovered
                    .iter()
                    .map(|r| TargetReport {
                        backup_id: r.newest.clone(),
                        stored_bytes: r.stored_bytes.unwrap_or(0),
                        ..TargetReport::ok(&r.target, started_at, 0.0)
                    })
                    .collect(),
            };
            let notifiers = crate::notify::from_config(&config.notify)?;
            crate::notify::notify_all(&notifiers, crate::notify::Event::Finished(&report)).await;
        }
    }
    let stale: Vec<&Row> = rows.iter().filter(|r| !r.fresh).collect();
    if stale.is_empty() {
        return Ok(ExitKind::Success);
    }
    let stale_due: Vec<&&Row> = stale.iter().filter(|r| r.alert).collect();
    if args.notify && stale_due.is_empty() {
        tracing::info!("stale targets were alerted already; the next alert is due within --repeat");
    }
    if args.notify && !stale_due.is_empty() {
        let report = RunReport {
            event: "status",
            tool_version: crate::TOOL_VERSION.to_string(),
            host: hostname(),
            started_at,
            finished_at: Utc::now(),
            targets: stale_due
                .iter()
                .map(|r| {
                    let why = match &r.newest {
                        _ if r.damaged_newest.is_some() => format!(
                            "the newest backup is damaged: {}",
                            r.damaged_newest.as_deref().unwrap_or("")
                        ),
                        Some(id) => format!(
                            "no complete backup newer than {}; the newest is {id}, finished {}",
                            humantime::format_duration(args.max_age.0),
                            r.finished_at.as_deref().unwrap_or("?")
                        ),
                        None => "no complete backup at all".into(),
                    };
                    let why = if several {
                        format!("in storage `{}`: {why}", r.storage)
                    } else {
                        why
                    };
                    TargetReport::ok(&r.target, started_at, 0.0).failed(
                        Stage::Stale,
                        why,
                        Vec::new(),
                    )
                })
                .collect(),
        };
        let notifiers = crate::notify::from_config(&config.notify)?;
        crate::notify::notify_all(&notifiers, crate::notify::Event::Finished(&report)).await;
    }
    Ok(ExitKind::Failed)
}

#[cfg(test)]
mod tests {
    use super::alert_due;
    use std::time::Duration;

    const H: u64 = 3600;

    #[test]
    fn a_stale_target_is_alerted_once_then_every_repeat() {
        let due = |stale_h_min: (u64, u64)| {
            alert_due(
                Duration::from_secs(stale_h_min.0 * H + stale_h_min.1 * 60),
                Duration::from_secs(H),
                Duration::from_secs(24 * H),
            )
        };
        // Hourly watchdog: the run in the first hour of staleness alerts...
        assert!(due((0, 10)));
        // ...the next 23 hourly runs do not...
        for h in 1..24 {
            assert!(!due((h, 10)), "hour {h}");
        }
        // ...and a day later it repeats.
        assert!(due((24, 10)));
        assert!(!due((25, 10)));
        assert!(due((48, 59)));
    }
}
