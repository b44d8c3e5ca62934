//! MariaDB and MySQL through their own dump tool (`mariadb-dump`, else
//! `mysqldump`): one consistent snapshot of InnoDB tables
//! (`--single-transaction`), routines, triggers and events, binary data as
//! hex, utf8mb4. The stored object is plain SQL: `zstd -dc OBJECT | mariadb
//! DB` restores it without backstop.

mod check;
mod config;
mod db_scope;
mod engine;
mod events;
pub mod flavour;
mod privileges;
pub mod restore;
mod rows;
mod swap;
pub mod tools;

pub use check::MysqlInspector;
pub use config::{MysqlTarget, Selection};

pub use engine::Mysql;

use super::{Check, DumpPlan, DumpStream, Source, SourceInfo};
use anyhow::Context;
use async_trait::async_trait;
use std::sync::Mutex;
use tools::{literal, MyConn};

pub struct MysqlSource {
    conn: MyConn,
    selection: Selection,
    /// The option file the dumps read, alive as long as the source.
    options: Mutex<Option<tempfile::TempPath>>,
}

impl MysqlSource {
    pub fn from_config(t: &MysqlTarget) -> Self {
        MysqlSource {
            conn: MyConn {
                host: t.host.clone(),
                port: t.port,
                user: t.user.clone(),
                password: t.password.clone(),
                database: t.database.clone(),
            },
            selection: t.selection(),
            options: Mutex::new(None),
        }
    }

    fn describe(&self) -> String {
        match &self.selection {
            Selection::One(db) => db.clone(),
            Selection::Listed(dbs) => dbs.join(", "),
            Selection::All => "all databases".into(),
        }
    }
}

/// The server's own databases, never part of `all = true`.
const SYSTEM_DATABASES: &[&str] = &["information_schema", "mysql", "performance_schema", "sys"];

/// backstop's own working databases (verify's scratch copies, a restore's
/// databases beside the live one), never part of `all = true`: they come
/// and go while backups run. A kept `_replaced_` database is the user's.
const WORKING_DATABASES: &str = "^backstop_verify_|_bs_(restore|old)_[0-9a-f]{8}$";

/// The object role of one database in a backup of several (see
/// [`crate::catalog::Manifest::database_raw_bytes`]).
pub const ROLE_PREFIX: &str = "database:";

/// The databases a selection names (`all = true`: every user database).
fn databases(
    tools: &tools::MyTools,
    server: &MyConn,
    selection: &Selection,
) -> anyhow::Result<Vec<String>> {
    Ok(match selection {
        Selection::One(db) => vec![db.clone()],
        Selection::Listed(dbs) => dbs.clone(),
        Selection::All => {
            let system = SYSTEM_DATABASES
                .iter()
                .map(|d| literal(d))
                .collect::<Vec<_>>()
                .join(", ");
            let found = tools::query(
                tools,
                server,
                &format!(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({system}) \
                     AND SCHEMA_NAME NOT REGEXP {} ORDER BY 1;",
                    literal(WORKING_DATABASES)
                ),
            )?;
            let names: Vec<String> = found
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                anyhow::bail!(
                    "{} holds no database besides its own (all = true)",
                    server.endpoint()
                );
            }
            names
        }
    })
}

/// Connect, read each database's character set, choose the tools; the
/// option file returned must outlive the dumps.
fn plan_blocking(
    conn: &MyConn,
    selection: &Selection,
) -> anyhow::Result<(DumpPlan, tempfile::TempPath)> {
    let tools = tools::discover()?;
    let server = conn.with_database("");
    let version = tools::query(&tools, &server, "SELECT VERSION();")
        .with_context(|| format!("connecting to {}", conn.endpoint()))?;
    let names = databases(&tools, &server, selection)?;
    let chosen = tools::dump_for(&version)?;
    let options = conn.option_file()?;
    let several = !matches!(selection, Selection::One(_));
    let mut streams = Vec::new();
    let mut properties = serde_json::Map::new();
    let flavour = flavour::identify(&version).0;
    for db in &names {
        match privileges::check(&tools, &server, flavour, db) {
            Ok(None) => {}
            Ok(Some(m)) if !m.roles_granted => anyhow::bail!(m.describe(&conn.user, db)),
            Ok(Some(m)) => tracing::warn!(database = %db, "{}", m.describe(&conn.user, db)),
            Err(e) => {
                tracing::warn!(database = %db, "could not read the user's grants to check that the dump is complete: {e:#}")
            }
        }
        let defaults = tools::database_defaults(&tools, conn, db)?;
        warn_non_transactional(&tools, &server, db)?;
        let mut command = tools::command(&chosen.tool.path, &options);
        for a in &chosen.extra_args {
            command = command.arg(a);
        }
        let command = command
            .arg("--single-transaction")
            .arg("--quick")
            .arg("--routines")
            .arg("--triggers")
            .arg("--events")
            .arg("--hex-blob")
            .arg("--default-character-set=utf8mb4")
            .arg("--skip-dump-date")
            // Tablespaces are the server's, not the database's; dumping
            // them needs PROCESS on MySQL 8.
            .arg("--no-tablespaces")
            // Positional, not --databases: no USE statement, so the dump
            // restores into a database of any name.
            .arg(db);
        let (role, extension) = match several {
            false => ("database".to_string(), "sql".to_string()),
            true => (
                format!("{ROLE_PREFIX}{db}"),
                format!("{}.sql", key_safe(db)),
            ),
        };
        streams.push(DumpStream {
            role,
            extension,
            command,
            check: Some(Check::Mysql),
        });
        properties.insert(
            db.clone(),
            serde_json::to_value(&defaults).expect("defaults serialize"),
        );
    }
    let database_properties = match several {
        false => properties.into_iter().next().map(|(_, p)| p),
        true => Some(serde_json::json!({ "databases": properties })),
    };
    let name = chosen
        .tool
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    Ok((
        DumpPlan {
            server_version: version,
            tool: name,
            tool_version: flavour::short(&chosen.tool.version),
            format: "sql",
            streams,
            database_properties,
        },
        options,
    ))
}

fn warn_non_transactional(tools: &tools::MyTools, server: &MyConn, db: &str) -> anyhow::Result<()> {
    let loose = tools::query(
        tools,
        server,
        &format!("SELECT CONCAT(TABLE_NAME, ' (', ENGINE, ')') FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE' AND ENGINE <> 'InnoDB';", literal(db)),
    )?;
    if !loose.is_empty() {
        tracing::warn!(
            database = %db,
            "tables that are not transactional are dumped outside the snapshot, so the backup may be inconsistent across them: {}",
            loose.replace('\n', ", ")
        );
    }
    Ok(())
}

/// A database name as part of an object key, whose characters every
/// backend takes (see [`crate::keys`]): letters, digits and `_` as they
/// are, anything else as `-XX` (a name may hold `/`, `.` or `-`).
fn key_safe(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("-{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Source for MysqlSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "mysql",
            database: self.describe(),
            endpoint: self.conn.endpoint(),
        }
    }

    async fn plan(&self) -> anyhow::Result<DumpPlan> {
        let (conn, selection) = (self.conn.clone(), self.selection.clone());
        let (plan, options) = tokio::task::spawn_blocking(move || plan_blocking(&conn, &selection))
            .await
            .context("source planning task")??;
        *self.options.lock().expect("options lock") = Some(options);
        Ok(plan)
    }

    async fn privileges(&self) -> Option<anyhow::Result<String>> {
        let (conn, selection) = (self.conn.clone(), self.selection.clone());
        let checked = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let tools = tools::discover()?;
            let server = conn.with_database("");
            let flavour = flavour::identify(&tools::query(&tools, &server, "SELECT VERSION();")?).0;
            let mut problems = Vec::new();
            let names = databases(&tools, &server, &selection)?;
            for db in &names {
                if let Some(m) = privileges::check(&tools, &server, flavour, db)? {
                    problems.push(m.describe(&conn.user, db));
                }
            }
            match problems.is_empty() {
                true => Ok(format!(
                    "user {} may read everything a complete dump of {} holds",
                    conn.user,
                    names.join(", ")
                )),
                false => anyhow::bail!(problems.join("; ")),
            }
        })
        .await;
        Some(checked.unwrap_or_else(|e| Err(anyhow::anyhow!("privilege check task: {e}"))))
    }
}
