//! The `[storage]` keys of this backend (and their checks), beside its code.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStorageConfig {
    /// Directory that holds the backups; relative paths are taken from the
    /// working directory.
    pub path: PathBuf,
    #[serde(default)]
    pub prefix: String,
    /// Create `path` (0700) when it does not exist; otherwise a missing
    /// path is an error (a typo or an unmounted disk must not "succeed").
    #[serde(default)]
    pub create: bool,
}

impl LocalStorageConfig {
    /// Errors start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path: must not be empty".into());
        }
        Ok(())
    }
}
