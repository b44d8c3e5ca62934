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
    /// Where the streamer's figures go (every 30 s).
    pub metrics: Option<crate::config::notify::MetricsConfig>,
}

/// A slot name PostgreSQL accepts (lower-case letters, digits, `_`).
pub fn slot_name(target: &str) -> String {
    format!("backstop_{}", target.replace('-', "_"))
}

/// Remove the `.partial` segments of the spool whose bytes `discard`.
///
/// pg_receivewal fills a new `.partial` segment with zeros before it
/// writes any WAL to it, and refuses to start when it finds one of any
/// size but empty or whole. A streamer killed while zero-filling (right
/// after a segment completes) leaves such a file: it holds no WAL, so it
/// goes; pg_receivewal then starts that segment again from its beginning,
/// which the slot kept. A `.partial` with any byte of WAL is kept, unless
/// the server lost the rest of its segment.
fn discard_partials(
    spool: &Path,
    target: &str,
    discard: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<()> {
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
        if discard(&bytes) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            tracing::info!(target_name = %target, file = %path.display(), bytes = bytes.len(), "removed a .partial segment that cannot be completed");
        }
    }
    Ok(())
}

impl Streamer<'_> {
    /// Create the slot unless it exists, reserving WAL from now on (a slot
    /// made by pg_receivewal --create-slot reserves nothing until the first
    /// connection). A slot the server invalidated (it held more WAL than
    /// `max_slot_wal_keep_size`) keeps nothing and still streams from "now"
    /// (PostgreSQL 17 does, silently): it is dropped and made again, and
    /// the WAL it lost is a gap. Returns whether it was lost.
    fn ensure_slot(&self, psql: &Path) -> anyhow::Result<bool> {
        let lit = crate::sql::literal(&self.slot);
        let found = self
            .conn
            .query(
                psql,
                &format!("SELECT slot_type || ' ' || coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = {lit};"),
            )
            .context("looking for the replication slot")?;
        let create = || {
            self.conn
                .query(
                    psql,
                    &format!("SELECT pg_create_physical_replication_slot({lit}, true);"),
                )
                .with_context(|| format!("creating the replication slot {}", self.slot))
        };
        match found.trim() {
            "physical lost" => {
                tracing::error!(target_name = %self.target, slot = %self.slot, "WAL gap: the server invalidated the replication slot (it held more WAL than max_slot_wal_keep_size) and removed WAL that was never stored; the slot is made again. Take a new base backup (backstop backup --physical)");
                self.conn
                    .query(psql, &format!("SELECT pg_drop_replication_slot({lit});"))
                    .with_context(|| format!("dropping the invalidated slot {}", self.slot))?;
                create()?;
                Ok(true)
            }
            "" => {
                create()?;
                tracing::info!(target_name = %self.target, slot = %self.slot, "replication slot created: the server keeps WAL until it is stored");
                Ok(false)
            }
            other if other.starts_with("physical") => Ok(false),
            other => bail!(
                "replication slot {} exists but is {}, not physical",
                self.slot,
                other.split(' ').next().unwrap_or(other)
            ),
        }
    }

    /// Store the completed WAL files in the spool, history files first,
    /// then segments in order; delete each once every storage has it.
    /// Returns how many were stored. `newest` remembers, per storage and
    /// timeline, the last segment stored there (listed once, then kept up
    /// to date), for the gap check.
    async fn drain(&self, state: &mut State) -> anyhow::Result<usize> {
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
                    if self.note_gap(&archive, at, seg, &mut state.newest).await {
                        state.gap = Some(Gap { resumes: Some(seg) });
                    }
                }
                let put = archive.put(file, &raw, self.recipients.as_ref()).await?;
                if let WalFile::Segment(seg) = file {
                    let last = state
                        .newest
                        .entry((at, seg.timeline))
                        .or_insert(Some(seg.number));
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
            if let WalFile::Segment(seg) = file {
                state.stored_through = Some(seg);
                if let Some(gap @ Gap { resumes: None }) = &mut state.gap {
                    gap.resumes = Some(seg);
                }
            }
            state.last_stored_at = Some(chrono::Utc::now());
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
    ) -> bool {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            newest.entry((storage, seg.timeline))
        {
            let Ok(stored) = archive.stored().await else {
                return false;
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
                return true;
            }
        }
        false
    }

    /// Run until cancelled: pg_receivewal restarted whenever it stops, the
    /// spool drained every `poll`. A gap the server reports (WAL removed
    /// before it was streamed), a refused login or two writers end the run
    /// with an error; a storage that fails is retried with backoff while
    /// pg_receivewal is stopped, so the slot keeps the WAL on the server
    /// rather than on our disk alone.
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
        self.check_segment_size(&psql)?;
        let mut state = State {
            stored_through: self.newest_stored().await,
            ..State::default()
        };
        let result = self
            .supervise(&receivewal, &psql, &mut state, &cancel)
            .await;
        self.report(&psql, &mut state).await;
        result
    }

    async fn supervise(
        &self,
        receivewal: &Path,
        psql: &Path,
        state: &mut State,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.store_spool(psql, state, cancel).await?;
        while !cancel.is_cancelled() {
            if self.ensure_slot(psql)? {
                state.gap = Some(Gap { resumes: None });
                // What the spool holds of the lost WAL cannot be
                // completed: pg_receivewal would ask the server for it.
                discard_partials(&self.spool, &self.target, |_| true)?;
            }
            discard_partials(&self.spool, &self.target, |bytes| {
                bytes.iter().all(|b| *b == 0)
            })?;
            let cmd = self.conn.apply(
                ChildCommand::new(receivewal)
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
            let stopped = loop {
                tokio::select! {
                    _ = cancel.cancelled() => break Stopped::Cancelled,
                    _ = tokio::time::sleep(self.poll) => {}
                }
                let stored = match self.drain(state).await {
                    Ok(n) => n,
                    Err(e) => break Stopped::StoreFailed(e),
                };
                // While WAL is missing, every stored segment may follow a
                // new base backup that closes the gap: look at once.
                if state.report_due() || (stored > 0 && state.gap.is_some()) {
                    self.report(psql, state).await;
                }
                if running.child.try_wait()?.is_some() {
                    break Stopped::Exited;
                }
            };
            let finished = match stopped {
                Stopped::Exited => Some(running.wait()?),
                Stopped::Cancelled | Stopped::StoreFailed(_) => {
                    running.kill();
                    let _ = running.wait();
                    None
                }
            };
            if let Stopped::StoreFailed(e) = stopped {
                self.store_failed(psql, state, e).await?;
            }
            // What pg_receivewal completed before it stopped, stored.
            self.store_spool(psql, state, cancel).await?;
            let Some(finished) = finished else { continue };
            let why = finished.describe_with_last_line();
            if finished
                .stderr_tail
                .iter()
                .any(|l| l.contains("has already been removed"))
            {
                // The slot was invalidated while pg_receivewal streamed:
                // the next round makes it again.
                state.gap = Some(Gap { resumes: None });
                tracing::error!(target_name = %self.target, slot = %self.slot, "WAL gap: the server removed WAL the slot should have kept ({why}). Take a new base backup (backstop backup --physical)");
            }
            // A wrong password or a role without REPLICATION does not pass
            // by waiting: stop, saying so (the Deployment shows it failing).
            if let Some(cause) = crate::retry::permanent_cause(&finished.stderr_tail.join("\n")) {
                bail!("pg_receivewal cannot stream ({why}): {cause}; not retried");
            }
            state.receiver_restarts += 1;
            tracing::warn!(target_name = %self.target, "pg_receivewal stopped ({why}); restarting in 5s");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(RECEIVER_RESTART) => {}
            }
        }
        Ok(())
    }

    /// Store what the spool holds, retrying with backoff (5 s doubling to
    /// 5 min) until it is stored or the run is cancelled. Two writers
    /// (different bytes under a stored name) are not retried.
    async fn store_spool(
        &self,
        psql: &Path,
        state: &mut State,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut wait = STORE_RETRY_FIRST;
        loop {
            let e = match self.drain(state).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            self.store_failed(psql, state, e).await?;
            tracing::warn!(target_name = %self.target, "WAL is stored again in {}; pg_receivewal waits (the slot keeps the WAL on the server)", humantime::format_duration(wait));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
        }
    }

    async fn store_failed(
        &self,
        psql: &Path,
        state: &mut State,
        e: anyhow::Error,
    ) -> anyhow::Result<()> {
        if e.downcast_ref::<super::archive::Conflict>().is_some() {
            return Err(e);
        }
        state.store_failures += 1;
        tracing::error!(target_name = %self.target, "storing WAL failed: {e:#}");
        self.report(psql, state).await;
        Ok(())
    }

    /// backstop names and counts segments of 16 MiB, PostgreSQL's default
    /// (initdb --wal-segsize changes it).
    fn check_segment_size(&self, psql: &Path) -> anyhow::Result<()> {
        let size = self
            .conn
            .query(psql, "SELECT current_setting('wal_segment_size');")
            .context("reading wal_segment_size")?;
        if size.trim() != "16MB" {
            bail!(
                "the server at {} uses WAL segments of {}: backstop streams only the default 16MB",
                self.conn.endpoint(),
                size.trim()
            );
        }
        Ok(())
    }

    /// The newest segment the first storage holds (any timeline), for the
    /// unstored-bytes figure before this run stores one.
    async fn newest_stored(&self) -> Option<Segment> {
        let s = self.storages.first()?;
        let archive = WalArchive::new(s.storage.as_ref(), &s.layout, &self.target);
        let stored = archive.stored().await.ok()?;
        stored
            .iter()
            .filter_map(|w| match w.file {
                WalFile::Segment(seg) => Some(seg),
                WalFile::History(_) => None,
            })
            .max_by_key(|s| s.number)
    }

    /// Whether the first storage holds a base backup that starts at or
    /// after `segment`, so that no restore from it needs WAL before.
    async fn based_since(&self, segment: Segment) -> bool {
        let Some(s) = self.storages.first() else {
            return false;
        };
        let Ok(listing) =
            crate::catalog::list_target(s.storage.as_ref(), &s.layout, &self.target).await
        else {
            return false;
        };
        listing
            .backups
            .iter()
            .filter_map(|b| b.manifest.objects.first()?.physical.as_ref())
            .filter_map(|p| Segment::of_lsn(p.timeline, &p.start_lsn).ok())
            .any(|start| start.timeline >= segment.timeline && start.number >= segment.number)
    }

    /// Publish the figures (when [metrics] is set), with how far the
    /// server's WAL is ahead of the stored WAL.
    async fn report(&self, psql: &Path, state: &mut State) {
        state.reported_at = Some(std::time::Instant::now());
        let Some(config) = &self.metrics else { return };
        if let Some(Gap {
            resumes: Some(resumes),
        }) = state.gap
        {
            if self.based_since(resumes).await {
                tracing::info!(target_name = %self.target, "a base backup taken after the WAL gap: restores from it on are whole");
                state.gap = None;
            }
        }
        let current = self
            .conn
            .query(psql, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn;")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let stored_end = state
            .stored_through
            .map(|s| (s.number + 1) * super::wal_names::SEGMENT_BYTES);
        let metrics = crate::notify::metrics::WalMetrics {
            target: self.target.clone(),
            updated_timestamp: now_seconds(chrono::Utc::now()),
            last_stored_timestamp: state.last_stored_at.map(now_seconds),
            unstored_bytes: current.map(|c| c.saturating_sub(stored_end.unwrap_or(0))),
            gap: state.gap.is_some(),
            receiver_restarts: state.receiver_restarts,
            store_failures: state.store_failures,
        };
        if let Err(e) = crate::notify::metrics::publish_wal(config, &metrics).await {
            tracing::warn!(target_name = %self.target, "publishing WAL metrics: {e:#}");
        }
    }
}

fn now_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

const RECEIVER_RESTART: Duration = Duration::from_secs(5);
const STORE_RETRY_FIRST: Duration = Duration::from_secs(5);
const STORE_RETRY_MAX: Duration = Duration::from_secs(300);
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Why the streaming loop ended.
enum Stopped {
    Cancelled,
    Exited,
    StoreFailed(anyhow::Error),
}

/// WAL the stored WAL lacks.
#[derive(Clone, Copy)]
struct Gap {
    /// The first segment stored after it (None: none yet).
    resumes: Option<Segment>,
}

/// What the streamer knows about its progress, for the metrics.
#[derive(Default)]
struct State {
    /// (storage index, timeline) → the last segment number stored there.
    newest: Newest,
    /// The newest segment every storage holds.
    stored_through: Option<Segment>,
    last_stored_at: Option<chrono::DateTime<chrono::Utc>>,
    /// WAL is missing and no base backup since makes up for it.
    gap: Option<Gap>,
    receiver_restarts: u64,
    store_failures: u64,
    reported_at: Option<std::time::Instant>,
}

impl State {
    fn report_due(&self) -> bool {
        self.reported_at.is_none_or(|t| t.elapsed() >= REPORT_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::discard_partials;

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
        discard_partials(spool.path(), "t", |b| b.iter().all(|b| *b == 0)).unwrap();
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
