//! Box (box.com) storage, natively: folders by path, direct and chunked
//! uploads, marker-paged listings, downloads through the 302 Box answers.
//!
//! Box's chunked upload needs the file size up front, so an upload is spooled
//! to `spool_dir` (hashing SHA-1 as it is written) and sent at commit: under
//! 20 MB as one direct upload, otherwise as an upload session with the
//! server's part size, two parts in flight, committed with the whole-file
//! digest. Both are atomic on Box's side: a failed run leaves no file, and the
//! spool file is removed on every path. Names are never overwritten (Box
//! answers 409 `item_name_in_use`).

pub mod config;

pub mod auth;

use super::{
    validate_key, ByteStream, ObjectMeta, Receipt, Storage, StorageError, StorageResult, Upload,
};
use crate::config::boxcom::BoxStorageConfig;
use crate::retry::{classify, retry_after, Attempt, HttpClass, RetryPolicy};
use crate::secret::Secret;
use async_trait::async_trait;
use auth::{AuthError, BoxAuthProvider};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// Box accepts upload sessions from 20 MB on; smaller files go direct.
pub const CHUNKED_FROM: u64 = 20_000_000;
const PARTS_IN_FLIGHT: usize = 2;

struct Inner {
    http: reqwest::Client,
    api: String,
    upload: String,
    auth: BoxAuthProvider,
    root_id: String,
    /// The configured folder path, "a/b".
    base: String,
    spool_dir: PathBuf,
    /// Folder path (relative to the root folder) → id.
    folders: Mutex<HashMap<String, String>>,
    retry: RetryPolicy,
}

pub struct BoxStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    name: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    modified_at: Option<String>,
}

#[derive(Deserialize)]
struct ItemPage {
    entries: Vec<Item>,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Deserialize)]
struct BoxError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl BoxStorage {
    pub fn new(c: &BoxStorageConfig) -> anyhow::Result<BoxStorage> {
        let http = crate::http::client()?;
        Ok(BoxStorage {
            inner: Arc::new(Inner {
                auth: BoxAuthProvider::new(&c.auth, &c.token_url, http.clone()),
                http,
                api: c.api_url.trim_end_matches('/').to_string(),
                upload: c.upload_url.trim_end_matches('/').to_string(),
                root_id: c.root_folder_id.clone(),
                base: c.folder.trim_matches('/').to_string(),
                spool_dir: c.spool_dir.clone(),
                folders: Mutex::new(HashMap::new()),
                retry: RetryPolicy::default(),
            }),
        })
    }

    pub fn auth(&self) -> &BoxAuthProvider {
        &self.inner.auth
    }
}

fn auth_err(e: AuthError) -> StorageError {
    match e {
        AuthError::NeedsPerson(why) => StorageError::Auth(crate::error::AuthNeeded(why)),
        AuthError::Other(e) => StorageError::Other(e),
    }
}

impl Inner {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Other(anyhow::anyhow!("Box {what}: {e}"))
    }

    /// One API call with retries: 429 and 5xx honour Retry-After, a 401
    /// refreshes the access token once. Success and 409 are returned to the
    /// caller; 404 is NotFound.
    async fn call(
        &self,
        what: &str,
        key: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> StorageResult<reqwest::Response> {
        let stale: std::sync::Mutex<Option<Secret>> = std::sync::Mutex::new(None);
        let refreshed = std::sync::atomic::AtomicBool::new(false);
        self.retry
            .run(&format!("Box {what} {key}"), || async {
                let prior = stale.lock().expect("lock").clone();
                let token = match self.auth.access_token(prior.as_ref()).await {
                    Ok(t) => t,
                    Err(e) => return Attempt::Permanent(auth_err(e)),
                };
                let resp = match build(token.expose()).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Attempt::Transient(
                            self.err(what, format!("{key}: {}", crate::http::cause(e))),
                            None,
                        )
                    }
                };
                let status = resp.status();
                if status.is_success()
                    || status == StatusCode::CONFLICT
                    || status == StatusCode::ACCEPTED
                {
                    return Attempt::Done(resp);
                }
                let class = classify(status, resp.headers());
                if class == HttpClass::NotFound {
                    return Attempt::Permanent(StorageError::NotFound {
                        key: key.to_string(),
                    });
                }
                let body: Option<BoxError> = resp.json().await.ok();
                let detail = body
                    .map(|b| format!("{} {}", b.code, b.message))
                    .unwrap_or_default();
                let err = self.err(what, format!("{key}: HTTP {status} {detail}"));
                if status == StatusCode::UNAUTHORIZED
                    && !refreshed.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    *stale.lock().expect("lock") = Some(token);
                    return Attempt::Transient(err, Some(std::time::Duration::ZERO));
                }
                match class {
                    HttpClass::Transient(after) => Attempt::Transient(err, after),
                    _ => Attempt::Permanent(err),
                }
            })
            .await
    }

    async fn list_folder(&self, id: &str) -> StorageResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/folders/{id}/items?fields=type,id,name,size,modified_at&limit=1000&usemarker=true",
                self.api
            );
            if let Some(m) = &marker {
                url.push_str(&format!("&marker={}", urlencode(m)));
            }
            let resp = self
                .call("list folder", id, |t| self.http.get(&url).bearer_auth(t))
                .await?;
            let page: ItemPage = resp
                .json()
                .await
                .map_err(|e| self.err("list folder", crate::http::cause(e)))?;
            out.extend(page.entries);
            match page.next_marker {
                Some(m) if !m.is_empty() => marker = Some(m),
                _ => return Ok(out),
            }
        }
    }

    /// The id of folder `path` (relative to the configured folder; "" is
    /// the configured folder itself), creating levels when `create`.
    async fn folder_id(&self, path: &str, create: bool) -> StorageResult<Option<String>> {
        let full = [self.base.as_str(), path.trim_matches('/')]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let mut id = self.root_id.clone();
        let mut walked = String::new();
        for name in full.split('/').filter(|s| !s.is_empty()) {
            walked = if walked.is_empty() {
                name.to_string()
            } else {
                format!("{walked}/{name}")
            };
            if let Some(known) = self.folders.lock().await.get(&walked) {
                id = known.clone();
                continue;
            }
            let found = self.find_in(&id, name, "folder").await?;
            let next = match (found, create) {
                (Some(item), _) => item.id,
                (None, false) => return Ok(None),
                (None, true) => self.create_folder(&id, name).await?,
            };
            self.folders
                .lock()
                .await
                .insert(walked.clone(), next.clone());
            id = next;
        }
        Ok(Some(id))
    }

    async fn find_in(&self, folder: &str, name: &str, kind: &str) -> StorageResult<Option<Item>> {
        Ok(self
            .list_folder(folder)
            .await?
            .into_iter()
            .find(|i| i.name == name && i.kind == kind))
    }

    async fn create_folder(&self, parent: &str, name: &str) -> StorageResult<String> {
        let url = format!("{}/folders", self.api);
        let body = serde_json::json!({ "name": name, "parent": { "id": parent } });
        let resp = self
            .call("create folder", name, |t| {
                self.http.post(&url).bearer_auth(t).json(&body)
            })
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            // Another run created it first (item_name_in_use): find it.
            return self
                .find_in(parent, name, "folder")
                .await?
                .map(|i| i.id)
                .ok_or_else(|| {
                    self.err("create folder", format!("{name}: 409 but no such folder"))
                });
        }
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let c: Created = resp
            .json()
            .await
            .map_err(|e| self.err("create folder", crate::http::cause(e)))?;
        Ok(c.id)
    }

    async fn find_file(&self, key: &str) -> StorageResult<Option<Item>> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        match self.folder_id(dir, false).await? {
            Some(folder) => self.find_in(&folder, name, "file").await,
            None => Ok(None),
        }
    }

    /// Every file under folder `dir` (recursively), as keys.
    async fn walk(&self, dir: &str, out: &mut Vec<ObjectMeta>) -> StorageResult<()> {
        let Some(id) = self.folder_id(dir, false).await? else {
            return Ok(());
        };
        let mut pending = vec![(dir.trim_matches('/').to_string(), id)];
        while let Some((path, id)) = pending.pop() {
            for item in self.list_folder(&id).await? {
                let key = if path.is_empty() {
                    item.name.clone()
                } else {
                    format!("{path}/{}", item.name)
                };
                match item.kind.as_str() {
                    "folder" => {
                        self.folders.lock().await.insert(
                            [self.base.as_str(), key.as_str()]
                                .iter()
                                .filter(|s| !s.is_empty())
                                .copied()
                                .collect::<Vec<_>>()
                                .join("/"),
                            item.id.clone(),
                        );
                        pending.push((key, item.id));
                    }
                    "file" => out.push(ObjectMeta {
                        key,
                        size: item.size.unwrap_or(0),
                        modified: super::parse_time(item.modified_at.as_deref()),
                    }),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Spool files start with this; a killed run leaves one behind.
const SPOOL_MARKER: &str = ".backstop-spool-";

#[async_trait]
impl Storage for BoxStorage {
    async fn credential_expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.auth.refresh_token_expires_at().await
    }

    /// Box commits atomically (nothing half-done lives on Box's side); what
    /// a killed run leaves is its local spool file. Spool files cannot be
    /// told apart by target, so every one older than `before` is listed.
    async fn stale_uploads(
        &self,
        _prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<super::StaleUpload>> {
        let dir = self.inner.spool_dir.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(Vec::new());
            };
            Ok(entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(SPOOL_MARKER))
                .filter(|e| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| chrono::DateTime::<chrono::Utc>::from(t) < before)
                })
                .map(|e| super::StaleUpload {
                    key: format!("spool file {}", e.path().display()),
                    handle: e.file_name().to_string_lossy().into_owned(),
                })
                .collect())
        })
        .await
        .map_err(|e| StorageError::other("box: listing spool files", e))?
    }

    async fn remove_stale(&self, upload: &super::StaleUpload) -> StorageResult<()> {
        if !upload.handle.starts_with(SPOOL_MARKER) || upload.handle.contains('/') {
            return Err(StorageError::InvalidKey {
                key: upload.handle.clone(),
                reason: "not a spool file of this storage".into(),
            });
        }
        match tokio::fs::remove_file(self.inner.spool_dir.join(&upload.handle)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::other(
                format!("box: removing {}", upload.key),
                e,
            )),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        format!(
            "box:{} (under folder id {})",
            self.inner.base, self.inner.root_id
        )
    }

    async fn preflight(&self) -> StorageResult<()> {
        self.inner.folder_id("", true).await.map(|_| ())
    }

    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        validate_key(key)?;
        let spool = tempfile::Builder::new()
            .prefix(SPOOL_MARKER)
            .tempfile_in(&self.inner.spool_dir)
            .map_err(|e| {
                self.inner.err(
                    "spool",
                    format!("creating a file in {}: {e}", self.inner.spool_dir.display()),
                )
            })?;
        Ok(Box::new(BoxUpload {
            inner: Arc::clone(&self.inner),
            key: key.to_string(),
            spool,
            sha1: Sha1::new(),
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> StorageResult<ByteStream> {
        validate_key(key)?;
        let inner = &self.inner;
        let file = inner
            .find_file(key)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_string(),
            })?;
        let url = format!("{}/files/{}/content", inner.api, file.id);
        loop {
            // Box answers 302 to a download URL (followed by the client,
            // which drops the Authorization header across hosts), or 202 +
            // Retry-After when the file is not ready yet.
            let resp = inner
                .call("download", key, |t| inner.http.get(&url).bearer_auth(t))
                .await?;
            if resp.status() == StatusCode::ACCEPTED {
                let wait = retry_after(resp.headers()).unwrap_or(std::time::Duration::from_secs(1));
                tokio::time::sleep(wait).await;
                continue;
            }
            let this = Arc::clone(inner);
            let key = key.to_string();
            return Ok(Box::pin(resp.bytes_stream().map(move |r| {
                r.map_err(|e| this.err("download", format!("{key}: {}", crate::http::cause(e))))
            })));
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        // The deepest folder the prefix names completely.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        self.inner.walk(dir, &mut out).await?;
        out.retain(|m| m.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        validate_key(key)?;
        let inner = &self.inner;
        let Some(file) = inner.find_file(key).await? else {
            return Ok(());
        };
        let url = format!("{}/files/{}", inner.api, file.id);
        match inner
            .call("delete", key, |t| inner.http.delete(&url).bearer_auth(t))
            .await
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

struct BoxUpload {
    inner: Arc<Inner>,
    key: String,
    spool: tempfile::NamedTempFile,
    sha1: Sha1,
    size: u64,
}

#[derive(Deserialize)]
struct Session {
    id: String,
    part_size: u64,
    session_endpoints: SessionEndpoints,
}

#[derive(Deserialize)]
struct SessionEndpoints {
    upload_part: String,
    commit: String,
    abort: String,
}

fn digest_header(sha1: &[u8]) -> String {
    format!(
        "sha={}",
        base64::engine::general_purpose::STANDARD.encode(sha1)
    )
}

impl BoxUpload {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut f = self.spool.reopen()?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    async fn send(&self, folder: &str, name: &str, sha1: &[u8]) -> StorageResult<()> {
        if self.size < CHUNKED_FROM {
            self.direct(folder, name, sha1).await
        } else {
            self.chunked(folder, name, sha1).await
        }
    }

    async fn direct(&self, folder: &str, name: &str, sha1: &[u8]) -> StorageResult<()> {
        let inner = &self.inner;
        let data = Bytes::from(
            self.read_range(0, self.size)
                .map_err(|e| inner.err("spool", e))?,
        );
        let attributes =
            serde_json::json!({ "name": name, "parent": { "id": folder } }).to_string();
        let url = format!("{}/files/content", inner.upload);
        let resp = inner
            .call("upload", &self.key, |t| {
                // The attributes part must come before the file part.
                let form = reqwest::multipart::Form::new()
                    .text("attributes", attributes.clone())
                    .part(
                        "file",
                        reqwest::multipart::Part::stream(data.clone()).file_name(name.to_string()),
                    );
                inner
                    .http
                    .post(&url)
                    .bearer_auth(t)
                    .header("content-md5", hex::encode(sha1))
                    .multipart(form)
            })
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            return Err(StorageError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        Ok(())
    }

    async fn chunked(&self, folder: &str, name: &str, sha1: &[u8]) -> StorageResult<()> {
        let inner = &self.inner;
        let url = format!("{}/files/upload_sessions", inner.upload);
        let body =
            serde_json::json!({ "folder_id": folder, "file_size": self.size, "file_name": name });
        let resp = inner
            .call("create upload session", &self.key, |t| {
                inner.http.post(&url).bearer_auth(t).json(&body)
            })
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            return Err(StorageError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        let session: Session = resp
            .json()
            .await
            .map_err(|e| inner.err("upload session", crate::http::cause(e)))?;
        let result = self.upload_parts(&session, sha1).await;
        if result.is_err() {
            let abort = session.session_endpoints.abort.clone();
            if let Err(e) = inner
                .call("abort upload session", &session.id, |t| {
                    inner.http.delete(&abort).bearer_auth(t)
                })
                .await
            {
                tracing::warn!("aborting Box upload session {}: {e:#}", session.id);
            }
        }
        result
    }

    async fn upload_parts(&self, session: &Session, sha1: &[u8]) -> StorageResult<()> {
        let inner = &self.inner;
        let mut parts: Vec<(u64, serde_json::Value)> = Vec::new();
        let mut in_flight: JoinSet<StorageResult<(u64, serde_json::Value)>> = JoinSet::new();
        let mut offset = 0;
        while offset < self.size || !in_flight.is_empty() {
            if offset < self.size && in_flight.len() < PARTS_IN_FLIGHT {
                let len = session.part_size.min(self.size - offset);
                let data = Bytes::from(
                    self.read_range(offset, len)
                        .map_err(|e| inner.err("spool", e))?,
                );
                let (inner, url, total, key) = (
                    Arc::clone(inner),
                    session.session_endpoints.upload_part.clone(),
                    self.size,
                    self.key.clone(),
                );
                let start = offset;
                in_flight.spawn(async move {
                    let digest = digest_header(&Sha1::digest(&data));
                    let range = format!("bytes {start}-{}/{total}", start + len - 1);
                    let resp = inner
                        .call("upload part", &key, |t| {
                            inner
                                .http
                                .put(&url)
                                .bearer_auth(t)
                                .header("content-type", "application/octet-stream")
                                .header("content-range", &range)
                                .header("digest", &digest)
                                .body(data.clone())
                        })
                        .await?;
                    let v: serde_json::Value = resp
                        .json()
                        .await
                        .map_err(|e| inner.err("upload part", crate::http::cause(e)))?;
                    Ok((start, v["part"].clone()))
                });
                offset += len;
                continue;
            }
            let done = in_flight.join_next().await.expect("a part in flight");
            parts.push(done.map_err(|e| inner.err("upload part", e))??);
        }
        parts.sort_by_key(|(o, _)| *o);
        let body =
            serde_json::json!({ "parts": parts.into_iter().map(|(_, p)| p).collect::<Vec<_>>() });
        let digest = digest_header(sha1);
        let url = session.session_endpoints.commit.clone();
        loop {
            let resp = inner
                .call("commit upload session", &self.key, |t| {
                    inner
                        .http
                        .post(&url)
                        .bearer_auth(t)
                        .header("digest", &digest)
                        .json(&body)
                })
                .await?;
            match resp.status() {
                StatusCode::ACCEPTED => {
                    // Parts still being processed: wait as told and repeat.
                    tokio::time::sleep(
                        retry_after(resp.headers()).unwrap_or(std::time::Duration::from_secs(1)),
                    )
                    .await;
                }
                StatusCode::CONFLICT => {
                    return Err(StorageError::AlreadyExists {
                        key: self.key.clone(),
                    })
                }
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl Upload for BoxUpload {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        self.sha1.update(&chunk);
        self.size += chunk.len() as u64;
        self.spool
            .as_file_mut()
            .write_all(&chunk)
            .map_err(|e| self.inner.err("spool", e))
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Receipt> {
        self.spool
            .as_file_mut()
            .flush()
            .map_err(|e| self.inner.err("spool", e))?;
        let sha1 = std::mem::take(&mut self.sha1).finalize().to_vec();
        let (dir, name) = self.key.rsplit_once('/').unwrap_or(("", self.key.as_str()));
        let folder = self
            .inner
            .folder_id(dir, true)
            .await?
            .expect("created when missing");
        let name = name.to_string();
        self.send(&folder, &name, &sha1).await?;
        // The spool file goes with `self`.
        Ok(Receipt {
            key: self.key.clone(),
            size: self.size,
        })
    }

    async fn abort(self: Box<Self>) -> StorageResult<()> {
        Ok(()) // nothing reached Box before commit; the spool goes on drop
    }
}
