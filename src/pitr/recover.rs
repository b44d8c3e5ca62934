//! `backstop restore --pgdata DIR --to-time T | --to-lsn L | --latest`: a
//! base backup unpacked into a new data directory, set up to replay the
//! stored WAL to the target and stop there.
//!
//! Before anything is downloaded: the base backup is the newest one that
//! ended before the target, and the stored WAL from its start is
//! contiguous (no gap), reaches its end (the backup is consistent only
//! there) and was still being stored at the target time. The directory is
//! filled beside its final name and renamed into place when whole.
//! PostgreSQL itself refuses to finish recovery before a time or LSN
//! target it never reached, so a restore never silently stops short.

use super::archive::WalArchive;
use super::wal_names::{parse_lsn, Segment};
use crate::catalog::{list_target, Backup};
use crate::cli::OpenStorage;
use crate::error::usage;
use crate::fetch::{fetch_into, StoredObject};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub enum RecoveryTarget {
    Time(DateTime<Utc>),
    Lsn(String),
    /// Everything stored.
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// End recovery and open for writes (a restore).
    Promote,
    /// Stop at the target, read-only (a verify, or a look first).
    Pause,
}

pub struct Recover<'a> {
    pub target: String,
    pub storages: Vec<&'a OpenStorage>,
    pub pgdata: PathBuf,
    pub to: RecoveryTarget,
    pub action: Action,
    pub identity: Option<PathBuf>,
    /// The config `wal fetch` reads (absolute).
    pub config: PathBuf,
    pub cancel: CancellationToken,
}

pub struct Recovered {
    pub backup_id: String,
    /// The base backup's server version (its major must replay it).
    pub server_version: String,
    pub storage: String,
    /// The last stored WAL segment recovery may replay.
    pub wal_until: String,
}

/// The base backup for the target, from the listing alone.
fn choose_base<'b>(backups: &'b [Backup], to: &RecoveryTarget) -> anyhow::Result<&'b Backup> {
    let bases: Vec<&Backup> = backups
        .iter()
        .filter(|b| {
            b.manifest.format == "basebackup"
                && b.manifest
                    .objects
                    .first()
                    .and_then(|o| o.physical.as_ref())
                    .is_some()
        })
        .collect();
    let Some(oldest) = bases.first() else {
        bail!(usage(
            "no base backup is stored: take one with `backstop backup --physical`"
        ));
    };
    let chosen = match to {
        RecoveryTarget::Latest => bases.last().copied(),
        RecoveryTarget::Time(t) => bases
            .iter()
            .rev()
            .find(|b| b.manifest.finished_at <= *t)
            .copied(),
        RecoveryTarget::Lsn(l) => {
            let l = parse_lsn(l)?;
            bases
                .iter()
                .rev()
                .find(|b| {
                    physical(b)
                        .and_then(|p| parse_lsn(&p.end_lsn).ok())
                        .is_some_and(|end| end <= l)
                })
                .copied()
        }
    };
    chosen.ok_or_else(|| {
        usage(format!(
            "the target is before the oldest base backup ({}, finished {}): nothing stored can restore to it",
            oldest.manifest.id,
            oldest.manifest.finished_at.to_rfc3339()
        ))
    })
}

fn physical(b: &Backup) -> Option<&super::base_tar::PhysicalFacts> {
    b.manifest.objects.first().and_then(|o| o.physical.as_ref())
}

/// The WAL check: contiguous from the base's start segment, through its
/// end, and (for a time target) stored after the target. Returns the last
/// segment of the contiguous run.
async fn prove_wal(
    archive: &WalArchive<'_>,
    base: &Backup,
    to: &RecoveryTarget,
) -> anyhow::Result<Segment> {
    let p = physical(base).expect("chosen bases are physical");
    let start = Segment::of_lsn(p.timeline, &p.start_lsn)?;
    let end = Segment::of_lsn(p.timeline, &p.end_lsn)?;
    let run = super::window::contiguous_run(archive, start).await?;
    if let (Some((l, _)), Some(gap)) = (run.last, run.gap_before) {
        if l.number >= end.number {
            tracing::warn!(after = %l.name(), next = %gap.name(), "WAL gap after the base backup's end: recovery can reach only up to it");
        }
    }
    let last = run.last;
    let Some((last, stored_at)) = last else {
        bail!(
            "the WAL the base backup {} starts from ({}) is not stored: it cannot be restored",
            base.manifest.id,
            start.name()
        );
    };
    if last.number < end.number {
        bail!(
            "the stored WAL after base backup {} stops at {} (a gap, or not stored yet), before its end {}: \
             the backup cannot be made consistent",
            base.manifest.id,
            last.name(),
            end.name()
        );
    }
    if let RecoveryTarget::Time(t) = to {
        if stored_at < *t {
            bail!(usage(format!(
                "the stored WAL ends with {} (stored {}), before the target {}: nothing after that \
                 moment is stored (is `backstop wal stream` running?)",
                last.name(),
                stored_at.to_rfc3339(),
                t.to_rfc3339()
            )));
        }
    }
    Ok(last)
}

pub async fn recover(req: &Recover<'_>) -> anyhow::Result<Recovered> {
    if req.pgdata.exists()
        && std::fs::read_dir(&req.pgdata)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(usage(format!(
            "--pgdata {} exists and is not empty: a restore makes a new data directory",
            req.pgdata.display()
        )));
    }
    let mut last_error = None;
    for s in &req.storages {
        let listing = list_target(s.storage.as_ref(), &s.layout, &req.target).await?;
        let mut base = match choose_base(&listing.backups, &req.to) {
            Ok(b) => b.clone(),
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        base.manifest
            .unseal(req.identity.as_deref(), &base.manifest_key)?;
        // A storage whose WAL is short or damaged gives way to the next
        // (wal fetch reads them in the same order).
        let until = match sound_wal(s, &base, req).await {
            Ok(until) => until,
            Err(e) => {
                tracing::warn!(target_name = %req.target, storage = %s.name, "{e:#}");
                last_error = Some(e.context(format!("in storage {}", s.name)));
                continue;
            }
        };
        tracing::info!(target_name = %req.target, backup = %base.manifest.id, wal_until = %until.name(), "restoring base backup, then WAL");
        unpack(s, &base, req).await?;
        return Ok(Recovered {
            backup_id: base.manifest.id.0.clone(),
            server_version: base.manifest.server_version.clone(),
            storage: s.name.clone(),
            wal_until: until.name(),
        });
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("target {} has no storage", req.target)))
}

/// The WAL `base` needs to reach `req.to`, proven in one storage: stored
/// without a gap past the target, and every segment recovery will replay
/// read back, hashed, and of the backup's cluster, before anything is
/// unpacked (a damaged or foreign segment is refused here, not in the
/// middle of recovery). Returns the last segment needed.
async fn sound_wal(s: &OpenStorage, base: &Backup, req: &Recover<'_>) -> anyhow::Result<Segment> {
    let archive = WalArchive::new(s.storage.as_ref(), &s.layout, &req.target);
    let until = prove_wal(&archive, base, &req.to).await?;
    let p = physical(base).expect("chosen bases are physical");
    let system: u64 = p.system_identifier.parse().unwrap_or_default();
    let first = Segment::of_lsn(p.timeline, &p.start_lsn)?;
    let checked = super::check::check(
        &archive,
        req.identity.as_deref(),
        Some((first, until)),
        Some(system),
    )
    .await?;
    if !checked.problems.is_empty() {
        bail!(
            "the stored WAL base backup {} needs is not sound, nothing was restored: {}",
            base.manifest.id,
            checked.problems.join("; ")
        );
    }
    Ok(until)
}

/// Unpack beside the final name, configure recovery, rename into place.
async fn unpack(s: &OpenStorage, base: &Backup, req: &Recover<'_>) -> anyhow::Result<()> {
    let parent = req
        .pgdata
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".backstop-pgdata-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    let object = &base.manifest.objects[0];
    let stored = StoredObject::of_backup(&base.manifest, object, req.identity.as_deref())?;
    fetch_into(
        s.storage.as_ref(),
        &stored,
        Box::new(Untar::new(staging.path().to_path_buf())),
        &req.cancel,
    )
    .await?;
    configure(staging.path(), req)?;
    let dir = staging.keep();
    if req.pgdata.exists() {
        std::fs::remove_dir(&req.pgdata)
            .with_context(|| format!("replacing the empty {}", req.pgdata.display()))?;
    }
    std::fs::rename(&dir, &req.pgdata).with_context(|| {
        format!(
            "moving the restored data directory to {}",
            req.pgdata.display()
        )
    })?;
    Ok(())
}

fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn quote_shell(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// recovery.signal and the recovery settings, appended to
/// postgresql.auto.conf (read last, so they win over the source's own).
fn configure(dir: &Path, req: &Recover<'_>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the backstop executable")?;
    let mut command = format!(
        "{} wal fetch --config {} --target {}",
        quote_shell(&exe.to_string_lossy()),
        quote_shell(&req.config.to_string_lossy()),
        quote_shell(&req.target)
    );
    if let Some(identity) = &req.identity {
        command.push_str(&format!(
            " --identity {}",
            quote_shell(&identity.to_string_lossy())
        ));
    }
    command.push_str(" %f %p");
    let mut settings = format!(
        "\n# Added by backstop restore: replay the stored WAL of target {} onto this base backup.\n\
         restore_command = {}\n\
         recovery_target_timeline = 'latest'\n\
         archive_mode = 'off'\n",
        req.target,
        quote_conf(&command)
    );
    match &req.to {
        RecoveryTarget::Time(t) => settings.push_str(&format!(
            "recovery_target_time = {}\n",
            quote_conf(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        RecoveryTarget::Lsn(l) => {
            settings.push_str(&format!("recovery_target_lsn = {}\n", quote_conf(l)))
        }
        RecoveryTarget::Latest => {}
    }
    if !matches!(req.to, RecoveryTarget::Latest) {
        settings.push_str(&format!(
            "recovery_target_action = {}\n",
            match req.action {
                Action::Promote => "'promote'",
                Action::Pause => "'pause'",
            }
        ));
    }
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .with_context(|| format!("writing {}", auto.display()))?;
    f.write_all(settings.as_bytes())?;
    f.sync_all()?;
    std::fs::write(dir.join("recovery.signal"), b"")?;
    std::fs::create_dir_all(dir.join("pg_wal/archive_status"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// A tar stream unpacked into a directory as it arrives: regular files,
/// directories and symbolic links, each inside the directory.
struct Untar {
    root: PathBuf,
    buf: Vec<u8>,
    file: Option<(std::fs::File, u64)>,
    ended: bool,
}

impl Untar {
    fn new(root: PathBuf) -> Untar {
        Untar {
            root,
            buf: Vec::new(),
            file: None,
            ended: false,
        }
    }

    fn path_of(&self, name: &str) -> std::io::Result<PathBuf> {
        let rel = Path::new(name.trim_start_matches("./"));
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(std::io::Error::other(format!(
                "tar member {name} points outside the data directory"
            )));
        }
        Ok(self.root.join(rel))
    }

    fn block(&mut self, block: &[u8]) -> std::io::Result<()> {
        if let Some((file, left)) = self.file.as_mut() {
            let take = (*left).min(512) as usize;
            file.write_all(&block[..take])?;
            *left -= take as u64;
            if *left == 0 {
                let (file, _) = self.file.take().expect("a file");
                file.sync_all()?;
            }
            return Ok(());
        }
        if self.ended || block.iter().all(|b| *b == 0) {
            self.ended = true;
            return Ok(());
        }
        let text = |range: std::ops::Range<usize>| -> String {
            block[range]
                .iter()
                .take_while(|b| **b != 0)
                .map(|b| *b as char)
                .collect()
        };
        let (name, prefix) = (text(0..100), text(345..500));
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let octal =
            |range: std::ops::Range<usize>| u64::from_str_radix(text(range).trim(), 8).unwrap_or(0);
        let (mode, size) = (octal(100..108) as u32, octal(124..136));
        let path = self.path_of(&name)?;
        use std::os::unix::fs::PermissionsExt;
        match block[156] {
            b'0' | 0 => {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p)?;
                }
                let file = std::fs::File::create(&path)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
                if size > 0 {
                    self.file = Some((file, size));
                }
            }
            b'5' => {
                std::fs::create_dir_all(&path)?;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode((mode & 0o777) | 0o700),
                )?;
            }
            b'2' => {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p)?;
                }
                std::os::unix::fs::symlink(text(157..257), &path)?;
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "tar member {name} has type {:?}, which a base backup does not hold",
                    other as char
                )))
            }
        }
        Ok(())
    }
}

impl Write for Untar {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        let whole = self.buf.len() / 512 * 512;
        let blocks: Vec<u8> = self.buf.drain(..whole).collect();
        for block in blocks.chunks(512) {
            self.block(block)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
