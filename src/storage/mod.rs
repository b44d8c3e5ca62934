//! Where backups live. Every backend implements [`Storage`] and passes the
//! same conformance suite (`tests/storage_conformance.rs`).
//!
//! The contract every backend keeps:
//! - an [`Upload`] is invisible to `list`/`open` until `commit` returns;
//! - `abort` (or dropping an upload) removes whatever was started;
//! - `commit` onto an existing key fails with [`StorageError::AlreadyExists`]
//!   and never replaces what is there;
//! - a missing key gives [`StorageError::NotFound`].

pub mod boxcom;
pub mod local;
pub mod rclone;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use sha2::{Digest, Sha256};
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{key}: already exists; refusing to overwrite")]
    AlreadyExists { key: String },
    #[error("invalid key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    /// Credentials a person must renew (exit code 3).
    #[error("authentication needs a person")]
    Auth(#[from] crate::error::AuthNeeded),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StorageError {
    pub fn other(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        StorageError::Other(anyhow::anyhow!("{context}: {err}"))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The bytes of a stored object, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = StorageResult<Bytes>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Receipt {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait Upload: Send {
    /// Append bytes. Backends may buffer up to a bounded amount.
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()>;
    /// Make the object visible under its key, atomically.
    async fn commit(self: Box<Self>) -> StorageResult<Receipt>;
    /// Discard everything written; the key stays untouched.
    async fn abort(self: Box<Self>) -> StorageResult<()>;
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Where this storage points, for logs and errors (never a secret).
    fn describe(&self) -> String;
    /// When the credential this storage refreshes by itself stops working
    /// unless used (a Box OAuth refresh token); None when nothing expires.
    async fn credential_expires_at(&self) -> Option<DateTime<Utc>> {
        None
    }
    /// Check that the storage is reachable and usable (bucket exists,
    /// credentials work) before a dump starts, so a misconfiguration costs
    /// no dump and gets a clear message.
    async fn preflight(&self) -> StorageResult<()> {
        Ok(())
    }
    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>>;
    async fn open(&self, key: &str) -> StorageResult<ByteStream>;
    /// Every committed object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;
    /// Remove an object; removing a missing key succeeds.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// What runs killed outright left under `prefix` before `before`:
    /// S3 multipart uploads (invisible, but their parts are billed), local
    /// and rclone temp files. Listing is separate from removing so that
    /// `prune --dry-run` prints exactly what `prune` then removes. Backends
    /// whose uploads leave nothing behind have nothing to list.
    async fn stale_uploads(
        &self,
        _prefix: &str,
        _before: DateTime<Utc>,
    ) -> StorageResult<Vec<StaleUpload>> {
        Ok(Vec::new())
    }
    /// Remove one leftover that `stale_uploads` listed.
    async fn remove_stale(&self, _upload: &StaleUpload) -> StorageResult<()> {
        Ok(())
    }
}

/// A leftover of a killed run: the key it was for, and the backend's handle
/// on it (an S3 upload id, a temp file's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleUpload {
    pub key: String,
    pub handle: String,
}

/// A listing's RFC 3339 modification time; unknown or unparsable times
/// read as the epoch, which only makes an orphan look old.
pub fn parse_time(t: Option<&str>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Write a whole small object (a manifest) in one go.
pub async fn put_bytes(storage: &dyn Storage, key: &str, data: Bytes) -> StorageResult<Receipt> {
    let (size, sha256) = (data.len() as u64, hex::encode(Sha256::digest(&data)));
    let mut upload = storage.create(key).await?;
    if let Err(e) = upload.write(data).await {
        let _ = upload.abort().await;
        return Err(e);
    }
    commit_verified(storage, upload, key, size, &sha256).await
}

/// Commit, recognising our own earlier attempt. When the server carried out
/// a commit but its response was lost, the retry finds the object (S3: 412
/// from `If-None-Match`, or `NoSuchUpload` for a completed multipart
/// upload) and the commit reports failure. Keys are unique per run, so an
/// object under our key holding exactly our bytes is our write: success.
pub async fn commit_verified(
    storage: &dyn Storage,
    upload: Box<dyn Upload>,
    key: &str,
    size: u64,
    sha256: &str,
) -> StorageResult<Receipt> {
    let err = match upload.commit().await {
        Ok(r) => return Ok(r),
        Err(e @ (StorageError::Auth(_) | StorageError::InvalidKey { .. })) => return Err(e),
        Err(e) => e,
    };
    match stored_digest(storage, key).await {
        Ok((n, digest)) if n == size && digest == sha256 => {
            tracing::warn!(key, "the commit reported `{err}`, but the object holds exactly the bytes written: an earlier attempt of this run succeeded");
            Ok(Receipt {
                key: key.to_string(),
                size,
            })
        }
        _ => Err(err),
    }
}

/// Size and SHA-256 (hex) of a stored object, read through.
pub async fn stored_digest(storage: &dyn Storage, key: &str) -> StorageResult<(u64, String)> {
    use futures::StreamExt;
    let mut stream = storage.open(key).await?;
    let (mut n, mut hasher) = (0u64, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((n, hex::encode(hasher.finalize())))
}

/// Read a whole small object (a manifest) into memory, refusing large ones.
pub async fn get_bytes(storage: &dyn Storage, key: &str, limit: usize) -> StorageResult<Vec<u8>> {
    use futures::StreamExt;
    let mut stream = storage.open(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() > limit {
            return Err(StorageError::other(
                key,
                format!("larger than {limit} bytes"),
            ));
        }
    }
    Ok(out)
}

/// A key every backend accepts (see [`crate::keys`]), or `InvalidKey`.
pub fn validate_key(key: &str) -> StorageResult<()> {
    crate::keys::validate(key).map_err(|reason| StorageError::InvalidKey {
        key: key.to_string(),
        reason,
    })
}

/// The storage a config names.
pub fn from_config(config: &crate::config::StorageConfig) -> anyhow::Result<Box<dyn Storage>> {
    match config {
        crate::config::StorageConfig::Local(l) => Ok(Box::new(local::LocalStorage::from_config(l))),
        crate::config::StorageConfig::S3(s) => Ok(Box::new(s3::S3Storage::new(s)?)),
        crate::config::StorageConfig::Box(b) => Ok(Box::new(boxcom::BoxStorage::new(b)?)),
        crate::config::StorageConfig::Rclone(r) => Ok(Box::new(rclone::RcloneStorage::new(r)?)),
    }
}
