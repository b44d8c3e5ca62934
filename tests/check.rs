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
    assert!(
        r.stdout
            .contains("✓ target good privileges: role postgres is a superuser"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("all 4 checks passed"), "{}", r.stdout);
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
    assert!(r.stdout.contains("1 of 4 checks failed"), "{}", r.stdout);
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

fn role_target(role: &str, db: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"least\"\ntype = \"postgres\"\nhost = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"{role}\"\ndatabase = \"{db}\"\nretry = {{ attempts = 1 }}\n{extra}\n"
    )
}

/// The least-privilege backup role the docs and `init` give works, and
/// `check` names each privilege a role lacks (and the GRANT) before a
/// nightly backup fails on it.
#[test]
fn check_names_the_privilege_a_backup_role_lacks() {
    let db = TestDb::create("bs_least");
    db.sql("CREATE SCHEMA private; CREATE TABLE private.salaries (x int); CREATE TABLE public.orders (id serial primary key)");
    let role = unique("bs_backup_role");
    psql("postgres", &format!("CREATE ROLE {role} LOGIN"));
    let ws = Workspace::new();
    let cfg = ws.config(&role_target(&role, &db.name, ""));
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("target least privileges"))
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .to_string();
    assert!(line.starts_with('✗'), "{line}");
    for named in [
        "USAGE on schema private",
        "public.orders",
        "public.orders_id_seq",
        &format!("GRANT pg_read_all_data TO {role};"),
    ] {
        assert!(line.contains(named), "{named} in {line}");
    }
    // What pg_dump would have said, had the backup run.
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("permission denied"), "{}", r.all());

    psql("postgres", &format!("GRANT pg_read_all_data TO {role}"));
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("✓ target least privileges"),
        "{}",
        r.stdout
    );

    // globals = true reads role passwords: a superuser's privilege.
    let cfg = ws.config(&role_target(&role, &db.name, "globals = true"));
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("role_passwords = false"), "{}", r.stdout);
    let cfg = ws.config(&role_target(
        &role,
        &db.name,
        "globals = true\nrole_passwords = false",
    ));
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["backup"], &cfg);
    assert_eq!(
        r.code,
        0,
        "the backup role dumps the globals without passwords: {}",
        r.all()
    );
    let globals = std::fs::read(ws.stored_file(".globals.sql.zst")).unwrap();
    let globals = String::from_utf8(zstd::decode_all(&globals[..]).unwrap()).unwrap();
    assert!(
        globals.contains(&format!("CREATE ROLE {role}")),
        "{globals}"
    );
    assert!(
        !globals.contains("PASSWORD 'SCRAM") && !globals.contains("PASSWORD 'md5"),
        "{globals}"
    );
    drop(db);
    psql("postgres", &format!("DROP ROLE {role}"));
}
