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

/// [`choose_backup`], with the manifest's sealed part (what describes the
/// database, when the backup is encrypted) opened by `identity`.
pub async fn open_backup(
    storage: &dyn Storage,
    layout: &Layout,
    target: &str,
    id: Option<&str>,
    identity: Option<&std::path::Path>,
) -> anyhow::Result<Backup> {
    let mut b = choose_backup(storage, layout, target, id).await?;
    b.manifest.unseal(identity, &b.manifest_key)?;
    Ok(b)
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

/// What every engine's restore is asked: which backup of which target,
/// what happens to the destination name, and the options only some
/// engines have (an engine refuses one it cannot honour).
pub struct RestoreJob {
    pub target: String,
    /// A backup id, or None for the newest.
    pub backup: Option<String>,
    pub mode: Mode,
    /// The age identity file for encrypted backups (see
    /// [`crate::crypto::identity_path`]).
    pub identity: Option<std::path::PathBuf>,
    pub cancel: tokio_util::sync::CancellationToken,
    pub options: RestoreOptions,
}

/// Restore options beyond the common ones. Each engine reads those it
/// knows and refuses, by name, one that is set and it cannot honour,
/// rather than restoring something other than what was asked.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The database through which databases are created, renamed and
    /// dropped (PostgreSQL's `--maintenance-db`).
    pub maintenance_db: Option<String>,
    pub fidelity: Fidelity,
    pub parallel: Option<Parallel>,
    /// Which database of a backup that holds several (a MariaDB/MySQL
    /// target with `databases` or `all`).
    pub database: Option<String>,
}

impl RestoreOptions {
    /// Refuse the options set that `engine` cannot honour (`supported`
    /// names those it can, by flag).
    pub fn refuse_unsupported(&self, engine: &str, supported: &[&str]) -> anyhow::Result<()> {
        let f = self.fidelity;
        let mut set = Vec::new();
        for (on, flag) in [
            (f.no_owner, "--no-owner"),
            (f.no_acl, "--no-acl"),
            (f.no_tablespaces, "--no-tablespaces"),
            (f.server_locale, "--server-locale"),
            (self.parallel.is_some(), "--jobs"),
            (self.maintenance_db.is_some(), "--maintenance-db"),
            (self.database.is_some(), "--database"),
        ] {
            if on && !supported.contains(&flag) {
                set.push(flag);
            }
        }
        if set.is_empty() {
            return Ok(());
        }
        Err(usage(format!(
            "{} {} not supported for {engine} restores",
            set.join(", "),
            if set.len() == 1 { "is" } else { "are" }
        )))
    }
}

/// How much of the source's properties the destination must take (the
/// defaults: all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fidelity {
    pub no_owner: bool,
    pub no_acl: bool,
    pub no_tablespaces: bool,
    /// Create with the destination server's default locale (the encoding
    /// is still the source's).
    pub server_locale: bool,
}

/// Restore with parallel jobs: the object is first spooled, decompressed
/// and checked, to a file in `spool_dir`.
#[derive(Debug, Clone)]
pub struct Parallel {
    pub jobs: u32,
    pub spool_dir: std::path::PathBuf,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_an_engine_cannot_honour_are_refused_by_flag() {
        let options = RestoreOptions {
            fidelity: Fidelity {
                no_owner: true,
                ..Fidelity::default()
            },
            database: Some("blog".into()),
            ..RestoreOptions::default()
        };
        let err = options.refuse_unsupported("SQLite", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--no-owner, --database are not supported for SQLite restores"
        );
        let err = options
            .refuse_unsupported("MariaDB/MySQL", &["--database"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--no-owner is not supported for MariaDB/MySQL restores"
        );
        assert!(options
            .refuse_unsupported("X", &["--no-owner", "--database"])
            .is_ok());
        assert!(RestoreOptions::default()
            .refuse_unsupported("SQLite", &[])
            .is_ok());
    }
}
