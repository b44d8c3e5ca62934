//! The WAL of one target in one storage: put a file once, find it, get it
//! back proven by its hash.

use super::wal_names::{StoredWal, WalFile};
use crate::crypto::{Decryption, Recipients};
use crate::storage::{get_bytes, put_bytes, Storage};
use anyhow::{bail, Context};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;

/// A WAL segment is 16 MiB (up to 1 GiB with a custom --wal-segsize);
/// compressed it never grows past this.
const MAX_STORED: usize = 1 << 30;

pub struct WalArchive<'a> {
    pub storage: &'a dyn Storage,
    /// `<prefix>/<target>.wal/`.
    pub prefix: String,
}

/// Different bytes under a name already stored: two writers, which no
/// retry resolves.
#[derive(Debug)]
pub struct Conflict(pub String);

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The same bytes were stored before (a restarted streamer).
    AlreadyStored,
}

impl<'a> WalArchive<'a> {
    pub fn new(storage: &'a dyn Storage, layout: &crate::catalog::Layout, target: &str) -> Self {
        WalArchive {
            storage,
            prefix: layout.wal_prefix(target),
        }
    }

    /// Every stored WAL file, in name order (keys that are not ours are
    /// left out).
    pub async fn stored(&self) -> anyhow::Result<Vec<StoredWal>> {
        let mut out: Vec<StoredWal> = self
            .storage
            .list(&self.prefix)
            .await
            .with_context(|| {
                format!(
                    "listing WAL in {} under {}",
                    self.storage.describe(),
                    self.prefix
                )
            })?
            .into_iter()
            .filter_map(|o| StoredWal::of_key(&self.prefix, &o.key))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn copies_of(&self, file: WalFile) -> anyhow::Result<Vec<StoredWal>> {
        let prefix = file.key_prefix(&self.prefix);
        Ok(self
            .storage
            .list(&prefix)
            .await
            .with_context(|| format!("looking for {} in {}", file.name(), self.storage.describe()))?
            .into_iter()
            .filter_map(|o| StoredWal::of_key(&self.prefix, &o.key))
            .filter(|w| w.file == file)
            .collect())
    }

    /// Store `raw` as `file`, never replacing: the same bytes stored
    /// before are success; different bytes under the same name mean two
    /// writers (or a split brain) and stop the streamer.
    pub async fn put(
        &self,
        file: WalFile,
        raw: &[u8],
        recipients: Option<&Recipients>,
    ) -> anyhow::Result<Put> {
        let sha256 = hex::encode(Sha256::digest(raw));
        let existing = self.copies_of(file).await?;
        if let Some(other) = existing.iter().find(|w| w.sha256 != sha256) {
            return Err(Conflict(format!(
                "{} is stored already with different contents ({} holds SHA-256 {}, this one is {sha256}): \
                 two streamers, or two servers that both think they are this target's primary. \
                 Nothing was overwritten; stop one of them",
                file.name(),
                other.key,
                other.sha256
            ))
            .into());
        }
        if !existing.is_empty() {
            return Ok(Put::AlreadyStored);
        }
        let compressed = zstd::encode_all(raw, 3).context("compressing WAL")?;
        let body = match recipients {
            None => compressed,
            Some(r) => {
                let mut out = Vec::with_capacity(compressed.len() + 512);
                let mut w = r.encryptor()?.wrap_output(&mut out)?;
                w.write_all(&compressed)?;
                w.finish()?;
                out
            }
        };
        let key = file.key(&self.prefix, &sha256, recipients.is_some());
        put_bytes(self.storage, &key, Bytes::from(body))
            .await
            .with_context(|| format!("storing {} in {}", file.name(), self.storage.describe()))?;
        Ok(Put::Stored)
    }

    /// The raw bytes of `file`, checked against the hash in its key; None
    /// when the storage (listed without error) does not hold it.
    pub async fn get(
        &self,
        file: WalFile,
        identity: Option<&std::path::Path>,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let copies = self.copies_of(file).await?;
        let Some(stored) = copies.first() else {
            return Ok(None);
        };
        if copies.iter().any(|c| c.sha256 != stored.sha256) {
            bail!(
                "{} is stored twice with different contents: refusing to choose",
                file.name()
            );
        }
        let body = get_bytes(self.storage, &stored.key, MAX_STORED)
            .await
            .with_context(|| format!("reading {}", stored.key))?;
        let compressed = match stored.encrypted {
            false => body,
            true => {
                Decryption::open(identity, &stored.key, &[])?.decrypt_all(&body, &stored.key)?
            }
        };
        let raw = zstd::decode_all(&compressed[..])
            .with_context(|| format!("{} is damaged: its zstd data does not decode", stored.key))?;
        let sha256 = hex::encode(Sha256::digest(&raw));
        if sha256 != stored.sha256 {
            bail!(
                "{} is damaged: its contents hash to {sha256}, not the {} its name records",
                stored.key,
                stored.sha256
            );
        }
        Ok(Some(raw))
    }
}
