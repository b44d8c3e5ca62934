//! The `[storage]` keys of this backend (and their checks), beside its code.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RcloneStorageConfig {
    /// `name:path` of a remote in the rclone config.
    pub remote: String,
    #[serde(default)]
    pub prefix: String,
    /// rclone.conf to use (its refreshed tokens are written back); rclone's
    /// own default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone_config: Option<PathBuf>,
    /// Or the rclone.conf in a Kubernetes Secret (written back likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone_config_secret: Option<RcloneConfigSecret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RcloneConfigSecret {
    pub name: String,
    #[serde(default = "default_rclone_key")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_rclone_key() -> String {
    "rclone.conf".into()
}

impl RcloneStorageConfig {
    /// Errors start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.remote.contains(':') {
            return Err(format!("remote: `{}` is not `name:path`", self.remote));
        }
        if self.rclone_config.is_some() && self.rclone_config_secret.is_some() {
            return Err(
                "rclone_config: set rclone_config or rclone_config_secret, not both".into(),
            );
        }
        Ok(())
    }
}
