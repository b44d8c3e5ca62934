//! Restore to a path: the file is written beside the destination, checked
//! (`PRAGMA integrity_check`), synced and renamed into place; an existing
//! file is replaced only with `--replace`, never half-written.

use crate::catalog::Layout;
use crate::fetch::{fetch_into, StoredObject};
use crate::report::VerifySummary;
use crate::restore::{open_backup, Mode, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use anyhow::{bail, Context};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

pub struct SqliteRestore {
    pub target: String,
    pub backup: Option<String>,
    pub path: PathBuf,
    pub mode: Mode,
    pub identity: Option<PathBuf>,
    pub cancel: CancellationToken,
}

/// `sqlite:///abs/path` or `sqlite:relative/path`.
pub fn parse_url(text: &str) -> Option<PathBuf> {
    let rest = text.strip_prefix("sqlite:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

pub async fn restore(
    storage: &dyn Storage,
    layout: &Layout,
    req: SqliteRestore,
) -> anyhow::Result<RestoreOutcome> {
    let usage = crate::error::usage;
    let backup = open_backup(
        storage,
        layout,
        &req.target,
        req.backup.as_deref(),
        req.identity.as_deref(),
    )
    .await?;
    let m = backup.manifest;
    if m.source_type != "sqlite" {
        bail!(usage(format!(
            "backup {} is a {} backup; restore it into a {} URL, not sqlite://",
            m.id, m.source_type, m.source_type
        )));
    }
    let object = m
        .object("database")
        .with_context(|| format!("manifest {} names no database object", backup.manifest_key))?;
    let dest = &req.path;
    let exists = dest.exists();
    match req.mode {
        Mode::Create | Mode::Empty if exists => bail!(usage(format!(
            "{} exists; restore to a new path, or replace it with --replace",
            dest.display()
        ))),
        Mode::Replace { .. } if !exists => bail!(usage(format!(
            "{} does not exist: nothing to replace (leave out --replace)",
            dest.display()
        ))),
        _ => {}
    }
    let wal = PathBuf::from(format!("{}-wal", dest.display()));
    if exists && wal.metadata().is_ok_and(|m| m.len() > 0) {
        // Its frames would be applied to the restored file: corruption.
        bail!(usage(format!(
            "{} has a write-ahead log ({}): the database is open or was not closed cleanly; \
             stop the application using it, then restore",
            dest.display(),
            wal.display()
        )));
    }
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stored = StoredObject::of_backup(&m, object, req.identity.as_deref())?;
    stored.check_identity(storage).await?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.backstop-restore-"))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let (file, temp_path) = temp.into_parts();
    let bytes = fetch_into(
        storage,
        &stored,
        Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
        &req.cancel,
    )
    .await?;
    let check = temp_path.to_path_buf();
    tokio::task::spawn_blocking(move || integrity_check(&check))
        .await
        .context("sqlite check task")??;
    std::fs::File::open(&temp_path)?.sync_all()?;
    let kept_replaced = match req.mode {
        Mode::Replace {
            keep_replaced: true,
        } => {
            let old = PathBuf::from(format!(
                "{}.replaced-{}",
                dest.display(),
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            ));
            std::fs::rename(dest, &old)
                .with_context(|| format!("keeping {} as {}", dest.display(), old.display()))?;
            Some(old.display().to_string())
        }
        _ => None,
    };
    for stale in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{stale}", dest.display()));
    }
    let placed = match req.mode {
        Mode::Replace { .. } => temp_path.persist(dest).map_err(|e| e.error),
        _ => temp_path.persist_noclobber(dest).map_err(|e| e.error),
    };
    if let Err(e) = placed {
        // The kept original goes back under its name: nothing changed.
        if let Some(old) = &kept_replaced {
            let _ = std::fs::rename(old, dest);
        }
        return Err(anyhow::Error::new(e).context(format!(
            "moving the restored database to {}",
            dest.display()
        )));
    }
    crate::fsutil::fsync_dir(dir).ok();
    tracing::info!(backup = %m.id, path = %dest.display(), bytes, "restore complete");
    Ok(RestoreOutcome {
        backup_id: m.id.0.clone(),
        database: dest.display().to_string(),
        bytes,
        kept_replaced,
        manifest: Some(m),
    })
}

/// `PRAGMA integrity_check` must say "ok".
pub fn integrity_check(path: &Path) -> anyhow::Result<()> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let verdict: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        bail!("{}: integrity_check says {verdict}", path.display());
    }
    Ok(())
}

/// Verify: integrity_check, then read every row of every table.
pub fn read_through(path: &Path) -> anyhow::Result<VerifySummary> {
    integrity_check(path)?;
    let c = Connection::open(path)?;
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut summary = VerifySummary::default();
    for t in &tables {
        let sql = format!("SELECT * FROM \"{}\"", t.replace('"', "\"\""));
        let mut stmt = c.prepare(&sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next().with_context(|| format!("reading table {t}"))? {
            for i in 0..columns {
                row.get_ref(i)
                    .with_context(|| format!("reading table {t}"))?;
            }
            summary.rows += 1;
        }
        summary.tables += 1;
    }
    Ok(summary)
}

/// Verify: restore into a new directory in `parent`, check and read it,
/// remove it.
pub async fn verify(
    storage: &dyn Storage,
    layout: &Layout,
    v: VerifyRequest<'_>,
    parent: &Path,
) -> anyhow::Result<(RestoreOutcome, VerifySummary)> {
    let target = v.target;
    let dir = tempfile::Builder::new()
        .prefix("backstop-verify-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
    let path = dir.path().join(format!("{target}.db"));
    let outcome = restore(
        storage,
        layout,
        SqliteRestore {
            target: target.to_string(),
            backup: Some(v.backup_id),
            path: path.clone(),
            mode: Mode::Create,
            identity: v.identity,
            cancel: v.cancel.clone(),
        },
    )
    .await?;
    let summary = tokio::task::spawn_blocking(move || read_through(&path))
        .await
        .context("sqlite verify task")??;
    if v.keep {
        tracing::info!(path = %dir.keep().display(), "kept the scratch copy");
    }
    Ok((outcome, summary))
}
