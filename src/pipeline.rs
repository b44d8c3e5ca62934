//! One target's backup: source → compress → hash → upload → manifest.
//!
//! The CPU-bound part (reading the dump and compressing it) runs on its own
//! thread; compressed chunks cross a bounded channel to the async side, which
//! hashes them and hands them to the storage. The channel bound is what keeps
//! memory flat however large the database is.
//!
//! Fail closed: the object is committed only when the dump process exited 0,
//! the compressor finished and every compressed byte reached the upload; the
//! manifest is written only after every object committed.

use crate::catalog::{BackupId, CompressionRecord, Layout, Manifest, ObjectRecord};
use crate::codec::adapt::{Adapter, Pipe};
use crate::codec::{Codec, FinishWrite};
use crate::engine::postgres::archive::DumpFacts;
use crate::engine::{DumpStream, Source};
use crate::process::{Finished, KillHandle};
use crate::report::{human_bytes, CopyReport, Stage, Status, TargetReport};
use crate::storage::{commit_verified, put_bytes, Storage, Upload};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Size of the chunks handed to storage.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the compressor and the storage.
pub const CHANNEL_CHUNKS: usize = 4;
const READ_BUFFER: usize = 256 << 10;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One storage a backup is copied to.
#[derive(Clone, Copy)]
pub struct Destination<'a> {
    pub name: &'a str,
    pub storage: &'a dyn Storage,
    pub layout: &'a Layout,
}

pub struct BackupJob<'a> {
    pub target: &'a str,
    pub source: &'a dyn Source,
    /// Every storage gets the same bytes from one dump; each commits (and
    /// fails) on its own.
    pub destinations: Vec<Destination<'a>>,
    pub codec: Codec,
    /// Set when `[encryption]` is: every object is encrypted for these.
    pub encryption: Option<&'a crate::crypto::Recipients>,
    pub cancel: CancellationToken,
    /// Draw a live progress bar (stderr is a terminal).
    pub progress: bool,
}

/// Why a stage failed, with the child's stderr tail when there is one.
#[derive(Debug)]
pub struct StageError {
    pub stage: Stage,
    pub message: String,
    pub stderr_tail: Vec<String>,
    /// Bytes the dump produced before the failure (reported, so a failure
    /// after hundreds of MB does not read as "0 B").
    pub raw_bytes: u64,
}

impl StageError {
    fn new(stage: Stage, message: impl Into<String>) -> Self {
        StageError {
            stage,
            message: message.into(),
            stderr_tail: Vec::new(),
            raw_bytes: 0,
        }
    }
}

/// What became of the backup in one storage.
pub struct CopyOutcome {
    pub storage: String,
    /// The manifest key once the copy is complete.
    pub result: Result<String, StageError>,
}

struct Done {
    id: BackupId,
    manifest: Manifest,
    copies: Vec<CopyOutcome>,
}

pub async fn run_backup(job: BackupJob<'_>) -> TargetReport {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = if job.cancel.is_cancelled() {
        Err(StageError::new(
            Stage::Interrupted,
            "interrupted before the backup started",
        ))
    } else {
        backup(&job).await
    };
    let duration_seconds = clock.elapsed().as_secs_f64();
    let report = TargetReport::ok(job.target, started_at, duration_seconds);
    match result {
        Ok(done) => {
            let copies: Vec<CopyReport> = done
                .copies
                .iter()
                .map(|c| CopyReport {
                    storage: c.storage.clone(),
                    status: match c.result {
                        Ok(_) => Status::Success,
                        Err(_) => Status::Failed,
                    },
                    manifest_key: c.result.as_ref().ok().cloned(),
                    stage: c.result.as_ref().err().map(|e| e.stage),
                    error: c.result.as_ref().err().map(|e| e.message.clone()),
                })
                .collect();
            let report = TargetReport {
                backup_id: Some(done.id.0.clone()),
                manifest_key: copies.iter().find_map(|c| c.manifest_key.clone()),
                raw_bytes: done.manifest.raw_bytes(),
                stored_bytes: done.manifest.stored_bytes(),
                ..report
            };
            let held: Vec<&str> = copies
                .iter()
                .filter(|c| c.status == Status::Success)
                .map(|c| c.storage.as_str())
                .collect();
            tracing::info!(
                target_name = job.target,
                backup = %done.id,
                stored_bytes = report.stored_bytes,
                raw_bytes = report.raw_bytes,
                seconds = duration_seconds,
                storages = %held.join(","),
                "backup complete in {}",
                held.join(", ")
            );
            let failed = done
                .copies
                .into_iter()
                .find_map(|c| c.result.err().map(|e| (c.storage, e)));
            let report = match failed {
                None => report,
                Some((storage, e)) => {
                    tracing::error!(target_name = job.target, storage = %storage, stage = ?e.stage, "copy failed: {}", e.message);
                    report.failed(
                        e.stage,
                        format!(
                            "copy to storage `{storage}` failed: {}; the backup is complete in {}",
                            e.message,
                            held.join(", ")
                        ),
                        e.stderr_tail,
                    )
                }
            };
            TargetReport { copies, ..report }
        }
        Err(e) => {
            tracing::error!(target_name = job.target, stage = ?e.stage, "backup failed: {}", e.message);
            TargetReport {
                raw_bytes: e.raw_bytes,
                copies: job
                    .destinations
                    .iter()
                    .map(|d| CopyReport {
                        storage: d.name.to_string(),
                        status: Status::Failed,
                        manifest_key: None,
                        stage: Some(e.stage),
                        error: Some(e.message.clone()),
                    })
                    .collect(),
                ..report.failed(e.stage, e.message, e.stderr_tail)
            }
        }
    }
}

/// One storage's part of a backup in progress.
struct Copy<'a> {
    dest: Destination<'a>,
    objects: Vec<ObjectRecord>,
    failed: Option<StageError>,
}

impl Copy<'_> {
    fn live(&self) -> bool {
        self.failed.is_none()
    }
}

async fn backup(job: &BackupJob<'_>) -> Result<Done, StageError> {
    let info = job.source.info();
    tracing::info!(target_name = job.target, source = info.kind, database = %info.database, endpoint = %info.endpoint, "starting backup");
    let mut copies: Vec<Copy> = Vec::new();
    for dest in &job.destinations {
        let failed = dest
            .storage
            .preflight()
            .await
            .err()
            .map(|e| storage_stage_error(e, &format!("checking {}", dest.storage.describe())));
        copies.push(Copy {
            dest: *dest,
            objects: Vec::new(),
            failed,
        });
    }
    if let Some(e) = all_failed(&mut copies) {
        return Err(e);
    }
    let plan = job.source.plan().await.map_err(|e| {
        let message = format!("{e:#}");
        if crate::error::has::<crate::error::NoFittingTools>(&e) {
            return StageError::new(Stage::Tools, message);
        }
        let hint =
            crate::engine::engine(job.source.info().kind).and_then(|e| e.connect_hint(&message));
        match hint {
            Some(hint) => StageError::new(Stage::Connect, format!("{message}; hint: {hint}")),
            None => StageError::new(Stage::Connect, message),
        }
    })?;
    tracing::info!(
        target_name = job.target,
        server_version = %plan.server_version,
        tool = %plan.tool,
        tool_version = %plan.tool_version,
        "dump tool chosen"
    );
    let started_at = Utc::now();
    let id = BackupId::new(job.target, started_at);
    let previous = previous_backup(job).await;
    let mut levels = std::collections::BTreeSet::new();
    for stream in &plan.streams {
        let mut ext = match job.codec.extension() {
            Some(c) => format!("{}.{c}", stream.extension),
            None => stream.extension.to_string(),
        };
        if job.encryption.is_some() {
            ext = format!("{ext}.{}", crate::crypto::EXTENSION);
        }
        let expected = previous
            .as_ref()
            .and_then(|m| m.object(&stream.role))
            .map(|o| o.raw_bytes);
        let keys: Vec<String> = copies
            .iter()
            .map(|c| c.dest.layout.object_key(job.target, &id, started_at, &ext))
            .collect();
        match stream_object(job, stream, &mut copies, &keys, expected).await {
            Ok((_, used)) => levels.extend(used),
            Err(e) => {
                for c in &copies {
                    remove_committed(job, c.dest.storage, &c.objects).await;
                }
                return Err(e);
            }
        }
        if let Some(e) = all_failed(&mut copies) {
            return Err(e);
        }
    }
    let manifest_for = |objects: Vec<ObjectRecord>| Manifest {
        manifest_version: 1,
        id: id.clone(),
        target: job.target.to_string(),
        source_type: info.kind.to_string(),
        database: info.database.clone(),
        server_version: plan.server_version.clone(),
        dump_tool: plan.tool.clone(),
        dump_tool_version: plan.tool_version.clone(),
        format: plan.format.to_string(),
        compression: CompressionRecord {
            algorithm: job.codec.algorithm,
            level: job.codec.level,
            levels: match job.codec.adapt {
                Some(_) => levels.iter().copied().collect(),
                None => Vec::new(),
            },
        },
        encryption_recipients: job
            .encryption
            .map(|r| r.public_keys().to_vec())
            .unwrap_or_default(),
        objects,
        database_properties: plan.database_properties.clone(),
        started_at,
        finished_at: Utc::now(),
        tool_version: crate::TOOL_VERSION.to_string(),
        sealed: None,
    };
    let mut outcomes = Vec::new();
    let mut shown: Option<Manifest> = None;
    for c in copies {
        let name = c.dest.name.to_string();
        if let Some(e) = c.failed {
            remove_committed(job, c.dest.storage, &c.objects).await;
            outcomes.push(CopyOutcome {
                storage: name,
                result: Err(e),
            });
            continue;
        }
        let manifest = manifest_for(c.objects);
        let result = write_manifest(job, c.dest, &manifest).await;
        if result.is_ok() && shown.is_none() {
            shown = Some(manifest);
        }
        outcomes.push(CopyOutcome {
            storage: name,
            result,
        });
    }
    match shown {
        Some(manifest) => Ok(Done {
            id,
            manifest,
            copies: outcomes,
        }),
        // Every copy failed at its manifest: one error says it for all.
        None => Err(outcomes
            .into_iter()
            .find_map(|o| o.result.err())
            .expect("no copy succeeded, so one failed")),
    }
}

/// When no storage is left to copy to, the error of the first that failed.
fn all_failed(copies: &mut [Copy]) -> Option<StageError> {
    if copies.iter().any(Copy::live) {
        return None;
    }
    let mut first = copies.first_mut()?.failed.take()?;
    if copies.len() > 1 {
        first.message = format!("storage `{}`: {}", copies[0].dest.name, first.message);
    }
    Some(first)
}

/// The manifest goes last: a backup is visible only when complete.
async fn write_manifest(
    job: &BackupJob<'_>,
    dest: Destination<'_>,
    manifest: &Manifest,
) -> Result<String, StageError> {
    let manifest_key = dest
        .layout
        .manifest_key(job.target, &manifest.id, manifest.started_at);
    let stored = match job.encryption {
        Some(r) => manifest.sealed_for(r).map_err(|e| {
            StageError::new(
                Stage::Manifest,
                format!("sealing manifest {manifest_key}: {e:#}"),
            )
        })?,
        None => manifest.clone(),
    };
    let mut body = serde_json::to_vec_pretty(&stored).expect("manifest serializes");
    body.push(b'\n');
    if job.cancel.is_cancelled() {
        remove_committed(job, dest.storage, &manifest.objects).await;
        return Err(StageError::new(
            Stage::Interrupted,
            "interrupted before the manifest was written",
        ));
    }
    if let Err(e) = put_bytes(dest.storage, &manifest_key, Bytes::from(body)).await {
        // A manifest that landed although we were told otherwise makes the
        // data a backup: keep it (it is reported as damaged if anything is
        // wrong). Only a manifest that a listing shows absent frees the data; when
        // even listing fails the data stays, an orphan prune removes later.
        let manifest_absent = dest
            .storage
            .list(&manifest_key)
            .await
            .is_ok_and(|found| found.iter().all(|o| o.key != manifest_key));
        if manifest_absent {
            remove_committed(job, dest.storage, &manifest.objects).await;
        }
        return Err(StageError::new(
            Stage::Manifest,
            format!("writing manifest {manifest_key}: {e:#}"),
        ));
    }
    Ok(manifest_key)
}

/// Objects of a backup that failed later have no manifest: remove them now
/// rather than leave orphans for prune.
async fn remove_committed(job: &BackupJob<'_>, storage: &dyn Storage, objects: &[ObjectRecord]) {
    for o in objects {
        if let Err(e) = storage.delete(&o.key).await {
            tracing::warn!(target_name = job.target, key = %o.key, "could not remove object of the failed backup: {e:#}");
        }
    }
}

/// A storage error as a stage error: credentials that need a person are
/// their own stage (exit code 3).
fn storage_stage_error(e: crate::storage::StorageError, doing: &str) -> StageError {
    match e {
        crate::storage::StorageError::Auth(why) => StageError::new(Stage::Auth, why.0),
        other => StageError::new(Stage::Upload, format!("{doing}: {other:#}")),
    }
}

/// What the compressor thread reports when it ends.
struct WorkerOutcome {
    /// The compression levels used, when it went well.
    result: std::io::Result<Vec<i32>>,
    finished: std::io::Result<Finished>,
    /// The inspector's verdict on the dump's bytes, when there is one.
    facts: Option<Result<DumpFacts, String>>,
}

/// Stream one dump object into every live copy. A storage that fails
/// fails its copy only; a failing dump or compressor fails them all (the
/// error returned).
async fn stream_object(
    job: &BackupJob<'_>,
    stream: &DumpStream,
    copies: &mut [Copy<'_>],
    keys: &[String],
    expected: Option<u64>,
) -> Result<(u64, Vec<i32>), StageError> {
    // A fresh file key per object; with [encryption] set there is no path
    // that writes clear text (fail closed).
    let encryptor =
        match job.encryption {
            Some(r) => Some(r.encryptor().map_err(|e| {
                StageError::new(Stage::Compress, format!("starting encryption: {e}"))
            })?),
            None => None,
        };
    let mut uploads: Vec<Option<Box<dyn Upload>>> = Vec::new();
    for (c, key) in copies.iter_mut().zip(keys) {
        if !c.live() {
            uploads.push(None);
            continue;
        }
        match c.dest.storage.create(key).await {
            Ok(u) => uploads.push(Some(u)),
            Err(e) => {
                let doing = format!("creating {key} in {}", c.dest.storage.describe());
                c.failed = Some(storage_stage_error(e, &doing));
                uploads.push(None);
            }
        }
    }
    if uploads.iter().all(Option::is_none) {
        return Ok((0, Vec::new()));
    }
    let mut running = stream
        .command
        .spawn(Stdio::null(), Stdio::piped(), job.target)
        .map_err(|e| StageError::new(Stage::Dump, e.to_string()))?;
    let stdout = running.child.stdout.take().expect("stdout was piped");
    let kill = running.kill_handle();
    let raw = Arc::new(AtomicU64::new(0));
    let sink_bytes = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let (done_tx, done_rx) = oneshot::channel();
    let codec = job.codec;
    let (raw_w, sink_w) = (Arc::clone(&raw), Arc::clone(&sink_bytes));
    let mut inspector = stream.check.map(crate::engine::inspector);
    std::thread::Builder::new()
        .name(format!("compress-{}", stream.role))
        .spawn(move || {
            let result = compress(
                stdout,
                codec,
                encryptor,
                tx,
                &raw_w,
                &sink_w,
                inspector.as_deref_mut(),
            );
            if result.is_err() {
                running.kill();
            }
            let finished = running.wait();
            let facts = inspector.map(|i| i.finish());
            let _ = done_tx.send(WorkerOutcome {
                result,
                finished,
                facts,
            });
        })
        .map_err(|e| {
            StageError::new(
                Stage::Compress,
                format!("cannot start compressor thread: {e}"),
            )
        })?;

    let flow = forward(job, stream, copies, &mut uploads, rx, kill, &raw, expected).await;
    let outcome = done_rx
        .await
        .map_err(|_| StageError::new(Stage::Compress, "compressor thread panicked"))?;
    let checked = flow.and_then(|(stored, sha256)| {
        judge(stream, outcome, stored, sink_bytes.load(Ordering::SeqCst))
            .map(|facts| (stored, sha256, facts))
    });
    let raw_bytes = raw.load(Ordering::SeqCst);
    let (stored, sha256, facts) = match checked {
        Ok(v) => v,
        Err(mut e) => {
            e.raw_bytes = raw_bytes;
            for (upload, key) in uploads.into_iter().zip(keys) {
                if let Some(upload) = upload {
                    if let Err(abort_err) = upload.abort().await {
                        tracing::warn!(
                            target_name = job.target,
                            key,
                            "aborting upload failed: {abort_err:#}"
                        );
                    }
                }
            }
            return Err(e);
        }
    };
    let (facts, levels) = facts;
    let facts = facts.unwrap_or_default();
    for ((c, upload), key) in copies.iter_mut().zip(uploads).zip(keys) {
        let Some(upload) = upload else { continue };
        match commit_verified(c.dest.storage, upload, key, stored, &sha256).await {
            Ok(receipt) => c.objects.push(ObjectRecord {
                role: stream.role.to_string(),
                key: receipt.key,
                raw_bytes,
                stored_bytes: stored,
                sha256: sha256.clone(),
                tables: facts.tables.clone(),
                large_objects: facts.large_objects,
                physical: facts.physical.clone(),
            }),
            Err(e) => {
                let doing = format!("committing {key} to {}", c.dest.storage.describe());
                c.failed = Some(storage_stage_error(e, &doing));
            }
        }
    }
    Ok((raw_bytes, levels))
}

/// Fail closed: the first reason this object may not be committed, in
/// order of cause (the dump's exit, then the compressor, then whether every
/// compressed byte reached the upload, then whether the dump's own bytes
/// are complete: a dump that exits 0 but ends early is not a backup).
fn judge(
    stream: &DumpStream,
    outcome: WorkerOutcome,
    stored: u64,
    produced: u64,
) -> Result<(Option<DumpFacts>, Vec<i32>), StageError> {
    let finished = outcome.finished.map_err(|e| {
        StageError::new(
            Stage::Dump,
            format!("waiting for {}: {e}", stream.command.name()),
        )
    })?;
    if !finished.success() {
        return Err(StageError {
            stage: Stage::Dump,
            message: finished.describe_with_last_line(),
            stderr_tail: finished.stderr_tail,
            raw_bytes: 0,
        });
    }
    let levels = outcome.result.map_err(|e| {
        StageError::new(Stage::Compress, format!("compressing {}: {e}", stream.role))
    })?;
    if stored != produced {
        return Err(StageError::new(
            Stage::Compress,
            format!("compressed stream incomplete: {produced} bytes produced, {stored} forwarded"),
        ));
    }
    let facts = outcome.facts.transpose().map_err(|why| {
        StageError::new(
            Stage::Dump,
            format!("{} exited 0, but {why}", stream.command.name()),
        )
    })?;
    Ok((facts, levels))
}

/// Move compressed chunks from the channel into every live upload at
/// once (the bytes are shared, not copied; the slowest storage sets the
/// pace), hashing them. A storage that fails a write loses its copy; when
/// none is left the dump is stopped.
#[allow(clippy::too_many_arguments)]
async fn forward(
    job: &BackupJob<'_>,
    stream: &DumpStream,
    copies: &mut [Copy<'_>],
    uploads: &mut [Option<Box<dyn Upload>>],
    mut rx: mpsc::Receiver<Bytes>,
    kill: KillHandle,
    raw: &AtomicU64,
    expected: Option<u64>,
) -> Result<(u64, String), StageError> {
    let mut hasher = Sha256::new();
    let mut stored: u64 = 0;
    let clock = Instant::now();
    let bar = match job.progress {
        true => Some(crate::progress::Progress::new(
            &format!("{} {}", job.target, stream.role),
            expected,
        )),
        false => None,
    };
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = job.cancel.cancelled() => {
                kill.kill();
                return Err(StageError::new(Stage::Interrupted, format!("interrupted while dumping {}", stream.role)));
            }
            chunk = rx.recv() => match chunk {
                Some(chunk) => {
                    hasher.update(&chunk);
                    stored += chunk.len() as u64;
                    if let Some(bar) = &bar {
                        bar.update(raw.load(Ordering::Relaxed), stored);
                    }
                    let writes = uploads.iter_mut().map(|u| {
                        let chunk = chunk.clone();
                        async move {
                            match u {
                                Some(u) => u.write(chunk).await,
                                None => Ok(()),
                            }
                        }
                    });
                    let results = futures::future::join_all(writes).await;
                    let mut last_error = None;
                    for ((c, u), result) in copies.iter_mut().zip(uploads.iter_mut()).zip(results) {
                        if let Err(e) = result {
                            let e = storage_stage_error(e, &format!("writing to {}", c.dest.storage.describe()));
                            tracing::warn!(target_name = job.target, storage = c.dest.name, "copy failed: {}", e.message);
                            if let Some(upload) = u.take() {
                                if let Err(abort_err) = upload.abort().await {
                                    tracing::warn!(target_name = job.target, "aborting upload failed: {abort_err:#}");
                                }
                            }
                            last_error = Some(StageError::new(e.stage, e.message.clone()));
                            c.failed = Some(e);
                        }
                    }
                    if uploads.iter().all(Option::is_none) {
                        kill.kill();
                        return Err(last_error.unwrap_or_else(|| StageError::new(Stage::Upload, "no storage left")));
                    }
                }
                None => break,
            },
            _ = progress.tick(), if bar.is_none() => {
                let raw_now = raw.load(Ordering::Relaxed);
                let secs = clock.elapsed().as_secs_f64();
                tracing::info!(
                    target_name = job.target,
                    role = %stream.role,
                    raw_bytes = raw_now,
                    stored_bytes = stored,
                    "progress: {} dumped, {} stored, {}/s",
                    human_bytes(raw_now),
                    human_bytes(stored),
                    human_bytes((raw_now as f64 / secs) as u64)
                );
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok((stored, hex::encode(hasher.finalize())))
}

/// The target's newest backup, whose sizes give the progress bar its
/// percentage and ETA: listed once per backup, and only for the bar.
async fn previous_backup(job: &BackupJob<'_>) -> Option<Manifest> {
    if !job.progress {
        return None;
    }
    let first = job.destinations.first()?;
    let listing = crate::catalog::list_target(first.storage, first.layout, job.target)
        .await
        .ok()?;
    listing.backups.last().map(|b| b.manifest.clone())
}

/// Read the dump, compress it, and send chunks down the channel. Returns
/// the compression levels used (they move with `level = "auto"`).
fn compress(
    mut stdout: std::process::ChildStdout,
    codec: Codec,
    encryptor: Option<age::Encryptor>,
    tx: mpsc::Sender<Bytes>,
    raw: &AtomicU64,
    sink_bytes: &Arc<AtomicU64>,
    mut inspector: Option<&mut (dyn crate::engine::Inspector + 'static)>,
) -> std::io::Result<Vec<i32>> {
    let blocked = Arc::new(AtomicU64::new(0));
    let sink = ChunkSink {
        tx,
        buf: BytesMut::with_capacity(CHUNK_BYTES),
        written: Arc::clone(sink_bytes),
        blocked_nanos: Arc::clone(&blocked),
    };
    let mut encoder: Box<dyn FinishWrite> = match encryptor {
        Some(e) => codec.encoder(crate::crypto::EncryptWriter::new(e, sink)?)?,
        None => codec.encoder(sink)?,
    };
    let mut adapter = codec
        .adapt
        .map(|bounds| (Adapter::new(codec.level, bounds), Pipe::of(&stdout)));
    let mut buf = vec![0u8; READ_BUFFER];
    let pumped = loop {
        if let Some((a, pipe)) = adapter.as_mut() {
            a.observe_pipe(pipe.fill());
        }
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        raw.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(i) = inspector.as_deref_mut() {
            i.write_all(&buf[..n])?;
        }
        if let Err(e) = encoder.write_all(&buf[..n]) {
            break Err(e);
        }
        if let Some((a, _)) = adapter.as_mut() {
            let waited = Duration::from_nanos(blocked.load(Ordering::Relaxed));
            if let Some(level) = a.next_level(waited) {
                if let Err(e) = encoder.set_level(level) {
                    break Err(e);
                }
            }
        }
    };
    let levels = match &adapter {
        Some((a, _)) => a.levels_used(),
        None => vec![codec.level],
    };
    match pumped {
        Ok(()) => encoder.finish().map(|()| levels),
        Err(e) => {
            // Shut the codec's threads down; its own error adds nothing.
            let _ = encoder.finish();
            Err(e)
        }
    }
}

/// The compressor's output: cuts the stream into chunks for the channel.
/// `written` counts bytes accepted, so the receiver can prove it got them all.
struct ChunkSink {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    written: Arc<AtomicU64>,
    /// Time spent waiting for the storage to take a chunk.
    blocked_nanos: Arc<AtomicU64>,
}

impl ChunkSink {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        let waited = Instant::now();
        let sent = self
            .tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"));
        let nanos = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.blocked_nanos.fetch_add(nanos, Ordering::Relaxed);
        sent
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.written.fetch_add(n as u64, Ordering::SeqCst);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffered()
    }
}

impl FinishWrite for ChunkSink {
    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.send_buffered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Algorithm;

    /// Compress `bytes` of base64 text (compresses to about 3/4, so chunks
    /// flow steadily) through `compress`, with a storage that takes
    /// `per_chunk` for each chunk. Returns the levels used and the output.
    fn compress_with_storage_delay(bytes: u64, per_chunk: Duration) -> (Vec<i32>, Vec<u8>) {
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("base64 /dev/urandom | head -c {bytes}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let codec = Codec {
            algorithm: Algorithm::Zstd,
            level: 1,
            threads: 2,
            adapt: Some((1, 9)),
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let storage = std::thread::spawn(move || {
            let mut out = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                std::thread::sleep(per_chunk);
                out.extend_from_slice(&chunk);
            }
            out
        });
        let raw = AtomicU64::new(0);
        let levels = compress(
            stdout,
            codec,
            None,
            tx,
            &raw,
            &Arc::new(AtomicU64::new(0)),
            None,
        )
        .unwrap();
        child.wait().unwrap();
        assert_eq!(raw.load(Ordering::SeqCst), bytes);
        (levels, storage.join().unwrap())
    }

    #[test]
    fn a_slow_storage_makes_auto_compress_harder_than_level_3() {
        // About 5 MiB/s of storage: the bottleneck even when the test
        // machine is busy and the compressor gets little CPU.
        let bytes = 48 << 20;
        let (levels, stored) = compress_with_storage_delay(bytes, Duration::from_millis(200));
        assert!(levels.iter().max().unwrap() > &3, "levels used: {levels:?}");
        // The frames of every level form one standard stream.
        let decoded = zstd::decode_all(&stored[..]).unwrap();
        assert_eq!(decoded.len() as u64, bytes);
        assert!(decoded.iter().all(|b| b.is_ascii()));
    }
}
