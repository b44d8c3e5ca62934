//! The database engines, one folder each (config, tools, dump plan,
//! restore, verify). A source inspects its server (version, tools) and
//! returns the commands whose stdout is the dump; the pipeline runs them, so
//! every engine gets the same streaming, exit-status and signal handling,
//! and an inspector judges whether the bytes are a whole dump.
//!
//! Adding an engine: its folder, a line in [`from_config`] and
//! [`inspector`], its `TargetConfig` variant, the example config, the README.

pub mod mysql;
pub mod postgres;
pub mod sqlite;

/// How a dump's bytes are judged (complete or truncated, rows per table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Postgres(postgres::archive::DumpKind),
    Mysql,
    Sqlite,
}

/// Reads a dump's bytes as they stream past and says whether they are whole.
pub trait Inspector: std::io::Write + Send {
    fn finish(self: Box<Self>) -> Result<postgres::archive::DumpFacts, String>;
}

impl Inspector for postgres::archive::DumpInspector {
    fn finish(self: Box<Self>) -> Result<postgres::archive::DumpFacts, String> {
        postgres::archive::DumpInspector::finish(*self)
    }
}

impl Inspector for mysql::MysqlInspector {
    fn finish(self: Box<Self>) -> Result<postgres::archive::DumpFacts, String> {
        self.verdict().map(|()| Default::default())
    }
}

impl Inspector for sqlite::SqliteInspector {
    fn finish(self: Box<Self>) -> Result<postgres::archive::DumpFacts, String> {
        self.verdict().map(|()| Default::default())
    }
}

/// The inspector for a check.
pub fn inspector(check: Check) -> Box<dyn Inspector> {
    match check {
        Check::Postgres(kind) => Box::new(postgres::archive::DumpInspector::new(kind)),
        Check::Mysql => Box::<mysql::MysqlInspector>::default(),
        Check::Sqlite => Box::<sqlite::SqliteInspector>::default(),
    }
}

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
    pub check: Option<Check>,
}

#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub server_version: String,
    pub tool: String,
    pub tool_version: String,
    pub format: &'static str,
    pub streams: Vec<DumpStream>,
    /// Engine-specific properties of the database a restore recreates
    /// (PostgreSQL: [`postgres::database::PgDatabaseProps`]), for the manifest.
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
        crate::config::TargetConfig::Mysql(m) => Box::new(mysql::MysqlSource::from_config(m)),
        crate::config::TargetConfig::Sqlite(s) => Box::new(sqlite::SqliteSource::from_config(s)),
    }
}
