//! `backstop verify`: prove a backup restores. The newest complete backup of
//! each target is restored (SHA-256 checked) into a scratch copy, every
//! table is read through, and the copy is removed again; how is each
//! engine's own (`engine/<name>/verify`).

use super::{select_targets, ConfigArg};
use crate::error::ExitKind;
use crate::report::{hostname, RunReport, Stage, TargetReport};
use crate::restore::VerifyRequest;
use chrono::Utc;
use clap::Args;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target (repeatable).
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// Backup id to verify instead of the newest (with one --target).
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Where the scratch copies go, one URL per engine (repeat the flag):
    /// postgres://USER@HOST:PORT/DB or mysql://USER@HOST:PORT/DB name a
    /// server (the database named is only used to connect; a new one is
    /// created per target and dropped afterwards); sqlite:///DIR a
    /// directory (default: the temp directory).
    #[arg(long)]
    pub scratch: Vec<String>,
    /// Keep the scratch databases (to inspect them).
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub identity: super::restore::IdentityArg,
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// Prove point-in-time recovery instead (PostgreSQL targets with
    /// `wal stream` running): commit a canary row, restore the newest base
    /// backup plus the stored WAL to the second after it into a scratch
    /// directory, recover with a temporary server of the backup's major
    /// (its server binaries installed) until it pauses there, check the
    /// canary, remove it all. Never promotes.
    #[arg(long, conflicts_with_all = ["scratch", "keep"])]
    pub pitr: bool,
    /// With --pitr: how long the canary's WAL may take to be stored, and
    /// recovery to reach it.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "pitr")]
    pub pitr_timeout: std::time::Duration,
}

pub async fn run(args: VerifyArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let targets = select_targets(&config, &args.targets)?;
    if args.pitr {
        return verify_pitr(&args, &config, targets, json).await;
    }
    let mut scratches = args
        .scratch
        .iter()
        .map(|url| crate::engine::destination(url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Each target's engine needs a scratch of its own kind (the last one
    // given), or one the engine supplies; asked for up front, by URL form.
    let mut scratch_of = Vec::new();
    for t in &targets {
        let engine = t.engine();
        let at = match scratches
            .iter()
            .rposition(|d| d.engine().kind() == engine.kind())
        {
            Some(at) => at,
            None => {
                let d = engine.default_scratch().ok_or_else(|| {
                    crate::error::usage(format!(
                        "--scratch {} is needed to verify {} targets (`{}`)",
                        engine.url_form(),
                        engine.label(),
                        t.name()
                    ))
                })?;
                scratches.push(d);
                scratches.len() - 1
            }
        };
        scratch_of.push(at);
    }
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let notifiers = crate::notify::from_config(&config.notify)
        .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?;
    let cancel = crate::signals::install();
    let started_at = Utc::now();
    let mut reports = Vec::new();
    let mut needs_usage_exit = false;
    for (t, scratch) in targets.into_iter().zip(scratch_of) {
        let scratch = &scratches[scratch];
        let clock = Instant::now();
        let t_started = Utc::now();
        let storages = args.storage.of_target(&config, &opened, t);
        let identity = args.identity.path(Some(&config));
        let checked = super::from_intact_copy(
            &storages,
            t.name(),
            Some(&args.backup),
            async |from, backup_id| {
                let v = VerifyRequest {
                    target: t.name(),
                    backup_id: backup_id.clone(),
                    identity: identity.clone(),
                    keep: args.keep,
                    cancel: &cancel,
                };
                let clock = Instant::now();
                let result = scratch.verify(from.storage.as_ref(), &from.layout, v).await;
                record(from, t.name(), &backup_id, &result, clock, &cancel).await;
                result
            },
        )
        .await;
        // Regression (SIGTERM during the read-through was ignored and the
        // run reported success): a signal at any point fails the target.
        let checked = match checked {
            Ok(_) if cancel.is_cancelled() => Err(anyhow::anyhow!(
                "interrupted by signal while reading the restored database"
            )),
            other => other,
        };
        let report = TargetReport::ok(t.name(), t_started, clock.elapsed().as_secs_f64());
        let report = match checked {
            // The backup restores, but a copy of it is damaged: that copy
            // fails verify until `backstop copy` repairs it.
            Ok(((outcome, _), damaged)) if !damaged.is_empty() => {
                let named: Vec<String> = damaged
                    .iter()
                    .map(|d| format!("storage `{}`: {}", d.storage, d.why))
                    .collect();
                report.failed(
                    Stage::Verify,
                    format!(
                        "backup {} verified from another storage, but its copy is damaged in {}; repair it with `backstop copy --check --from OTHER --to {}`",
                        outcome.backup_id,
                        named.join("; "),
                        damaged[0].storage
                    ),
                    Vec::new(),
                )
            }
            Ok(((outcome, summary), _)) => {
                tracing::info!(target_name = t.name(), backup = %outcome.backup_id, tables = summary.tables, rows = summary.rows, "verified: the backup restores");
                TargetReport {
                    backup_id: Some(outcome.backup_id),
                    stored_bytes: outcome.bytes,
                    raw_bytes: outcome
                        .manifest
                        .as_ref()
                        .map_or(0, |m| m.database_raw_bytes()),
                    verified: Some(summary),
                    ..report
                }
            }
            Err(e) => {
                tracing::error!(target_name = t.name(), "verify failed: {e:#}");
                // A missing or wrong identity (or another usage error) is
                // reported like any failure, and ends the run with exit 2.
                needs_usage_exit |= crate::error::has::<crate::error::UsageError>(&e);
                let stage = if cancel.is_cancelled() {
                    Stage::Interrupted
                } else {
                    Stage::of_error(&e, Stage::Verify)
                };
                report.failed(stage, format!("{e:#}"), Vec::new())
            }
        };
        reports.push(report);
    }
    let run = RunReport {
        event: "verify",
        tool_version: crate::TOOL_VERSION.to_string(),
        host: hostname(),
        started_at,
        finished_at: Utc::now(),
        targets: reports,
    };
    finish(&config, &notifiers, &run, json).await;
    Ok(match run.exit_kind() {
        ExitKind::Failed if needs_usage_exit => ExitKind::Usage,
        other => other,
    })
}

/// Keep what this verify found beside the backup in the storage it read
/// (see [`crate::catalog::verified`]). Not when it was interrupted, when
/// the copy proved damaged (that copy is marked instead) or on a usage
/// error (a missing identity proves nothing about the backup). Best
/// effort: the verify's own outcome stands either way.
async fn record(
    from: &super::OpenStorage,
    target: &str,
    backup_id: &str,
    result: &anyhow::Result<(crate::restore::RestoreOutcome, crate::report::VerifySummary)>,
    clock: Instant,
    cancel: &tokio_util::sync::CancellationToken,
) {
    use crate::catalog::verified::{write, VerifyRecord};
    if cancel.is_cancelled() {
        return;
    }
    if let Err(e) = result {
        if crate::error::has::<crate::error::DamagedCopy>(e)
            || crate::error::has::<crate::error::UsageError>(e)
        {
            return;
        }
    }
    let backup = match crate::restore::choose_backup(
        from.storage.as_ref(),
        &from.layout,
        target,
        Some(backup_id),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                target_name = target,
                backup = backup_id,
                "the verify result is not recorded: {e:#}"
            );
            return;
        }
    };
    let sealed = !backup.manifest.encryption_recipients.is_empty();
    let summary = result.as_ref().ok().map(|(_, s)| s).filter(|_| !sealed);
    let record = VerifyRecord {
        backup: backup_id.to_string(),
        verified_at: Utc::now(),
        passed: result.is_ok(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        tables: summary.map(|s| s.tables),
        rows: summary.map(|s| s.rows),
        tables_compared: summary.map(|s| s.tables_compared),
        why: result.as_ref().err().map(|e| match sealed {
            true => "the restored copy failed its checks (the verify run's log says how)".into(),
            false => format!("{e:#}"),
        }),
        tool_version: crate::TOOL_VERSION.to_string(),
        host: hostname(),
    };
    match write(from.storage.as_ref(), &backup.manifest_key, &record).await {
        Ok(key) => {
            tracing::info!(target_name = target, key = %key, "verify result recorded beside the backup")
        }
        Err(e) => tracing::warn!(
            target_name = target,
            "the verify result is not recorded: {e:#}"
        ),
    }
}

/// When a verify last passed for each target of the run, in any of its
/// storages (from the records beside the backups).
async fn last_proven(config: &crate::config::Config, run: &RunReport) -> Vec<(String, f64)> {
    let Ok(opened) = super::open_storages(config, None) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in &run.targets {
        let Some(target) = config.target(&t.target) else {
            continue;
        };
        let mut newest = None;
        for s in super::storages_of(config, &opened, target) {
            if let Ok(listing) =
                crate::catalog::list_target(s.storage.as_ref(), &s.layout, &t.target).await
            {
                newest = newest.max(listing.last_proven().map(|(_, v)| v.at));
            }
        }
        if let Some(at) = newest {
            out.push((t.target.clone(), at.timestamp_millis() as f64 / 1000.0));
        }
    }
    out
}

/// What every verify does with its report: notify, metrics, the summary.
async fn finish(
    config: &crate::config::Config,
    notifiers: &[Box<dyn crate::notify::Notifier>],
    run: &RunReport,
    json: bool,
) {
    crate::notify::notify_all(notifiers, crate::notify::Event::Finished(run)).await;
    if let Some(m) = &config.metrics {
        let proven = last_proven(config, run).await;
        if let Err(e) = crate::notify::metrics::publish_verify(m, run, &proven).await {
            tracing::error!("publishing verify metrics failed: {e:#}");
        }
    }
    if json {
        crate::outln!("{}", serde_json::to_string(run).expect("report serializes"));
    } else {
        crate::out!("{}", run.render_human());
    }
}

/// `verify --pitr`: a paused point-in-time restore per PostgreSQL target.
async fn verify_pitr(
    args: &VerifyArgs,
    config: &crate::config::Config,
    targets: Vec<&crate::engine::TargetConfig>,
    json: bool,
) -> anyhow::Result<ExitKind> {
    let opened = super::open_storages(config, args.storage.storage.as_deref())?;
    let notifiers = crate::notify::from_config(&config.notify)
        .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?;
    let config_path = args.config.path()?.canonicalize()?;
    let cancel = crate::signals::install();
    let started_at = Utc::now();
    let mut reports = Vec::new();
    for t in targets {
        let crate::engine::TargetConfig::Postgres(pg) = t else {
            if !args.targets.is_empty() {
                return Err(crate::error::usage(format!(
                    "--pitr: target {} is not PostgreSQL",
                    t.name()
                )));
            }
            continue;
        };
        let clock = Instant::now();
        let t_started = Utc::now();
        let proof = crate::pitr::prove::Proof {
            target: t.name().to_string(),
            conn: crate::engine::postgres::conn_of(pg),
            storages: args.storage.of_target(config, &opened, t),
            identity: args.identity.path(Some(config)),
            config: config_path.clone(),
            timeout: args.pitr_timeout,
            cancel: cancel.clone(),
        };
        let report = TargetReport::ok(t.name(), t_started, 0.0);
        let report = match proof.run().await {
            Ok(what) => {
                tracing::info!(
                    target_name = t.name(),
                    "point-in-time recovery proven: {what}"
                );
                report
            }
            Err(e) => {
                tracing::error!(target_name = t.name(), "point-in-time verify failed: {e:#}");
                report.failed(Stage::Verify, format!("{e:#}"), Vec::new())
            }
        };
        reports.push(TargetReport {
            duration_seconds: clock.elapsed().as_secs_f64(),
            finished_at: Utc::now(),
            ..report
        });
    }
    let run = RunReport {
        event: "verify",
        tool_version: crate::TOOL_VERSION.to_string(),
        host: hostname(),
        started_at,
        finished_at: Utc::now(),
        targets: reports,
    };
    finish(config, &notifiers, &run, json).await;
    Ok(run.exit_kind())
}
