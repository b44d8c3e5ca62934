//! `type = "sqlite"` targets: a database file on this machine.

use crate::config::{RetentionConfig, RetryConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteTarget {
    pub name: String,
    /// The database file (relative paths: from the working directory).
    pub path: PathBuf,
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

impl SqliteTarget {
    /// Errors start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path: must not be empty".into());
        }
        Ok(())
    }
}
