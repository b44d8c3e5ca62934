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
