//! `type = "postgres"` targets.

use crate::config::{resolve_password, RetentionConfig, RetryConfig, Secret};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PgFormat {
    Custom,
    Plain,
}

impl PgFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PgFormat::Custom => "custom",
            PgFormat::Plain => "plain",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    pub name: String,
    #[serde(default = "default_pg_host")]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    #[serde(default = "default_pg_user")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    pub database: String,
    #[serde(default = "default_pg_format")]
    pub format: PgFormat,
    #[serde(default)]
    pub globals: bool,
    /// With globals: dump the roles' passwords too (needs a superuser);
    /// false adds `--no-role-passwords`.
    #[serde(default = "default_true")]
    pub role_passwords: bool,
    /// Empty means: choose the pg_dump that matches the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_path: Option<PathBuf>,
    /// libpq `sslmode` (disable, prefer, require, verify-ca, verify-full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
    /// Replaces the top-level `[retention]` for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    /// Replaces the top-level `[retry]` for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// The storages this target's backups are copied to; default: every
    /// storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_pg_host() -> String {
    "localhost".into()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_pg_user() -> String {
    "postgres".into()
}
fn default_pg_format() -> PgFormat {
    PgFormat::Custom
}

const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl PostgresTarget {
    /// Errors start with the key; a password_file is read here.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        if self.database.is_empty() {
            return Err("database: must not be empty".into());
        }
        if self.host.is_empty() {
            return Err("host: must not be empty".into());
        }
        if let Some(mode) = &self.sslmode {
            if !SSLMODES.contains(&mode.as_str()) {
                return Err(format!(
                    "sslmode: `{mode}` is not one of {}",
                    SSLMODES.join(", ")
                ));
            }
        }
        if self
            .pg_dump_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.pg_dump_path = None;
        }
        if let Some(p) = &self.pg_dump_path {
            if !p.is_file() {
                return Err(format!(
                    "pg_dump_path: {} does not exist or is not a file",
                    p.display()
                ));
            }
        }
        resolve_password(&mut self.password, self.password_file.as_deref(), base)
    }
}
