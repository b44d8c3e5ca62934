//! Verify for PostgreSQL: restore into a new scratch database on the
//! server `--scratch` names, read every table through (comparing row counts
//! with the dump's), and drop it again.

use super::archive::TableRows;
use super::database::Fidelity;
use super::restore::{drop_database, restore, Mode, RestoreOutcome, RestoreRequest};
use super::tools::{discover, newest_psql, PgConn};
use crate::catalog::Layout;
use crate::report::VerifySummary;
use crate::restore::VerifyRequest;
use crate::sql::{ident, literal};
use crate::storage::Storage;
use anyhow::Context;
use std::path::Path;

pub async fn verify(
    storage: &dyn Storage,
    layout: &Layout,
    v: VerifyRequest<'_>,
    scratch: &PgConn,
) -> anyhow::Result<(RestoreOutcome, VerifySummary)> {
    let psql = tokio::task::spawn_blocking(|| newest_psql(&discover())).await??;
    let name = format!(
        "backstop_verify_{}_{}",
        v.target.replace('-', "_"),
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    let into = scratch.with_database(&name);
    // The scratch database is created, and always dropped, through the
    // --scratch connection itself (regression: created through one
    // connection and dropped through another, it leaked when the URL
    // named a database that did not exist).
    let result = restore(
        storage,
        layout,
        RestoreRequest {
            target: v.target.to_string(),
            backup: Some(v.backup_id),
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
            identity: v.identity,
            cancel: v.cancel.clone(),
        },
    )
    .await;
    let (into_c, psql_c) = (into.clone(), psql.clone());
    let checked = match result {
        Ok(outcome) => {
            let object = outcome.manifest.as_ref().and_then(|m| m.object("database"));
            let expected = object.map(|o| o.tables.clone()).unwrap_or_default();
            let large_objects = object.and_then(|o| o.large_objects);
            tokio::task::spawn_blocking(move || {
                read_through(&into_c, &psql_c, &expected, large_objects)
            })
            .await?
            .map(|summary| (outcome, summary))
        }
        Err(e) => Err(e),
    };
    if !v.keep {
        let (conn, name) = (scratch.clone(), name.clone());
        let dropped = tokio::task::spawn_blocking(move || drop_database(&conn, &psql, &name)).await;
        if !matches!(dropped, Ok(Ok(()))) {
            tracing::warn!(database = %into.database, "could not drop the scratch database; drop it by hand");
        }
    }
    checked
}

/// Read every row of every user table and populated materialized view (a
/// restore that committed can still hold unreadable data), and compare each
/// table's rows with the count the dump holds for it.
fn read_through(
    conn: &PgConn,
    psql: &Path,
    expected: &[TableRows],
    large_objects: Option<u64>,
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
    // Every large object's data is read too (as the tables' rows are).
    script.push_str(&format!(
        "SELECT 'lo', count(*), {}, coalesce(sum(octet_length(lo_get(oid))), 0) FROM pg_largeobject_metadata;\n",
        large_objects.map_or("NULL".to_string(), |n| n.to_string())
    ));
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
            ["lo", found, expected, _] => {
                let found: u64 = found.parse().unwrap_or(0);
                if !expected.is_empty() && *expected != found.to_string() {
                    anyhow::bail!(
                        "the restored database has {found} large objects, but the dump holds {expected}"
                    );
                }
                summary.large_objects = (!expected.is_empty()).then_some(found);
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
