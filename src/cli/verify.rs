//! `backstop verify`: prove a backup restores. The newest complete backup of
//! each target is restored (SHA-256 checked, one transaction) into a new
//! scratch database on a server you name, its tables are read through, and
//! the scratch database is dropped again.

use super::{select_targets, ConfigArg};
use crate::error::ExitKind;
use crate::report::{hostname, RunReport, Stage, TargetReport};
use crate::restore::{drop_database, restore, RestoreRequest};
use crate::source::pgtools::{discover, newest_psql, PgConn};
use chrono::Utc;
use clap::Args;
use std::path::Path;
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
    let psql = tokio::task::spawn_blocking(|| newest_psql(&discover())).await??;
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
        let (into_c, psql_c) = (into.clone(), psql.clone());
        let checked = match result {
            Ok(outcome) => tokio::task::spawn_blocking(move || read_through(&into_c, &psql_c))
                .await?
                .map(|counts| (outcome, counts)),
            Err(e) => Err(e),
        };
        if !args.keep {
            let (conn, psql, name) = (scratch.clone(), psql.clone(), name.clone());
            let dropped =
                tokio::task::spawn_blocking(move || drop_database(&conn, &psql, &name)).await;
            if !matches!(dropped, Ok(Ok(()))) {
                tracing::warn!(database = %into.database, "could not drop the scratch database; drop it by hand");
            }
        }
        let report = TargetReport::ok(t.name(), t_started, clock.elapsed().as_secs_f64());
        let report = match checked {
            Ok((outcome, (tables, rows))) => {
                tracing::info!(target_name = t.name(), backup = %outcome.backup_id, tables, rows, "verified: the backup restores");
                TargetReport {
                    backup_id: Some(outcome.backup_id),
                    stored_bytes: outcome.bytes,
                    ..report
                }
            }
            Err(e) => {
                tracing::error!(target_name = t.name(), "verify failed: {e:#}");
                report.failed(Stage::Verify, format!("{e:#}"), Vec::new())
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
fn read_through(conn: &PgConn, psql: &Path) -> anyhow::Result<(u64, u64)> {
    let list = conn.query(
        psql,
        "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables ORDER BY 1;",
    )?;
    let (mut tables, mut rows) = (0u64, 0u64);
    for table in list.lines().filter(|l| !l.is_empty()) {
        rows += conn
            .query(psql, &format!("SELECT count(*) FROM {table};"))?
            .parse::<u64>()?;
        tables += 1;
    }
    Ok((tables, rows))
}
