//! MariaDB and MySQL through their own dump tool (`mariadb-dump`, else
//! `mysqldump`): one consistent snapshot of InnoDB tables
//! (`--single-transaction`), routines, triggers and events, binary data as
//! hex, utf8mb4. The stored object is plain SQL: `zstd -dc OBJECT | mariadb
//! DB` restores it without backstop.

mod check;
mod config;
mod engine;
pub mod restore;
mod swap;
pub mod tools;

pub use check::MysqlInspector;
pub use config::MysqlTarget;

pub use engine::Mysql;

use super::{Check, DumpPlan, DumpStream, Source, SourceInfo};
use anyhow::Context;
use async_trait::async_trait;
use std::sync::Mutex;
use tools::{literal, MyConn};

pub struct MysqlSource {
    conn: MyConn,
    /// The option file the dump reads, alive as long as the source.
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
            options: Mutex::new(None),
        }
    }
}

/// Connect, read the database's character set, choose the tools; the
/// option file returned must outlive the dump.
fn plan_blocking(conn: &MyConn) -> anyhow::Result<(DumpPlan, tempfile::TempPath)> {
    {
        let tools = tools::discover()?;
        let server = conn.with_database("");
        let version = tools::query(&tools, &server, "SELECT VERSION();")
            .with_context(|| format!("connecting to {}", conn.endpoint()))?;
        let db = literal(&conn.database);
        let (character_set, collation) = tools::charset_of(&tools, conn, &conn.database)?;
        let loose = tools::query(
            &tools,
            &server,
            &format!("SELECT CONCAT(TABLE_NAME, ' (', ENGINE, ')') FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db} AND TABLE_TYPE = 'BASE TABLE' AND ENGINE <> 'InnoDB';"),
        )?;
        if !loose.is_empty() {
            tracing::warn!(
                database = %conn.database,
                "tables that are not transactional are dumped outside the snapshot, so the backup may be inconsistent across them: {}",
                loose.replace('\n', ", ")
            );
        }
        let (_, tool_version) = crate::process::run_capture(
            &crate::process::ChildCommand::new(&tools.dump).arg("--version"),
            None,
        )
        .context("asking the dump tool's version")?;
        let options = conn.option_file()?;
        let command = tools::command(&tools.dump, &options)
            .arg("--single-transaction")
            .arg("--quick")
            .arg("--routines")
            .arg("--triggers")
            .arg("--events")
            .arg("--hex-blob")
            .arg("--default-character-set=utf8mb4")
            .arg("--skip-dump-date")
            // Positional, not --databases: no USE statement, so the dump
            // restores into a database of any name.
            .arg(&conn.database);
        let name = tools
            .dump
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        Ok((
            DumpPlan {
                server_version: version,
                tool: name,
                tool_version: tool_version.trim().to_string(),
                format: "sql",
                streams: vec![DumpStream {
                    role: "database",
                    extension: "sql",
                    command,
                    check: Some(Check::Mysql),
                }],
                database_properties: Some(serde_json::json!({
                    "character_set": character_set,
                    "collation": collation,
                })),
            },
            options,
        ))
    }
}

#[async_trait]
impl Source for MysqlSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "mysql",
            database: self.conn.database.clone(),
            endpoint: self.conn.endpoint(),
        }
    }

    async fn plan(&self) -> anyhow::Result<DumpPlan> {
        let conn = self.conn.clone();
        let (plan, options) = tokio::task::spawn_blocking(move || plan_blocking(&conn))
            .await
            .context("source planning task")??;
        *self.options.lock().expect("options lock") = Some(options);
        Ok(plan)
    }
}
