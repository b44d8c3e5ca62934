//! `backstop verify`: prove a backup restores. The newest complete backup of
//! each target is restored (SHA-256 checked) into a scratch copy, every
//! table is read through, and the copy is removed again; how is each
//! engine's own (`engine/<name>/verify`).

use super::{select_targets, ConfigArg};
use crate::config::TargetConfig;
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
    /// Server for the scratch databases: postgres://USER@HOST:PORT/DB (the
    /// database named is only used to connect; a new one is created per
    /// target and dropped afterwards).
    /// For MariaDB/MySQL targets: mysql://USER[:PASSWORD]@HOST:PORT/DB
    /// likewise. SQLite copies go to the temp directory. Repeat to give one
    /// of each.
    #[arg(long)]
    pub scratch: Vec<String>,
    /// Keep the scratch databases (to inspect them).
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub identity: super::restore::IdentityArg,
    #[command(flatten)]
    pub storage: super::StorageArg,
}

pub async fn run(args: VerifyArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let targets = select_targets(&config, &args.targets)?;
    let (mut scratch, mut my_scratch) = (None, None);
    for url in &args.scratch {
        match crate::engine::mysql::restore::parse_url(url) {
            Some(conn) => my_scratch = Some(conn?),
            None => scratch = Some(super::restore::parse_pg_url(url)?),
        }
    }
    let needs = |f: fn(&TargetConfig) -> bool| targets.iter().any(|t| f(t));
    if scratch.is_none() && needs(|t| matches!(t, TargetConfig::Postgres(_))) {
        return Err(crate::error::usage(
            "--scratch postgres://USER@HOST:PORT/DB is needed to verify PostgreSQL targets",
        ));
    }
    if my_scratch.is_none() && needs(|t| matches!(t, TargetConfig::Mysql(_))) {
        return Err(crate::error::usage(
            "--scratch mysql://USER@HOST:PORT/DB is needed to verify MariaDB/MySQL targets",
        ));
    }
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let notifiers = crate::notify::from_config(&config.notify)
        .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?;
    let cancel = crate::signals::install();
    let started_at = Utc::now();
    let mut reports = Vec::new();
    let mut needs_usage_exit = false;
    for t in targets {
        let clock = Instant::now();
        let t_started = Utc::now();
        let storages = args.storage.of_target(&config, &opened, t);
        let identity = args.identity.path(Some(&config));
        let checked = async {
            let (from, backup_id) =
                super::locate_backup(&storages, t.name(), Some(&args.backup)).await?;
            let (storage, layout) = (from.storage.as_ref(), &from.layout);
            let v = VerifyRequest {
                target: t.name(),
                backup_id,
                identity,
                keep: args.keep,
                cancel: &cancel,
            };
            let expect = "checked above";
            match t {
                TargetConfig::Postgres(_) => {
                    let scratch = scratch.as_ref().expect(expect);
                    crate::engine::postgres::verify::verify(storage, layout, v, scratch).await
                }
                TargetConfig::Mysql(_) => {
                    let scratch = my_scratch.as_ref().expect(expect);
                    crate::engine::mysql::restore::verify(storage, layout, v, scratch).await
                }
                TargetConfig::Sqlite(_) => {
                    crate::engine::sqlite::restore::verify(storage, layout, v).await
                }
            }
        }
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
            Ok((outcome, summary)) => {
                tracing::info!(target_name = t.name(), backup = %outcome.backup_id, tables = summary.tables, rows = summary.rows, "verified: the backup restores");
                TargetReport {
                    backup_id: Some(outcome.backup_id),
                    stored_bytes: outcome.bytes,
                    raw_bytes: outcome
                        .manifest
                        .as_ref()
                        .and_then(|m| m.object("database"))
                        .map_or(0, |o| o.raw_bytes),
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
    crate::notify::notify_all(&notifiers, crate::notify::Event::Finished(&run)).await;
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string(&run).expect("report serializes")
        );
    } else {
        crate::out!("{}", run.render_human());
    }
    Ok(match run.exit_kind() {
        ExitKind::Failed if needs_usage_exit => ExitKind::Usage,
        other => other,
    })
}
