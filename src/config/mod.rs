//! Typed configuration: TOML file, `${VAR}` expansion, `*_file` secrets,
//! validation. Every error names the file and the key, and a config that
//! fails here means nothing is attempted (exit code 2).

mod duration;
mod expand;
mod uses;
#[macro_use]
pub(crate) mod tagged;
pub mod notify;

pub use crate::codec::{Algorithm, CompressionConfig};
pub use crate::engine::postgres::config::{PgFormat, PostgresTarget};
pub use crate::engine::TargetConfig;
pub use crate::retention::RetentionConfig;
pub use crate::secret::{Secret, REDACTED};
pub use crate::storage::boxcom::config as boxcom;
pub use crate::storage::local::LocalStorageConfig;
pub use crate::storage::rclone::{RcloneConfigSecret, RcloneStorageConfig};
pub use crate::storage::s3::S3StorageConfig;
pub use duration::{HumanDuration, TimeZoneName};
pub use expand::expand_str;
pub use uses::Uses;

use crate::error::usage;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this config was read from (set at load): runs of the same
    /// file share their per-target locks.
    #[serde(skip)]
    pub origin: PathBuf,
    /// The single storage of a simple config; named "default" at load.
    #[serde(default, skip_serializing)]
    pub storage: Option<StorageConfig>,
    /// Named storages, in order; every backup is copied to each storage of
    /// its target. After load this holds every storage, `[storage]` first.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub storages: IndexMap<String, StorageEntry>,
    #[serde(default)]
    pub compression: CompressionConfig,
    /// Encrypt every object for these age/SSH public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypto::EncryptionConfig>,
    /// Default retention for every target; a target may replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    /// How a failing target is retried within the run; a target may
    /// replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    pub targets: Vec<TargetConfig>,
    /// Where run results go: mail, webhooks, pings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<notify::NotifyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<notify::MetricsConfig>,
    /// For `backstop schedule` (hosts without Kubernetes or cron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA zone the expression is read in; UTC by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZoneName>,
}

impl ScheduleConfig {
    pub fn parsed(&self) -> Result<croner::Cron, String> {
        self.cron
            .parse::<croner::Cron>()
            .map_err(|e| format!("`{}` is not a cron expression: {e}", self.cron))
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.map_or(chrono_tz::UTC, |t| t.0)
    }
}

/// One named storage: where backups go, and optionally its own retention.
#[derive(Debug, Clone, Serialize)]
pub struct StorageEntry {
    #[serde(flatten)]
    pub storage: StorageConfig,
    /// Replaces the top-level and the targets' `retention` in this storage
    /// (an offsite copy often keeps longer than the primary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
}

impl<'de> Deserialize<'de> for StorageEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let retention = match table.remove("retention") {
            Some(v) => Some(
                tagged::variant::<RetentionConfig, D::Error>(match v {
                    toml::Value::Table(t) => t,
                    _ => return Err(D::Error::custom("@retention: must be a table")),
                })
                .map_err(|e| {
                    D::Error::custom(format!(
                        "@{}",
                        tagged::join_path("retention", &e.to_string())
                    ))
                })?,
            ),
            None => None,
        };
        let storage =
            StorageConfig::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(StorageEntry { storage, retention })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StorageConfig {
    Local(LocalStorageConfig),
    S3(S3StorageConfig),
    Box(boxcom::BoxStorageConfig),
    Rclone(RcloneStorageConfig),
}

impl StorageConfig {
    pub fn prefix(&self) -> &str {
        match self {
            StorageConfig::Local(l) => &l.prefix,
            StorageConfig::S3(s) => &s.prefix,
            StorageConfig::Box(b) => &b.prefix,
            StorageConfig::Rclone(r) => &r.prefix,
        }
    }
}

/// A target whose backup fails for a reason that can pass (the server
/// restarting, a storage hiccup) is tried again within the run, after
/// `delay`, up to `attempts` times in all; healthy targets are dumped once.
/// Config, tool-choice and authentication failures are never retried.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_delay")]
    pub delay: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_retry_attempts(),
            delay: default_retry_delay(),
        }
    }
}

fn default_retry_attempts() -> u32 {
    3
}

fn default_retry_delay() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}

tagged_enum!(StorageConfig, "storage type", { "local" => Local, "s3" => S3, "box" => Box, "rclone" => Rclone });

impl Config {
    /// Read, expand, parse and validate a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Config::load_for(path, Uses::ALL)
    }

    /// [`Config::load`] of only what a command uses (see [`Uses`]).
    pub fn load_for(path: &Path, uses: Uses) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("{}: cannot read config: {e}", path.display())))?;
        Config::parse_for(&text, path, uses)
    }

    /// Parse config text; `origin` names the file in errors and anchors
    /// relative `*_file` paths.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Config> {
        Config::parse_for(text, origin, Uses::ALL)
    }

    fn parse_for(text: &str, origin: &Path, uses: Uses) -> anyhow::Result<Config> {
        let file = origin.display();
        let mut tree: toml::Value =
            toml::from_str(text).map_err(|e| usage(format!("{file}: {e}")))?;
        uses.prune(&mut tree);
        let mut errors = Vec::new();
        expand::expand_tree(&mut tree, &mut Vec::new(), &mut errors);
        if !errors.is_empty() {
            return Err(usage(format!("{file}: {}", errors.join("; "))));
        }
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            usage(format!(
                "{file}: {}",
                tagged::join_path(&e.path().to_string(), &e.inner().to_string())
            ))
        })?;
        config
            .resolve_and_validate(origin)
            .map_err(|msg| usage(format!("{file}: {msg}")))?;
        Ok(config)
    }

    fn resolve_and_validate(&mut self, origin: &Path) -> Result<(), String> {
        self.origin = std::fs::canonicalize(origin).unwrap_or_else(|_| origin.to_path_buf());
        let base = origin.parent().unwrap_or(Path::new("."));
        if let Some(single) = self.storage.take() {
            if self.storages.contains_key(DEFAULT_STORAGE) {
                return Err(format!(
                    "storages.{DEFAULT_STORAGE}: [storage] is already named \"{DEFAULT_STORAGE}\"; \
                     move it to [storages.NAME] or rename this one"
                ));
            }
            let entry = StorageEntry {
                storage: single,
                retention: None,
            };
            self.storages
                .shift_insert(0, DEFAULT_STORAGE.to_string(), entry);
        }
        if self.storages.is_empty() {
            return Err(
                "storage: no storage; add a [storage] table (or [storages.NAME] tables)".into(),
            );
        }
        let only_one = self.storages.len() == 1;
        for (name, entry) in self.storages.iter_mut() {
            let at = if name == DEFAULT_STORAGE && only_one {
                "storage".to_string()
            } else {
                format!("storages.{name}")
            };
            validate_storage_name(name).map_err(|e| format!("{at}: {e}"))?;
            validate_storage(&entry.storage).map_err(|e| format!("{at}.{e}"))?;
            resolve_storage(&mut entry.storage, base);
            if let Some(r) = &entry.retention {
                validate_retention(r).map_err(|e| format!("{at}.retention: {e}"))?;
            }
        }
        self.compression
            .validate()
            .map_err(|e| format!("compression.{e}"))?;
        if let Some(e) = &mut self.encryption {
            e.resolve(base).map_err(|e| format!("encryption.{e}"))?;
        }
        if let Some(r) = &self.retention {
            validate_retention(r).map_err(|e| format!("retention: {e}"))?;
        }
        if let Some(r) = &self.retry {
            validate_retry(r).map_err(|e| format!("retry: {e}"))?;
        }
        for (i, n) in self.notify.iter_mut().enumerate() {
            notify::validate(n, base).map_err(|e| format!("notify[{i}].{e}"))?;
        }
        if let Some(m) = &mut self.metrics {
            m.textfile = m.textfile.take().map(|t| base.join(t));
            notify::validate_metrics(m).map_err(|e| format!("metrics.{e}"))?;
        }
        if let Some(sched) = &self.schedule {
            sched.parsed().map_err(|e| format!("schedule.cron: {e}"))?;
        }
        if self.targets.is_empty() {
            return Err("targets: at least one [[targets]] entry is required".into());
        }
        let mut seen = HashSet::new();
        for (i, target) in self.targets.iter_mut().enumerate() {
            let name = target.name().to_string();
            let at = format!("targets[{i}]");
            validate_target_name(&name).map_err(|e| format!("{at}.name: {e}"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("{at}.name: duplicate target name `{name}`"));
            }
            if let Some(r) = target.own_retention() {
                validate_retention(r).map_err(|e| format!("{at}.retention: {e}"))?;
            }
            if let Some(r) = target.own_retry() {
                validate_retry(r).map_err(|e| format!("{at}.retry: {e}"))?;
            }
            let mut named = HashSet::new();
            for s in target.own_storages() {
                if !self.storages.contains_key(s) {
                    return Err(format!(
                        "{at}.storages: no storage named `{s}` (configured: {})",
                        self.storages.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                if !named.insert(s) {
                    return Err(format!("{at}.storages: `{s}` is named twice"));
                }
            }
            target
                .spec_mut()
                .resolve(base)
                .map_err(|e| format!("{at}.{e}"))?;
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name() == name)
    }

    /// The retry policy of a target: its own, else the top-level one, else
    /// 3 attempts 5 minutes apart.
    pub fn retry_for(&self, target: &TargetConfig) -> RetryConfig {
        target
            .own_retry()
            .or(self.retry.as_ref())
            .copied()
            .unwrap_or_default()
    }

    /// The retention that applies to a target in a storage: the storage's
    /// own, else the target's, else the default.
    pub fn retention_for<'a>(
        &'a self,
        target: &'a TargetConfig,
        storage: &str,
    ) -> Option<&'a RetentionConfig> {
        self.storages
            .get(storage)
            .and_then(|s| s.retention.as_ref())
            .or(target.own_retention())
            .or(self.retention.as_ref())
    }

    /// The names of the storages a target's backups go to, in config order.
    pub fn storages_for(&self, target: &TargetConfig) -> Vec<&str> {
        let own = target.own_storages();
        self.storages
            .keys()
            .filter(|name| own.is_empty() || own.contains(name))
            .map(String::as_str)
            .collect()
    }

    /// The resolved config as TOML, secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// A target's `password` or `password_file` (read here, relative to the
/// config's directory); errors start with the key.
pub fn resolve_password(
    password: &mut Option<Secret>,
    password_file: Option<&Path>,
    base: &Path,
) -> Result<(), String> {
    if password.is_some() && password_file.is_some() {
        return Err("password: set either password or password_file, not both".into());
    }
    if let Some(file) = password_file {
        *password =
            Some(read_secret_file(&base.join(file)).map_err(|e| format!("password_file: {e}"))?);
    }
    Ok(())
}

/// Read a secret file; one trailing newline is dropped (what `echo` and
/// Kubernetes Secret files usually add).
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let mut value = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(Secret::new(value))
}

/// The name `[storage]` gets among named storages.
pub const DEFAULT_STORAGE: &str = "default";

fn validate_storage_name(name: &str) -> Result<(), String> {
    validate_target_name(name).map_err(|e| format!("storage name {e}"))
}

/// Relative paths in a storage's keys are relative to the config file's
/// directory, not the working directory (cron runs in `$HOME`).
fn resolve_storage(storage: &mut StorageConfig, base: &Path) {
    match storage {
        StorageConfig::Local(l) => l.path = base.join(&l.path),
        StorageConfig::S3(_) => {}
        StorageConfig::Box(b) => {
            b.spool_dir = base.join(&b.spool_dir);
            if let boxcom::BoxAuth::Oauth(o) = &mut b.auth {
                if let boxcom::TokenStoreConfig::File(f) = &mut o.token_store {
                    f.path = base.join(&f.path);
                }
            }
        }
        StorageConfig::Rclone(r) => r.rclone_config = r.rclone_config.take().map(|c| base.join(c)),
    }
}

/// One storage's own keys (each backend checks its own); errors start with
/// the key.
fn validate_storage(storage: &StorageConfig) -> Result<(), String> {
    match storage {
        StorageConfig::Local(l) => l.validate()?,
        StorageConfig::S3(s) => s.validate()?,
        StorageConfig::Box(b) => boxcom::validate(b)?,
        StorageConfig::Rclone(r) => r.validate()?,
    }
    validate_prefix(storage.prefix()).map_err(|e| format!("prefix: {e}"))
}

fn validate_retry(r: &RetryConfig) -> Result<(), String> {
    if !(1..=10).contains(&r.attempts) {
        return Err(format!(
            "attempts: {} is not 1 to 10 (1 means no retry)",
            r.attempts
        ));
    }
    Ok(())
}

fn validate_retention(r: &RetentionConfig) -> Result<(), String> {
    if r.keep_within.is_some_and(|d| d.0.is_zero()) {
        return Err("keep_within: must be longer than 0s (leave it out to keep by count)".into());
    }
    if r.policy().is_empty() {
        return Err(
            "no keep_* rule is set, so every backup but the newest would be deleted; \
                    set at least one keep_* rule, or keep_all = true"
                .into(),
        );
    }
    Ok(())
}

pub fn validate_target_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(format!(
            "`{name}` may hold only a-z, 0-9 and '-', and not start with '-'"
        ));
    }
    Ok(())
}

fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.starts_with('/') {
        return Err(format!(
            "`{prefix}` is absolute; a prefix is relative to the storage (write `{}`)",
            prefix.trim_start_matches('/')
        ));
    }
    crate::keys::validate(prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests;
