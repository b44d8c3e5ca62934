//! What `verify` proved about a backup, kept beside it.
//!
//! One small object per verify, `<stem>.verify-<unix ms>-passed.json` (or
//! `-failed.json`) beside `<stem>.manifest.json`: never the backup's own
//! objects, and never replaced (each verify adds one). The outcome and time
//! are in the key, so a listing knows when a backup was last proven without
//! reading anything; the body says what was compared. The stamp is digits
//! only, so [`super::BackupId::of_key`] still finds the backup's own id and
//! a record is never taken for an orphan while its backup exists; prune
//! deletes it with its backup.
//!
//! An encrypted backup's record keeps nothing its manifest keeps sealed:
//! no table or row counts, and no failure text (it may name tables).

use super::MANIFEST_SUFFIX;
use crate::storage::{get_bytes, put_bytes, Storage};
use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

const MARK: &str = ".verify-";

/// A verify of one backup, as the listing sees it (from the key alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub key: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
}

/// The body of a verify record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub backup: String,
    pub verified_at: DateTime<Utc>,
    pub passed: bool,
    pub duration_seconds: f64,
    /// Tables read through and rows in them; tables whose rows were
    /// compared with the dump's counts (not for encrypted backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables_compared: Option<u64>,
    /// Why it failed (for encrypted backups: only that it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub tool_version: String,
    pub host: String,
}

/// The key of a record of the backup whose manifest is `manifest_key`.
pub fn record_key(manifest_key: &str, at: DateTime<Utc>, passed: bool) -> Option<String> {
    let stem = manifest_key.strip_suffix(MANIFEST_SUFFIX)?;
    let outcome = if passed { "passed" } else { "failed" };
    Some(format!(
        "{stem}{MARK}{}-{outcome}.json",
        at.timestamp_millis()
    ))
}

/// A record's stem (its backup's manifest key without the suffix), time
/// and outcome; None for any other key.
pub fn parse_key(key: &str) -> Option<(&str, Verification)> {
    let (stem, rest) = key.rsplit_once(MARK)?;
    let rest = rest.strip_suffix(".json")?;
    let (millis, outcome) = rest.split_once('-')?;
    if millis.is_empty() || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let passed = match outcome {
        "passed" => true,
        "failed" => false,
        _ => return None,
    };
    let at = Utc.timestamp_millis_opt(millis.parse().ok()?).single()?;
    Some((
        stem,
        Verification {
            key: key.to_string(),
            at,
            passed,
        },
    ))
}

/// Store a record beside its backup (in one storage: the one the verify
/// read). Returns its key.
pub async fn write(
    storage: &dyn Storage,
    manifest_key: &str,
    record: &VerifyRecord,
) -> anyhow::Result<String> {
    let key = record_key(manifest_key, record.verified_at, record.passed)
        .with_context(|| format!("{manifest_key} is not a manifest key"))?;
    let body = serde_json::to_vec_pretty(record).expect("a record serializes");
    put_bytes(storage, &key, body.into())
        .await
        .with_context(|| format!("storing the verify record {key}"))?;
    Ok(key)
}

pub async fn read(storage: &dyn Storage, key: &str) -> anyhow::Result<VerifyRecord> {
    let bytes = get_bytes(storage, key, 64 << 10)
        .await
        .with_context(|| format!("reading the verify record {key}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing the verify record {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_time_and_outcome_and_keep_the_backup_id() {
        let manifest = "p/prod/2026-03-08/prod-20260308T070509.000Z-abcde.manifest.json";
        let at = Utc.with_ymd_and_hms(2026, 3, 9, 1, 2, 3).unwrap();
        let key = record_key(manifest, at, true).unwrap();
        assert_eq!(
            key,
            "p/prod/2026-03-08/prod-20260308T070509.000Z-abcde.verify-1773018123000-passed.json"
        );
        let (stem, v) = parse_key(&key).unwrap();
        assert_eq!(
            format!("{stem}{MANIFEST_SUFFIX}"),
            manifest,
            "the stem leads back to the manifest"
        );
        assert_eq!((v.at, v.passed), (at, true));
        assert_eq!(
            super::super::BackupId::of_key(&key).0,
            "prod-20260308T070509.000Z-abcde"
        );
        let failed = record_key(manifest, at, false).unwrap();
        assert!(!parse_key(&failed).unwrap().1.passed);
        for other in [
            manifest,
            "p/prod/x.verify-12-maybe.json",
            "p/prod/x.verify--passed.json",
            "p/prod/x.verify-1a-passed.json",
        ] {
            assert!(parse_key(other).is_none(), "{other}");
        }
        assert!(record_key("p/prod/x.dump.zst", at, true).is_none());
    }
}
