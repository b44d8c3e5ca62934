//! The key layout, the manifest, and turning a storage listing into backups.
//!
//! `<prefix>/<target>/<YYYY-MM-DD>/<id>.<ext>` with `<id>.manifest.json`
//! beside it, where `<id>` is `<target>-<YYYYMMDDTHHMMSS.mmmZ>-<rand>`. The
//! manifest is written last, so a backup exists exactly when its manifest
//! does and every object it names is listed with the recorded size. Objects
//! that share their id with no manifest-named file are orphans; objects beside
//! a manifest-named file, even one that does not parse, never are.

use crate::storage::{get_bytes, ObjectMeta, Storage, StorageResult};
use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

mod sealed;
pub mod verified;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Beside a manifest: a read (restore, verify) found this copy's bytes do
/// not match it. The backup is damaged in this storage until `backstop
/// copy` replaces it (which removes the mark with the copy).
pub const DAMAGE_SUFFIX: &str = ".damaged.txt";
const MANIFEST_LIMIT: usize = 1 << 20;
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
/// Ids written before the random suffix (second resolution) still parse.
const LEGACY_STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const SUFFIX_CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// `<target>-<YYYYMMDDTHHMMSS.mmmZ>-<rand>`: unique by construction, so two
/// runs of one target never aim at the same key even on a storage that
/// ignores conditional writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackupId(pub String);

impl BackupId {
    pub fn new(target: &str, at: DateTime<Utc>) -> BackupId {
        let suffix: String = (0..5)
            .map(|_| SUFFIX_CHARS[fastrand::usize(..SUFFIX_CHARS.len())] as char)
            .collect();
        BackupId(format!("{target}-{}-{suffix}", at.format(STAMP_FORMAT)))
    }

    /// The timestamp encoded in the id (both the current and the legacy form).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let (rest, last) = self.0.rsplit_once('-')?;
        if let Ok(t) = NaiveDateTime::parse_from_str(last, LEGACY_STAMP_FORMAT) {
            return Some(t.and_utc());
        }
        let stamp = rest.rsplit_once('-')?.1;
        NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
            .ok()
            .map(|n| n.and_utc())
    }

    /// The id of the backup an object key belongs to: the file name up to
    /// the end of the id (legacy ids end at the stamp's `Z`, current ones at
    /// the suffix after it). Names without a stamp are their own id.
    pub fn of_key(key: &str) -> BackupId {
        let name = key.rsplit('/').next().unwrap_or(key);
        let b = name.as_bytes();
        let digits =
            |r: std::ops::Range<usize>| r.end <= b.len() && b[r].iter().all(u8::is_ascii_digit);
        // `-YYYYMMDDTHHMMSS`, searched from the right: a target name may
        // itself contain digits and dashes.
        let stamp = (0..b.len().saturating_sub(15)).rev().find(|&i| {
            b[i] == b'-'
                && digits(i + 1..i + 9)
                && b.get(i + 9) == Some(&b'T')
                && digits(i + 10..i + 16)
        });
        let end = stamp.and_then(|i| {
            let after = i + 16;
            match b.get(after) {
                Some(b'Z') => Some(after + 1),
                Some(b'.') if digits(after + 1..after + 4) && b.get(after + 4) == Some(&b'Z') => {
                    let rest = after + 5;
                    Some(rest + name[rest..].find('.').unwrap_or(name.len() - rest))
                }
                _ => None,
            }
        });
        BackupId(name[..end.unwrap_or(name.len())].to_string())
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

    /// A target's WAL (point-in-time recovery) lives beside its backups,
    /// not under them: dump listings and their retention never see it.
    pub fn wal_prefix(&self, target: &str) -> String {
        if self.prefix.is_empty() {
            format!("{target}.wal/")
        } else {
            format!("{}/{target}.wal/", self.prefix)
        }
    }

    fn stem(&self, target: &str, id: &BackupId, at: DateTime<Utc>) -> String {
        format!(
            "{}{}/{id}",
            self.target_prefix(target),
            at.format("%Y-%m-%d"),
        )
    }

    /// Key of one object of a backup: `ext` like `dump.zst`.
    pub fn object_key(&self, target: &str, id: &BackupId, at: DateTime<Utc>, ext: &str) -> String {
        format!("{}.{ext}", self.stem(target, id, at))
    }

    pub fn manifest_key(&self, target: &str, id: &BackupId, at: DateTime<Utc>) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.stem(target, id, at))
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
    /// Rows per table the dump holds (for `verify` to compare), when the
    /// format lets them be counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<crate::engine::postgres::archive::TableRows>,
    /// Large objects the dump creates (PostgreSQL), for `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<u64>,
    /// A physical base backup's cluster, timeline and WAL range: what a
    /// point-in-time restore must find stored before it downloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<crate::pitr::base_tar::PhysicalFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionRecord {
    pub algorithm: crate::codec::Algorithm,
    /// The level (with `level = "auto"`: the one it started at).
    pub level: i32,
    /// With `level = "auto"`: every level used, lowest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<i32>,
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
    /// What a restore needs to recreate the database as it was (engine
    /// specific: encoding, locale, owner, ACL, settings for PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_properties: Option<serde_json::Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_version: String,
    /// With encryption: what describes the database (its name, server,
    /// properties, table names and row counts), encrypted for the same
    /// recipients as the objects; those fields are blank beside it until
    /// [`Manifest::unseal`] opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
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

    /// The raw bytes of the database dumps (`database`, or each
    /// `database:NAME` of a backup of several), without the globals.
    pub fn database_raw_bytes(&self) -> u64 {
        self.objects
            .iter()
            .filter(|o| o.role == "database" || o.role.starts_with("database:"))
            .map(|o| o.raw_bytes)
            .sum()
    }
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub manifest_key: String,
    pub manifest: Manifest,
    /// What `verify` found of it in this storage, oldest first.
    pub verifications: Vec<verified::Verification>,
}

impl Backup {
    /// The newest verify that passed.
    pub fn last_proven(&self) -> Option<&verified::Verification> {
        self.verifications.iter().rev().find(|v| v.passed)
    }

    /// Keys that go with the backup when it is deleted, before its
    /// manifest: its objects and its verify records.
    pub fn keys_before_manifest(&self) -> impl Iterator<Item = &String> {
        self.manifest
            .objects
            .iter()
            .map(|o| &o.key)
            .chain(self.verifications.iter().map(|v| &v.key))
    }
}

/// A manifest-named file whose backup is not complete: objects missing or
/// of the wrong size, or a manifest that cannot be read or parsed.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub manifest_key: String,
    pub id: BackupId,
    /// From the manifest when it parses, else from the id in the key.
    pub time: Option<DateTime<Utc>>,
    pub why: String,
}

#[derive(Debug, Default)]
pub struct Listing {
    /// Complete backups, oldest first.
    pub backups: Vec<Backup>,
    /// Backups that are not complete, oldest first. Kept and reported until
    /// a person removes them; never orphans.
    pub damaged: Vec<Damaged>,
    /// Objects no manifest-named file claims (an interrupted run's leftovers).
    pub orphans: Vec<ObjectMeta>,
}

impl Listing {
    /// The backup most recently proven by a verify that passed, and that
    /// verify.
    pub fn last_proven(&self) -> Option<(&Backup, &verified::Verification)> {
        self.backups
            .iter()
            .filter_map(|b| Some((b, b.last_proven()?)))
            .max_by_key(|(_, v)| v.at)
    }

    /// The newest backup attempt that left a manifest, when it is damaged:
    /// it must be judged, not silently replaced by an older complete one.
    pub fn damaged_newest(&self) -> Option<&Damaged> {
        let newest_damaged = self.damaged.last()?;
        match self.backups.last() {
            None => Some(newest_damaged),
            Some(b) => {
                let complete = (Some(b.manifest.started_at), &b.manifest.id);
                ((newest_damaged.time, &newest_damaged.id) > complete).then_some(newest_damaged)
            }
        }
    }
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
    // Regression (prune deleted the data of a backup whose manifest would
    // not parse): every object that shares its backup id with a
    // manifest-named file is claimed, whatever the manifest says.
    let mut claimed_ids = HashSet::new();
    let mut claimed_keys = HashSet::new();
    let marked: std::collections::HashMap<BackupId, &str> = objects
        .iter()
        .filter(|o| o.key.ends_with(DAMAGE_SUFFIX))
        .map(|o| (BackupId::of_key(&o.key), o.key.as_str()))
        .collect();
    let mut verifications: std::collections::HashMap<&str, Vec<verified::Verification>> =
        std::collections::HashMap::new();
    for (stem, v) in objects.iter().filter_map(|o| verified::parse_key(&o.key)) {
        verifications.entry(stem).or_default().push(v);
    }
    for meta in objects.iter().filter(|o| o.key.ends_with(MANIFEST_SUFFIX)) {
        let id = BackupId::of_key(&meta.key);
        claimed_ids.insert(id.clone());
        let damaged = |why: String, time: Option<DateTime<Utc>>| Damaged {
            manifest_key: meta.key.clone(),
            id: id.clone(),
            time: time.or_else(|| id.time()),
            why,
        };
        match read_manifest(storage, &meta.key).await {
            Ok(manifest) => {
                claimed_keys.extend(manifest.objects.iter().map(|o| o.key.clone()));
                let checked = match marked.get(&id) {
                    Some(mark) => Err(read_damage_mark(storage, mark).await),
                    None => check_objects(&manifest, &objects),
                };
                match checked {
                    Ok(()) => listing.backups.push(Backup {
                        manifest_key: meta.key.clone(),
                        manifest,
                        verifications: {
                            let stem = &meta.key[..meta.key.len() - MANIFEST_SUFFIX.len()];
                            let mut v = verifications.remove(stem).unwrap_or_default();
                            v.sort_by_key(|v| v.at);
                            v
                        },
                    }),
                    Err(why) => listing
                        .damaged
                        .push(damaged(why, Some(manifest.started_at))),
                }
            }
            Err(e) => listing.damaged.push(damaged(format!("{e:#}"), None)),
        }
    }
    listing.orphans = objects
        .into_iter()
        .filter(|o| {
            !o.key.ends_with(MANIFEST_SUFFIX)
                && !claimed_keys.contains(&o.key)
                && !claimed_ids.contains(&BackupId::of_key(&o.key))
        })
        .collect();
    listing.backups.sort_by(|a, b| {
        (a.manifest.started_at, &a.manifest.id).cmp(&(b.manifest.started_at, &b.manifest.id))
    });
    listing
        .damaged
        .sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
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

async fn read_damage_mark(storage: &dyn Storage, key: &str) -> String {
    match get_bytes(storage, key, 64 << 10).await {
        Ok(why) => format!(
            "a read found it damaged: {}",
            String::from_utf8_lossy(&why).trim()
        ),
        Err(e) => format!("marked damaged ({key}, unreadable: {e})"),
    }
}

/// Mark the copy of the backup whose manifest is `manifest_key` damaged in
/// `storage` (see [`DAMAGE_SUFFIX`]), saying why.
pub async fn mark_damaged(
    storage: &dyn Storage,
    manifest_key: &str,
    why: &str,
) -> anyhow::Result<()> {
    let stem = manifest_key
        .strip_suffix(MANIFEST_SUFFIX)
        .with_context(|| format!("{manifest_key} is not a manifest key"))?;
    let key = format!("{stem}{DAMAGE_SUFFIX}");
    match crate::storage::put_bytes(storage, &key, bytes::Bytes::from(why.to_string())).await {
        Ok(_) | Err(crate::storage::StorageError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("writing {key}"))),
    }
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
        let id = BackupId("prod-20260308T070509.000Z-abcde".into());
        assert_eq!(
            l.object_key("prod", &id, at, "dump.zst"),
            "cluster-a/prod/2026-03-08/prod-20260308T070509.000Z-abcde.dump.zst"
        );
        assert_eq!(
            l.manifest_key("prod", &id, at),
            "cluster-a/prod/2026-03-08/prod-20260308T070509.000Z-abcde.manifest.json"
        );
        assert_eq!(Layout::new("").target_prefix("dev"), "dev/");
        let id = BackupId::new("my-db-2", at);
        assert!(id.0.starts_with("my-db-2-20260308T070509.000Z-"), "{id}");
        assert_eq!(id.time(), Some(at));
    }

    #[test]
    fn ids_are_unique_within_one_millisecond() {
        // Regression (key collisions when the server ignores If-None-Match):
        // two runs in the same second used the same key.
        let at = Utc::now();
        let ids: HashSet<BackupId> = (0..200).map(|_| BackupId::new("prod", at)).collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn every_object_key_maps_back_to_its_backup_id() {
        for (key, id) in [
            (
                "p/prod/2026-03-08/prod-20260308T070509.123Z-abcde.dump.zst",
                "prod-20260308T070509.123Z-abcde",
            ),
            (
                "p/prod/2026-03-08/prod-20260308T070509.123Z-abcde.globals.sql.gz",
                "prod-20260308T070509.123Z-abcde",
            ),
            (
                "p/prod/2026-03-08/prod-20260308T070509.123Z-abcde.manifest.json",
                "prod-20260308T070509.123Z-abcde",
            ),
            (
                "prod/2026-03-08/prod-20260308T070509Z.dump.zst",
                "prod-20260308T070509Z",
            ),
            (
                "prod/2026-03-08/prod-20260308T070509Z.manifest.json",
                "prod-20260308T070509Z",
            ),
            (
                "Z-9/2026-03-08/Z-9-20260308T070509.123Z-zz9zz.sql",
                "Z-9-20260308T070509.123Z-zz9zz",
            ),
        ] {
            assert_eq!(BackupId::of_key(key).0, id, "{key}");
        }
        let legacy = BackupId("a-b-20260308T070509Z".into());
        assert_eq!(
            legacy.time(),
            Some(Utc.with_ymd_and_hms(2026, 3, 8, 7, 5, 9).unwrap())
        );
    }
}
