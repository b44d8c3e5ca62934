//! Helpers for integration tests against the real services on this machine
//! (PostgreSQL on 127.0.0.1:5432 with trust auth). Every test makes its own
//! uniquely named databases and directories and removes them when done.
#![allow(dead_code)]

pub mod fake_box;
pub mod fake_kube;
pub mod faulty_proxy;
pub mod recorder;
pub mod s3;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

/// A name no other test (or concurrent test run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Run SQL through psql; panics with psql's stderr on failure.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed on {db}: {}\nSQL: {sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// How many half-loaded restore databases (`<first 30 chars of the
/// destination>_bs_restore_<hex>`) exist for a destination name. Scoped to
/// it: tests running at the same time have their own.
pub fn restore_temps(destination: &str) -> String {
    let stem: String = destination.chars().take(30).collect();
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{stem}\\_bs\\_restore\\_%'"),
    )
}

pub fn database_exists(name: &str) -> bool {
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    ) == "1"
}

/// A database that is dropped when the test ends, pass or fail.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create(prefix: &str) -> TestDb {
        let name = unique(prefix);
        psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        TestDb { name }
    }

    /// A name for a database that does not exist yet but is dropped at the end.
    pub fn reserve(prefix: &str) -> TestDb {
        TestDb {
            name: unique(prefix),
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{}", self.name)
    }

    /// Row count and content checksum of every user table, plus sequence
    /// positions: equal fingerprints mean equal data.
    pub fn fingerprint(&self) -> Vec<String> {
        let tables = self.sql(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1",
        );
        let mut out = Vec::new();
        for t in tables.lines() {
            let row = self.sql(&format!(
                "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM {t} x"
            ));
            out.push(format!("{t} {row}"));
        }
        let seqs = self.sql(
            "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY schemaname, sequencename) FROM pg_sequences",
        );
        out.push(format!("sequences {seqs}"));
        let idx = self.sql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog')");
        out.push(format!("indexes {idx}"));
        out
    }

    pub fn user_relations(&self) -> u64 {
        self.sql(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','S','v','m') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
        )
        .parse()
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The backstop binary with a clean environment of our own variables.
pub fn backstop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
    c.env_remove("BACKSTOP_CONFIG")
        .env_remove("BACKSTOP_LOG")
        .env_remove("BACKSTOP_LOG_FORMAT");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The JSON report line (backup, verify) printed on stdout when not on
    /// a TTY.
    pub fn summary(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("{\"event\":"))
            .unwrap_or_else(|| panic!("no summary in output:\n{}", self.all()));
        serde_json::from_str(line).unwrap()
    }
}

pub fn run(args: &[&str], config: &Path) -> Run {
    Run::from(
        backstop()
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .expect("backstop runs"),
    )
}

/// A temp directory with a config in it; the directory goes when dropped.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("backstop-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn backups(&self) -> PathBuf {
        self.path("backups")
    }

    /// Write `backstop.toml` with local storage in this workspace and the
    /// given extra sections (targets, compression).
    pub fn config(&self, body: &str) -> PathBuf {
        let text = format!(
            "[storage]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n\n{body}",
            self.backups().display()
        );
        let p = self.path("backstop.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Write an executable script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Damage the one stored file ending with `suffix`: one bit of its
    /// middle byte flipped, the size unchanged (only the SHA-256 tells).
    pub fn damage_stored(&self, suffix: &str) -> PathBuf {
        let object = self.stored_file(suffix);
        flip_middle_bit(&object);
        object
    }

    /// The one stored file whose name ends with `suffix` (".dump.zst",
    /// ".manifest.json"); panics naming what is there when there is none.
    pub fn stored_file(&self, suffix: &str) -> PathBuf {
        let files = self.stored_files();
        files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| panic!("no stored *{suffix} among {files:?}"))
    }

    /// Every file under the backup directory, temp files included.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out)
                    } else {
                        out.push(p)
                    }
                }
            }
        }
        walk(&self.backups(), &mut out);
        out.sort();
        out
    }
}

/// A postgres target table for a config. Failures are not retried within
/// the run (the default waits 5 minutes) unless `extra` sets `retry`.
pub fn pg_target(name: &str, db: &str, extra: &str) -> String {
    let retry = if extra.contains("retry") {
        ""
    } else {
        "retry = { attempts = 1 }\n"
    };
    format!(
        "[[targets]]\nname = \"{name}\"\ntype = \"postgres\"\nhost = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ndatabase = \"{db}\"\n{retry}{extra}\n"
    )
}

/// The real pg_dump for wrapper scripts.
pub fn real_pg_dump() -> String {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin/pg_dump"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "pg_dump".into())
}

/// Flip one bit of a file's middle byte.
pub fn flip_middle_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
}

/// `backstop init --database URL --storage local:<ws backups> --output OUT`.
pub fn init_local(url: &str, ws: &Workspace, out: &Path) -> Run {
    Run::from(
        backstop()
            .args(["init", "--database", url, "--storage"])
            .arg(format!("local:{}", ws.backups().display()))
            .arg("--output")
            .arg(out)
            .output()
            .unwrap(),
    )
}

/// An SQLite database `name` in the workspace: `notes` with `rows` rows
/// and `tags` with two.
#[allow(dead_code)]
pub fn sqlite_notes(ws: &Workspace, name: &str, rows: u32) -> PathBuf {
    let path = ws.path(name);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE TABLE tags (name TEXT);",
    )
    .unwrap();
    for i in 0..rows {
        c.execute(
            "INSERT INTO notes (body) VALUES (?1)",
            [format!("note {i}")],
        )
        .unwrap();
    }
    c.execute("INSERT INTO tags VALUES ('a'), ('b')", [])
        .unwrap();
    path
}
