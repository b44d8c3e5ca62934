//! `backstop check` against the real services: targets, storage (local and
//! S3), notifiers; a table of ✓/✗ with hints, exit 1 when anything fails,
//! and nothing left behind in the storage.

mod support;

use std::time::Duration;
use support::smtp::{SmtpOptions, SmtpServer};
use support::*;

#[test]
fn check_tries_targets_storage_and_notifiers_and_names_what_fails() {
    let db = TestDb::create("bs_check");
    let smtp = SmtpServer::start(SmtpOptions::default());
    let ws = Workspace::new();
    let notify = format!(
        "[[notify]]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n\n",
        smtp.port
    );
    let cfg = ws.config(&format!("{notify}{}", pg_target("good", &db.name, "")));
    let r = run(&["check", "--notify"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("✓ target good: PostgreSQL 15"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("pg_dump 15"), "{}", r.stdout);
    assert!(r.stdout.contains("✓ storage local:"), "{}", r.stdout);
    assert!(r.stdout.contains("✓ notify smtp"), "{}", r.stdout);
    assert!(r.stdout.contains("all 3 checks passed"), "{}", r.stdout);
    assert_eq!(
        smtp.messages(1, Duration::from_secs(10)).len(),
        1,
        "the test mail arrived"
    );
    assert!(
        ws.stored_files().is_empty(),
        "the probe was deleted: {:?}",
        ws.stored_files()
    );

    // A target that cannot be reached: ✗ with the cause and a hint, exit 1.
    let cfg = ws.config(&format!(
        "{}[[targets]]\nname = \"down\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\ndatabase = \"d\"\n",
        pg_target("good", &db.name, "")
    ));
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("✓ target good"), "{}", r.stdout);
    assert!(
        r.stdout.contains("✗ target down")
            && r.stdout.contains("Connection refused")
            && r.stdout.contains("hint:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 of 3 checks failed"), "{}", r.stdout);
}

/// `backstop check` with the S3 credentials in the environment, off the
/// test's runtime.
async fn check_s3(server: &s3::S3Server, cfg: std::path::PathBuf) -> Run {
    let (key, secret) = (server.key.clone(), server.secret.clone());
    tokio::task::spawn_blocking(move || {
        Run::from(
            backstop()
                .args(["check", "--config"])
                .arg(&cfg)
                .env("BS_S3_KEY", key)
                .env("BS_S3_SECRET", secret)
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_writes_reads_and_deletes_a_probe_in_s3() {
    use backstop::storage::Storage;
    let server = s3::server();
    let bucket = server.create_bucket("bs-check");
    let ws = Workspace::new();
    let cfg = ws.path("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}",
            server.storage_toml(&bucket, &server.endpoint),
            pg_target("x", "postgres", "")
        ),
    )
    .unwrap();
    let r = check_s3(&server, cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("✓ storage") && r.stdout.contains("probe object"),
        "{}",
        r.stdout
    );
    assert!(
        server.storage(&bucket).list("").await.unwrap().is_empty(),
        "nothing left in the bucket"
    );
    // A missing bucket is a ✗ that names it.
    let ws = Workspace::new();
    let cfg = ws.path("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}",
            server.storage_toml("no-such-bucket-bs", &server.endpoint),
            pg_target("x", "postgres", "")
        ),
    )
    .unwrap();
    let r = check_s3(&server, cfg).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("✗ storage") && r.stdout.contains("no-such-bucket-bs"),
        "{}",
        r.stdout
    );
    server.delete_bucket(&bucket);
}

/// `backstop init` writes a starter config that works as it is: for local
/// storage a backup runs with it; for every storage kind `config check`
/// accepts it; an existing file is not replaced without --force.
#[test]
fn init_writes_a_starter_config_that_backs_up() {
    let db = TestDb::create("bs_init");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let out = ws.path("backstop.toml");
    let url = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{}", db.name);
    let init = |storage: &str, extra: &[&str]| {
        Run::from(
            backstop()
                .args(["init", "--postgres", &url, "--storage", storage, "--output"])
                .arg(&out)
                .args(extra)
                .output()
                .unwrap(),
        )
    };
    let local = format!("local:{}", ws.backups().display());
    let r = init(&local, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("[retry]\nattempts = 3") && text.contains("delay = \"5m\""),
        "the retry defaults are shown: {text}"
    );
    let r = run(&["backup"], &out);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["status"], "success");
    let r = init(&local, &[]);
    assert_eq!(r.code, 2, "an existing file stays: {}", r.all());
    for storage in [
        "s3://backups/prod",
        "box:usingandunderstanding-backups",
        "rclone:box:backups",
    ] {
        let r = init(storage, &["--force"]);
        assert_eq!(r.code, 0, "{storage}: {}", r.all());
        let check = Run::from(
            backstop()
                .args(["config", "check", "--config"])
                .arg(&out)
                .env("AWS_ACCESS_KEY_ID", "k")
                .env("AWS_SECRET_ACCESS_KEY", "s")
                .env("BOX_CLIENT_ID", "i")
                .env("BOX_CLIENT_SECRET", "s")
                .output()
                .unwrap(),
        );
        assert_eq!(check.code, 0, "{storage}: {}", check.all());
    }
    let r = init("ftp://x", &["--force"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

/// Regression: `check` showed PostgreSQL's "check `database` and `user`"
/// hint on a missing local storage directory, and no hint on MariaDB's
/// `Access denied`. Each hint belongs to its failure and engine.
#[test]
fn check_hints_belong_to_their_engine_and_failure() {
    let ws = Workspace::new();
    let missing = ws.path("no-such-dir");
    let cfg = ws.path("hints.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ntype = \"local\"\npath = \"{}\"\n\n\
             [[targets]]\nname = \"my\"\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\npassword = \"wrong-password\"\ndatabase = \"mysql\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let line_of = |what: &str| -> String {
        let at = r
            .stdout
            .find(what)
            .unwrap_or_else(|| panic!("{what}: {}", r.stdout));
        let rest = &r.stdout[at..];
        // A line and its hint line.
        rest.lines().take(2).collect::<Vec<_>>().join("\n")
    };
    let target = line_of("✗ target my");
    assert!(target.contains("Access denied"), "{target}");
    assert!(
        target.contains("hint:") && target.contains("'user'@'host'"),
        "{target}"
    );
    let storage = line_of("✗ storage");
    assert!(storage.contains("does not exist"), "{storage}");
    assert!(!storage.contains("hint: check `database`"), "{storage}");
}

/// Regression: `--help` said `init` writes a config "for a PostgreSQL URL"
/// and `restore` restores "into a PostgreSQL database".
#[test]
fn help_names_every_engine() {
    let out = backstop().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (command, words) in [
        ("init", ["postgres://", "mysql://", "sqlite://"]),
        ("restore", ["PostgreSQL", "MariaDB/MySQL", "SQLite"]),
    ] {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(command))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        for w in words {
            assert!(line.contains(w), "{command}: {w} missing in: {line}");
        }
    }
}
