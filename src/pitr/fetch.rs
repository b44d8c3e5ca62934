//! `backstop wal fetch %f %p`, PostgreSQL's restore_command: one WAL file
//! from storage into the path recovery names.
//!
//! Exit 0 when the file was written (hash-checked, fsynced, renamed into
//! place), 1 only when every storage was listed and none holds it (the end
//! of the stored WAL: recovery ends there, or tries the next timeline), and
//! 126 on any other failure, which PostgreSQL treats as fatal: a storage
//! outage must stop recovery, not end it early and promote a server that
//! is missing writes.

use super::archive::WalArchive;
use super::wal_names::WalFile;
use crate::cli::OpenStorage;
use crate::error::ExitKind;
use std::path::Path;

pub async fn fetch(
    name: &str,
    dest: &Path,
    target: &str,
    storages: &[&OpenStorage],
    identity: Option<&Path>,
) -> ExitKind {
    let Some(file) = WalFile::parse(name) else {
        // Recovery also asks for files backstop never stores (a .partial,
        // a .backup label): absent.
        tracing::debug!(wal = %name, "not a WAL file backstop stores");
        return ExitKind::Failed;
    };
    let mut errors = Vec::new();
    for s in storages {
        let archive = WalArchive::new(s.storage.as_ref(), &s.layout, target);
        match archive.get(file, identity).await {
            Ok(Some(raw)) => {
                return match crate::fsutil::write_atomic(dest, &raw, 0o600) {
                    Ok(()) => {
                        tracing::info!(wal = %name, storage = %s.name, "WAL restored");
                        ExitKind::Success
                    }
                    Err(e) => {
                        tracing::error!(wal = %name, "writing {}: {e}", dest.display());
                        ExitKind::StopRecovery
                    }
                };
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(wal = %name, storage = %s.name, "{e:#}");
                errors.push(format!("{}: {e:#}", s.name));
            }
        }
    }
    if errors.is_empty() {
        tracing::info!(wal = %name, "not stored (the end of the stored WAL)");
        ExitKind::Failed
    } else {
        tracing::error!(wal = %name, "cannot be fetched, so recovery must stop here rather than end early: {}", errors.join("; "));
        ExitKind::StopRecovery
    }
}
