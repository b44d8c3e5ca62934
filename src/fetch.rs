//! Reading a stored object back, for every engine's restore: its bytes are
//! hashed as they arrive (the manifest's size and SHA-256 are the judge),
//! decrypted when the object is an age file, and decompressed.

use crate::storage::Storage;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Enough of an object to read an age header (with many SSH-RSA
/// recipients it is still a few KiB).
pub const HEADER_BYTES: usize = 64 << 10;
/// Enough of a dump file to tell its codec and format, also through
/// encryption (age decrypts in 64 KiB chunks).
pub const SNIFF_BYTES: usize = 256 << 10;

/// One stored object and what is known of it.
#[derive(Clone)]
pub struct StoredObject {
    pub key: String,
    /// Size and SHA-256 from the manifest; None for a file backstop did not
    /// write (then the dump's own completeness check is the guard).
    pub expected: Option<(u64, String)>,
    pub algorithm: crate::codec::Algorithm,
    /// Set for an age-encrypted object: decrypted after hashing, before
    /// decompressing.
    pub decrypt: Option<Arc<crate::crypto::Decryption>>,
}

impl StoredObject {
    /// One object of a backup, as its manifest describes it; an encrypted
    /// backup needs the identity at `identity` (else exit 2, naming the
    /// recipients).
    pub fn of_backup(
        m: &crate::catalog::Manifest,
        object: &crate::catalog::ObjectRecord,
        identity: Option<&std::path::Path>,
    ) -> anyhow::Result<StoredObject> {
        let decrypt = match m.encryption_recipients.is_empty() {
            true => None,
            false => Some(Arc::new(crate::crypto::Decryption::open(
                identity,
                &format!("backup {}", m.id),
                &m.encryption_recipients,
            )?)),
        };
        Ok(StoredObject {
            key: object.key.clone(),
            expected: Some((object.stored_bytes, object.sha256.clone())),
            algorithm: m.compression.algorithm,
            decrypt,
        })
    }

    /// The stored bytes (`size`, hashed into `hasher`) against the manifest.
    pub fn judge_checksum(&self, size: u64, hasher: Sha256) -> Result<(), String> {
        let actual = hex::encode(hasher.finalize());
        match &self.expected {
            Some((expected_size, expected_sha))
                if size != *expected_size || actual != *expected_sha =>
            {
                Err(format!(
                    "checksum mismatch for {}: the manifest says {expected_size} bytes with SHA-256 \
                     {expected_sha}, storage returned {size} bytes with SHA-256 {actual}",
                    self.key
                ))
            }
            _ => Ok(()),
        }
    }

    /// A wrong key is found before anything is written: the age header is
    /// all that is read.
    pub async fn check_identity(&self, storage: &dyn Storage) -> anyhow::Result<()> {
        if let Some(d) = &self.decrypt {
            d.check(
                &read_head(storage, &self.key, HEADER_BYTES).await?,
                &self.key,
            )?;
        }
        Ok(())
    }
}

/// A dump file backstop did not write (`restore --file`), at `key`: read
/// through age when it is encrypted (with the identity at `identity`), its
/// codec told from its first bytes. Returns the object and the start of
/// its plain content, for the engine to tell its format.
pub async fn open_dump_file(
    storage: &dyn Storage,
    key: &str,
    identity: Option<&std::path::Path>,
) -> anyhow::Result<(StoredObject, Vec<u8>)> {
    let mut first = read_head(storage, key, SNIFF_BYTES).await?;
    if first.is_empty() {
        bail!(crate::error::usage(format!("{key} is empty")));
    }
    let decrypt = match crate::crypto::is_encrypted(&first) {
        true => {
            let d = crate::crypto::Decryption::open(identity, key, &[])?;
            first = d.prefix(&first, key, SNIFF_BYTES)?;
            Some(Arc::new(d))
        }
        false => None,
    };
    let algorithm = crate::codec::sniff(&first);
    let head = crate::codec::decode_prefix(algorithm, &first, 64 << 10);
    tracing::info!(
        key,
        codec = crate::codec::describe(algorithm),
        encrypted = decrypt.is_some(),
        "restoring a dump file"
    );
    let object = StoredObject {
        key: key.to_string(),
        expected: None,
        algorithm,
        decrypt,
    };
    Ok((object, head))
}

/// The first `limit` bytes of a stored object (fewer if it is shorter).
pub async fn read_head(storage: &dyn Storage, key: &str, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut stream = storage
        .open(key)
        .await
        .with_context(|| format!("opening {key} in {}", storage.describe()))?;
    let mut head = Vec::new();
    while head.len() < limit {
        match stream.next().await {
            Some(chunk) => {
                head.extend_from_slice(&chunk.with_context(|| format!("reading {key}"))?)
            }
            None => break,
        }
    }
    head.truncate(limit);
    Ok(head)
}

/// What a pump saw of the stored bytes: all of them are hashed, even after
/// a decode error (a checksum mismatch is the better explanation of one).
pub struct Pumped {
    pub size: u64,
    pub hasher: Sha256,
    pub error: Option<anyhow::Error>,
}

/// Stored chunks from `rx`, hashed, decrypted when the object is encrypted,
/// into the decoder `dec`.
pub fn pump(rx: &mut mpsc::Receiver<Bytes>, obj: &StoredObject, dec: &mut dyn Write) -> Pumped {
    let mut input = ChannelReader {
        rx,
        size: 0,
        hasher: Sha256::new(),
        current: Bytes::new(),
    };
    let error = (|| -> anyhow::Result<()> {
        match &obj.decrypt {
            Some(d) => {
                let mut plain = d.reader(&mut input, &obj.key)?;
                std::io::copy(&mut plain, dec)
                    .with_context(|| format!("decrypting {}", obj.key))?;
            }
            None => {
                std::io::copy(&mut input, dec)
                    .with_context(|| format!("decompressing {}", obj.key))?;
            }
        }
        Ok(())
    })()
    .err();
    // Whatever the decoder left unread is still hashed.
    let mut rest = [0u8; 64 << 10];
    while matches!(std::io::Read::read(&mut input, &mut rest), Ok(n) if n > 0) {}
    Pumped {
        size: input.size,
        hasher: input.hasher,
        error,
    }
}

/// The stored object as a `Read`, hashing every byte that passes.
struct ChannelReader<'a> {
    rx: &'a mut mpsc::Receiver<Bytes>,
    size: u64,
    hasher: Sha256,
    current: Bytes,
}

impl std::io::Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.size += chunk.len() as u64;
                    self.hasher.update(&chunk);
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Stream a stored object, decrypted and decompressed, into `sink` (a
/// file), on a worker thread; succeeds only when every stored byte arrived
/// and matches the manifest. Returns the stored bytes read.
pub async fn fetch_into(
    storage: &dyn Storage,
    obj: &StoredObject,
    sink: Box<dyn Write + Send>,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut stream = storage
        .open(&obj.key)
        .await
        .with_context(|| format!("opening {} in {}", obj.key, storage.describe()))?;
    let dec = crate::codec::decoder(obj.algorithm, sink)?;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let worker = {
        let obj = obj.clone();
        std::thread::spawn(move || {
            let (mut rx, mut dec) = (rx, dec);
            let pumped = pump(&mut rx, &obj, &mut dec);
            let finished = match pumped.error {
                None => dec.finish(),
                Some(_) => Ok(()),
            };
            (pumped, finished)
        })
    };
    let mut read_error = None;
    let progress =
        crate::progress::Progress::reading(&obj.key, obj.expected.as_ref().map(|(n, _)| *n));
    let mut read = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                read_error = Some(anyhow!("interrupted by signal"));
                break;
            }
            next = stream.next() => match next {
                Some(Ok(chunk)) => {
                    read += chunk.len() as u64;
                    if let Some(p) = &progress {
                        p.read(read);
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // the worker stopped; it says why
                    }
                }
                Some(Err(e)) => {
                    read_error = Some(anyhow!(e).context(format!("reading {} from {}", obj.key, storage.describe())));
                    break;
                }
                None => break,
            }
        }
    }
    drop(tx);
    let (pumped, finished) = tokio::task::spawn_blocking(move || worker.join())
        .await
        .context("restore fetch task")?
        .map_err(|_| anyhow!("restore fetch thread panicked"))?;
    if let Some(e) = read_error {
        return Err(e);
    }
    let size = pumped.size;
    if let Err(why) = obj.judge_checksum(size, pumped.hasher) {
        return Err(anyhow::Error::new(crate::error::DamagedCopy(format!(
            "{why}; nothing was restored"
        ))));
    }
    if let Some(e) = pumped.error {
        return Err(e);
    }
    finished.with_context(|| format!("writing {}", obj.key))?;
    Ok(size)
}
