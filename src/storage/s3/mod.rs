//! S3 and S3-compatible object stores (AWS, MinIO, Ceph RGW, R2, SeaweedFS).
//!
//! Uploads stream as multipart uploads: parts go out while the dump is still
//! running, at most `MAX_PARTS_IN_FLIGHT` at a time, so memory stays under
//! (MAX_PARTS_IN_FLIGHT + 1) × part size: 24 MiB while parts are 8 MiB. The
//! part size is 8 MiB for the first 1000 parts and doubles every 1000 parts
//! after, so 10,000 parts reach beyond 5 TB. An object smaller than one part
//! goes up in a single PUT at commit.
//!
//! Nothing is visible before commit: a multipart upload shows no object
//! until CompleteMultipartUpload, and abort (or dropping the upload) sends
//! AbortMultipartUpload. Requests are signed with rusty-s3 (presigned,
//! fresh for every try) and sent with reqwest.

mod config;
pub use config::S3StorageConfig;

use super::{ByteStream, ObjectMeta, Receipt, Storage, StorageError, StorageResult, Upload};
use crate::config::Secret;
use crate::retry::{classify, Attempt, HttpClass, RetryPolicy};
use anyhow::anyhow;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

const SIGN_FOR: Duration = Duration::from_secs(3600);
pub const FIRST_PART_SIZE: usize = 8 << 20;
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
const MAX_PARTS: u16 = 10_000;
const MAX_PART_SIZE: usize = 5 << 30;

/// Part size for part number `n` (1-based).
pub fn part_size_for(n: u16) -> usize {
    let doublings = ((n.max(1) - 1) / 1000) as u32;
    FIRST_PART_SIZE
        .saturating_mul(1 << doublings)
        .min(MAX_PART_SIZE)
}

struct Inner {
    bucket: Bucket,
    credentials: Credentials,
    endpoint: String,
    storage_class: Option<String>,
    http: reqwest::Client,
    retry: RetryPolicy,
}

pub struct S3Storage {
    inner: Arc<Inner>,
}

impl S3Storage {
    pub fn new(cfg: &S3StorageConfig) -> anyhow::Result<S3Storage> {
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let url: url::Url = endpoint.parse().map_err(|e| {
            crate::error::usage(format!("storage.endpoint: `{endpoint}` is not a URL: {e}"))
        })?;
        let style = if cfg.path_style.unwrap_or(cfg.endpoint.is_some()) {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket =
            Bucket::new(url, style, cfg.bucket.clone(), cfg.region.clone()).map_err(|e| {
                crate::error::usage(format!(
                    "storage: bucket `{}` at {endpoint}: {e}",
                    cfg.bucket
                ))
            })?;
        let (key, secret) = credentials(cfg)?;
        let credentials = match std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|_| cfg.access_key_id.is_none())
        {
            Some(token) => Credentials::new_with_token(key, secret.expose(), token),
            None => Credentials::new(key, secret.expose()),
        };
        Ok(S3Storage {
            inner: Arc::new(Inner {
                bucket,
                credentials,
                endpoint,
                storage_class: cfg.storage_class.clone(),
                http: crate::http::client_with_idle_timeout(cfg.idle_timeout.0)?,
                retry: RetryPolicy::default(),
            }),
        })
    }

    /// Multipart uploads started under `prefix` and not completed or
    /// aborted: (key, upload id).
    pub async fn pending_uploads(&self, prefix: &str) -> StorageResult<Vec<(String, String)>> {
        Ok(self
            .pending(prefix)
            .await?
            .into_iter()
            .map(|(k, id, _)| (k, id))
            .collect())
    }

    /// Pending multipart uploads with their start time.
    async fn pending(
        &self,
        prefix: &str,
    ) -> StorageResult<Vec<(String, String, chrono::DateTime<chrono::Utc>)>> {
        let inner = &self.inner;
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            inner.bucket.base_url().clone(),
            inner.credentials.key(),
            inner.credentials.secret(),
            inner.credentials.token(),
            inner.bucket.region(),
            SIGN_FOR.as_secs(),
            // Sorted by name, as signing requires.
            [("prefix", prefix), ("uploads", "")].into_iter(),
            std::iter::empty::<(&str, &str)>(),
        );
        let body = inner
            .send("list multipart uploads", prefix, || {
                inner.http.get(url.clone())
            })
            .await?
            .text()
            .await
            .map_err(|e| inner.err("list multipart uploads", prefix, crate::http::cause(e)))?;
        Ok(body
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| {
                Some((
                    xml_field(u, "Key")?,
                    xml_field(u, "UploadId")?,
                    super::parse_time(xml_field(u, "Initiated").as_deref()),
                ))
            })
            .collect())
    }
}

fn credentials(cfg: &S3StorageConfig) -> anyhow::Result<(String, Secret)> {
    let key = cfg
        .access_key_id
        .clone()
        .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
    let secret = cfg
        .secret_access_key
        .clone()
        .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok().map(Secret::new));
    match (key, secret) {
        (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => Ok((k, s)),
        _ => Err(crate::error::usage(
            "storage: no S3 credentials: set access_key_id and secret_access_key, \
             or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        )),
    }
}

fn xml_field(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(xml_unescape(&text[start..end]))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl Inner {
    fn err(&self, what: &str, key: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Other(anyhow!(
            "S3 bucket `{}` at {}: {what} {key}: {e}",
            self.bucket.name(),
            self.endpoint
        ))
    }

    /// Send a request with retries; maps 404 to NotFound and other errors
    /// to messages with S3's error code. `build` makes a fresh request for
    /// every try (bodies are `Bytes`, cheap to clone).
    async fn send(
        &self,
        what: &str,
        key: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> StorageResult<reqwest::Response> {
        self.retry
            .run(&format!("S3 {what} {key}"), || async {
                match build().send().await {
                    Err(e) => Attempt::Transient(self.err(what, key, crate::http::cause(e)), None),
                    Ok(resp) => {
                        let status = resp.status();
                        let class = classify(status, resp.headers());
                        if class == HttpClass::Success {
                            return Attempt::Done(resp);
                        }
                        let body = resp.text().await.unwrap_or_default();
                        let code = xml_field(&body, "Code").unwrap_or_default();
                        let message = xml_field(&body, "Message").unwrap_or_default();
                        let err = || {
                            self.err(
                                what,
                                key,
                                format!("HTTP {status} {code} {message}").trim_end(),
                            )
                        };
                        match class {
                            // A missing bucket is not a missing key.
                            HttpClass::NotFound if code.is_empty() || code == "NoSuchKey" => {
                                Attempt::Permanent(StorageError::NotFound {
                                    key: key.to_string(),
                                })
                            }
                            // Only our conditional writes (If-None-Match: *)
                            // are refused this way: the key is taken.
                            HttpClass::Exists => Attempt::Permanent(StorageError::AlreadyExists {
                                key: key.to_string(),
                            }),
                            HttpClass::Transient(after) => Attempt::Transient(err(), after),
                            _ if code == "SlowDown" => Attempt::Transient(err(), None),
                            _ => Attempt::Permanent(err()),
                        }
                    }
                }
            })
            .await
    }

    async fn exists(&self, key: &str) -> StorageResult<bool> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGN_FOR);
        match self.send("head", key, || self.http.head(url.clone())).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn put_request(&self, key: &str, body: Bytes) -> reqwest::RequestBuilder {
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        if let Some(class) = &self.storage_class {
            action
                .headers_mut()
                .insert("x-amz-storage-class", class.clone());
        }
        let url = action.sign(SIGN_FOR);
        let mut req = self.http.put(url).body(body).header("if-none-match", "*");
        if let Some(class) = &self.storage_class {
            req = req.header("x-amz-storage-class", class);
        }
        req
    }

    async fn abort(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(SIGN_FOR);
        match self
            .send("abort multipart upload", key, || {
                self.http.delete(url.clone())
            })
            .await
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn describe(&self) -> String {
        format!(
            "s3://{} at {}",
            self.inner.bucket.name(),
            self.inner.endpoint
        )
    }

    async fn preflight(&self) -> StorageResult<()> {
        let inner = &self.inner;
        let url = inner
            .bucket
            .head_bucket(Some(&inner.credentials))
            .sign(SIGN_FOR);
        // HEAD answers carry no error body, so the status is all we get.
        match inner.send("check bucket", inner.bucket.name(), || inner.http.head(url.clone())).await {
            Ok(_) => Ok(()),
            Err(StorageError::NotFound { .. }) => Err(inner.err("check bucket", inner.bucket.name(), "NoSuchBucket: the bucket does not exist")),
            Err(e) if e.to_string().contains("403") => Err(inner.err(
                "check bucket",
                inner.bucket.name(),
                "HTTP 403 Forbidden: access denied (check access_key_id/secret_access_key and the bucket policy)",
            )),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        super::validate_key(key)?;
        Ok(Box::new(S3Upload {
            inner: Arc::clone(&self.inner),
            key: key.to_string(),
            buf: BytesMut::new(),
            next_part: 1,
            upload_id: None,
            in_flight: JoinSet::new(),
            etags: Vec::new(),
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> StorageResult<ByteStream> {
        super::validate_key(key)?;
        let inner = &self.inner;
        let url = inner
            .bucket
            .get_object(Some(&inner.credentials), key)
            .sign(SIGN_FOR);
        let resp = inner
            .send("get", key, || inner.http.get(url.clone()))
            .await?;
        let this = Arc::clone(inner);
        let key = key.to_string();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| this.err("read", &key, crate::http::cause(e)))
        })))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let inner = &self.inner;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = inner.bucket.list_objects_v2(Some(&inner.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGN_FOR);
            let body = inner
                .send("list", prefix, || inner.http.get(url.clone()))
                .await?
                .text()
                .await
                .map_err(|e| inner.err("list", prefix, crate::http::cause(e)))?;
            let page = ListObjectsV2::parse_response(&body)
                .map_err(|e| inner.err("parse listing of", prefix, e))?;
            for c in page.contents {
                let modified = super::parse_time(c.last_modified.as_deref());
                out.push(ObjectMeta {
                    key: c.key,
                    size: c.size.unwrap_or(0),
                    modified,
                });
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<super::StaleUpload>> {
        Ok(self
            .pending(prefix)
            .await?
            .into_iter()
            .filter(|(_, _, initiated)| *initiated < before)
            .map(|(key, handle, _)| super::StaleUpload { key, handle })
            .collect())
    }

    async fn remove_stale(&self, upload: &super::StaleUpload) -> StorageResult<()> {
        self.inner.abort(&upload.key, &upload.handle).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        super::validate_key(key)?;
        let inner = &self.inner;
        let url = inner
            .bucket
            .delete_object(Some(&inner.credentials), key)
            .sign(SIGN_FOR);
        match inner
            .send("delete", key, || inner.http.delete(url.clone()))
            .await
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

struct S3Upload {
    inner: Arc<Inner>,
    key: String,
    buf: BytesMut,
    next_part: u16,
    upload_id: Option<String>,
    in_flight: JoinSet<StorageResult<(u16, String)>>,
    etags: Vec<(u16, String)>,
    size: u64,
}

impl S3Upload {
    async fn start_multipart(&mut self) -> StorageResult<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let inner = &self.inner;
        let mut action: CreateMultipartUpload = inner
            .bucket
            .create_multipart_upload(Some(&inner.credentials), &self.key);
        if let Some(class) = &inner.storage_class {
            action
                .headers_mut()
                .insert("x-amz-storage-class", class.clone());
        }
        let url = action.sign(SIGN_FOR);
        let class = inner.storage_class.clone();
        let body = inner
            .send("create multipart upload", &self.key, || {
                let r = inner.http.post(url.clone());
                match &class {
                    Some(c) => r.header("x-amz-storage-class", c),
                    None => r,
                }
            })
            .await?
            .text()
            .await
            .map_err(|e| inner.err("create multipart upload", &self.key, crate::http::cause(e)))?;
        let id = CreateMultipartUpload::parse_response(&body)
            .map_err(|e| inner.err("parse create multipart upload", &self.key, e))?
            .upload_id()
            .to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn collect_one(&mut self) -> StorageResult<()> {
        if let Some(joined) = self.in_flight.join_next().await {
            let (n, etag) =
                joined.map_err(|e| self.inner.err("upload part of", &self.key, e))??;
            self.etags.push((n, etag));
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes) -> StorageResult<()> {
        if self.next_part > MAX_PARTS {
            return Err(self
                .inner
                .err("upload", &self.key, "more than 10,000 parts"));
        }
        let upload_id = self.start_multipart().await?;
        while self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let n = self.next_part;
        self.next_part += 1;
        let inner = Arc::clone(&self.inner);
        let key = self.key.clone();
        self.in_flight.spawn(async move {
            let url = inner
                .bucket
                .upload_part(Some(&inner.credentials), &key, n, &upload_id)
                .sign(SIGN_FOR);
            let resp = inner
                .send(&format!("upload part {n} of"), &key, || {
                    inner.http.put(url.clone()).body(part.clone())
                })
                .await?;
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| inner.err("upload part of", &key, "response has no ETag"))?
                .to_string();
            Ok((n, etag))
        });
        Ok(())
    }

    async fn finish(&mut self) -> StorageResult<()> {
        let inner = Arc::clone(&self.inner);
        if self.upload_id.is_none() {
            // Small object: one PUT. `If-None-Match: *` refuses to replace on
            // servers that support it; the HEAD covers those that do not.
            if inner.exists(&self.key).await? {
                return Err(StorageError::AlreadyExists {
                    key: self.key.clone(),
                });
            }
            let body = self.buf.split().freeze();
            return inner
                .send("put", &self.key, || {
                    inner.put_request(&self.key, body.clone())
                })
                .await
                .map(|_| ());
        }
        if !self.buf.is_empty() {
            let last = self.buf.split().freeze();
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        if inner.exists(&self.key).await? {
            return Err(StorageError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        self.etags.sort_by_key(|(n, _)| *n);
        let upload_id = self.upload_id.clone().expect("multipart started");
        let action = inner.bucket.complete_multipart_upload(
            Some(&inner.credentials),
            &self.key,
            &upload_id,
            self.etags.iter().map(|(_, e)| e.as_str()),
        );
        let url = action.sign(SIGN_FOR);
        let body = action.body();
        let resp = inner
            .send("complete multipart upload", &self.key, || {
                inner
                    .http
                    .post(url.clone())
                    .body(body.clone())
                    .header("if-none-match", "*")
            })
            .await?;
        // S3 may answer 200 and still report an error in the body.
        let text = resp.text().await.unwrap_or_default();
        if text.contains("<Error>") {
            let code = xml_field(&text, "Code").unwrap_or_default();
            return Err(inner.err("complete multipart upload", &self.key, code));
        }
        self.upload_id = None;
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        self.size += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        loop {
            let part_size = part_size_for(self.next_part);
            if self.buf.len() < part_size {
                break;
            }
            let part = self.buf.split_to(part_size).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Receipt> {
        match self.finish().await {
            Ok(()) => Ok(Receipt {
                key: self.key.clone(),
                size: self.size,
            }),
            Err(e) => {
                let _ = self.abort_now().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> StorageResult<()> {
        self.abort_now().await
    }
}

impl S3Upload {
    async fn abort_now(&mut self) -> StorageResult<()> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        match self.upload_id.take() {
            Some(id) => self.inner.abort(&self.key, &id).await,
            None => Ok(()),
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Dropped without commit or abort (a panic, a cancelled task): abort
        // in the background so no parts linger and cost money.
        if let Some(id) = self.upload_id.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let inner = Arc::clone(&self.inner);
                let key = self.key.clone();
                handle.spawn(async move {
                    let _ = inner.abort(&key, &id).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_reach_five_terabytes_within_ten_thousand_parts() {
        assert_eq!(part_size_for(1), 8 << 20);
        assert_eq!(part_size_for(1000), 8 << 20);
        assert_eq!(part_size_for(1001), 16 << 20);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size_for(n) as u64).sum();
        assert!(total >= 5_000_000_000_000, "{total}");
        assert!((1..=MAX_PARTS).all(|n| part_size_for(n) <= MAX_PART_SIZE));
    }

    #[test]
    fn xml_fields_are_extracted_and_unescaped() {
        let body = "<Error><Code>AccessDenied</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("a & b"));
        assert_eq!(xml_field(body, "Nope"), None);
    }
}
