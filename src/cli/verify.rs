//! `backstop verify`: prove a backup restores. The newest complete backup of
//! each target is restored (SHA-256 checked, one transaction) into a new
//! scratch database on a server you name, its tables are read through, and
//! the scratch database is dropped again.

use super::{select_targets, ConfigArg};
use crate::error::ExitKind;
use crate::report::{hostname, RunReport, Stage, TargetReport, VerifySummary};
use crate::restore::{drop_database, restore, Mode, RestoreRequest};
use crate::source::pg_archive::TableRows;
use crate::source::pg_database::Fidelity;
use crate::source::pgtools::{discover, newest_psql, PgConn};
use crate::sql::{ident, literal};
use anyhow::Context;
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
    #[command(flatten)]
    pub identity: super::restore::IdentityArg,
    #[command(flatten)]
    pub storage: super::StorageArg,
}

pub async fn run(args: VerifyArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let targets = select_targets(&config, &args.targets)?;
    let scratch = super::restore::parse_pg_url(&args.scratch)?;
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let notifiers = crate::notify::from_config(&config.notify)
        .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?;
    let cancel = crate::signals::install();
    let psql = tokio::task::spawn_blocking(|| newest_psql(&discover())).await??;
    let started_at = Utc::now();
    let mut reports = Vec::new();
    let mut needs_usage_exit = false;
    for t in targets {
        let clock = Instant::now();
        let t_started = Utc::now();
        let name = format!(
            "backstop_verify_{}_{}",
            t.name().replace('-', "_"),
            t_started.format("%Y%m%d%H%M%S")
        );
        let into = scratch.with_database(&name);
        // The scratch database is created, and always dropped, through the
        // --scratch connection itself (regression: created through one
        // connection and dropped through another, it leaked when the URL
        // named a database that did not exist).
        let storages = super::storages_of(&config, &opened, t);
        let result = async {
            let (from, id) = super::locate_backup(&storages, t.name(), Some(&args.backup)).await?;
            restore(
                from.storage.as_ref(),
                &from.layout,
                RestoreRequest {
                    target: t.name().to_string(),
                    backup: Some(id),
                    into: into.clone(),
                    maintenance: scratch.clone(),
                    mode: Mode::Create,
                    fidelity: Fidelity {
                        no_owner: true,
                        no_acl: true,
                        no_tablespaces: true,
                        server_locale: false,
                    },
                    parallel: None,
                    identity: args.identity.path(Some(&config)),
                    cancel: cancel.clone(),
                },
            )
            .await
        }
        .await;
        let (into_c, psql_c) = (into.clone(), psql.clone());
        let checked = match result {
            Ok(outcome) => {
                let expected = outcome
                    .manifest
                    .as_ref()
                    .and_then(|m| m.object("database"))
                    .map(|o| o.tables.clone())
                    .unwrap_or_default();
                tokio::task::spawn_blocking(move || read_through(&into_c, &psql_c, &expected))
                    .await?
                    .map(|summary| (outcome, summary))
            }
            Err(e) => Err(e),
        };
        // Regression (SIGTERM during the read-through was ignored and the
        // run reported success): a signal at any point fails the target.
        let checked = match checked {
            Ok(_) if cancel.is_cancelled() => Err(anyhow::anyhow!(
                "interrupted by signal while reading the restored database"
            )),
            other => other,
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

/// Read every row of every user table and populated materialized view (a
/// restore that committed can still hold unreadable data), and compare each
/// table's rows with the count the dump holds for it.
fn read_through(
    conn: &PgConn,
    psql: &Path,
    expected: &[TableRows],
) -> anyhow::Result<VerifySummary> {
    let list = conn.query(
        psql,
        "SELECT c.relkind::text || ' ' || c.relispopulated::text || ' ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1;",
    )?;
    let mut summary = VerifySummary::default();
    // Every read goes through one psql session: thousands of tables must
    // not mean thousands of connections.
    let mut script = String::new();
    for line in list.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let (kind, populated, name) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if kind == "m" && populated != "true" {
            summary.unpopulated_matviews.push(name.to_string());
            continue;
        }
        // Every column of every row is rendered, not just counted, so the
        // server detoasts and decodes all of it.
        script.push_str(&format!(
            "SELECT 'read', {kind_lit}, count(*), coalesce(sum(length(x::text)), 0) FROM ONLY {name} x;\n",
            kind_lit = literal(kind)
        ));
    }
    for t in expected {
        let name = format!("{}.{}", ident(&t.schema), ident(&t.table));
        script.push_str(&format!(
            "SELECT 'count', {}, count(*), {} FROM ONLY {name};\n",
            literal(&name),
            t.rows
        ));
    }
    if script.is_empty() {
        return Ok(summary);
    }
    let out = conn
        .query(psql, &script)
        .context("reading the restored tables")?;
    for line in out.lines() {
        let f: Vec<&str> = line.split('|').collect();
        match f.as_slice() {
            ["read", kind, rows, _] => {
                summary.tables += 1;
                if *kind != "p" {
                    summary.rows += rows.parse::<u64>().unwrap_or(0);
                }
            }
            ["count", name, rows, expected] => {
                if rows != expected {
                    anyhow::bail!(
                        "table {name} has {rows} rows after the restore, but the dump holds {expected}"
                    );
                }
                summary.tables_compared += 1;
            }
            _ => {}
        }
    }
    Ok(summary)
}
