//! `type = "mysql"` targets: MariaDB and MySQL servers.

use crate::config::{RetentionConfig, RetryConfig, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlTarget {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    /// Reaches the client tools through a 0600 option file, never argv or
    /// the deprecated MYSQL_PWD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The database to dump; or `databases`, several, each its own dump in
    /// the one backup; or `all = true`: every database but the server's own
    /// (information_schema, mysql, performance_schema, sys), as found at
    /// each backup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<String>,
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    3306
}
fn default_user() -> String {
    "root".into()
}

impl MysqlTarget {
    /// Errors start with the key; a password_file is read here.
    pub fn resolve(&mut self, base: &std::path::Path) -> Result<(), String> {
        let forms = [
            !self.database.is_empty(),
            !self.databases.is_empty(),
            self.all,
        ];
        if forms.iter().filter(|&&f| f).count() != 1 {
            return Err(
                "database: name one database, or several with `databases = [...]`, or set \
                 `all = true` (exactly one of the three)"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            if db.is_empty() {
                return Err(format!("databases[{i}]: must not be empty"));
            }
            if !seen.insert(db) {
                return Err(format!("databases[{i}]: `{db}` is named twice"));
            }
        }
        if self.host.is_empty() {
            return Err("host: must not be empty".into());
        }
        crate::config::resolve_password(&mut self.password, self.password_file.as_deref(), base)
    }
}

/// Which databases a target dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    One(String),
    /// Several, each its own object in the backup.
    Listed(Vec<String>),
    /// Every database but the server's own, found at each backup.
    All,
}

impl MysqlTarget {
    pub fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else if !self.databases.is_empty() {
            Selection::Listed(self.databases.clone())
        } else {
            Selection::One(self.database.clone())
        }
    }
}
