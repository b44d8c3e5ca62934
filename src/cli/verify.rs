//! `backstop verify`: prove a backup restores. The newest complete backup of
//! each target is restored (SHA-256 checked, one transaction) into a new
//! scratch database on a server you name, its tables are read through, and
//! the scratch database is dropped again.

use super::{select_targets, ConfigArg};
use crate::error::ExitKind;
use crate::report::{hostname, RunReport, Stage, Status, TargetReport};
use crate::restore::{restore, RestoreRequest};
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
    #[arg(long)]
    pub scratch: String,
    /// Keep the scratch databases (to inspect them).
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(args: VerifyArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let targets = select_targets(&config, &args.targets)?;
    let scratch = super::restore::parse_pg_url(&args.scratch)?;
    let (storage, layout) = super::open_storage(&config)?;
    let notifiers = crate::notify::from_config(&config.notify)
        .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?;
    let cancel = crate::signals::install();
    let started_at = Utc::now();
    let mut reports = Vec::new();
    for t in targets {
        let clock = Instant::now();
        let t_started = Utc::now();
        let name = format!(
            "backstop_verify_{}_{}",
            t.name().replace('-', "_"),
            t_started.format("%Y%m%d%H%M%S")
        );
        let into = scratch.with_database(&name);
        let result = restore(
            storage.as_ref(),
            &layout,
            RestoreRequest {
                target: t.name().to_string(),
                backup: Some(args.backup.clone()),
                into: into.clone(),
                create: true,
                no_owner: true,
                cancel: cancel.clone(),
            },
        )
        .await;
        let checked = match result {
            Ok(outcome) => read_through(&into).await.map(|tables| (outcome, tables)),
            Err(e) => Err(e),
        };
        if !args.keep {
            drop_scratch(&scratch, &name).await;
        }
        let mut report = TargetReport {
            target: t.name().to_string(),
            status: Status::Success,
            stage: None,
            error: None,
            stderr_tail: Vec::new(),
            backup_id: None,
            manifest_key: None,
            raw_bytes: 0,
            stored_bytes: 0,
            started_at: t_started,
            finished_at: Utc::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            prune: None,
        };
        match checked {
            Ok((outcome, (tables, rows))) => {
                tracing::info!(target_name = t.name(), backup = %outcome.backup_id, tables, rows, "verified: the backup restores");
                report.backup_id = Some(outcome.backup_id);
                report.stored_bytes = outcome.bytes;
            }
            Err(e) => {
                tracing::error!(target_name = t.name(), "verify failed: {e:#}");
                report.status = Status::Failed;
                report.stage = Some(Stage::Verify);
                report.error = Some(format!("{e:#}"));
            }
        }
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
        println!(
            "{}",
            serde_json::to_string(&run).expect("report serializes")
        );
    } else {
        print!("{}", run.render_human());
    }
    Ok(run.exit_kind())
}

/// Read every row of every user table (a restore that committed can still
/// hold unreadable data on a broken server); returns (tables, rows).
async fn read_through(conn: &crate::source::pgtools::PgConn) -> anyhow::Result<(u64, u64)> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let found = crate::source::pgtools::discover();
        let psql = found
            .iter()
            .rev()
            .map(|t| t.tool("psql"))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow::anyhow!("no psql found"))?;
        let list = conn.query(
            &psql,
            "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables ORDER BY 1;",
        )?;
        let (mut tables, mut rows) = (0u64, 0u64);
        for table in list.lines().filter(|l| !l.is_empty()) {
            let n: u64 = conn.query(&psql, &format!("SELECT count(*) FROM {table};"))?.parse()?;
            tables += 1;
            rows += n;
        }
        Ok((tables, rows))
    })
    .await?
}

async fn drop_scratch(server: &crate::source::pgtools::PgConn, name: &str) {
    let conn = server.clone();
    let name = name.to_string();
    let dropped = tokio::task::spawn_blocking(move || {
        let found = crate::source::pgtools::discover();
        let psql = found
            .iter()
            .rev()
            .map(|t| t.tool("psql"))
            .find(|p| p.is_file());
        match psql {
            Some(psql) => conn
                .query(
                    &psql,
                    &format!(
                        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE);",
                        name.replace('"', "\"\"")
                    ),
                )
                .map(|_| ()),
            None => Err(anyhow::anyhow!("no psql found")),
        }
    })
    .await;
    if !matches!(dropped, Ok(Ok(()))) {
        tracing::warn!("could not drop the scratch database; drop it by hand");
    }
}
