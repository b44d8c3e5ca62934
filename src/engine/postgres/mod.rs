//! PostgreSQL through pg_dump (and pg_dumpall for globals), with the client
//! chosen to match the server's major version.

pub mod archive;
pub mod config;
pub mod database;
pub mod db_scope;
pub mod engine;
pub mod globals;
pub mod plain_filter;
pub mod privileges;
pub mod restore;
pub mod tools;
pub mod url;
pub mod verify;

pub use engine::Postgres;

use super::{Check, DumpPlan, DumpStream, Source, SourceInfo};
use crate::config::{PgFormat, PostgresTarget};
use crate::process::ChildCommand;
use anyhow::Context;
use archive::DumpKind;
use async_trait::async_trait;
use std::path::PathBuf;
use tools as pgtools;
use tools::{PgConn, PgTools};

#[derive(Clone)]
pub struct PostgresSource {
    pub conn: PgConn,
    pub format: PgFormat,
    pub globals: bool,
    pub role_passwords: bool,
    pub pg_dump_path: Option<PathBuf>,
    /// A physical base backup (pg_basebackup) instead of a dump.
    pub physical: bool,
}

impl PostgresSource {
    pub fn from_config(t: &PostgresTarget) -> Self {
        PostgresSource {
            conn: conn_of(t),
            format: t.format,
            globals: t.globals,
            role_passwords: t.role_passwords,
            pg_dump_path: t.pg_dump_path.clone(),
            physical: false,
        }
    }

    /// The whole cluster as pg_basebackup's tar stream, WAL left out (the
    /// streamer stores it): what point-in-time recovery replays onto.
    fn physical_plan(
        &self,
        found: &[PgTools],
        server: pgtools::PgVersion,
        server_text: String,
    ) -> anyhow::Result<DumpPlan> {
        let tools = pgtools::select(
            found,
            server,
            &format!("the server at {}", self.conn.endpoint()),
        )?;
        let basebackup = tools.require("pg_basebackup")?;
        let tool_version = pgtools::tool_version(&basebackup)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into());
        let command = self.conn.apply(
            ChildCommand::new(basebackup)
                .arg("--pgdata=-")
                .arg("--format=tar")
                .arg("--wal-method=none")
                .arg("--checkpoint=fast")
                .arg("--label=backstop")
                .arg("--no-password"),
        );
        Ok(DumpPlan {
            database_properties: None,
            server_version: server_text,
            tool: "pg_basebackup".into(),
            tool_version,
            format: "basebackup",
            streams: vec![DumpStream {
                role: "database".into(),
                extension: "base.tar".into(),
                command,
                check: Some(Check::PgBase),
            }],
        })
    }

    fn plan_blocking(&self) -> anyhow::Result<DumpPlan> {
        let found = pgtools::discover();
        let (server, server_text) = self.conn.server_version(&found)?;
        if self.physical {
            return self.physical_plan(&found, server, server_text);
        }
        let (pg_dump, tools): (PathBuf, Option<&PgTools>) = match &self.pg_dump_path {
            Some(path) => (path.clone(), None),
            None => {
                let t = pgtools::select(
                    &found,
                    server,
                    &format!("the server at {}", self.conn.endpoint()),
                )?;
                (t.tool("pg_dump"), Some(t))
            }
        };
        let tool_version = pgtools::tool_version(&pg_dump)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into());
        let (format_arg, extension) = match self.format {
            PgFormat::Custom => ("--format=custom", "dump"),
            PgFormat::Plain => ("--format=plain", "sql"),
        };
        let mut dump = ChildCommand::new(&pg_dump)
            .arg(format_arg)
            .arg("--no-password");
        if self.format == PgFormat::Custom {
            // We compress; pg_dump's own compression would only cost CPU.
            dump = dump.arg("--compress=0");
        }
        let mut streams = vec![DumpStream {
            role: "database".into(),
            extension: extension.into(),
            command: self.conn.apply(dump),
            check: Some(Check::Postgres(match self.format {
                PgFormat::Custom => DumpKind::Custom,
                PgFormat::Plain => DumpKind::Plain,
            })),
        }];
        if self.globals {
            let pg_dumpall = match tools {
                Some(t) => t.require("pg_dumpall")?,
                None => {
                    let sibling = pg_dump.with_file_name("pg_dumpall");
                    if sibling.is_file() {
                        sibling
                    } else {
                        pgtools::select(&found, server, "the server")?.require("pg_dumpall")?
                    }
                }
            };
            let mut dumpall = ChildCommand::new(pg_dumpall)
                .arg("--globals-only")
                .arg("--no-password");
            if !self.role_passwords {
                // Reads pg_roles instead of pg_authid: no superuser needed.
                dumpall = dumpall.arg("--no-role-passwords");
            }
            streams.push(DumpStream {
                role: "globals".into(),
                extension: "globals.sql".into(),
                command: self.conn.apply(
                    dumpall
                        // -l takes a plain name; --dbname would parse it as a
                        // connection string.
                        .arg(format!("--database={}", self.conn.database)),
                ),
                check: Some(Check::Postgres(DumpKind::Globals)),
            });
        }
        // Read with the newest psql: any psql talks to any server.
        let database_properties = match pgtools::newest_psql(&found)
            .and_then(|psql| database::capture(&self.conn, &psql))
        {
            Ok(p) => Some(serde_json::to_value(p).expect("properties serialize")),
            Err(e) => {
                tracing::warn!(database = %self.conn.database, "could not read the database's properties (restore --create will use the destination's defaults): {e:#}");
                None
            }
        };
        Ok(DumpPlan {
            database_properties,
            server_version: server_text,
            tool: "pg_dump".into(),
            tool_version,
            format: self.format.as_str(),
            streams,
        })
    }
}

/// The base-backup source of a target (`backup --physical`).
pub fn physical_source(t: &PostgresTarget) -> Box<dyn Source> {
    Box::new(PostgresSource {
        physical: true,
        ..PostgresSource::from_config(t)
    })
}

pub fn conn_of(t: &PostgresTarget) -> PgConn {
    PgConn {
        host: t.host.clone(),
        port: t.port,
        user: t.user.clone(),
        password: t.password.clone(),
        database: t.database.clone(),
        sslmode: t.sslmode.clone(),
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "postgres",
            database: self.conn.database.clone(),
            endpoint: format!("{}:{}", self.conn.host, self.conn.port),
        }
    }

    async fn plan(&self) -> anyhow::Result<DumpPlan> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.plan_blocking())
            .await
            .context("source planning task")?
    }

    async fn privileges(&self) -> Option<anyhow::Result<String>> {
        let this = self.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let psql = pgtools::newest_psql(&pgtools::discover())?;
            privileges::check(&this.conn, &psql, this.globals, this.role_passwords)
        })
        .await;
        Some(checked.unwrap_or_else(|e| Err(anyhow::anyhow!("privilege check task: {e}"))))
    }
}
