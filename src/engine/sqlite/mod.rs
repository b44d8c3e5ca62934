//! SQLite: a consistent online copy of a live database file (the SQLite
//! online backup API, in one step: one read transaction, so writers in WAL
//! mode go on and the copy is a single point in time). The stored object is
//! the database file itself, compressed: `zstd -dc OBJECT > app.db`.
//!
//! The copy is made by `backstop internal sqlite snapshot`, a child process
//! like pg_dump, so the pipeline treats every engine alike: its exit status,
//! its stderr, a signal kills it, and the bytes are checked to be whole.

mod check;
mod config;
mod engine;
pub mod restore;
pub mod snapshot;

pub use check::SqliteInspector;
pub use config::SqliteTarget;

pub use engine::Sqlite;

use super::{Check, DumpPlan, DumpStream, Source, SourceInfo};
use crate::process::ChildCommand;
use anyhow::Context;
use async_trait::async_trait;
use std::path::PathBuf;

pub struct SqliteSource {
    path: PathBuf,
}

impl SqliteSource {
    pub fn from_config(t: &SqliteTarget) -> Self {
        SqliteSource {
            path: t.path.clone(),
        }
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "sqlite",
            database: self.path.display().to_string(),
            endpoint: "local file".into(),
        }
    }

    async fn plan(&self) -> anyhow::Result<DumpPlan> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || snapshot::probe(&path))
            .await
            .context("sqlite planning task")??;
        let exe = std::env::current_exe().context("finding the backstop binary")?;
        Ok(DumpPlan {
            server_version: format!("SQLite {}", rusqlite::version()),
            tool: "backstop sqlite snapshot".into(),
            tool_version: rusqlite::version().to_string(),
            format: "sqlite",
            streams: vec![DumpStream {
                role: "database".into(),
                extension: "db".into(),
                command: ChildCommand::new(exe)
                    .arg("internal")
                    .arg("sqlite")
                    .arg("snapshot")
                    .arg(&self.path),
                check: Some(Check::Sqlite),
            }],
            database_properties: None,
        })
    }
}
