//! The consistent copy of a live database, written to stdout.

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// How long a lock held by another connection is waited for.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Open an existing database (never create one: a typo in `path` must not
/// "back up" an empty file).
pub fn open_existing(path: &Path) -> anyhow::Result<Connection> {
    if !path.is_file() {
        bail!("{}: no such database file", path.display());
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    Ok(c)
}

/// Before the run: the file exists and is a database.
pub fn probe(path: &Path) -> anyhow::Result<()> {
    let c = open_existing(path)?;
    c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
    Ok(())
}

/// Copy the database at `path` into a temp file with the online backup API
/// in one step, then stream that file to stdout.
pub fn to_stdout(path: &Path) -> anyhow::Result<()> {
    let src = open_existing(path)?;
    let tmp = tempfile::Builder::new()
        .prefix(".backstop-sqlite-")
        .tempfile()
        .context("creating the snapshot file in the temp directory ($TMPDIR)")?;
    {
        let mut dst = Connection::open(tmp.path())?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        loop {
            // -1: every page in one step, under one read transaction. A
            // lock held past the busy timeout fails the run (it is retried
            // per [retry]) rather than waiting forever.
            match backup.step(-1).context("copying the database")? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                _ => bail!(
                    "{} stayed locked by another connection for {}s",
                    path.display(),
                    BUSY_TIMEOUT.as_secs()
                ),
            }
        }
    }
    let mut file = std::fs::File::open(tmp.path())?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out).context("writing the snapshot to stdout")?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
