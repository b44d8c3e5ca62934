//! `[storage] type = "box"` and its `[storage.auth]`.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoxStorageConfig {
    /// Folder path under `root_folder_id` ("a/b"); each level is created
    /// when missing.
    pub folder: String,
    #[serde(default = "default_root")]
    pub root_folder_id: String,
    #[serde(default)]
    pub prefix: String,
    /// Where the compressed stream is staged: Box needs the size up front.
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    #[serde(default = "default_api")]
    pub api_url: String,
    #[serde(default = "default_upload")]
    pub upload_url: String,
    #[serde(default = "default_token")]
    pub token_url: String,
    /// Where `backstop auth box login` sends the person to authorise.
    #[serde(default = "default_authorize")]
    pub authorize_url: String,
    pub auth: BoxAuth,
}

fn default_root() -> String {
    "0".into()
}
fn default_spool() -> PathBuf {
    std::env::temp_dir()
}
fn default_api() -> String {
    "https://api.box.com/2.0".into()
}
fn default_upload() -> String {
    "https://upload.box.com/api/2.0".into()
}
fn default_authorize() -> String {
    "https://account.box.com/api/oauth2/authorize".into()
}
fn default_token() -> String {
    "https://api.box.com/oauth2/token".into()
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum BoxAuth {
    /// User OAuth 2.0: refresh tokens rotate and live in a token store.
    Oauth(BoxOauth),
    /// Client Credentials Grant: no refresh token at all (recommended).
    Ccg(BoxCcg),
}

tagged_enum!(BoxAuth, "method", "Box auth method", { "oauth" => Oauth, "ccg" => Ccg });

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoxOauth {
    pub client_id: String,
    pub client_secret: Secret,
    pub token_store: TokenStoreConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    Enterprise,
    User,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoxCcg {
    pub client_id: String,
    pub client_secret: Secret,
    pub subject_type: SubjectType,
    pub subject_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TokenStoreConfig {
    File(FileTokenStore),
    KubernetesSecret(SecretTokenStore),
}

tagged_enum!(TokenStoreConfig, "token store type", { "file" => File, "kubernetes-secret" => KubernetesSecret });

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretTokenStore {
    pub name: String,
    #[serde(default = "default_secret_key")]
    pub key: String,
    /// Default: the pod's namespace (or the KUBECONFIG context's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_secret_key() -> String {
    "token".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileTokenStore {
    pub path: PathBuf,
}

pub fn validate(b: &BoxStorageConfig) -> Result<(), String> {
    if b.folder.trim_matches('/').is_empty() {
        return Err("folder: must name a folder under root_folder_id".into());
    }
    for (key, url) in [
        ("api_url", &b.api_url),
        ("upload_url", &b.upload_url),
        ("token_url", &b.token_url),
    ] {
        url::Url::parse(url).map_err(|e| format!("{key}: `{url}` is not a URL: {e}"))?;
    }
    let (id, secret) = match &b.auth {
        BoxAuth::Oauth(o) => (&o.client_id, &o.client_secret),
        BoxAuth::Ccg(c) => (&c.client_id, &c.client_secret),
    };
    if id.is_empty() || secret.is_empty() {
        return Err("auth: client_id and client_secret must not be empty".into());
    }
    Ok(())
}
