//! `backstop auth`: put a Box token where backstop keeps it (replacing the
//! seed's rclone-setup.sh + PVC), and show its state without printing it.

use super::ConfigArg;
use crate::config::boxcom::{BoxAuth, BoxOauth, BoxStorageConfig};
use crate::config::{Secret, StorageConfig};
use crate::error::{usage, ExitKind};
use crate::storage::boxcom::auth::store_from_config;
use crate::tokens::{file::FileStore, kubernetes::SecretStore, TokenSet, TokenStore};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Box OAuth tokens.
    #[command(subcommand)]
    Box(BoxCommand),
    /// Which method and token store are configured, when the access token
    /// expires and how old the refresh token is (never the tokens).
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum BoxCommand {
    /// Authorise in a browser (OAuth authorization-code flow) and store the
    /// token.
    Login {
        #[command(flatten)]
        config: ConfigArg,
        /// Local port for the redirect (register http://127.0.0.1:PORT/callback
        /// as a redirect URI of the Box app).
        #[arg(long, default_value_t = 8085)]
        port: u16,
        #[command(flatten)]
        target: StoreOverride,
    },
    /// Copy the token (and nothing else) from an rclone Box remote.
    ImportRclone {
        #[command(flatten)]
        config: ConfigArg,
        /// rclone's config file.
        #[arg(long, default_value = "~/.config/rclone/rclone.conf")]
        rclone_config: String,
        /// The remote's name in it.
        #[arg(long, default_value = "box")]
        remote: String,
        #[command(flatten)]
        target: StoreOverride,
    },
}

#[derive(Debug, Args)]
pub struct StoreOverride {
    /// Write the token to this file instead of the configured store.
    #[arg(long, conflicts_with = "to_secret")]
    to_file: Option<PathBuf>,
    /// Write the token to this Kubernetes Secret (key "token", current
    /// namespace) instead of the configured store; created if missing.
    #[arg(long)]
    to_secret: Option<String>,
}

/// The config's Box storage (there must be exactly one).
fn box_config(config: &crate::config::Config) -> anyhow::Result<&BoxStorageConfig> {
    let boxes: Vec<&BoxStorageConfig> = config
        .storages
        .values()
        .filter_map(|e| match &e.storage {
            StorageConfig::Box(b) => Some(b),
            _ => None,
        })
        .collect();
    match boxes.as_slice() {
        [one] => Ok(one),
        [] => Err(usage("the config has no storage with type = \"box\"")),
        _ => Err(usage(
            "the config has several Box storages; give each its own config file for `auth box`",
        )),
    }
}

fn oauth(b: &BoxStorageConfig) -> anyhow::Result<&BoxOauth> {
    match &b.auth {
        BoxAuth::Oauth(o) => Ok(o),
        BoxAuth::Ccg(_) => Err(usage(
            "storage.auth.method is \"ccg\": client credentials need no stored token",
        )),
    }
}

fn target_store(o: &BoxOauth, over: &StoreOverride) -> Box<dyn TokenStore> {
    match (&over.to_file, &over.to_secret) {
        (Some(p), _) => Box::new(FileStore::new(p)),
        (None, Some(name)) => Box::new(SecretStore::new(name, "token", None)),
        _ => store_from_config(&o.token_store),
    }
}

pub async fn run(cmd: AuthCommand) -> anyhow::Result<ExitKind> {
    match cmd {
        AuthCommand::Status { config } => status(config).await,
        AuthCommand::Box(BoxCommand::ImportRclone {
            config,
            rclone_config,
            remote,
            target,
        }) => {
            let cfg = config.load()?;
            let b = box_config(&cfg)?;
            let o = oauth(b)?;
            let path = expand_home(&rclone_config);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            let (token, client_id) = from_rclone(&text, &remote)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            // A Box refresh token can only be refreshed by the app it was
            // issued to. Regression: a remote made with rclone's built-in
            // app (no client_id line, what `rclone config` does by default)
            // was imported silently, and the first refresh failed at 2 AM.
            let ways_forward = "Either keep rclone: `type = \"rclone\"` storage with the rclone config in a \
                 Secret (`rclone_config_secret`), which backstop writes back safely when rclone refreshes; \
                 or create a Box app (OAuth 2.0 with user authentication) and run `backstop auth box login`";
            match client_id {
                None => {
                    return Err(usage(format!(
                        "rclone remote `{remote}` was authorised with rclone's built-in Box app (it has no client_id), \
                         so its refresh token cannot be refreshed with the app in the config ({}). {ways_forward}.",
                        o.client_id
                    )))
                }
                Some(id) if id != o.client_id => {
                    return Err(usage(format!(
                        "rclone remote `{remote}` was authorised with another Box app (client_id {id}, the config has {}); \
                         its refresh token only works with that app. {ways_forward}.",
                        o.client_id
                    )))
                }
                Some(_) => {}
            }
            let store = target_store(o, &target);
            store.put(&token).await?;
            crate::outln!(
                "imported the refresh token of rclone remote `{remote}` into {}",
                store.describe()
            );
            crate::outln!(
                "IMPORTANT: Box refresh tokens are single-use. The rclone remote `{remote}` still holds the same \
                 token: do not use that remote any more (its next refresh would revoke backstop's), or re-authorise \
                 it with `rclone config reconnect {remote}:` so the two no longer share one."
            );
            Ok(ExitKind::Success)
        }
        AuthCommand::Box(BoxCommand::Login {
            config,
            port,
            target,
        }) => {
            let cfg = config.load()?;
            let b = box_config(&cfg)?;
            let o = oauth(b)?;
            let store = target_store(o, &target);
            let token = login(b, o, port).await?;
            store.put(&token).await?;
            crate::outln!("authorised; the token is stored in {}", store.describe());
            Ok(ExitKind::Success)
        }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// rclone's INI: `[remote]` with `type = box` and `token = {json}`.
pub fn from_rclone(text: &str, remote: &str) -> Result<(TokenSet, Option<String>), String> {
    let mut in_section = false;
    let mut values = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            in_section = &line[1..line.len() - 1] == remote;
        } else if in_section {
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    if values.is_empty() {
        return Err(format!("no remote `[{remote}]`"));
    }
    if values.get("type").map(String::as_str) != Some("box") {
        return Err(format!("remote `{remote}` is not of type box"));
    }
    let raw = values
        .get("token")
        .ok_or_else(|| format!("remote `{remote}` has no token"))?;
    #[derive(serde::Deserialize)]
    struct RcloneToken {
        access_token: Option<String>,
        refresh_token: String,
        expiry: Option<DateTime<Utc>>,
    }
    let t: RcloneToken = serde_json::from_str(raw)
        .map_err(|e| format!("remote `{remote}`: token is not rclone's JSON: {e}"))?;
    Ok((
        TokenSet {
            access_token: t.access_token.map(Secret::new),
            expires_at: t.expiry,
            refresh_token: Secret::new(t.refresh_token),
            refresh_token_issued_at: None,
        },
        values.get("client_id").cloned(),
    ))
}

/// The authorization-code flow with a one-shot local redirect listener.
async fn login(b: &BoxStorageConfig, o: &BoxOauth, port: u16) -> anyhow::Result<TokenSet> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port} for the redirect"))?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    // The state guards the redirect against forged requests: it must be
    // unguessable, so it comes from the OS's CSPRNG.
    let mut state_bytes = [0u8; 16];
    getrandom::fill(&mut state_bytes)
        .map_err(|e| anyhow::anyhow!("no OS randomness for the OAuth state: {e}"))?;
    let state = hex::encode(state_bytes);
    let mut url = url::Url::parse(&b.authorize_url)?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &o.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", &state);
    crate::outln!("Open this URL in a browser and allow access (the code it returns lives 30 seconds):\n{url}");
    let code = loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = sock.read(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let params: std::collections::HashMap<String, String> =
            url::Url::parse(&format!("http://x{target}"))
                .map(|u| u.query_pairs().into_owned().collect())
                .unwrap_or_default();
        if let Some(e) = params.get("error") {
            let body = "Authorisation was refused.";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
            anyhow::bail!("Box refused the authorisation: {e}");
        }
        let code = match (params.get("state"), params.get("code")) {
            (Some(s), Some(c)) if *s == state => Some(c.clone()),
            _ => None,
        };
        let (status, body) = match code {
            Some(_) => (
                "200 OK",
                "backstop is authorised. You can close this window.",
            ),
            None => ("400 Bad Request", "Unexpected request."),
        };
        let reply = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        let _ = sock.write_all(reply.as_bytes()).await;
        if let Some(c) = code {
            break c;
        }
    };
    let provider = crate::storage::boxcom::auth::BoxAuthProvider::new(
        &BoxAuth::Oauth(o.clone()),
        &b.token_url,
        crate::http::client()?,
    );
    provider
        .exchange_code(&code, &redirect)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#} (the code lives 30 seconds: try again)"))
}

async fn status(config: ConfigArg) -> anyhow::Result<ExitKind> {
    let cfg = config.load()?;
    let b = box_config(&cfg)?;
    match &b.auth {
        BoxAuth::Ccg(c) => {
            crate::outln!(
                "method: ccg (client credentials grant), subject {:?} {}",
                c.subject_type,
                c.subject_id
            );
            crate::outln!("no refresh token: a new access token is asked for when needed");
            Ok(ExitKind::Success)
        }
        BoxAuth::Oauth(o) => {
            let store = store_from_config(&o.token_store);
            crate::outln!("method: oauth, token store: {}", store.describe());
            let stored = store.load().await?;
            let now = Utc::now();
            match stored.token.expires_at {
                Some(exp) if exp > now => crate::outln!(
                    "access token: valid until {} ({} min)",
                    exp.to_rfc3339(),
                    (exp - now).num_minutes()
                ),
                Some(exp) => crate::outln!(
                    "access token: expired at {} (refreshed on the next run)",
                    exp.to_rfc3339()
                ),
                None => crate::outln!("access token: none stored (refreshed on the next run)"),
            }
            match stored.token.refresh_token_issued_at {
                Some(at) => {
                    let days = (now - at).num_days();
                    crate::outln!("refresh token: issued {} ({days} days ago; Box revokes it after {} days unused)", at.to_rfc3339(), crate::tokens::REFRESH_TOKEN_DAYS);
                    if days >= 45 {
                        crate::outln!("WARNING: the refresh token is {days} days old: run a backup (which rotates it) or `backstop auth box login` before day 60");
                    }
                }
                None => crate::outln!("refresh token: present, age unknown (imported); it is rotated on the next refresh"),
            }
            Ok(ExitKind::Success)
        }
    }
}
