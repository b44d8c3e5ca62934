//! `backstop wal stream`: pg_receivewal on a physical replication slot,
//! supervised, and every WAL file it completes stored in each of the
//! target's storages before it is deleted locally.
//!
//! The slot keeps the server from recycling WAL that is not stored yet,
//! and pg_receivewal reports a segment flushed only once it is whole on
//! our disk, so a killed streamer restarts where the slot says (at worst
//! a segment we stored already: the same bytes, found by their hash, are
//! not stored twice). What is on the local disk is the only copy until it
//! is stored: a file is deleted only after every storage has it.

use super::archive::{Put, WalArchive};
use super::wal_names::{Segment, WalFile};
use crate::cli::OpenStorage;
use crate::crypto::Recipients;
use crate::engine::postgres::tools::{self as pgtools, PgConn};
use crate::process::ChildCommand;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// (storage index, timeline) → the last segment number stored there.
type Newest = std::collections::HashMap<(usize, u32), Option<u64>>;

pub struct Streamer<'a> {
    pub target: String,
    pub conn: PgConn,
    pub slot: String,
    pub spool: PathBuf,
    pub storages: &'a [&'a OpenStorage],
    pub recipients: Option<Recipients>,
    /// How often the spool is looked at for completed files.
    pub poll: Duration,
}

/// A slot name PostgreSQL accepts (lower-case letters, digits, `_`).
pub fn slot_name(target: &str) -> String {
    format!("backstop_{}", target.replace('-', "_"))
}

/// pg_receivewal fills a new `.partial` segment with zeros before it
/// writes any WAL to it, and refuses to start when it finds one of any
/// size but empty or whole. A streamer killed while zero-filling (right
/// after a segment completes) leaves such a file: it holds no WAL, so it
/// goes; pg_receivewal then starts that segment again from its beginning,
/// which the slot kept. A `.partial` with any byte of WAL is kept.
fn discard_unwritten_partials(spool: &Path, target: &str) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(spool)
        .with_context(|| format!("reading the spool {}", spool.display()))?
    {
        let path = entry?.path();
        let is_partial = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".partial"))
            .is_some_and(|n| Segment::parse(n).is_some());
        if !is_partial {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if bytes.iter().all(|b| *b == 0) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            tracing::info!(target_name = %target, file = %path.display(), bytes = bytes.len(), "removed a .partial segment that holds no WAL yet (a streamer stopped while zero-filling it)");
        }
    }
    Ok(())
}

impl Streamer<'_> {
    /// Create the slot unless it exists, reserving WAL from now on (a slot
    /// made by pg_receivewal --create-slot reserves nothing until the first
    /// connection).
    fn ensure_slot(&self, psql: &Path) -> anyhow::Result<()> {
        let lit = crate::sql::literal(&self.slot);
        let found = self
            .conn
            .query(
                psql,
                &format!("SELECT slot_type FROM pg_replication_slots WHERE slot_name = {lit};"),
            )
            .context("looking for the replication slot")?;
        match found.trim() {
            "physical" => Ok(()),
            "" => {
                self.conn
                    .query(
                        psql,
                        &format!("SELECT pg_create_physical_replication_slot({lit}, true);"),
                    )
                    .with_context(|| format!("creating the replication slot {}", self.slot))?;
                tracing::info!(target_name = %self.target, slot = %self.slot, "replication slot created: the server keeps WAL until it is stored");
                Ok(())
            }
            other => bail!(
                "replication slot {} exists but is {other}, not physical",
                self.slot
            ),
        }
    }

    /// Store the completed WAL files in the spool, history files first,
    /// then segments in order; delete each once every storage has it.
    /// Returns how many were stored. `newest` remembers, per storage and
    /// timeline, the last segment stored there (listed once, then kept up
    /// to date), for the gap check.
    async fn drain(&self, newest: &mut Newest) -> anyhow::Result<usize> {
        let mut files: Vec<(WalFile, PathBuf)> = std::fs::read_dir(&self.spool)
            .with_context(|| format!("reading the spool {}", self.spool.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                WalFile::parse(&name).map(|f| (f, e.path()))
            })
            .collect();
        // A timeline's history before any of its segments.
        files.sort_by_key(|(f, _)| match f {
            WalFile::History(t) => (0, *t as u64, 0),
            WalFile::Segment(s) => (1, s.timeline as u64, s.number),
        });
        let mut stored = 0;
        for (file, path) in files {
            let raw =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            for (at, s) in self.storages.iter().enumerate() {
                let archive = WalArchive::new(s.storage.as_ref(), &s.layout, &self.target);
                if let WalFile::Segment(seg) = file {
                    self.note_gap(&archive, at, seg, newest).await;
                }
                let put = archive.put(file, &raw, self.recipients.as_ref()).await?;
                if let WalFile::Segment(seg) = file {
                    let last = newest.entry((at, seg.timeline)).or_insert(Some(seg.number));
                    *last = (*last).max(Some(seg.number));
                }
                tracing::info!(
                    target_name = %self.target,
                    storage = %s.name,
                    wal = %file.name(),
                    already = put == Put::AlreadyStored,
                    "WAL stored"
                );
            }
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            stored += 1;
        }
        Ok(stored)
    }

    /// A segment whose predecessor on its timeline is not stored (the
    /// server recycled WAL before it was streamed) is a gap: restores
    /// cannot cross it. It is logged as an error; `wal verify` and restore
    /// find it from the listing.
    async fn note_gap(
        &self,
        archive: &WalArchive<'_>,
        storage: usize,
        seg: Segment,
        newest: &mut Newest,
    ) {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            newest.entry((storage, seg.timeline))
        {
            let Ok(stored) = archive.stored().await else {
                return;
            };
            let last = stored
                .iter()
                .filter_map(|w| match w.file {
                    WalFile::Segment(s) if s.timeline == seg.timeline && s.number < seg.number => {
                        Some(s.number)
                    }
                    _ => None,
                })
                .max();
            slot.insert(last);
        }
        if let Some(Some(last)) = newest.get(&(storage, seg.timeline)) {
            if last + 1 < seg.number {
                tracing::error!(
                    target_name = %self.target,
                    after = %Segment { number: *last, ..seg }.name(),
                    before = %seg.name(),
                    "WAL gap: segments between these were never stored; no point in between can be restored. Take a new base backup (backstop backup --physical)"
                );
            }
        }
    }

    /// Run until cancelled: pg_receivewal restarted whenever it stops, the
    /// spool drained every `poll`. A gap the server reports (WAL removed
    /// before it was streamed) ends the run with an error.
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.spool)
            .with_context(|| format!("creating the spool {}", self.spool.display()))?;
        let found = pgtools::discover();
        let (server, _) = self.conn.server_version(&found)?;
        let tools = pgtools::select(
            &found,
            server,
            &format!("the server at {}", self.conn.endpoint()),
        )?;
        let receivewal = tools.require("pg_receivewal")?;
        let psql = pgtools::newest_psql(&found)?;
        self.ensure_slot(&psql)?;
        let mut newest = Newest::new();
        self.drain(&mut newest).await?;
        while !cancel.is_cancelled() {
            discard_unwritten_partials(&self.spool, &self.target)?;
            let cmd = self.conn.apply(
                ChildCommand::new(&receivewal)
                    .arg("--directory")
                    .arg(&self.spool)
                    .arg("--slot")
                    .arg(&self.slot)
                    .arg("--no-loop")
                    .arg("--no-password")
                    .arg("--verbose"),
            );
            let mut running = cmd.spawn(Stdio::null(), Stdio::null(), &self.target)?;
            tracing::info!(target_name = %self.target, slot = %self.slot, spool = %self.spool.display(), "streaming WAL");
            let finished = loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        running.kill();
                        let _ = running.wait();
                        break None;
                    }
                    _ = tokio::time::sleep(self.poll) => {}
                }
                if let Err(e) = self.drain(&mut newest).await {
                    running.kill();
                    let _ = running.wait();
                    return Err(e);
                }
                if running.child.try_wait()?.is_some() {
                    break Some(running.wait()?);
                }
            };
            self.drain(&mut newest).await?;
            let Some(finished) = finished else { break };
            let why = finished.describe_with_last_line();
            if finished
                .stderr_tail
                .iter()
                .any(|l| l.contains("has already been removed"))
            {
                bail!(
                    "WAL gap: the server removed WAL the slot {} should have kept ({why}); \
                     the stored WAL ends before it. Take a new base backup (backstop backup --physical)",
                    self.slot
                );
            }
            // A wrong password or a role without REPLICATION does not pass
            // by waiting: stop, saying so (the Deployment shows it failing).
            if let Some(cause) = crate::retry::permanent_cause(&finished.stderr_tail.join("\n")) {
                bail!("pg_receivewal cannot stream ({why}): {cause}; not retried");
            }
            tracing::warn!(target_name = %self.target, "pg_receivewal stopped ({why}); restarting in 5s");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::discard_unwritten_partials;

    #[test]
    fn only_partials_without_wal_are_discarded() {
        let spool = tempfile::tempdir().unwrap();
        let p = |n: &str| spool.path().join(n);
        // Cut short while zero-filling: the restart refused it.
        std::fs::write(p("000000010000000000000004.partial"), vec![0u8; 10_436_608]).unwrap();
        // WAL written into it: the only copy of those bytes.
        let mut written = vec![0u8; 16 << 20];
        written[0] = 0x10;
        std::fs::write(p("000000010000000000000005.partial"), &written).unwrap();
        // Not a segment's .partial, and a completed segment of zeros.
        std::fs::write(p("notes.partial"), [0u8; 4]).unwrap();
        std::fs::write(p("000000010000000000000003"), vec![0u8; 64]).unwrap();
        discard_unwritten_partials(spool.path(), "t").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(spool.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "000000010000000000000003",
                "000000010000000000000005.partial",
                "notes.partial"
            ]
        );
    }
}
