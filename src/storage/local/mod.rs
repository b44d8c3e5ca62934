//! A directory on a local or mounted filesystem.
//!
//! Uploads go to a hidden temp file in the destination directory (same
//! filesystem, so the final step is a rename), are fsynced, then moved into
//! place with a no-replace rename and the directory is fsynced: after a crash
//! either the whole object is there or nothing under its key is.
//!
//! A dump is the whole database: files are created 0600 and directories
//! 0700. A missing root is an error unless `create = true`: a typo or an
//! unmounted disk must not "succeed" into an empty directory.

mod config;
pub use config::LocalStorageConfig;

use super::{
    validate_key, ByteStream, ObjectMeta, Receipt, Storage, StorageError, StorageResult, Upload,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

const TEMP_MARKER: &str = ".backstop-tmp-";

pub struct LocalStorage {
    root: PathBuf,
    /// Create the root when it is missing (else that is an error).
    create_root: bool,
}

impl LocalStorage {
    /// A storage at `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            create_root: false,
        }
    }

    pub fn from_config(c: &crate::config::LocalStorageConfig) -> Self {
        LocalStorage {
            root: c.path.clone(),
            create_root: c.create,
        }
    }

    /// The root exists (or is created, with `create = true`).
    fn check_root(&self) -> StorageResult<()> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::other(
                format!("local storage: {}", self.root.display()),
                "is not a directory",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.create_root => {
                private_dirs(&self.root).map_err(|e| {
                    StorageError::other(format!("local storage: create {}", self.root.display()), e)
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::other(
                format!("local storage: {}", self.root.display()),
                "does not exist (a typo, or a disk that is not mounted?); create it, or set `create = true` in [storage]",
            )),
            Err(e) => Err(StorageError::other(
                format!("local storage: {}", self.root.display()),
                e,
            )),
        }
    }

    fn path_of(&self, key: &str) -> StorageResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Create `dir` and its missing parents, 0700.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn io_err(key: &str, what: &str, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound && what == "open" {
        return StorageError::NotFound {
            key: key.to_string(),
        };
    }
    StorageError::other(format!("local storage: {what} {key}"), e)
}

#[async_trait]
impl Storage for LocalStorage {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn preflight(&self) -> StorageResult<()> {
        self.check_root()
    }

    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .expect("key has a parent: the root")
            .to_path_buf();
        self.check_root()?;
        private_dirs(&dir).map_err(|e| io_err(key, "create directory for", e))?;
        let name = path.file_name().expect("validated key").to_string_lossy();
        let temp = dir.join(format!("{TEMP_MARKER}{}-{name}", unique_suffix()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .await
            .map_err(|e| io_err(key, "create temp file for", e))?;
        Ok(Box::new(LocalUpload {
            key: key.to_string(),
            final_path: path,
            temp: Some(temp),
            file: Some(file),
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> StorageResult<ByteStream> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err(key, "open", e))?;
        let key = key.to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(move |r| r.map_err(|e| io_err(&key, "read", e)));
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        // Regression: a missing path listed as "no backups".
        self.check_root()?;
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            if root.exists() {
                walk(&root, &root, &prefix, false, &mut out).map_err(|e| {
                    StorageError::other(format!("local storage: list {}", root.display()), e)
                })?;
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::other("local storage: list", e))?
    }

    /// Temp files of runs killed outright (SIGKILL, OOM, node loss) that
    /// never reached their cleanup.
    async fn stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<super::StaleUpload>> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || {
            let mut temps = Vec::new();
            if root.exists() {
                walk(&root, &root, &prefix, true, &mut temps)
                    .map_err(|e| StorageError::other("local storage: list temp files", e))?;
            }
            Ok(temps
                .into_iter()
                .filter(|t| t.modified < before)
                .map(|t| super::StaleUpload {
                    key: t.key.clone(),
                    handle: t.key,
                })
                .collect())
        })
        .await
        .map_err(|e| StorageError::other("local storage: stale temp files", e))?
    }

    async fn remove_stale(&self, upload: &super::StaleUpload) -> StorageResult<()> {
        // The handle is a temp file's path under the root, never a key.
        let path = self.root.join(&upload.handle);
        let named_temp = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_MARKER));
        if !named_temp || upload.handle.split('/').any(|s| s == ".." || s.is_empty()) {
            return Err(StorageError::InvalidKey {
                key: upload.handle.clone(),
                reason: "not a temp file of this storage".into(),
            });
        }
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(&upload.handle, "remove stale temp file", e))
            }
            _ => Ok(()),
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            // Deleting what is not there is done, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(key, "delete", e)),
        }
        // Tidy the date directories that retention empties; a directory that
        // still holds anything makes remove_dir fail, which ends the climb.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Files under `dir` whose keys start with `prefix`: committed objects, or
/// with `temps` only the temp files of uploads in progress (or crashed).
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    temps: bool,
    out: &mut Vec<ObjectMeta>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_temp = name.to_string_lossy().starts_with(TEMP_MARKER);
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        let meta = entry.metadata()?;
        if meta.is_dir() {
            // Only descend where keys under the prefix can be.
            let as_dir = format!("{rel}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, temps, out)?;
            }
        } else if meta.is_file() && is_temp == temps && rel.starts_with(prefix) {
            out.push(ObjectMeta {
                key: rel,
                size: meta.len(),
                modified: meta.modified()?.into(),
            });
        }
    }
    Ok(())
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

struct LocalUpload {
    key: String,
    final_path: PathBuf,
    temp: Option<PathBuf>,
    file: Option<tokio::fs::File>,
    size: u64,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        let file = self
            .file
            .as_mut()
            .expect("upload is open until commit/abort");
        file.write_all(&chunk)
            .await
            .map_err(|e| io_err(&self.key, "write", e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Receipt> {
        let mut file = self.file.take().expect("upload is open until commit/abort");
        let temp = self.temp.clone().expect("temp exists until commit/abort");
        let key = self.key.clone();
        let result = async {
            file.flush().await.map_err(|e| io_err(&key, "flush", e))?;
            file.sync_all()
                .await
                .map_err(|e| io_err(&key, "fsync", e))?;
            drop(file);
            let (temp, dest) = (temp.clone(), self.final_path.clone());
            let k = key.clone();
            tokio::task::spawn_blocking(move || rename_no_replace(&temp, &dest, &k))
                .await
                .map_err(|e| StorageError::other(&key, e))??;
            if let Some(dir) = self.final_path.parent() {
                fsync_dir(dir).map_err(|e| io_err(&key, "fsync directory of", e))?;
            }
            Ok::<_, StorageError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.temp = None;
                Ok(Receipt {
                    key: self.key.clone(),
                    size: self.size,
                })
            }
            // Drop removes the temp file.
            Err(e) => Err(e),
        }
    }

    async fn abort(mut self: Box<Self>) -> StorageResult<()> {
        self.file.take();
        if let Some(temp) = self.temp.take() {
            match tokio::fs::remove_file(&temp).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&self.key, "remove temp file of", e)),
            }
        }
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Move `temp` to `dest` unless `dest` exists.
fn rename_no_replace(temp: &Path, dest: &Path, key: &str) -> StorageResult<()> {
    crate::fsutil::rename_no_replace(temp, dest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            StorageError::AlreadyExists {
                key: key.to_string(),
            }
        } else {
            io_err(key, "rename into place", e)
        }
    })
}

use crate::fsutil::fsync_dir;
