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
    /// The database to dump.
    pub database: String,
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
        if self.database.is_empty() {
            return Err("database: must not be empty".into());
        }
        if self.host.is_empty() {
            return Err("host: must not be empty".into());
        }
        crate::config::resolve_password(&mut self.password, self.password_file.as_deref(), base)
    }
}
