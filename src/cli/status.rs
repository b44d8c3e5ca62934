use super::{select_targets, ConfigArg};
use crate::catalog::list_target;
use crate::config::HumanDuration;
use crate::error::ExitKind;
use crate::report::{hostname, human_bytes, RunReport, Stage, TargetReport};
use chrono::Utc;
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Fail (exit 1) when a target has no complete backup newer than this.
    #[arg(long, default_value = "26h", value_parser = parse_duration)]
    pub max_age: HumanDuration,
    /// JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Send the configured notifiers a failure report when a target is stale.
    #[arg(long)]
    pub notify: bool,
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    humantime::parse_duration(s)
        .map(HumanDuration)
        .map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Row {
    target: String,
    fresh: bool,
    newest: Option<String>,
    finished_at: Option<String>,
    age_seconds: Option<i64>,
    stored_bytes: Option<u64>,
    /// The newest backup attempt, when it is damaged (and why).
    damaged_newest: Option<String>,
}

/// From the storage listing alone: the newest complete backup of each
/// target and whether it is recent enough. For a watchdog CronJob or any
/// monitoring that can run a command.
pub async fn run(args: StatusArgs) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let names: Vec<String> = args.target.into_iter().collect();
    let targets = select_targets(&config, &names)?;
    let (storage, layout) = super::open_storage(&config)?;
    let now = Utc::now();
    let started_at = now;
    let max_age = chrono::Duration::from_std(args.max_age.0).unwrap_or(chrono::Duration::MAX);
    let mut rows = Vec::new();
    for t in targets {
        let listing = list_target(storage.as_ref(), &layout, t.name()).await?;
        let newest = listing.backups.last();
        let age = newest.map(|b| now - b.manifest.finished_at);
        let damaged_newest = listing
            .damaged_newest()
            .map(|d| format!("{} ({})", d.id, d.why));
        rows.push(Row {
            target: t.name().to_string(),
            fresh: age.is_some_and(|a| a <= max_age) && damaged_newest.is_none(),
            damaged_newest,
            newest: newest.map(|b| b.manifest.id.0.clone()),
            finished_at: newest.map(|b| b.manifest.finished_at.to_rfc3339()),
            age_seconds: age.map(|a| a.num_seconds()),
            stored_bytes: newest.map(|b| b.manifest.stored_bytes()),
        });
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else {
        for r in &rows {
            if let Some(d) = &r.damaged_newest {
                crate::outln!(
                    "{:<20} {:<6} newest backup is damaged: {d}",
                    r.target,
                    "DAMAGED"
                );
            }
            match (&r.newest, r.age_seconds) {
                (Some(id), Some(age)) => crate::outln!(
                    "{:<20} {:<6} newest {id}, {} old, {}",
                    r.target,
                    if r.fresh { "ok" } else { "STALE" },
                    humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64)),
                    human_bytes(r.stored_bytes.unwrap_or(0))
                ),
                _ => crate::outln!("{:<20} {:<6} no complete backup", r.target, "STALE"),
            }
        }
    }
    let stale: Vec<&Row> = rows.iter().filter(|r| !r.fresh).collect();
    if stale.is_empty() {
        return Ok(ExitKind::Success);
    }
    if args.notify {
        let report = RunReport {
            event: "status",
            tool_version: crate::TOOL_VERSION.to_string(),
            host: hostname(),
            started_at,
            finished_at: Utc::now(),
            targets: stale
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
