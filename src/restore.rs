//! Restore: stream a stored object back through the decompressor into
//! pg_restore (custom format) or psql (plain), checking SHA-256 and size on
//! the way.
//!
//! The restore tool runs in one transaction, and the last decompressed bytes
//! are held back until the whole stored object has been hashed: a corrupted
//! or truncated object makes us kill the tool before it can read to the end
//! and commit, so the target database is left as it was.

use crate::catalog::{list_target, Backup, Layout};
use crate::codec::decoder;
use crate::error::usage;
use crate::process::{Finished, Running};
use crate::source::pgtools::{self, PgConn, PgVersion};
use crate::storage::Storage;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Decompressed bytes withheld until the checksum is verified.
const HOLDBACK_BYTES: usize = 256 << 10;

pub struct RestoreRequest {
    pub target: String,
    /// A backup id, or None for the newest complete one.
    pub backup: Option<String>,
    pub into: PgConn,
    pub create: bool,
    pub no_owner: bool,
    pub cancel: CancellationToken,
}

#[derive(Debug)]
pub struct RestoreOutcome {
    pub backup_id: String,
    pub database: String,
    pub bytes: u64,
}

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

/// Quote an SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub async fn restore(
    storage: &dyn Storage,
    layout: &Layout,
    req: RestoreRequest,
) -> anyhow::Result<RestoreOutcome> {
    let backup = choose_backup(storage, layout, &req.target, req.backup.as_deref()).await?;
    let m = &backup.manifest;
    if m.source_type != "postgres" {
        bail!(usage(format!(
            "backup {} is a {} backup; restore supports postgres",
            m.id, m.source_type
        )));
    }
    let object = m
        .object("database")
        .ok_or_else(|| anyhow!("manifest {} names no database object", backup.manifest_key))?
        .clone();
    let dumped_with = PgVersion::parse(&m.dump_tool_version);
    let format = m.format.clone();
    let into = req.into.clone();
    let create = req.create;
    tracing::info!(backup = %m.id, database = %into.database, "preparing restore");

    // Connect, choose the client, create or check the database.
    let prepared = tokio::task::spawn_blocking(move || prepare(&into, dumped_with, create))
        .await
        .context("restore preparation task")??;

    let tool = if format == "custom" {
        "pg_restore"
    } else {
        "psql"
    };
    let program = prepared.tools.require(tool)?;
    let mut cmd = crate::process::ChildCommand::new(program);
    cmd = if format == "custom" {
        let mut c = cmd
            .arg("--exit-on-error")
            .arg("--single-transaction")
            .arg("--no-password")
            .arg("--dbname")
            .arg(&req.into.database);
        if req.no_owner {
            c = c.arg("--no-owner").arg("--no-privileges");
        }
        c
    } else {
        cmd.arg("-X")
            .arg("-q")
            .arg("-w")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("--single-transaction")
            .arg("-f")
            .arg("-")
    };
    let cmd = req.into.apply(cmd);

    let result = stream_into(
        storage,
        &object.key,
        &object.sha256,
        object.stored_bytes,
        m.compression.algorithm,
        &cmd,
        &req.cancel,
    )
    .await;
    match result {
        Ok(bytes) => {
            tracing::info!(backup = %m.id, database = %req.into.database, bytes, "restore complete");
            Ok(RestoreOutcome {
                backup_id: m.id.0.clone(),
                database: req.into.database.clone(),
                bytes,
            })
        }
        Err(e) => {
            if prepared.created {
                let conn = req.into.with_database("postgres");
                let psql = prepared.tools.tool("psql");
                let name = req.into.database.clone();
                let dropped =
                    tokio::task::spawn_blocking(move || drop_database(&conn, &psql, &name)).await;
                match dropped {
                    Ok(Ok(_)) => {
                        tracing::info!(database = %req.into.database, "dropped the database this restore created")
                    }
                    _ => {
                        tracing::warn!(database = %req.into.database, "could not drop the database this restore created")
                    }
                }
            }
            Err(e.context(format!(
                "restoring backup {} into {}",
                m.id,
                req.into.endpoint()
            )))
        }
    }
}

/// Drop `name` through the maintenance connection `conn`. FORCE
/// (PostgreSQL 13+) ends leftover sessions, such as those of a restore tool
/// just killed; older servers get a plain DROP.
pub fn drop_database(conn: &PgConn, psql: &std::path::Path, name: &str) -> anyhow::Result<()> {
    conn.query(
        psql,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", ident(name)),
    )
    .or_else(|_| conn.query(psql, &format!("DROP DATABASE IF EXISTS {};", ident(name))))
    .map(|_| ())
}

struct Prepared {
    tools: pgtools::PgTools,
    created: bool,
}

fn prepare(
    into: &PgConn,
    dumped_with: Option<PgVersion>,
    create: bool,
) -> anyhow::Result<Prepared> {
    let found = pgtools::discover();
    // The server is asked through its maintenance database when we are to
    // create the target; otherwise through the target itself.
    let probe = if create {
        into.with_database("postgres")
    } else {
        into.clone()
    };
    let (server, _) = probe.server_version(&found)?;
    // pg_restore must be at least as new as the server and as the pg_dump
    // that wrote the archive.
    let needed = dumped_with.map_or(server, |d| d.max(server));
    let tools = pgtools::select(
        &found,
        needed,
        &format!("the server at {} (or the dump)", into.endpoint()),
    )?
    .clone();
    let psql = tools.require("psql")?;
    if create {
        let exists = probe.query(
            &psql,
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = {};",
                literal(&into.database)
            ),
        )?;
        if exists != "0" {
            bail!(usage(format!(
                "database `{}` already exists on {}:{}; drop it or restore without --create into an empty database",
                into.database, into.host, into.port
            )));
        }
        probe.query(
            &psql,
            &format!("CREATE DATABASE {};", ident(&into.database)),
        )?;
        tracing::info!(database = %into.database, "created database");
        Ok(Prepared {
            tools,
            created: true,
        })
    } else {
        let tables = into
            .query(
                &psql,
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r','p','v','m','S','f') \
                 AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%';",
            )
            .map_err(|e| usage(format!("cannot use target database (does it exist? pass --create to create it): {e:#}")))?;
        if tables != "0" {
            bail!(usage(format!(
                "database `{}` is not empty ({tables} relations); restore needs an empty database or --create with a new name",
                into.database
            )));
        }
        Ok(Prepared {
            tools,
            created: false,
        })
    }
}

/// Stream `key` into the command's stdin; returns the stored bytes read.
async fn stream_into(
    storage: &dyn Storage,
    key: &str,
    expected_sha: &str,
    expected_size: u64,
    algorithm: crate::config::Algorithm,
    cmd: &crate::process::ChildCommand,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut stream = storage
        .open(key)
        .await
        .with_context(|| format!("opening {key}"))?;
    let mut running = cmd.spawn(Stdio::piped(), Stdio::null(), "restore")?;
    let stdin = running.child.stdin.take().expect("stdin was piped");
    let kill = running.kill_handle();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let expected_sha = expected_sha.to_string();
    let key_owned = key.to_string();
    let worker = std::thread::spawn(move || {
        feed(
            rx,
            stdin,
            running,
            algorithm,
            &key_owned,
            &expected_sha,
            expected_size,
        )
    });

    let mut read_error = None;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                kill.kill();
                read_error = Some(anyhow!("interrupted by signal"));
                break;
            }
            next = stream.next() => match next {
                Some(Ok(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the feeder stopped; it reports why
                    }
                }
                Some(Err(e)) => {
                    kill.kill();
                    read_error = Some(anyhow!(e).context(format!("reading {key} from {}", storage.describe())));
                    break;
                }
                None => break,
            }
        }
    }
    drop(tx);
    let (feed_result, finished) = tokio::task::spawn_blocking(move || worker.join())
        .await
        .context("restore feeder task")?
        .map_err(|_| anyhow!("restore feeder thread panicked"))?;
    if let Some(e) = read_error {
        return Err(e);
    }
    let finished = finished?;
    // A checksum failure is the root cause even though it made us kill the
    // restore tool, so it is reported first.
    match feed_result {
        Err(FeedError::Checksum(msg)) => bail!(msg),
        Err(FeedError::Io(e)) if finished.success() => bail!("decompressing {key}: {e}"),
        _ if !finished.success() => bail!("{}", finished.describe_with_last_line()),
        Err(FeedError::Io(e)) => bail!("decompressing {key}: {e}"),
        Ok(n) => Ok(n),
    }
}

enum FeedError {
    Checksum(String),
    Io(std::io::Error),
}

fn feed(
    mut rx: mpsc::Receiver<Bytes>,
    stdin: std::process::ChildStdin,
    running: Running,
    algorithm: crate::config::Algorithm,
    key: &str,
    expected_sha: &str,
    expected_size: u64,
) -> (Result<u64, FeedError>, std::io::Result<Finished>) {
    let release = Arc::new(AtomicBool::new(false));
    let holdback = Holdback {
        inner: stdin,
        buf: Vec::with_capacity(2 * HOLDBACK_BYTES),
        release: Arc::clone(&release),
    };
    let mut dec = match decoder(algorithm, holdback) {
        Ok(d) => d,
        Err(e) => {
            running.kill();
            return (Err(FeedError::Io(e)), running.wait());
        }
    };
    let verified = (|| {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut decode_error = None;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if decode_error.is_none() {
                if let Err(e) = dec.write_all(&chunk) {
                    // Keep hashing to the end: a checksum mismatch is the
                    // better explanation of a decoder error.
                    running.kill();
                    decode_error = Some(e);
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        if size != expected_size || actual != expected_sha {
            return Err(FeedError::Checksum(format!(
                "checksum mismatch for {key}: the manifest says {expected_size} bytes with SHA-256 {expected_sha}, \
                 storage returned {size} bytes with SHA-256 {actual}; the restore was stopped before it committed"
            )));
        }
        match decode_error {
            Some(e) => Err(FeedError::Io(e)),
            None => Ok(size),
        }
    })();
    match verified {
        Ok(size) => {
            release.store(true, Ordering::SeqCst);
            // Flushes the held-back tail; dropping the decoder closes stdin,
            // and only now can the tool reach EOF and commit.
            let finished = dec.finish().map(|()| size).map_err(FeedError::Io);
            (finished, running.wait())
        }
        Err(e) => {
            // Regression (restore of a corrupted gzip object committed a
            // partial schema): stdin must stay open until the tool is dead,
            // or it sees EOF and commits the truncated script.
            running.kill();
            let finished = running.wait();
            drop(dec);
            (Err(e), finished)
        }
    }
}

/// Passes bytes on, except the last `HOLDBACK_BYTES`, until released.
struct Holdback<W: Write> {
    inner: W,
    buf: Vec<u8>,
    release: Arc<AtomicBool>,
}

impl<W: Write> Write for Holdback<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 2 * HOLDBACK_BYTES {
            let cut = self.buf.len() - HOLDBACK_BYTES;
            self.inner.write_all(&self.buf[..cut])?;
            self.buf.drain(..cut);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.release.load(Ordering::SeqCst) {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdback_withholds_the_tail_until_released() {
        let release = Arc::new(AtomicBool::new(false));
        let mut h = Holdback {
            inner: Vec::new(),
            buf: Vec::new(),
            release: Arc::clone(&release),
        };
        let data: Vec<u8> = (0..(3 * HOLDBACK_BYTES)).map(|i| i as u8).collect();
        for part in data.chunks(10_000) {
            h.write_all(part).unwrap();
        }
        h.flush().unwrap();
        assert!(h.inner.len() <= data.len() - HOLDBACK_BYTES);
        assert_eq!(&h.inner[..], &data[..h.inner.len()]);
        release.store(true, Ordering::SeqCst);
        h.flush().unwrap();
        assert_eq!(h.inner, data);
    }

    #[test]
    fn sql_quoting_doubles_quotes() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("o'k"), "'o''k'");
    }
}
