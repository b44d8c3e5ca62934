//! The key layout, the manifest, and turning a storage listing into backups.
//!
//! `<prefix>/<target>/<YYYY-MM-DD>/<target>-<YYYYMMDDTHHMMSSZ>.<ext>` with
//! `<…>.manifest.json` beside it. The manifest is written last, so a backup
//! exists exactly when its manifest does and every object it names is listed
//! with the recorded size; data objects no manifest claims are orphans.

use crate::storage::{get_bytes, ObjectMeta, Storage, StorageResult};
use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
const MANIFEST_LIMIT: usize = 1 << 20;
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `<target>-<YYYYMMDDTHHMMSSZ>`: unique per target and second.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackupId(pub String);

impl BackupId {
    pub fn new(target: &str, at: DateTime<Utc>) -> BackupId {
        BackupId(format!("{target}-{}", at.format(STAMP_FORMAT)))
    }

    /// The timestamp encoded in the id.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.rsplit_once('-')?.1;
        NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
            .ok()
            .map(|n| n.and_utc())
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// Everything of one target lives under this.
    pub fn target_prefix(&self, target: &str) -> String {
        if self.prefix.is_empty() {
            format!("{target}/")
        } else {
            format!("{}/{target}/", self.prefix)
        }
    }

    fn stem(&self, target: &str, at: DateTime<Utc>) -> String {
        format!(
            "{}{}/{}",
            self.target_prefix(target),
            at.format("%Y-%m-%d"),
            BackupId::new(target, at)
        )
    }

    /// Key of one object of a backup: `ext` like `dump.zst`.
    pub fn object_key(&self, target: &str, at: DateTime<Utc>, ext: &str) -> String {
        format!("{}.{ext}", self.stem(target, at))
    }

    pub fn manifest_key(&self, target: &str, at: DateTime<Utc>) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.stem(target, at))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// `database` or `globals`.
    pub role: String,
    pub key: String,
    /// Bytes the dump tool produced.
    pub raw_bytes: u64,
    /// Bytes stored (after compression/encryption).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionRecord {
    pub algorithm: crate::config::Algorithm,
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub id: BackupId,
    pub target: String,
    pub source_type: String,
    pub database: String,
    pub server_version: String,
    pub dump_tool: String,
    pub dump_tool_version: String,
    pub format: String,
    pub compression: CompressionRecord,
    /// Recipients when encrypted; empty when not.
    #[serde(default)]
    pub encryption_recipients: Vec<String>,
    pub objects: Vec<ObjectRecord>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_version: String,
}

impl Manifest {
    pub fn object(&self, role: &str) -> Option<&ObjectRecord> {
        self.objects.iter().find(|o| o.role == role)
    }

    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_bytes).sum()
    }

    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_bytes).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub manifest_key: String,
    pub manifest: Manifest,
}

#[derive(Debug, Default)]
pub struct Listing {
    /// Complete backups, oldest first.
    pub backups: Vec<Backup>,
    /// Manifests whose objects are missing or have the wrong size, or that
    /// cannot be parsed: (key, why).
    pub damaged: Vec<(String, String)>,
    /// Objects no manifest claims (an interrupted run's leftovers).
    pub orphans: Vec<ObjectMeta>,
}

/// List one target's backups from the storage alone.
pub async fn list_target(
    storage: &dyn Storage,
    layout: &Layout,
    target: &str,
) -> anyhow::Result<Listing> {
    let prefix = layout.target_prefix(target);
    let objects = storage
        .list(&prefix)
        .await
        .with_context(|| format!("listing {} under {prefix}", storage.describe()))?;
    let mut listing = Listing::default();
    let mut claimed = HashSet::new();
    for meta in objects.iter().filter(|o| o.key.ends_with(MANIFEST_SUFFIX)) {
        claimed.insert(meta.key.clone());
        match read_manifest(storage, &meta.key).await {
            Ok(manifest) => {
                for o in &manifest.objects {
                    claimed.insert(o.key.clone());
                }
                match check_objects(&manifest, &objects) {
                    Ok(()) => listing.backups.push(Backup {
                        manifest_key: meta.key.clone(),
                        manifest,
                    }),
                    Err(why) => listing.damaged.push((meta.key.clone(), why)),
                }
            }
            Err(e) => listing.damaged.push((meta.key.clone(), format!("{e:#}"))),
        }
    }
    listing.orphans = objects
        .into_iter()
        .filter(|o| !claimed.contains(&o.key))
        .collect();
    listing.backups.sort_by(|a, b| {
        (a.manifest.started_at, &a.manifest.id).cmp(&(b.manifest.started_at, &b.manifest.id))
    });
    Ok(listing)
}

fn check_objects(manifest: &Manifest, listed: &[ObjectMeta]) -> Result<(), String> {
    for o in &manifest.objects {
        match listed.iter().find(|m| m.key == o.key) {
            None => return Err(format!("object {} is missing", o.key)),
            Some(m) if m.size != o.stored_bytes => {
                return Err(format!(
                    "object {} is {} bytes, the manifest says {}",
                    o.key, m.size, o.stored_bytes
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub async fn read_manifest(storage: &dyn Storage, key: &str) -> anyhow::Result<Manifest> {
    let bytes: StorageResult<Vec<u8>> = get_bytes(storage, key, MANIFEST_LIMIT).await;
    let bytes = bytes.with_context(|| format!("reading manifest {key}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_follow_the_documented_layout() {
        let at = Utc.with_ymd_and_hms(2026, 3, 8, 7, 5, 9).unwrap();
        let l = Layout::new("/cluster-a/");
        assert_eq!(
            l.object_key("prod", at, "dump.zst"),
            "cluster-a/prod/2026-03-08/prod-20260308T070509Z.dump.zst"
        );
        assert_eq!(
            l.manifest_key("prod", at),
            "cluster-a/prod/2026-03-08/prod-20260308T070509Z.manifest.json"
        );
        assert_eq!(Layout::new("").target_prefix("dev"), "dev/");
        let id = BackupId::new("my-db-2", at);
        assert_eq!(id.0, "my-db-2-20260308T070509Z");
        assert_eq!(id.time(), Some(at));
    }
}
