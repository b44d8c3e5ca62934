//! Where dumps come from. A source inspects its server (version, tools) and
//! returns the commands whose stdout is the dump; the pipeline runs them, so
//! every source gets the same streaming, exit-status and signal handling.

pub mod pg_archive;
pub mod pg_database;
pub mod pg_globals;
pub mod pg_plain_filter;
pub mod pgtools;
pub mod postgres;

use crate::process::ChildCommand;
use async_trait::async_trait;

/// What a source is, for logs and manifests; never holds a secret.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub kind: &'static str,
    pub database: String,
    pub endpoint: String,
}

/// One stream of a backup: the database itself, or the cluster globals.
#[derive(Debug, Clone)]
pub struct DumpStream {
    pub role: &'static str,
    /// Extension before the codec's (`dump`, `sql`, `globals.sql`).
    pub extension: &'static str,
    pub command: ChildCommand,
    /// How to judge the bytes: complete or truncated, and rows per table.
    pub check: Option<pg_archive::DumpKind>,
}

#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub server_version: String,
    pub tool: String,
    pub tool_version: String,
    pub format: &'static str,
    pub streams: Vec<DumpStream>,
    /// Engine-specific properties of the database a restore recreates
    /// (PostgreSQL: [`pg_database::PgDatabaseProps`]), for the manifest.
    pub database_properties: Option<serde_json::Value>,
}

#[async_trait]
pub trait Source: Send + Sync {
    fn info(&self) -> SourceInfo;
    /// Connect, find the server version, choose the tools. Reads no data.
    async fn plan(&self) -> anyhow::Result<DumpPlan>;
}

/// The source a target config describes.
pub fn from_config(target: &crate::config::TargetConfig) -> Box<dyn Source> {
    match target {
        crate::config::TargetConfig::Postgres(p) => {
            Box::new(postgres::PostgresSource::from_config(p))
        }
    }
}
