//! Access tokens for the Box API: Client Credentials Grant, or user OAuth
//! with single-use refresh tokens kept in a token store.
//!
//! The OAuth refresh, in order: reuse a stored access token valid for 5 more
//! minutes; check the store is writable; take the store's lock and re-read
//! (another process may have just rotated); refresh; persist the new token
//! (conditional write, retried) before using it. `invalid_grant` after the
//! store changed under us means another run rotated first: use its token.
//! `invalid_grant` otherwise needs a person (exit code 3).

use crate::config::boxcom::{BoxAuth, SubjectType, TokenStoreConfig};
use crate::secret::Secret;
use crate::tokens::{file::FileStore, SaveOutcome, TokenSet, TokenStore, Versioned};
use chrono::{Duration, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Refresh when the access token expires within this.
const MARGIN_MINUTES: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A person must authorise again (exit code 3).
    #[error("{0}")]
    NeedsPerson(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: String,
}

enum Method {
    Oauth {
        client_id: String,
        client_secret: Secret,
        store: Box<dyn TokenStore>,
    },
    Ccg {
        client_id: String,
        client_secret: Secret,
        subject_type: SubjectType,
        subject_id: String,
    },
}

pub struct BoxAuthProvider {
    http: reqwest::Client,
    token_url: String,
    method: Method,
    /// The access token in use and when it expires.
    current: Mutex<Option<(Secret, chrono::DateTime<Utc>)>>,
}

pub fn store_from_config(c: &TokenStoreConfig) -> Box<dyn TokenStore> {
    match c {
        TokenStoreConfig::File(f) => Box::new(FileStore::new(&f.path)),
        TokenStoreConfig::KubernetesSecret(k) => Box::new(
            crate::tokens::kubernetes::SecretStore::new(&k.name, &k.key, k.namespace.as_deref()),
        ),
    }
}

impl BoxAuthProvider {
    pub fn new(auth: &BoxAuth, token_url: &str, http: reqwest::Client) -> BoxAuthProvider {
        let method = match auth {
            BoxAuth::Oauth(o) => Method::Oauth {
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                store: store_from_config(&o.token_store),
            },
            BoxAuth::Ccg(c) => Method::Ccg {
                client_id: c.client_id.clone(),
                client_secret: c.client_secret.clone(),
                subject_type: c.subject_type,
                subject_id: c.subject_id.clone(),
            },
        };
        BoxAuthProvider {
            http,
            token_url: token_url.to_string(),
            method,
            current: Mutex::new(None),
        }
    }

    /// When the stored refresh token will be revoked unless a run uses it
    /// (OAuth only: CCG has no refresh token). For the metrics: an alert
    /// fires while there is still time to run a backup or log in again.
    pub async fn refresh_token_expires_at(&self) -> Option<chrono::DateTime<Utc>> {
        let Method::Oauth { store, .. } = &self.method else {
            return None;
        };
        match store.load().await {
            Ok(stored) => stored.token.refresh_token_expires_at(),
            Err(e) => {
                tracing::warn!(store = %store.describe(), "cannot read the token store for its expiry: {e:#}");
                None
            }
        }
    }

    /// A valid access token; `stale` is one the API just rejected (401).
    pub async fn access_token(&self, stale: Option<&Secret>) -> Result<Secret, AuthError> {
        let mut current = self.current.lock().await;
        let now = Utc::now();
        if let Some((t, exp)) = current.as_ref() {
            if *exp - Duration::minutes(MARGIN_MINUTES) > now && Some(t) != stale {
                return Ok(t.clone());
            }
        }
        let (token, expires) = match &self.method {
            Method::Ccg {
                client_id,
                client_secret,
                subject_type,
                subject_id,
            } => {
                let subject = match subject_type {
                    SubjectType::Enterprise => "enterprise",
                    SubjectType::User => "user",
                };
                let r = self
                    .token_request(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", client_secret.expose()),
                        ("box_subject_type", subject),
                        ("box_subject_id", subject_id),
                    ])
                    .await?;
                (
                    Secret::new(r.access_token),
                    now + Duration::seconds(r.expires_in),
                )
            }
            Method::Oauth {
                client_id,
                client_secret,
                store,
            } => {
                self.oauth_token(client_id, client_secret, store.as_ref(), stale)
                    .await?
            }
        };
        *current = Some((token.clone(), expires));
        Ok(token)
    }

    async fn oauth_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
        store: &dyn TokenStore,
        stale: Option<&Secret>,
    ) -> Result<(Secret, chrono::DateTime<Utc>), AuthError> {
        let margin = Duration::minutes(MARGIN_MINUTES);
        let usable = |v: &Versioned| -> Option<(Secret, chrono::DateTime<Utc>)> {
            let t = v.token.access_valid_for(margin, Utc::now())?;
            (Some(t) != stale)
                .then(|| (t.clone(), v.token.expires_at.expect("valid implies expiry")))
        };
        let stored = store
            .load()
            .await
            .map_err(|e| needs_person(store, format!("{e:#}")))?;
        if let Some(ok) = usable(&stored) {
            return Ok(ok);
        }
        store.check_writable().await?;
        let _guard = store.lock().await?;
        let stored = store
            .load()
            .await
            .map_err(|e| needs_person(store, format!("{e:#}")))?;
        if let Some(ok) = usable(&stored) {
            return Ok(ok); // rotated by another process while we waited
        }
        tracing::info!(store = %store.describe(), "refreshing the Box access token");
        let response = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
                ("refresh_token", stored.token.refresh_token.expose()),
            ])
            .await;
        let r = match response {
            Ok(r) => r,
            Err(AuthError::NeedsPerson(why)) => {
                // A run elsewhere (another pod sharing the store) may have
                // used this refresh token a moment ago: give its write-back
                // a moment to land, then use its token.
                for _ in 0..10 {
                    let again = store.load().await?;
                    if again.token.refresh_token != stored.token.refresh_token {
                        if let Some(ok) = usable(&again) {
                            tracing::info!("another run rotated the token; using theirs");
                            return Ok(ok);
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                return Err(needs_person(store, why));
            }
            Err(e) => return Err(e),
        };
        let now = Utc::now();
        let new = TokenSet {
            access_token: Some(Secret::new(r.access_token)),
            expires_at: Some(now + Duration::seconds(r.expires_in)),
            refresh_token: Secret::new(
                r.refresh_token
                    .ok_or_else(|| anyhow::anyhow!("Box returned no refresh token"))?,
            ),
            refresh_token_issued_at: Some(now),
        };
        self.persist(store, &new, &stored.version).await
    }

    /// Save the rotated token before it is used, retrying; on a conflict
    /// the other writer's token wins.
    async fn persist(
        &self,
        store: &dyn TokenStore,
        new: &TokenSet,
        expected: &str,
    ) -> Result<(Secret, chrono::DateTime<Utc>), AuthError> {
        let ours = || {
            (
                new.access_token.clone().expect("set"),
                new.expires_at.expect("set"),
            )
        };
        let mut last_error = None;
        for attempt in 1..=3 {
            match store.save(new, expected).await {
                Ok(SaveOutcome::Saved) => return Ok(ours()),
                Ok(SaveOutcome::Conflict(theirs)) => {
                    if let Some(t) = theirs
                        .token
                        .access_valid_for(Duration::minutes(MARGIN_MINUTES), Utc::now())
                    {
                        tracing::warn!(
                            "the token store changed during the refresh; using the stored token"
                        );
                        return Ok((
                            t.clone(),
                            theirs.token.expires_at.expect("valid implies expiry"),
                        ));
                    }
                    last_error = Some(anyhow::anyhow!(
                        "the token store changed during the refresh"
                    ));
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
        tracing::error!(
            store = %store.describe(),
            "COULD NOT SAVE THE ROTATED BOX TOKEN: the stored refresh token is now stale and the next run \
             will need `backstop auth box login`: {:#}",
            last_error.expect("set on every failed try")
        );
        // The new token still works for this run.
        Ok(ours())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenResponse, AuthError> {
        let resp = self
            .http
            .post(&self.token_url)
            .form(form)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("Box token endpoint: {}", crate::http::cause(e)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&body).map_err(|e| {
                AuthError::Other(anyhow::anyhow!(
                    "Box token endpoint: unexpected answer: {e}"
                ))
            });
        }
        let err: Option<TokenError> = serde_json::from_str(&body).ok();
        match err {
            Some(e) if status == reqwest::StatusCode::BAD_REQUEST && e.error == "invalid_grant" => {
                Err(AuthError::NeedsPerson(format!(
                    "Box rejected the grant: invalid_grant ({})",
                    e.error_description
                )))
            }
            Some(e) if matches!(e.error.as_str(), "invalid_client" | "unauthorized_client") => {
                Err(AuthError::NeedsPerson(format!(
                    "Box rejected the client credentials: {} ({})",
                    e.error, e.error_description
                )))
            }
            Some(e) => Err(anyhow::anyhow!(
                "Box token endpoint: HTTP {status} {} {}",
                e.error,
                e.error_description
            )
            .into()),
            None => Err(anyhow::anyhow!("Box token endpoint: HTTP {status}").into()),
        }
    }

    /// The authorization-code exchange of `auth box login`, through the same
    /// token request (and error handling) as every refresh.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, AuthError> {
        let Method::Oauth {
            client_id,
            client_secret,
            ..
        } = &self.method
        else {
            return Err(anyhow::anyhow!("Box login needs method = \"oauth\"").into());
        };
        let r = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
                ("redirect_uri", redirect_uri),
            ])
            .await?;
        let now = Utc::now();
        Ok(TokenSet {
            access_token: Some(Secret::new(r.access_token)),
            expires_at: Some(now + Duration::seconds(r.expires_in)),
            refresh_token: Secret::new(
                r.refresh_token
                    .ok_or_else(|| anyhow::anyhow!("Box returned no refresh token"))?,
            ),
            refresh_token_issued_at: Some(now),
        })
    }

    /// For `auth status`: the stored token, if this is OAuth.
    pub fn store(&self) -> Option<&dyn TokenStore> {
        match &self.method {
            Method::Oauth { store, .. } => Some(store.as_ref()),
            Method::Ccg { .. } => None,
        }
    }
}

fn needs_person(store: &dyn TokenStore, why: String) -> AuthError {
    AuthError::NeedsPerson(format!(
        "{why}. The Box refresh token in {} is no longer valid (used, revoked, or older than 60 days): \
         run `backstop auth box login --config …` (or `backstop auth box import-rclone`) to authorise again",
        store.describe()
    ))
}
