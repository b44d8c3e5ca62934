//! A token in a JSON file: written with temp file + fsync + rename in the
//! same directory (mode 0600), refreshes serialised by an advisory lock on a
//! sibling `.lock` file, so two processes on one host never rotate at once.

use super::{RefreshGuard, SaveOutcome, TokenSet, TokenStore, Versioned};
use anyhow::Context;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into() }
    }

    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }
}

fn version_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Write `text` to `path` atomically, mode 0600.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    Ok(crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)?)
}

struct FileLock(#[allow(dead_code)] std::fs::File);
impl RefreshGuard for FileLock {}

#[async_trait]
impl TokenStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn load(&self) -> anyhow::Result<Versioned> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .with_context(|| format!("reading the token from {}", self.path.display()))?;
        Ok(Versioned {
            token: TokenSet::from_json(&text).with_context(|| self.describe())?,
            version: version_of(&text),
        })
    }

    async fn check_writable(&self) -> anyhow::Result<()> {
        let probe = self
            .dir()
            .join(format!(".backstop-write-probe-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .with_context(|| {
                format!(
                    "the token store {} is not writable, so a refreshed token could not be saved; \
                     not refreshing (that would lose the token)",
                    self.describe()
                )
            })
    }

    async fn lock(&self) -> anyhow::Result<Box<dyn RefreshGuard>> {
        let path = self.lock_path();
        let file = tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("opening lock file {}", path.display()))?;
            // SAFETY: flock on a descriptor we own; blocks until the other
            // process's refresh is done.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            anyhow::ensure!(
                rc == 0,
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            Ok(f)
        })
        .await??;
        Ok(Box::new(FileLock(file)))
    }

    async fn put(&self, token: &TokenSet) -> anyhow::Result<()> {
        let _guard = self.lock().await?;
        let (path, text) = (self.path.clone(), token.to_json());
        tokio::task::spawn_blocking(move || write_atomic(&path, &text)).await?
    }

    async fn save(&self, token: &TokenSet, expected: &str) -> anyhow::Result<SaveOutcome> {
        // Under the lock nobody else writes, but a person may have replaced
        // the file by hand: honour that too.
        if let Ok(current) = self.load().await {
            if current.version != expected {
                return Ok(SaveOutcome::Conflict(current));
            }
        }
        let text = token.to_json();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &text)).await??;
        Ok(SaveOutcome::Saved)
    }
}
