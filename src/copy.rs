//! Replicating backups between storages (`backstop copy`): to seed a new
//! storage or repair a copy a run could not make. Every object is checked
//! against the manifest's SHA-256 on the way, and the manifest goes last,
//! so the copy becomes visible only when complete.

use crate::catalog::{list_target, Backup, Manifest};
use crate::storage::{commit_verified, put_bytes};
use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// One end of a copy: a named storage, as a backup's destinations are.
pub use crate::pipeline::Destination as End;

/// Which backups of a target to copy.
pub enum Selection<'a> {
    All,
    Latest,
    Id(&'a str),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub target: String,
    pub copied: Vec<String>,
    /// Already complete in the destination.
    pub skipped: Vec<String>,
    /// Backup id and why its copy failed.
    pub failed: Vec<(String, String)>,
    /// A failure needs a person (credentials): exit 3.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_person: bool,
}

impl CopyReport {
    fn fail(&mut self, id: &str, e: anyhow::Error) {
        self.needs_person |= crate::error::has::<crate::error::AuthNeeded>(&e);
        self.failed.push((id.to_string(), format!("{e:#}")));
    }
}

/// `check`: read the destination's complete-looking copies too, and
/// replace one whose bytes do not match its manifest (a listing sees sizes,
/// not a flipped byte).
pub async fn copy_target(
    from: End<'_>,
    to: End<'_>,
    target: &str,
    selection: Selection<'_>,
    check: bool,
) -> anyhow::Result<CopyReport> {
    let source = list_target(from.storage, from.layout, target).await?;
    let dest = list_target(to.storage, to.layout, target).await?;
    let chosen: Vec<&Backup> = match selection {
        Selection::All => source.backups.iter().collect(),
        Selection::Latest => source.backups.last().into_iter().collect(),
        Selection::Id(id) => match source.backups.iter().find(|b| b.manifest.id.0 == id) {
            Some(b) => vec![b],
            None => bail!(crate::error::usage(format!(
                "backup `{id}` of target `{target}` is not complete in storage `{}`",
                from.name
            ))),
        },
    };
    let mut report = CopyReport {
        target: target.to_string(),
        ..CopyReport::default()
    };
    for b in chosen {
        let id = &b.manifest.id.0;
        if let Some(there) = dest.backups.iter().find(|d| &d.manifest.id.0 == id) {
            let damage = match check {
                true => first_damaged_object(to, &there.manifest).await?,
                false => None,
            };
            let Some(why) = damage else {
                report.skipped.push(id.clone());
                continue;
            };
            tracing::warn!(target_name = target, backup = %id, storage = to.name, "{why}: replacing the copy");
            if let Err(e) = remove_damaged(to, &there.manifest_key, id).await {
                report.fail(id, e);
                continue;
            }
        }
        if let Some(d) = dest.damaged.iter().find(|d| &d.id.0 == id) {
            // A damaged copy is replaced by the intact one: its manifest
            // goes first, so it never looks complete on the way.
            if let Err(e) = remove_damaged(to, &d.manifest_key, id).await {
                report.fail(id, e);
                continue;
            }
        }
        match copy_backup(from, to, target, b).await {
            Ok(()) => {
                tracing::info!(target_name = target, backup = %id, from = from.name, to = to.name, "copied");
                report.copied.push(id.clone());
            }
            Err(e) => {
                tracing::error!(target_name = target, backup = %id, "copy failed: {e:#}");
                report.fail(id, e);
            }
        }
    }
    Ok(report)
}

/// The first object of `m` in `to` whose stored bytes do not match the
/// manifest, read through.
pub async fn first_damaged_object(to: End<'_>, m: &Manifest) -> anyhow::Result<Option<String>> {
    for o in &m.objects {
        let mut stream = to
            .storage
            .open(&o.key)
            .await
            .with_context(|| format!("opening {} in {}", o.key, to.name))?;
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading {} in {}", o.key, to.name))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let actual = hex::encode(hasher.finalize());
        if size != o.stored_bytes || actual != o.sha256 {
            return Ok(Some(format!(
                "{} in storage `{}` does not match its manifest (SHA-256 {actual})",
                o.key, to.name
            )));
        }
    }
    Ok(None)
}

async fn remove_damaged(to: End<'_>, manifest_key: &str, id: &str) -> anyhow::Result<()> {
    to.storage.delete(manifest_key).await?;
    let dir = manifest_key.rsplit_once('/').map_or("", |(d, _)| d);
    for o in to.storage.list(&format!("{dir}/")).await? {
        if o.key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(&format!("{id}.")))
        {
            to.storage.delete(&o.key).await?;
        }
    }
    Ok(())
}

async fn copy_backup(from: End<'_>, to: End<'_>, target: &str, b: &Backup) -> anyhow::Result<()> {
    let m = &b.manifest;
    let mut objects = Vec::new();
    for o in &m.objects {
        // The object's own suffix (`dump.zst.age`) after the id.
        let name = o.key.rsplit('/').next().unwrap_or(&o.key);
        let ext = name
            .strip_prefix(&format!("{}.", m.id))
            .with_context(|| format!("{}: not named after backup {}", o.key, m.id))?;
        let key = to.layout.object_key(target, &m.id, m.started_at, ext);
        let receipt = copy_object(from, to, &o.key, &key, o.stored_bytes, &o.sha256).await;
        match receipt {
            Ok(key) => objects.push(crate::catalog::ObjectRecord { key, ..o.clone() }),
            Err(e) => {
                for done in &objects {
                    let _ = to.storage.delete(&done.key).await;
                }
                return Err(e);
            }
        }
    }
    let manifest = Manifest {
        objects,
        ..m.clone()
    };
    let key = to.layout.manifest_key(target, &m.id, m.started_at);
    let mut body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    body.push(b'\n');
    if let Err(e) = put_bytes(to.storage, &key, Bytes::from(body)).await {
        for o in &manifest.objects {
            let _ = to.storage.delete(&o.key).await;
        }
        return Err(anyhow::Error::new(e).context(format!("writing manifest {key} to {}", to.name)));
    }
    Ok(())
}

/// Stream one object across, checking it against the manifest before the
/// destination commits it.
async fn copy_object(
    from: End<'_>,
    to: End<'_>,
    source_key: &str,
    key: &str,
    size: u64,
    sha256: &str,
) -> anyhow::Result<String> {
    let mut stream = from
        .storage
        .open(source_key)
        .await
        .with_context(|| format!("opening {source_key} in {}", from.name))?;
    let mut upload = to
        .storage
        .create(key)
        .await
        .with_context(|| format!("creating {key} in {}", to.name))?;
    let (mut n, mut hasher) = (0u64, Sha256::new());
    let streamed: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.with_context(|| format!("reading {source_key} from {}", from.name))?;
            n += chunk.len() as u64;
            hasher.update(&chunk);
            upload
                .write(chunk)
                .await
                .with_context(|| format!("writing {key} to {}", to.name))?;
        }
        let actual = hex::encode(hasher.clone().finalize());
        if n != size || actual != sha256 {
            bail!(
                "{source_key} in {} does not match its manifest ({n} bytes, SHA-256 {actual}; \
                 the manifest says {size} bytes, {sha256}): not copied",
                from.name
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        let _ = upload.abort().await;
        return Err(e);
    }
    let receipt = commit_verified(to.storage, upload, key, size, sha256)
        .await
        .with_context(|| format!("committing {key} to {}", to.name))?;
    Ok(receipt.key)
}
