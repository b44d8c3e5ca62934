//! What every engine's restore shares: which backup, what happens to the
//! destination, and what came of it. The engines' own restores live in
//! `engine/<name>/restore.rs`.

use crate::catalog::{list_target, Backup, Layout};
use crate::error::usage;
use crate::storage::Storage;
use anyhow::bail;

/// Pick the backup to restore: an id, or the newest one. "latest" means the
/// newest backup *attempt*: when that one is damaged we refuse and name it
/// and the newest intact one, rather than quietly restoring older data.
pub async fn choose_backup(
    storage: &dyn Storage,
    layout: &Layout,
    target: &str,
    id: Option<&str>,
) -> anyhow::Result<Backup> {
    let listing = list_target(storage, layout, target).await?;
    match id {
        None | Some("latest") => {
            if let Some(d) = listing.damaged_newest() {
                let older = match listing.backups.last() {
                    Some(b) => format!(
                        "the newest intact backup is {}; restore it explicitly with --backup {}",
                        b.manifest.id, b.manifest.id
                    ),
                    None => "there is no intact backup".to_string(),
                };
                bail!(
                    "the newest backup of target `{target}`, {}, is damaged ({}); {older}",
                    d.id,
                    d.why
                );
            }
            listing.backups.last().cloned().ok_or_else(|| {
                usage(format!(
                    "target `{target}` has no complete backup in {}",
                    storage.describe()
                ))
            })
        }
        Some(id) => {
            if let Some(b) = listing.backups.iter().find(|b| b.manifest.id.0 == id) {
                return Ok(b.clone());
            }
            match listing.damaged.iter().find(|d| d.id.0 == id) {
                Some(d) => bail!("backup `{id}` of target `{target}` is damaged: {}", d.why),
                None => Err(usage(format!(
                    "backup `{id}` of target `{target}` not found (see `backstop list`)"
                ))),
            }
        }
    }
}

/// What happens to the destination database name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The database must not exist; it is created.
    Create,
    /// The database must exist and be empty; it is replaced by the restored one.
    Empty,
    /// The database must exist; it is replaced by the restored one (its
    /// sessions are ended), and kept under a dated name when asked.
    Replace { keep_replaced: bool },
}

#[derive(Debug)]
pub struct RestoreOutcome {
    pub backup_id: String,
    pub database: String,
    /// Stored bytes read.
    pub bytes: u64,
    /// The replaced database, when it was kept.
    pub kept_replaced: Option<String>,
    /// The backup's manifest (None for a dump file).
    pub manifest: Option<crate::catalog::Manifest>,
}

/// What every engine's verify is asked: which backup, decrypted with what,
/// and whether to keep the scratch copy.
pub struct VerifyRequest<'a> {
    pub target: &'a str,
    pub backup_id: String,
    pub identity: Option<std::path::PathBuf>,
    pub keep: bool,
    pub cancel: &'a tokio_util::sync::CancellationToken,
}
