//! The `[storage]` keys of this backend (and their checks), beside its code.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3StorageConfig {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// For S3-compatible services; AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`); default: on when an
    /// endpoint is set, off for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Both unset: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and
    /// AWS_SESSION_TOKEN) from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// A request that receives nothing for this long is stalled: it is
    /// dropped and retried.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: crate::config::HumanDuration,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_idle_timeout() -> crate::config::HumanDuration {
    crate::config::HumanDuration(crate::http::IDLE_TIMEOUT)
}

impl S3StorageConfig {
    /// Errors start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("bucket: must not be empty".into());
        }
        if let Some(e) = &self.endpoint {
            let ok = url::Url::parse(e)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if ok.is_none() {
                return Err(format!(
                    "endpoint: `{e}` is not an http:// or https:// URL with a host"
                ));
            }
        }
        if self.idle_timeout.0 < std::time::Duration::from_secs(1) {
            return Err("idle_timeout: must be at least 1s".into());
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(
                "access_key_id: set both access_key_id and secret_access_key, or neither".into(),
            );
        }
        Ok(())
    }
}
