//! `backstop verify --pitr`: prove that a point in time restores, the way
//! one would be restored in an incident, without touching anything live
//! but a canary row.
//!
//! A row is committed into `backstop_pitr_canary` in the target database,
//! the moment after it taken as the target, a second row committed after
//! it, and the WAL switched so both are in a completed segment; once that
//! segment is stored, the newest base backup before the target is
//! restored into a scratch directory and a temporary server of the
//! backup's major replays the stored WAL with `recovery_target_action =
//! pause`, on a private socket and no TCP port. The proof holds only when
//! recovery paused (never promoted) with the first row and without the
//! second: to the second, from storage alone. The scratch cluster is
//! always stopped and removed.

use super::recover::{recover, Action, Recover, RecoveryTarget};
use crate::cli::OpenStorage;
use crate::engine::postgres::tools::{self as pgtools, PgConn};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Proof<'a> {
    pub target: String,
    pub conn: PgConn,
    pub storages: Vec<&'a OpenStorage>,
    pub identity: Option<PathBuf>,
    pub config: PathBuf,
    /// How long the stored WAL may take to catch up, and recovery to pause.
    pub timeout: Duration,
    pub cancel: tokio_util::sync::CancellationToken,
}

const CANARY: &str = "backstop_pitr_canary";

/// The first line psql printed (a RETURNING value comes before the
/// command tag).
fn query(conn: &PgConn, psql: &Path, sql: &str) -> anyhow::Result<String> {
    Ok(conn
        .query(psql, sql)?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Run a command as the user that owns `dir` would: PostgreSQL refuses to
/// run as root, so as root the scratch cluster belongs to `postgres`.
fn as_owner(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Proof<'_> {
    pub async fn run(&self) -> anyhow::Result<String> {
        let found = pgtools::discover();
        let psql = pgtools::newest_psql(&found)?;
        let conn = &self.conn;
        // The canary rows, and the target between them (server clock: the
        // commit times recovery compares are the server's).
        query(conn, &psql, &format!(
            "CREATE TABLE IF NOT EXISTS {CANARY} (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());\
             DELETE FROM {CANARY} WHERE at < now() - interval '30 days';"
        ))
        .with_context(|| format!("writing the canary table {CANARY} (verify --pitr needs INSERT and CREATE there, or the table made once for it)"))?;
        let before = query(
            conn,
            &psql,
            &format!("INSERT INTO {CANARY} DEFAULT VALUES RETURNING id;"),
        )?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let at = query(conn, &psql, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"');")?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let after = query(
            conn,
            &psql,
            &format!("INSERT INTO {CANARY} DEFAULT VALUES RETURNING id;"),
        )?;
        let segment = query(conn, &psql, "SELECT pg_walfile_name(pg_switch_wal());")?;
        let target_time: chrono::DateTime<chrono::Utc> = at
            .parse()
            .with_context(|| format!("the server's time `{at}`"))?;
        tracing::info!(target_name = %self.target, at = %at, segment = %segment, "canary written; waiting for its WAL to be stored");
        self.wait_stored(&segment).await?;

        let scratch = tempfile::Builder::new()
            .prefix("backstop-pitr-verify-")
            .tempdir()?;
        let pgdata = scratch.path().join("data");
        let recovered = recover(&Recover {
            target: self.target.clone(),
            storages: self.storages.clone(),
            pgdata: pgdata.clone(),
            to: RecoveryTarget::Time(target_time),
            action: Action::Pause,
            identity: self.identity.clone(),
            config: self.config.clone(),
            cancel: self.cancel.clone(),
        })
        .await?;
        let server =
            ScratchServer::start(&found, scratch.path(), &pgdata, &recovered.server_version)?;
        let outcome = server.wait_paused(self.timeout).await.and_then(|()| {
            let sql = |q: &str| server.sql(q);
            if sql("SELECT pg_is_in_recovery()")? != "t" {
                bail!("the scratch server left recovery: it must pause at the target, never promote");
            }
            let seen = |id: &str| sql(&format!("SELECT count(*) FROM {CANARY} WHERE id = {id}"));
            match (seen(&before)?.as_str(), seen(&after)?.as_str()) {
                ("1", "0") => Ok(format!(
                    "base backup {} plus WAL through {} recovered to {at} and paused there: the canary row from before is present, the one from after is not",
                    recovered.backup_id, recovered.wal_until
                )),
                (b, a) => bail!(
                    "recovery to {at} paused with the wrong data: canary {before} (before) seen {b} times, canary {after} (after) {a} times"
                ),
            }
        });
        server.stop();
        outcome
    }

    async fn wait_stored(&self, segment: &str) -> anyhow::Result<()> {
        let file = super::wal_names::WalFile::parse(segment)
            .with_context(|| format!("`{segment}` is not a WAL file name"))?;
        let s = self.storages.first().context("the target has no storage")?;
        let archive = super::archive::WalArchive::new(s.storage.as_ref(), &s.layout, &self.target);
        let deadline = Instant::now() + self.timeout;
        loop {
            let stored = archive.stored().await?;
            if stored.iter().any(|w| w.file == file) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{segment} (with the canary) was not stored within {}: is `backstop wal stream` running for this target?",
                    humantime::format_duration(self.timeout)
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A temporary PostgreSQL on the scratch directory: its socket in that
/// directory, no TCP, stopped and gone with it.
struct ScratchServer {
    pg_ctl: PathBuf,
    psql: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl ScratchServer {
    fn start(
        found: &[pgtools::PgTools],
        dir: &Path,
        data: &Path,
        server_version: &str,
    ) -> anyhow::Result<ScratchServer> {
        let major: u32 = server_version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("the backup's server version `{server_version}`"))?;
        let tools = found
            .iter()
            .find(|t| t.version.major_key() == major * 100 && t.tool("postgres").is_file() && t.tool("pg_ctl").is_file())
            .with_context(|| {
                format!("verify --pitr starts a PostgreSQL {major} server on the restored copy: install its server binaries (Debian: postgresql-{major})")
            })?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
            if !status.success() {
                bail!("giving {} to the postgres user failed", dir.display());
            }
        }
        let server = ScratchServer {
            pg_ctl: tools.tool("pg_ctl"),
            psql: tools.tool("psql"),
            data: data.to_path_buf(),
            socket: dir.to_path_buf(),
            log: dir.join("server.log"),
        };
        let out = as_owner(&server.pg_ctl)
            .arg("-D")
            .arg(&server.data)
            .arg("-l")
            .arg(&server.log)
            .arg("-o")
            .arg(format!("-c listen_addresses='' -c unix_socket_directories='{}' -c port=5432 -c archive_mode=off", dir.display()))
            .args(["-w", "-t", "300", "start"])
            .output()?;
        if !out.status.success() {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            bail!(
                "the scratch server did not start: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(server)
    }

    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = as_owner(&self.psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-p",
                "5432",
                "-h",
            ])
            .arg(&self.socket)
            .arg("-c")
            .arg(sql)
            .output()?;
        if !out.status.success() {
            bail!("{sql}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn wait_paused(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.sql("SELECT pg_is_wal_replay_paused()") {
                Ok(v) if v == "t" => return Ok(()),
                Ok(_) => {}
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "recovery did not pause at the target within {}; the server's log ends: {}",
                    humantime::format_duration(timeout),
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn stop(&self) {
        let _ = as_owner(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
