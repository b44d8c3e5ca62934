//! `[[notify]]` and `[metrics]`: where run results are sent.

use super::{HumanDuration, Secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NotifyConfig {
    Smtp(SmtpNotify),
    Webhook(WebhookNotify),
    Ping(PingNotify),
}

tagged_enum!(NotifyConfig, "notifier type", { "smtp" => Smtp, "webhook" => Webhook, "ping" => Ping });

/// When a notifier fires at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    Failure,
    Success,
    Always,
}

fn default_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failure]
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (only for a relay inside a trusted network).
    None,
    /// Upgrade with STARTTLS; fail if the server does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpNotify {
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
    pub host: String,
    /// Default: 25 with tls = "none", 587 with "starttls", 465 with "tls".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    /// Extra CA certificate (PEM) to trust, e.g. an internal relay's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

impl SmtpNotify {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The run report as JSON (documented in the README).
    Json,
    /// `{"text": …}` for a Slack incoming webhook.
    Slack,
    /// `{"content": …}` for a Discord webhook.
    Discord,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotify {
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
    /// Treated as a secret: webhook URLs usually carry a token.
    pub url: Secret,
    #[serde(default = "default_format")]
    pub format: WebhookFormat,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_format() -> WebhookFormat {
    WebhookFormat::Json
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PingNotify {
    /// healthchecks.io-style check URL; a secret (it identifies the check).
    pub url: Secret,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus Pushgateway base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushgateway: Option<Secret>,
    /// node_exporter textfile collector file, written atomically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile: Option<PathBuf>,
    /// Pushgateway grouping: job name (default "backstop") and instance
    /// (default "default"); fixed, so every fresh pod of a CronJob replaces
    /// the same group.
    #[serde(default = "default_job")]
    pub job: String,
    #[serde(default = "default_instance")]
    pub instance: String,
}

fn default_job() -> String {
    "backstop".into()
}

fn default_instance() -> String {
    "default".into()
}

/// Check one notifier; errors are `key: message` relative to the notifier.
pub fn validate(n: &mut NotifyConfig, base: &std::path::Path) -> Result<(), String> {
    match n {
        NotifyConfig::Smtp(s) => {
            if s.host.is_empty() {
                return Err("host: must not be empty".into());
            }
            if s.on.is_empty() {
                return Err("on: must name at least one of failure, success, always".into());
            }
            s.from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("from: `{}` is not a mail address: {e}", s.from))?;
            if s.to.is_empty() {
                return Err("to: at least one recipient is required".into());
            }
            for (i, to) in s.to.iter().enumerate() {
                to.parse::<lettre::message::Mailbox>()
                    .map_err(|e| format!("to[{i}]: `{to}` is not a mail address: {e}"))?;
            }
            if s.password.is_some() && s.password_file.is_some() {
                return Err("password_file: set either password or password_file, not both".into());
            }
            if let Some(f) = &s.password_file {
                s.password = Some(
                    super::read_secret_file(&base.join(f))
                        .map_err(|e| format!("password_file: {e}"))?,
                );
            }
            if s.password.is_some() && s.username.is_none() {
                return Err("username: required when a password is set".into());
            }
            if let Some(ca) = &s.tls_ca_file {
                let ca = base.join(ca);
                std::fs::metadata(&ca)
                    .map_err(|e| format!("tls_ca_file: cannot read {}: {e}", ca.display()))?;
                s.tls_ca_file = Some(ca);
            }
        }
        NotifyConfig::Webhook(w) => {
            if w.on.is_empty() {
                return Err("on: must name at least one of failure, success, always".into());
            }
            check_url(&w.url).map_err(|e| format!("url: {e}"))?;
            for name in w.headers.keys() {
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("headers: `{name}` is not a valid header name"))?;
            }
        }
        NotifyConfig::Ping(p) => check_url(&p.url).map_err(|e| format!("url: {e}"))?,
    }
    Ok(())
}

/// The URL is a secret, so the message never repeats it.
fn check_url(url: &Secret) -> Result<(), String> {
    match url::Url::parse(url.expose()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err("must be an http:// or https:// URL".into()),
        Err(e) => Err(format!("not a valid URL ({e})")),
    }
}

pub fn validate_metrics(m: &MetricsConfig) -> Result<(), String> {
    if let Some(p) = &m.pushgateway {
        check_url(p).map_err(|e| format!("pushgateway: {e}"))?;
    }
    if m.pushgateway.is_none() && m.textfile.is_none() {
        return Err("textfile: set pushgateway and/or textfile".into());
    }
    for (key, v) in [("job", &m.job), ("instance", &m.instance)] {
        if v.is_empty() || v.contains('/') {
            return Err(format!("{key}: must be non-empty and contain no '/'"));
        }
    }
    Ok(())
}
