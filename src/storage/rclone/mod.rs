//! Any remote rclone reaches (SFTP, WebDAV, Google Drive, OneDrive, ...),
//! through the `rclone` binary.
//!
//! Uploads stream into `rclone rcat` under a temporary name and are moved
//! into place with `rclone moveto` on commit (after checking the key is
//! free: never overwrite); abort kills rcat and deletes the temporary file.
//! rclone runs with a private copy of its config, because it rewrites the
//! config when it refreshes an OAuth token; after every call a changed copy
//! is written back to where the config came from: a file (atomically) or a
//! Kubernetes Secret (conditional on the resourceVersion read).

mod config;
pub use config::{RcloneConfigSecret, RcloneStorageConfig};

use super::{
    validate_key, ByteStream, ObjectMeta, Receipt, Storage, StorageError, StorageResult, Upload,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

const TEMP_MARKER: &str = ".backstop-tmp-";

/// Where the rclone config lives, so refreshed tokens can go back there.
enum ConfigSource {
    File(PathBuf),
    Secret(Box<crate::tokens::kubernetes::SecretStore>),
}

/// Our private copy, and the text/version last seen at the source.
struct PrivateConfig {
    copy: tempfile::NamedTempFile,
    last: tokio::sync::Mutex<(Vec<u8>, String)>,
}

struct Inner {
    remote: String,
    source: Option<ConfigSource>,
    private: tokio::sync::OnceCell<PrivateConfig>,
}

pub struct RcloneStorage {
    inner: Arc<Inner>,
}

impl RcloneStorage {
    pub fn new(c: &RcloneStorageConfig) -> anyhow::Result<RcloneStorage> {
        let source = match (&c.rclone_config, &c.rclone_config_secret) {
            (Some(path), _) => Some(ConfigSource::File(path.clone())),
            (None, Some(s)) => Some(ConfigSource::Secret(Box::new(
                crate::tokens::kubernetes::SecretStore::new(
                    &s.name,
                    &s.key,
                    s.namespace.as_deref(),
                ),
            ))),
            (None, None) => None,
        };
        Ok(RcloneStorage {
            inner: Arc::new(Inner {
                remote: c.remote.trim_end_matches('/').to_string(),
                source,
                private: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

impl Inner {
    fn path(&self, key: &str) -> String {
        if self.remote.ends_with(':') {
            format!("{}{key}", self.remote)
        } else {
            format!("{}/{key}", self.remote)
        }
    }

    /// The private copy, made on first use from the source.
    async fn private(&self) -> StorageResult<Option<&PrivateConfig>> {
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let p = self
            .private
            .get_or_try_init(|| async {
                let (text, version) = match source {
                    ConfigSource::File(path) => (
                        std::fs::read(path).map_err(|e| {
                            StorageError::other(format!("rclone config {}", path.display()), e)
                        })?,
                        String::new(),
                    ),
                    ConfigSource::Secret(store) => {
                        let (t, v) = store.read_text().await.map_err(StorageError::Other)?;
                        (t.into_bytes(), v)
                    }
                };
                let mut copy = tempfile::Builder::new()
                    .prefix(".backstop-rclone-")
                    .tempfile()
                    .map_err(|e| StorageError::other("rclone: private config copy", e))?;
                std::io::Write::write_all(copy.as_file_mut(), &text)
                    .map_err(|e| StorageError::other("rclone: private config copy", e))?;
                Ok::<_, StorageError>(PrivateConfig {
                    copy,
                    last: tokio::sync::Mutex::new((text, version)),
                })
            })
            .await?;
        Ok(Some(p))
    }

    async fn command(&self) -> StorageResult<Command> {
        let mut cmd = Command::new("rclone");
        if let Some(p) = self.private().await? {
            cmd.arg("--config").arg(p.copy.path());
        }
        cmd.arg("--low-level-retries")
            .arg("5")
            .arg("--retries")
            .arg("3");
        cmd.kill_on_drop(true);
        Ok(cmd)
    }

    /// Run a short rclone command; (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> StorageResult<(bool, Vec<u8>, String)> {
        let out = self
            .command()
            .await?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                StorageError::other("rclone: cannot start it (is rclone installed?)", e)
            })?;
        self.write_back_config().await;
        Ok((
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }

    /// If rclone refreshed a token it rewrote our copy: keep the source in
    /// step, or the next run starts from a revoked token.
    async fn write_back_config(&self) {
        let (Some(source), Some(p)) = (&self.source, self.private.get()) else {
            return;
        };
        let mut last = p.last.lock().await;
        let Ok(now) = std::fs::read(p.copy.path()) else {
            return;
        };
        if now == last.0 {
            return;
        }
        let text = String::from_utf8_lossy(&now).into_owned();
        let result: anyhow::Result<String> = match source {
            ConfigSource::File(path) => {
                let path = path.clone();
                let t = text.clone();
                match tokio::task::spawn_blocking(move || {
                    crate::tokens::file::write_atomic(&path, &t)
                })
                .await
                {
                    Ok(r) => r.map(|()| String::new()),
                    Err(e) => Err(e.into()),
                }
            }
            ConfigSource::Secret(store) => match store.write_text(&text, &last.1).await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(anyhow::anyhow!(
                    "{} changed since it was read (409)",
                    crate::tokens::TokenStore::describe(store.as_ref())
                )),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(version) => {
                *last = (now, version);
                tracing::info!("rclone refreshed its token; config written back");
            }
            Err(e) => tracing::error!("COULD NOT WRITE BACK rclone's refreshed config, the stored token may now be stale: {e:#}"),
        }
    }

    async fn stat(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let found = self.lsjson(dir, false, false).await?;
        let hit = found.into_iter().find(|m| m.key == name).map(|mut m| {
            m.key = key.to_string();
            m
        });
        Ok(hit)
    }

    /// Files in `dir` (recursively when asked), keys relative to `dir`:
    /// committed objects, or with `temps` only our temp objects.
    async fn lsjson(
        &self,
        dir: &str,
        recursive: bool,
        temps: bool,
    ) -> StorageResult<Vec<ObjectMeta>> {
        let target = self.path(dir);
        let mut args = vec!["lsjson", "--files-only", "--no-mimetype"];
        if recursive {
            args.push("-R");
        }
        args.push(&target);
        let (ok, stdout, stderr) = self.run(&args).await?;
        if !ok {
            if stderr.contains("directory not found") || stderr.contains("not found") {
                return Ok(Vec::new());
            }
            return Err(StorageError::other(
                format!("rclone lsjson {target}"),
                stderr,
            ));
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            path: String,
            size: i64,
            mod_time: String,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&stdout)
            .map_err(|e| StorageError::other(format!("rclone lsjson {target}"), e))?;
        Ok(entries
            .into_iter()
            .filter(|e| {
                e.path
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with(TEMP_MARKER)
                    == temps
            })
            .map(|e| ObjectMeta {
                key: e.path,
                size: e.size.max(0) as u64,
                modified: super::parse_time(Some(&e.mod_time)),
            })
            .collect())
    }
}

impl RcloneStorage {
    /// Objects (or our temp objects) whose key starts with `prefix`.
    async fn list_matching(&self, prefix: &str, temps: bool) -> StorageResult<Vec<ObjectMeta>> {
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let mut out: Vec<ObjectMeta> = self
            .inner
            .lsjson(dir, true, temps)
            .await?
            .into_iter()
            .map(|mut m| {
                if !dir.is_empty() {
                    m.key = format!("{dir}/{}", m.key);
                }
                m
            })
            .filter(|m| m.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[async_trait]
impl Storage for RcloneStorage {
    fn describe(&self) -> String {
        format!("rclone {}", self.inner.remote)
    }

    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        validate_key(key)?;
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let temp_key = if dir.is_empty() {
            format!("{TEMP_MARKER}{}-{name}", fastrand::u64(..))
        } else {
            format!("{dir}/{TEMP_MARKER}{}-{name}", fastrand::u64(..))
        };
        let child = self
            .inner
            .command()
            .await?
            .arg("rcat")
            .arg(self.inner.path(&temp_key))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                StorageError::other("rclone: cannot start it (is rclone installed?)", e)
            })?;
        Ok(Box::new(RcloneUpload {
            inner: Arc::clone(&self.inner),
            key: key.to_string(),
            temp_key,
            child: Some(child),
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> StorageResult<ByteStream> {
        validate_key(key)?;
        if self.inner.stat(key).await?.is_none() {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        let mut child = self
            .inner
            .command()
            .await?
            .arg("cat")
            .arg(self.inner.path(key))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StorageError::other("rclone: cannot start it", e))?;
        let stdout = child.stdout.take().expect("piped");
        let key_owned = key.to_string();
        // After the last byte, rclone's exit status decides: a failed cat
        // must not look like a short file.
        let tail = futures::stream::once(async move {
            match child.wait_with_output().await {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(Err(StorageError::other(
                    format!("rclone cat {key_owned}"),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ))),
                Err(e) => Some(Err(StorageError::other(
                    format!("rclone cat {key_owned}"),
                    e,
                ))),
            }
        })
        .filter_map(|x| async move { x });
        let key_owned = key.to_string();
        let body = tokio_util::io::ReaderStream::with_capacity(stdout, 1 << 20)
            .map(move |r| r.map_err(|e| StorageError::other(format!("rclone cat {key_owned}"), e)));
        Ok(Box::pin(body.chain(tail)))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.list_matching(prefix, false).await
    }

    async fn stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<super::StaleUpload>> {
        Ok(self
            .list_matching(prefix, true)
            .await?
            .into_iter()
            .filter(|m| m.modified < before)
            .map(|m| super::StaleUpload {
                key: m.key.clone(),
                handle: m.key,
            })
            .collect())
    }

    async fn remove_stale(&self, upload: &super::StaleUpload) -> StorageResult<()> {
        let name = upload.handle.rsplit('/').next().unwrap_or("");
        if !name.starts_with(TEMP_MARKER) {
            return Err(StorageError::InvalidKey {
                key: upload.handle.clone(),
                reason: "not a temp object of this storage".into(),
            });
        }
        let target = self.inner.path(&upload.handle);
        let (ok, _, stderr) = self.inner.run(&["deletefile", &target]).await?;
        if ok || stderr.contains("not found") {
            Ok(())
        } else {
            Err(StorageError::other(
                format!("rclone deletefile {target}"),
                stderr,
            ))
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        validate_key(key)?;
        if self.inner.stat(key).await?.is_none() {
            return Ok(());
        }
        let target = self.inner.path(key);
        let (ok, _, stderr) = self.inner.run(&["deletefile", &target]).await?;
        if ok {
            Ok(())
        } else {
            Err(StorageError::other(
                format!("rclone deletefile {target}"),
                stderr,
            ))
        }
    }
}

struct RcloneUpload {
    inner: Arc<Inner>,
    key: String,
    temp_key: String,
    child: Option<Child>,
    size: u64,
}

impl RcloneUpload {
    async fn remove_temp(&self) {
        let target = self.inner.path(&self.temp_key);
        let _ = self.inner.run(&["deletefile", &target]).await;
    }
}

#[async_trait]
impl Upload for RcloneUpload {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        let child = self.child.as_mut().expect("open until commit/abort");
        let stdin = child.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(&chunk)
            .await
            .map_err(|e| StorageError::other(format!("rclone rcat {}", self.key), e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Receipt> {
        let mut child = self.child.take().expect("open until commit/abort");
        drop(child.stdin.take()); // EOF: rcat finishes the upload
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| StorageError::other("rclone rcat", e))?;
        self.inner.write_back_config().await;
        if !out.status.success() {
            self.remove_temp().await;
            return Err(StorageError::other(
                format!("rclone rcat {}", self.key),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        if self.inner.stat(&self.key).await?.is_some() {
            self.remove_temp().await;
            return Err(StorageError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        let (from, to) = (self.inner.path(&self.temp_key), self.inner.path(&self.key));
        let (ok, _, stderr) = self.inner.run(&["moveto", &from, &to]).await?;
        if !ok {
            self.remove_temp().await;
            return Err(StorageError::other(format!("rclone moveto {to}"), stderr));
        }
        Ok(Receipt {
            key: self.key.clone(),
            size: self.size,
        })
    }

    async fn abort(mut self: Box<Self>) -> StorageResult<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.remove_temp().await;
        Ok(())
    }
}
