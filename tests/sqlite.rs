//! SQLite targets: a consistent online copy of a live database (WAL mode,
//! a writer inserting throughout), restorable with `zstd -dc` alone or with
//! `restore --into sqlite:///path` (never over a file without --replace),
//! and `verify` without any server.

mod support;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn target(path: &Path) -> String {
    format!(
        "[[targets]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\nretry = {{ attempts = 1 }}\n",
        path.display()
    )
}

/// A WAL-mode database with text (emoji), blobs, reals and NULLs.
fn app_db(ws: &Workspace) -> PathBuf {
    let path = ws.path("app.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB, price REAL, maybe TEXT);
         CREATE INDEX notes_body ON notes(body);
         CREATE VIEW expensive AS SELECT id FROM notes WHERE price > 10;",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..3000 {
        tx.execute(
            "INSERT INTO notes (body, data, price, maybe) VALUES (?1, ?2, ?3, NULL)",
            rusqlite::params![
                format!("note {i} 🦀 ünïcode"),
                vec![i as u8; 64],
                i as f64 / 7.0
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    path
}

fn fingerprint(path: &Path) -> String {
    let c = Connection::open(path).unwrap();
    c.query_row(
        "SELECT count(*) || ':' || sum(length(body)) || ':' || sum(length(data)) || ':' || printf('%.6f', sum(price)) FROM notes",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn sqlite_round_trip_with_restore_zstd_and_verify() {
    let ws = Workspace::new();
    let db = app_db(&ws);
    let cfg = ws.config(&target(&db));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let object = ws.stored_file(".db.zst");

    // Standard tools alone: the object is the database file, compressed.
    let manual = ws.path("manual.db");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("zstd -dc '{}' > '{}'", object.display(), manual.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fingerprint(&manual), fingerprint(&db));

    let restored = ws.path("restored/app.db");
    std::fs::create_dir_all(restored.parent().unwrap()).unwrap();
    let url = format!("sqlite://{}", restored.display());
    let r = run(&["restore", "--into", &url], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(fingerprint(&restored), fingerprint(&db));
    let c = Connection::open(&restored).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let views: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'view'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(views, 1);
    drop(c);

    // Never over an existing file without --replace; with it, in one rename.
    Connection::open(&restored)
        .unwrap()
        .execute("DELETE FROM notes WHERE id > 10", [])
        .unwrap();
    let before = fingerprint(&restored);
    let r = run(&["restore", "--into", &url], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--replace"), "{}", r.all());
    assert_eq!(fingerprint(&restored), before, "untouched");
    let r = run(
        &["restore", "--into", &url, "--replace", "--keep-replaced"],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(fingerprint(&restored), fingerprint(&db));
    let kept: Vec<_> = std::fs::read_dir(restored.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().any(|n| n.starts_with("app.db.replaced-")),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|n| n.contains("backstop-restore")),
        "no temp left: {kept:?}"
    );

    // verify needs no server for SQLite.
    let r = run(&["verify"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("3000 rows") || r.stdout.contains("\"rows\":3000"),
        "{}",
        r.stdout
    );
}

/// A writer commits batches of 10 rows the whole time: the copy is one
/// point in time (every batch whole, batches a gap-free prefix).
#[test]
fn a_live_wal_database_is_copied_consistently_while_a_writer_inserts() {
    let ws = Workspace::new();
    let db = ws.path("live.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE events (batch INTEGER, n INTEGER, payload TEXT);",
    )
    .unwrap();
    drop(c);
    let stop = ws.path("stop");
    let writer = Command::new("python3")
        .args([
            "-c",
            r#"
import os, sqlite3, sys
db, stop = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA busy_timeout = 10000")
batch = 0
while not os.path.exists(stop) or batch < 50:
    batch += 1
    c.execute("BEGIN")
    for n in range(10):
        c.execute("INSERT INTO events VALUES (?, ?, ?)", (batch, n, "x" * 500))
    c.execute("COMMIT")
print(batch)
"#,
        ])
        .arg(&db)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // Let the writer get going, then back up (twice) while it writes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cfg = ws.config(&target(&db));
    for _ in 0..2 {
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    std::fs::write(&stop, "").unwrap();
    let out = writer.wait_with_output().unwrap();
    let written: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let restored = ws.path("restored.db");
    let r = run(
        &[
            "restore",
            "--into",
            &format!("sqlite://{}", restored.display()),
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let c = Connection::open(&restored).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let (batches, max, torn): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), coalesce(max(batch), 0), coalesce(sum(cnt != 10), 0)
             FROM (SELECT batch, count(*) AS cnt FROM events GROUP BY batch)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(torn, 0, "no torn transaction");
    assert_eq!(batches, max, "batches 1..{max} without a gap");
    assert!(
        max > 0 && max < written,
        "a point in time while writing: {max} of {written}"
    );
}

#[test]
fn a_missing_or_bogus_database_fails_before_anything_is_stored() {
    let ws = Workspace::new();
    let missing = ws.path("typo.db");
    let cfg = ws.config(&target(&missing));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("no such database file"), "{}", r.all());
    assert!(!missing.exists(), "a typo must not create a database");
    let bogus = ws.path("bogus.db");
    std::fs::write(
        &bogus,
        "this is not a database, it is a text file\n".repeat(100),
    )
    .unwrap();
    let cfg = ws.config(&target(&bogus));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("not a readable SQLite database"),
        "{}",
        r.all()
    );
    assert!(ws.stored_files().is_empty(), "{:?}", ws.stored_files());
}

#[test]
fn a_damaged_backup_restores_nothing_and_leaves_the_file_alone() {
    let ws = Workspace::new();
    let db = app_db(&ws);
    let cfg = ws.config(&target(&db));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    ws.damage_stored(".db.zst");

    let dir = ws.path("live");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("app.db");
    std::fs::copy(&db, &live).unwrap();
    let before = fingerprint(&live);
    let url = format!("sqlite://{}", live.display());
    let r = run(&["restore", "--into", &url, "--replace"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(fingerprint(&live), before, "untouched");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app.db"], "no temp file is left");

    // verify fails on it too, with its scratch copy where --scratch says.
    let scratch = ws.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let r = run(
        &[
            "verify",
            "--scratch",
            &format!("sqlite://{}", scratch.display()),
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "removed");
    let r = run(
        &["restore", "--file", &db.to_string_lossy(), "--into", &url],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--file is not supported for SQLite"),
        "{}",
        r.all()
    );
    let r = run(&["restore", "--into", &url, "--replace", "--no-acl"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--no-acl is not supported for SQLite"),
        "{}",
        r.all()
    );
}

#[test]
fn init_writes_a_sqlite_starter_config_that_backs_up() {
    let ws = Workspace::new();
    let db = app_db(&ws);
    let out = ws.path("starter.toml");
    let r = init_local(&format!("sqlite://{}", db.display()), &ws, &out);
    assert_eq!(r.code, 0, "{}", r.all());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("name = \"app\""), "{text}");
    let r = run(&["backup"], &out);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["status"], "success");
}
