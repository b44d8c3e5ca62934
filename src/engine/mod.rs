//! The database engines, one folder each (config, tools, dump plan,
//! restore, verify). A source inspects its server (version, tools) and
//! returns the commands whose stdout is the dump; the pipeline runs them, so
//! every engine gets the same streaming, exit-status and signal handling,
//! and an inspector judges whether the bytes are a whole dump. Restore and
//! verify go through a [`Destination`], which the URL of `--into` or
//! `--scratch` picks by its scheme.
//!
//! This file is the registry. Adding an engine: its folder, its variant in
//! [`TargetConfig`] (with its tag and its arm in `spec`), its [`Check`] and
//! the line in [`inspector`], its entry in [`ENGINES`]; then the example
//! config and the README.

pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod url;

/// How a dump's bytes are judged (complete or truncated, rows per table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Postgres(postgres::archive::DumpKind),
    Mysql,
    Sqlite,
    /// A pg_basebackup tar stream (point-in-time recovery).
    PgBase,
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
        mysql::MysqlInspector::finish(*self).map(|tables| postgres::archive::DumpFacts {
            tables,
            ..Default::default()
        })
    }
}

impl Inspector for crate::pitr::base_tar::BaseInspector {
    fn finish(self: Box<Self>) -> Result<postgres::archive::DumpFacts, String> {
        crate::pitr::base_tar::BaseInspector::finish(*self)
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
        Check::PgBase => Box::<crate::pitr::base_tar::BaseInspector>::default(),
    }
}

use crate::catalog::Layout;
use crate::config::{RetentionConfig, RetryConfig};
use crate::process::ChildCommand;
use crate::report::VerifySummary;
use crate::restore::{RestoreJob, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use async_trait::async_trait;
use serde::Serialize;

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
    /// `database`, `globals`, or `database:NAME` in a backup of several
    /// databases.
    pub role: String,
    /// Extension before the codec's (`dump`, `sql`, `globals.sql`).
    pub extension: String,
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
    /// For `backstop check`: whether the backup user may read everything
    /// a complete dump holds (Err names what is missing and the GRANT that
    /// gives it); None where there is nothing to grant (SQLite).
    async fn privileges(&self) -> Option<anyhow::Result<String>> {
        None
    }
}

/// The source a target config describes.
pub fn from_config(target: &TargetConfig) -> Box<dyn Source> {
    target.spec().source()
}

/// One `[[targets]]` entry; `type` picks the engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    Postgres(postgres::config::PostgresTarget),
    Mysql(mysql::MysqlTarget),
    Sqlite(sqlite::SqliteTarget),
}

crate::config::tagged::tagged_enum!(TargetConfig, "target type", { "postgres" => Postgres, "mysql" => Mysql, "sqlite" => Sqlite });

impl TargetConfig {
    pub fn spec(&self) -> &dyn TargetSpec {
        match self {
            TargetConfig::Postgres(t) => t,
            TargetConfig::Mysql(t) => t,
            TargetConfig::Sqlite(t) => t,
        }
    }

    pub fn spec_mut(&mut self) -> &mut dyn TargetSpec {
        match self {
            TargetConfig::Postgres(t) => t,
            TargetConfig::Mysql(t) => t,
            TargetConfig::Sqlite(t) => t,
        }
    }

    pub fn name(&self) -> &str {
        self.spec().common().name
    }

    /// This target's own `retry`, if it has one.
    pub fn own_retry(&self) -> Option<&RetryConfig> {
        self.spec().common().retry
    }

    /// The storages this target names (empty: every storage).
    pub fn own_storages(&self) -> &[String] {
        self.spec().common().storages
    }

    /// This target's own `[targets.retention]`, if it has one.
    pub fn own_retention(&self) -> Option<&RetentionConfig> {
        self.spec().common().retention
    }

    pub fn engine(&self) -> &'static dyn Engine {
        self.spec().engine()
    }
}

/// The keys every target has, whatever its engine.
pub struct TargetCommon<'a> {
    pub name: &'a str,
    /// Replaces the top-level `[retention]` for this target.
    pub retention: Option<&'a RetentionConfig>,
    /// Replaces the top-level `[retry]` for this target.
    pub retry: Option<&'a RetryConfig>,
    /// The storages this target's backups are copied to (empty: all).
    pub storages: &'a [String],
}

/// `TargetSpec::common` for a target struct with the common keys as
/// fields of the same names (serde cannot flatten them into a struct that
/// denies unknown keys).
macro_rules! common_keys {
    () => {
        fn common(&self) -> $crate::engine::TargetCommon<'_> {
            $crate::engine::TargetCommon {
                name: &self.name,
                retention: self.retention.as_ref(),
                retry: self.retry.as_ref(),
                storages: &self.storages,
            }
        }
    };
}
pub(crate) use common_keys;

/// What the rest of backstop asks of an engine's target config.
pub trait TargetSpec {
    fn common(&self) -> TargetCommon<'_>;
    fn engine(&self) -> &'static dyn Engine;
    fn source(&self) -> Box<dyn Source>;
    /// Check the engine's own keys and read their files (a password_file);
    /// errors start with the key, relative paths are relative to `base`.
    fn resolve(&mut self, base: &std::path::Path) -> Result<(), String>;
}

/// Every engine, for restore and verify destinations.
pub static ENGINES: &[&dyn Engine] = &[&postgres::Postgres, &mysql::Mysql, &sqlite::Sqlite];

/// An engine as restore and verify see it.
pub trait Engine: Sync {
    /// The target `type`, and a manifest's `source_type`.
    fn kind(&self) -> &'static str;
    /// Its name for people ("MariaDB/MySQL").
    fn label(&self) -> &'static str;
    /// The URL `--into` and `--scratch` take, for help and errors.
    fn url_form(&self) -> &'static str;
    /// A destination from a URL of this engine's scheme; None for another
    /// scheme. Errors never echo the URL (it may hold a password).
    fn destination(&self, url: &str) -> Option<anyhow::Result<Box<dyn Destination>>>;
    /// Where verify restores when no `--scratch` of this engine is given;
    /// None when one is needed.
    fn default_scratch(&self) -> Option<Box<dyn Destination>> {
        None
    }
    /// `backstop init`: the `[[targets]]` keys after `name` and `type` for
    /// the database a URL of this engine names, and a name for the target.
    /// A password in the URL is never written: it becomes
    /// `${DB_PASSWORD}`.
    fn starter(&self, url: &str) -> anyhow::Result<Starter>;
    /// Run a helper of this engine in this process (`backstop internal
    /// KIND ARGS…`, started by the engine's dump plan); None when `args`
    /// name none.
    fn helper(&self, _args: &[std::ffi::OsString]) -> Option<anyhow::Result<()>> {
        None
    }
    /// The restore options (by flag) this engine honours; the others are
    /// refused by name before anything is read.
    fn restore_options(&self) -> &'static [&'static str] {
        &[]
    }
    /// What to check when connecting or dumping failed with `message`:
    /// each engine's hints belong to its own failures.
    fn connect_hint(&self, _message: &str) -> Option<&'static str> {
        None
    }
}

/// A starter config's target, from `backstop init`.
pub struct Starter {
    /// What the target is called, before it is made a valid name.
    pub name: String,
    /// TOML lines, each ending in a newline.
    pub keys: String,
}

impl Starter {
    /// A target on a database server: host (overridable through
    /// `DB_HOST`), port, user, the password as `${DB_PASSWORD}` when the
    /// URL had one (never the password itself), the database.
    pub fn server(url: &str, host: &str, port: u16, user: &str, database: &str) -> Starter {
        let password = match ::url::Url::parse(url).is_ok_and(|u| u.password().is_some()) {
            true => "password = \"${DB_PASSWORD}\"        # from the environment; or password_file = \"/run/secrets/db\"\n",
            false => "# password = \"${DB_PASSWORD}\"      # or password_file = \"/run/secrets/db\"\n",
        };
        Starter {
            name: database.to_string(),
            keys: format!(
                "host = \"${{DB_HOST:-{host}}}\"          # DB_HOST overrides, e.g. 127.0.0.1 through kubectl port-forward\n\
                 port = {port}\nuser = {}\n{password}database = {}\n",
                toml::Value::from(user),
                toml::Value::from(database),
            ),
        }
    }
}

/// A place a backup of one engine is restored into: a server and database
/// name, or a path.
#[async_trait]
pub trait Destination: Send + Sync {
    fn engine(&self) -> &'static dyn Engine;
    /// Restore a backup of `job.target` into this destination, all or
    /// nothing.
    async fn restore(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        job: RestoreJob,
    ) -> anyhow::Result<RestoreOutcome>;
    /// Restore a dump file backstop did not write (`restore --file`: the
    /// object at `key`, its codec and format read from its bytes), all or
    /// nothing.
    async fn restore_file(
        &self,
        _storage: &dyn Storage,
        _key: &str,
        _job: RestoreJob,
    ) -> anyhow::Result<RestoreOutcome> {
        Err(crate::error::usage(format!(
            "--file is not supported for {} restores",
            self.engine().label()
        )))
    }
    /// Restore into a new scratch copy here, read all of it through, and
    /// remove it (unless asked to keep it).
    async fn verify(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        v: VerifyRequest<'_>,
    ) -> anyhow::Result<(RestoreOutcome, VerifySummary)>;
}

/// The destination a URL names, by its scheme.
pub fn destination(url: &str) -> anyhow::Result<Box<dyn Destination>> {
    if let Some(found) = ENGINES.iter().find_map(|e| e.destination(url)) {
        return found;
    }
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    Err(crate::error::usage(format!(
        "`{scheme}:` URLs name no database backstop restores into; use one of: {}",
        ENGINES
            .iter()
            .map(|e| e.url_form())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The engine of a target `type` / manifest `source_type`.
pub fn engine(kind: &str) -> Option<&'static dyn Engine> {
    ENGINES.iter().copied().find(|e| e.kind() == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_engine() {
        for (url, kind) in [
            ("postgres://u@h:5432/db", "postgres"),
            ("postgresql://u@h/db", "postgres"),
            ("mysql://u@h:3306/db", "mysql"),
            ("mariadb://u@h/db", "mysql"),
            ("sqlite:///tmp/app.db", "sqlite"),
        ] {
            let d = destination(url).unwrap_or_else(|e| panic!("{url}: {e:#}"));
            assert_eq!(d.engine().kind(), kind, "{url}");
            assert_eq!(engine(kind).map(|e| e.kind()), Some(kind));
        }
    }

    #[test]
    fn an_unknown_scheme_lists_the_forms_and_never_echoes_the_url() {
        let Err(err) = destination("oracle://sys:hunter2@h/db") else {
            panic!("an oracle:// URL was taken")
        };
        let text = format!("{err:#}");
        assert!(!text.contains("hunter2"), "{text}");
        for e in ENGINES {
            assert!(text.contains(e.url_form()), "{text}");
        }
        assert_eq!(
            crate::error::exit_kind_of(&err),
            crate::error::ExitKind::Usage
        );
        let Err(err) = destination("mysql://u:hunter2@h/") else {
            panic!("a URL without a database was taken")
        };
        assert!(!format!("{err:#}").contains("hunter2"));
    }

    #[test]
    fn a_starter_target_never_holds_the_urls_password() {
        for url in [
            "postgres://app:hunter2@db:5432/shop",
            "mysql://app:hunter2@db:3306/shop",
        ] {
            let engine = destination(url)
                .unwrap_or_else(|e| panic!("{e:#}"))
                .engine();
            let s = engine.starter(url).unwrap();
            assert!(!s.keys.contains("hunter2"), "{}", s.keys);
            assert!(
                s.keys.contains("password = \"${DB_PASSWORD}\""),
                "{}",
                s.keys
            );
            assert_eq!(s.name, "shop");
        }
        let s = engine("sqlite")
            .unwrap()
            .starter("sqlite:///data/app.db")
            .unwrap();
        assert_eq!(
            (s.name.as_str(), s.keys.as_str()),
            ("app", "path = \"/data/app.db\"\n")
        );
    }

    #[test]
    fn every_engine_has_a_target_type_and_a_url() {
        let kinds: Vec<_> = ENGINES.iter().map(|e| e.kind()).collect();
        let mut unique = kinds.clone();
        unique.sort();
        unique.dedup();
        unique.sort_by_key(|k| kinds.iter().position(|x| x == k));
        assert_eq!(kinds, unique);
        let only_sqlite_needs_no_server: Vec<_> = ENGINES
            .iter()
            .filter(|e| e.default_scratch().is_some())
            .map(|e| e.kind())
            .collect();
        assert_eq!(only_sqlite_needs_no_server, ["sqlite"]);
    }
}
