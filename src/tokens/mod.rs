//! Where OAuth tokens live between runs, and how a rotated refresh token is
//! kept safe.
//!
//! Box refresh tokens are single-use: every refresh returns a new one and
//! revokes the old. Losing the new one (a pod replaced before it was written
//! back, two runs rotating at once) means a person must authorise again. So:
//! the store's writability is checked before refreshing, the new token is
//! persisted atomically before it is used, and a store that changed under us
//! (another run rotated) is re-read rather than refreshed again.

pub mod file;
pub mod kubernetes;

use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Box revokes a refresh token this many days after it was issued.
pub const REFRESH_TOKEN_DAYS: i64 = 60;

/// What a store holds. Unknown fields are ignored so other tools' extra
/// keys survive a read (they are not written back).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TokenSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// When the access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_token: Secret,
    /// When this refresh token was issued (Box revokes it 60 days later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_issued_at: Option<DateTime<Utc>>,
}

impl TokenSet {
    /// A usable access token that stays valid for at least `margin`.
    pub fn access_valid_for(
        &self,
        margin: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<&Secret> {
        match (&self.access_token, self.expires_at) {
            (Some(t), Some(exp)) if exp - margin > now && !t.is_empty() => Some(t),
            _ => None,
        }
    }

    /// The stored form: the secret values themselves (never logged).
    /// When Box revokes this refresh token if it is not used (60 days
    /// after it was issued); unknown for an imported token.
    pub fn refresh_token_expires_at(&self) -> Option<DateTime<Utc>> {
        self.refresh_token_issued_at
            .map(|at| at + chrono::Duration::days(REFRESH_TOKEN_DAYS))
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({
            "access_token": self.access_token.as_ref().map(|s| s.expose()),
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token.expose(),
            "refresh_token_issued_at": self.refresh_token_issued_at,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> anyhow::Result<TokenSet> {
        serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!("the stored token is not valid JSON of the expected shape: {e}")
        })
    }
}

/// A token as read, with the version it was read at (a content hash, a
/// Kubernetes resourceVersion) for conditional writes.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub token: TokenSet,
    pub version: String,
}

pub enum SaveOutcome {
    Saved,
    /// Someone wrote the store since `expected`: here is what it holds now.
    Conflict(Versioned),
}

/// Held while refreshing; dropping it releases the lock.
pub trait RefreshGuard: Send {}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// "file /state/box-token.json", "kubernetes secret ns/name key token".
    fn describe(&self) -> String;
    async fn load(&self) -> anyhow::Result<Versioned>;
    /// Fail now, before a refresh consumes the old token, if a new one could
    /// not be written back.
    async fn check_writable(&self) -> anyhow::Result<()>;
    /// Serialise refreshes where the store can (a file lock); stores that
    /// cannot rely on conditional writes.
    async fn lock(&self) -> anyhow::Result<Box<dyn RefreshGuard>>;
    /// Write `token` if the store still holds `expected`.
    async fn save(&self, token: &TokenSet, expected: &str) -> anyhow::Result<SaveOutcome>;
    /// Write `token` whatever the store holds (a person authorising).
    async fn put(&self, token: &TokenSet) -> anyhow::Result<()>;
}
