//! Copies (3-2-1): one dump goes to every storage of a target, each storage
//! commits on its own, retention runs per storage, and `backstop copy`
//! repairs or seeds a storage. Against local disk, S3 on SeaweedFS (behind
//! a fault-injecting proxy where a storage must fail), rclone, and the fake
//! Box API.

mod support;

use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET};
use support::faulty_proxy::{Fault, FaultyProxy};
use support::*;

fn source_db() -> TestDb {
    let db = TestDb::create("bs_copies");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 3000) g;",
    );
    db
}

/// `[storages.NAME]` tables for S3 (at `endpoint`) and an rclone local
/// remote in the workspace.
fn s3_storage(name: &str, s3: &s3::S3Server, bucket: &str, endpoint: &str) -> String {
    s3.storage_toml(bucket, endpoint)
        .replace("[storage]", &format!("[storages.{name}]"))
}

fn rclone_storage(ws: &Workspace, name: &str) -> String {
    let data = ws.path("rclone-data");
    std::fs::create_dir_all(&data).unwrap();
    let conf = ws.path("rclone.conf");
    std::fs::write(&conf, "[disk]\ntype = local\n").unwrap();
    format!(
        "[storages.{name}]\ntype = \"rclone\"\nremote = \"disk:{}\"\nrclone_config = \"{}\"\n",
        data.display(),
        conf.display()
    )
}

/// A config: local `[storage]` in the workspace, then `storages`, then the
/// target.
fn write_config(ws: &Workspace, storages: &str, target: &str) -> std::path::PathBuf {
    let cfg = ws.path("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n\n{storages}\n{target}",
            ws.backups().display()
        ),
    )
    .unwrap();
    cfg
}

fn go(cfg: &std::path::Path, s3: &s3::S3Server, args: &[&str]) -> Run {
    let mut c = backstop();
    c.args(args)
        .arg("--config")
        .arg(cfg)
        .envs(s3.env())
        .env("BOX_CLIENT_SECRET", CLIENT_SECRET);
    Run::from(c.output().unwrap())
}

fn list(cfg: &std::path::Path, s3: &s3::S3Server, storage: &str) -> Vec<serde_json::Value> {
    let r = go(cfg, s3, &["list", "--json", "--storage", storage]);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout).unwrap()
}

/// An age key pair in the workspace: (identity file, `[encryption]` table).
fn encryption(ws: &Workspace) -> (std::path::PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = ws.path("age-key.txt");
    let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    (
        path,
        format!("[encryption]\nrecipients = [\"{}\"]\n", id.to_public()),
    )
}

/// Encrypted, so every storage gets the same ciphertext and each decrypts.
#[test]
fn one_dump_is_copied_to_every_storage_and_restores_from_each() {
    let s3 = s3::server();
    let bucket = s3.create_bucket("bs-copies");
    let src = source_db();
    let ws = Workspace::new();
    let dumps = ws.path("dumps-run");
    let wrapper = ws.script(
        "pg_dump",
        &format!(
            "case \"$*\" in *--version*) ;; *) echo \"$*\" >> '{}' ;; esac; exec '{}' \"$@\"",
            dumps.display(),
            real_pg_dump()
        ),
    );
    let (key, encrypt) = encryption(&ws);
    let key = key.to_str().unwrap();
    let cfg = write_config(
        &ws,
        &format!(
            "{}\n{}\n{encrypt}",
            s3_storage("offsite", &s3, &bucket, &s3.endpoint),
            rclone_storage(&ws, "disk")
        ),
        &pg_target(
            "shop",
            &src.name,
            &format!("pg_dump_path = \"{}\"", wrapper.display()),
        ),
    );
    let r = go(&cfg, &s3, &["backup"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(&dumps).unwrap().lines().count(),
        1,
        "dumped once"
    );
    let t = &r.summary()["targets"][0];
    let copies: Vec<(&str, &str)> = t["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["storage"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        copies,
        [
            ("default", "success"),
            ("offsite", "success"),
            ("disk", "success")
        ]
    );
    let id = t["backup_id"].as_str().unwrap();
    for storage in ["default", "offsite", "disk"] {
        let rows = list(&cfg, &s3, storage);
        assert_eq!(rows.len(), 1, "{storage}");
        assert_eq!(rows[0]["id"], id, "{storage}");
        assert_eq!(rows[0]["storage"], storage);
        assert_eq!(rows[0]["encrypted"], true, "{storage}");
    }
    // Each storage's copy restores on its own.
    for storage in ["offsite", "disk"] {
        let dest = TestDb::reserve("bs_copies_restored");
        let r = go(
            &cfg,
            &s3,
            &[
                "restore",
                "--storage",
                storage,
                "--into",
                &dest.url(),
                "--create",
                "--identity",
                key,
            ],
        );
        assert_eq!(r.code, 0, "{storage}: {}", r.all());
        assert_eq!(dest.fingerprint(), src.fingerprint(), "{storage}");
    }
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = go(
        &cfg,
        &s3,
        &[
            "verify",
            "--scratch",
            &scratch,
            "--storage",
            "disk",
            "--identity",
            key,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    s3.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_fails_in_one_storage_leaves_the_others_complete_and_copy_repairs_it() {
    let s3 = s3::server();
    let bucket = s3.create_bucket("bs-copies-fail");
    let src = source_db();
    let ws = Workspace::new();
    // Every upload part is refused (503) until the proxy is told otherwise.
    let proxy = FaultyProxy::start_with(&s3.endpoint, "PUT ", 1000, Fault::Reject).await;
    let cfg = write_config(
        &ws,
        &s3_storage("offsite", &s3, &bucket, &proxy.url),
        &pg_target("shop", &src.name, "[targets.retention]\nkeep_last = 5"),
    );
    let run = |args: &'static [&'static str]| {
        let cfg = cfg.clone();
        let s3 = s3::server();
        tokio::task::spawn_blocking(move || go(&cfg, &s3, args))
    };
    let r = run(&["backup"]).await.unwrap();
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["status"], "failed");
    let err = t["error"].as_str().unwrap();
    assert!(
        err.contains("copy to storage `offsite` failed") && err.contains("complete in default"),
        "{err}"
    );
    assert_eq!(t["copies"][0]["status"], "success");
    assert_eq!(t["copies"][1]["status"], "failed");
    // Retention ran where the backup landed, not where it failed.
    assert_eq!(t["prune"].as_array().unwrap().len(), 1);
    assert_eq!(t["prune"][0]["storage"], "default");
    let id = t["backup_id"].as_str().unwrap().to_string();

    // The watchdog sees the missing copy: each storage is judged alone.
    let r = run(&["status", "--max-age", "1h"]).await.unwrap();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("shop (offsite)") && r.stdout.contains("no complete backup"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("shop (default)") && r.stdout.contains(&id),
        "{}",
        r.all()
    );

    // Nothing half-written is visible in the failed storage.
    proxy
        .state
        .failures_left
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let listed = |storage: &'static str| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || list(&cfg, &s3::server(), storage))
    };
    assert!(listed("offsite").await.unwrap().is_empty());
    // Restore without --storage finds the copy that exists.
    let dest = TestDb::reserve("bs_copies_restored");
    let into = dest.url();
    let r = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            go(
                &cfg,
                &s3::server(),
                &["restore", "--into", &into, "--create"],
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());

    // `copy` repairs the missing copy, checking SHA-256; a second run skips it.
    let r = run(&["copy", "--from", "default", "--to", "offsite"])
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(&format!("copied  {id}")), "{}", r.all());
    let rows = listed("offsite").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    let r = run(&["copy", "--from", "default", "--to", "offsite"])
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("present"), "{}", r.all());
    let r = run(&["status", "--max-age", "1h"]).await.unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    s3.delete_bucket(&bucket);
}

#[test]
fn retention_runs_per_storage() {
    let src = source_db();
    let ws = Workspace::new();
    let other = ws.path("other");
    let cfg = write_config(
        &ws,
        &format!(
            "[storages.short]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n[storages.short.retention]\nkeep_last = 1\n\n[retention]\nkeep_last = 3\n",
            other.display()
        ),
        &pg_target("shop", &src.name, ""),
    );
    let s3 = s3::server();
    for _ in 0..4 {
        let r = go(&cfg, &s3, &["backup"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let kept_default = list(&cfg, &s3, "default");
    let kept_short = list(&cfg, &s3, "short");
    assert_eq!(kept_default.len(), 3);
    assert_eq!(kept_short.len(), 1);
    // The newest is kept everywhere.
    assert_eq!(kept_short[0]["id"], kept_default[2]["id"]);
    let r = go(&cfg, &s3, &["prune", "--storage", "short", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("in storage short"), "{}", r.all());
    // The same options on the command line replace the config's for a run.
    let r = go(
        &cfg,
        &s3,
        &[
            "prune",
            "--storage",
            "default",
            "--keep-last",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        plan[0]["deleted"].as_array().unwrap().len(),
        2,
        "{}",
        r.stdout
    );
    assert_eq!(
        list(&cfg, &s3, "default").len(),
        3,
        "a dry run deletes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_seeds_a_box_storage_and_refuses_a_damaged_source() {
    let fake = FakeBox::start().await;
    let src = source_db();
    let ws = Workspace::new();
    let token = ws.path("box-token.json");
    std::fs::write(
        &token,
        format!("{{\"refresh_token\": \"{}\"}}", fake.issue_refresh_token()),
    )
    .unwrap();
    let auth = format!(
        "method = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"${{BOX_CLIENT_SECRET}}\"\ntoken_store = {{ type = \"file\", path = \"{}\" }}",
        token.display()
    );
    let boxed = fake
        .config_toml("backups", &auth, ws.dir.path())
        .replace("[storage]", "[storages.box]")
        .replace("[storage.auth]", "[storages.box.auth]");
    // The target is copied only to the local storage at first.
    let (key, encrypt) = encryption(&ws);
    let cfg = write_config(
        &ws,
        &format!("{boxed}\n{encrypt}"),
        &pg_target("shop", &src.name, "storages = [\"default\"]"),
    );
    let call = |args: Vec<String>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            go(&cfg, &s3::server(), &args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for _ in 0..2 {
        assert_eq!(call(args(&["backup"])).await.unwrap().code, 0);
    }
    assert!(fake.files().is_empty(), "the target does not name box");
    // Damage the newest local backup (same size, one byte changed).
    let mut objects: Vec<_> = ws
        .stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".dump.zst.age"))
        .collect();
    objects.sort();
    let newest = objects.last().unwrap().clone();
    flip_middle_bit(&newest);

    let r = call(args(&[
        "copy", "--from", "default", "--to", "box", "--json",
    ]))
    .await
    .unwrap();
    assert_eq!(r.code, 1, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        report[0]["copied"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    let failed = report[0]["failed"][0][1].as_str().unwrap();
    assert!(failed.contains("does not match its manifest"), "{failed}");
    // Box holds the intact backup (object and manifest) and nothing of the damaged one.
    let files = fake.files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with(".manifest.json")),
        "{files:?}"
    );
    assert!(!r.all().contains(CLIENT_SECRET));
    // The copy in Box decrypts and restores.
    let dest = TestDb::reserve("bs_copies_from_box");
    let r = call(args(&[
        "restore",
        "--storage",
        "box",
        "--into",
        &dest.url(),
        "--create",
        "--identity",
        key.to_str().unwrap(),
    ]))
    .await
    .unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());
}

/// Regression (an older backup of another storage could be restored in
/// place of a newest one damaged in the first storage): the newest copy is
/// taken from a storage where it is intact, and a newest backup damaged
/// everywhere is refused, never passed over.
#[test]
fn restore_takes_the_newest_intact_copy_and_never_an_older_backup() {
    let src = source_db();
    let ws = Workspace::new();
    let second = ws.path("second");
    let cfg = write_config(
        &ws,
        &format!(
            "[storages.second]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n",
            second.display()
        ),
        &pg_target("shop", &src.name, ""),
    );
    let s3 = s3::server();
    for _ in 0..2 {
        assert_eq!(go(&cfg, &s3, &["backup"]).code, 0);
    }
    let newest_in = |dir: &std::path::Path| {
        let mut found = Vec::new();
        fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out)
                } else if e.path().to_string_lossy().ends_with(".dump.zst") {
                    out.push(e.path())
                }
            }
        }
        walk(dir, &mut found);
        found.sort();
        found.pop().unwrap()
    };
    let truncate = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    };
    truncate(&newest_in(&ws.backups()));
    let newest_id = list(&cfg, &s3, "second")[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = TestDb::reserve("bs_copies_newest");
    let r = go(&cfg, &s3, &["restore", "--into", &dest.url(), "--create"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&newest_id),
        "the newest, from `second`: {}",
        r.all()
    );

    // `second` never got the newest (its copy failed that night): only the
    // older backup is intact anywhere, and it must not stand in.
    let newest = newest_in(&second);
    let stem = newest
        .to_string_lossy()
        .trim_end_matches(".dump.zst")
        .to_string();
    std::fs::remove_file(&newest).unwrap();
    std::fs::remove_file(format!("{stem}.manifest.json")).unwrap();
    let other = TestDb::reserve("bs_copies_none");
    let r = go(&cfg, &s3, &["restore", "--into", &other.url(), "--create"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("damaged in every storage") && r.stderr.contains("--backup"),
        "{}",
        r.all()
    );
    assert!(!database_exists(&other.name), "nothing was restored");
}

/// Regression: with two storages, the newest backup's copy in the first
/// damaged (one byte flipped, same size) and the second intact, `restore`
/// failed "checksum mismatch" without trying the second or naming it.
/// Restore and verify now read the second copy, name the damaged one and
/// mark it damaged in its storage: `status` shows it DAMAGED and verify
/// fails (exit 1) until `backstop copy` replaces it; `copy --check` finds
/// a damaged copy nobody has read yet.
#[test]
fn a_damaged_copy_falls_back_to_the_next_storage_and_fails_verify() {
    let src = source_db();
    let ws = Workspace::new();
    let second = ws.path("second");
    let cfg = write_config(
        &ws,
        &format!(
            "[storages.second]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n",
            second.display()
        ),
        &pg_target("shop", &src.name, ""),
    );
    let s3 = s3::server();
    assert_eq!(go(&cfg, &s3, &["backup"]).code, 0);
    let damaged = ws.damage_stored(".dump.zst");
    let dest = TestDb::reserve("bs_copies_fallback");
    let r = go(&cfg, &s3, &["restore", "--into", &dest.url(), "--create"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());
    assert!(
        r.stderr.contains("in storage `default` is damaged") && r.stderr.contains("backstop copy"),
        "{}",
        r.all()
    );
    // The read marked the copy damaged: status and verify say so.
    let r = go(&cfg, &s3, &["status"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("(default)") && l.contains("DAMAGED")),
        "{}",
        r.all()
    );
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = go(
        &cfg,
        &s3,
        &["--log-format", "json", "verify", "--scratch", &scratch],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["status"], "failed", "{t}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("damaged in storage `default`"),
        "{t}"
    );
    // `copy` replaces the marked copy; verify and status pass again.
    let r = go(&cfg, &s3, &["copy", "--from", "second", "--to", "default"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        std::fs::read(&damaged).is_ok(),
        "the copy is back under its key"
    );
    let r = go(&cfg, &s3, &["verify", "--scratch", &scratch]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(go(&cfg, &s3, &["status"]).code, 0);

    // A flipped byte nobody read yet: `copy --check` finds and replaces it.
    flip_middle_bit(&damaged);
    let r = go(
        &cfg,
        &s3,
        &["copy", "--check", "--from", "second", "--to", "default"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.all().contains("does not match its manifest"),
        "{}",
        r.all()
    );
    let r = go(&cfg, &s3, &["verify", "--scratch", &scratch]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("is damaged"), "{}", r.all());
}
