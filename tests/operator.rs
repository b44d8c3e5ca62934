//! The operator outside Kubernetes (cron, systemd, a laptop): runs of one
//! config do not trample each other, and a config means the same from any
//! working directory. And inside it: an Indexed Job's pods share the
//! targets out, each backed up once.

mod support;

use std::process::Stdio;
use support::*;

fn listed(cfg: &std::path::Path) -> Vec<serde_json::Value> {
    let r = run(&["list", "--json"], cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Regression: relative paths in a config resolved against the working
/// directory: `list --config /elsewhere/backstop.toml` from another
/// directory said "No backups" and created `./backups` there (cron runs in
/// `$HOME`). They resolve against the config file's directory.
#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let src = TestDb::create("bs_relpath");
    src.sql("CREATE TABLE t AS SELECT 1 AS a");
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cfg = home.path().join("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ntype = \"local\"\npath = \"backups\"\ncreate = true\n\n{}",
            pg_target("rel", &src.name, "")
        ),
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        Run::from(
            backstop()
                .current_dir(elsewhere.path())
                .args(args)
                .arg("--config")
                .arg(&cfg)
                .output()
                .unwrap(),
        )
    };
    let r = in_dir(&["backup"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        home.path().join("backups/rel").is_dir(),
        "beside the config"
    );
    let r = in_dir(&["list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{}", r.all());
    assert!(
        !elsewhere.path().join("backups").exists(),
        "nothing was created in the working directory"
    );
}

/// A pg_dump that takes a while, so that two runs overlap.
fn slow_target(ws: &Workspace, db: &str) -> std::path::PathBuf {
    let slow = ws.script(
        "pg_dump_slow",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\nsleep 3\nexec {real} \"$@\"",
            real = real_pg_dump()
        ),
    );
    ws.config(&format!(
        "[retention]\nkeep_last = 5\n\n{}",
        pg_target(
            "busy",
            db,
            &format!("pg_dump_path = \"{}\"", slow.display())
        )
    ))
}

fn start(cfg: &std::path::Path, args: &[&str], lock_dir: &std::path::Path) -> std::process::Child {
    backstop()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env("BACKSTOP_LOCK_DIR", lock_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Until the run with process id `pid` holds its lock.
fn wait_for_lock_holder(lock_dir: &std::path::Path, pid: u32) {
    let start = std::time::Instant::now();
    let holder = format!("pid {pid} ");
    loop {
        let held = std::fs::read_dir(lock_dir)
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with(&holder))
                })
            })
            .unwrap_or(false);
        if held {
            return;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "the first run never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Regression: two `backstop backup` runs of the same config started 0.4 s
/// apart both dumped and both pruned. The second finds the target busy,
/// names the holder and fails it (exit 1) without dumping; with `--wait`
/// it waits and then backs up; a prune meanwhile leaves the target alone.
#[test]
fn a_second_run_of_a_busy_target_fails_naming_the_holder_or_waits() {
    let src = TestDb::create("bs_lock");
    src.sql("CREATE TABLE t AS SELECT 1 AS a");
    let ws = Workspace::new();
    let cfg = slow_target(&ws, &src.name);
    let locks = tempfile::tempdir().unwrap();

    let first = start(&cfg, &["backup"], locks.path());
    wait_for_lock_holder(locks.path(), first.id());
    let second = Run::from(
        backstop()
            .args(["backup", "--config"])
            .arg(&cfg)
            .env("BACKSTOP_LOCK_DIR", locks.path())
            .output()
            .unwrap(),
    );
    let prune = Run::from(
        backstop()
            .args(["prune", "--config"])
            .arg(&cfg)
            .env("BACKSTOP_LOCK_DIR", locks.path())
            .output()
            .unwrap(),
    );
    let first = Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.all());
    assert_eq!(second.code, 1, "{}", second.all());
    let t = &second.summary()["targets"][0];
    assert_eq!(t["stage"], "busy", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("is busy: pid "),
        "the holder is named: {t}"
    );
    assert_eq!(prune.code, 1, "{}", prune.all());
    assert!(prune.stderr.contains("is busy"), "{}", prune.all());
    assert_eq!(listed(&cfg).len(), 1, "only the first run dumped");

    // With --wait the second run waits its turn, then backs up.
    let first = start(&cfg, &["backup"], locks.path());
    wait_for_lock_holder(locks.path(), first.id());
    let waited = Run::from(
        backstop()
            .args(["backup", "--wait", "--config"])
            .arg(&cfg)
            .env("BACKSTOP_LOCK_DIR", locks.path())
            .output()
            .unwrap(),
    );
    let first = Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.all());
    assert_eq!(waited.code, 0, "{}", waited.all());
    assert_eq!(listed(&cfg).len(), 3);
}

/// `backup --shard I/N` (an Indexed Job: `$JOB_COMPLETION_INDEX/N`): with
/// N = 3 and 7 targets, the three shards together back up every target
/// exactly once.
#[test]
fn shards_of_an_indexed_job_back_up_every_target_exactly_once() {
    let src = TestDb::create("bs_shard");
    src.sql("CREATE TABLE t AS SELECT 1 AS a");
    let ws = Workspace::new();
    let targets: String = (0..7)
        .map(|i| pg_target(&format!("t{i}"), &src.name, ""))
        .collect();
    let cfg = ws.config(&targets);
    for i in 0..3 {
        let shard = format!("{i}/3");
        let r = run(&["backup", "--shard", &shard], &cfg);
        assert_eq!(r.code, 0, "{shard}: {}", r.all());
    }
    let rows = listed(&cfg);
    let mut per_target = std::collections::BTreeMap::new();
    for row in &rows {
        *per_target
            .entry(row["target"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_target.len(), 7, "{per_target:?}");
    assert!(per_target.values().all(|&n| n == 1), "{per_target:?}");
    let r = run(&["backup", "--shard", "3/3"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
}

/// Regression: docs/kubernetes.md's restore failed as written with exit 2,
/// because `BOX_CLIENT_ID` (another target's storage), `DB_PASSWORD` (the
/// source's password) and `HC_PING_URL` (a notifier) were unset. A restore
/// expands only what it reads; a backup still needs them all.
#[test]
fn a_restore_needs_only_the_variables_of_what_it_reads() {
    let src = TestDb::create("bs_scoped");
    src.sql("CREATE TABLE t AS SELECT 1 AS a");
    let ws = Workspace::new();
    let body = format!(
        "[storages.box]\ntype = \"box\"\nfolder = \"f\"\n[storages.box.auth]\nmethod = \"ccg\"\n\
         client_id = \"${{BOX_CLIENT_ID}}\"\nclient_secret = \"${{BOX_CLIENT_SECRET}}\"\n\
         subject_type = \"enterprise\"\nsubject_id = \"1\"\n\n\
         [[notify]]\ntype = \"ping\"\nurl = \"${{HC_PING_URL}}\"\n\n{}\
         [[targets]]\nname = \"other\"\ntype = \"postgres\"\ndatabase = \"other\"\nstorages = [\"box\"]\n",
        pg_target(
            "prod",
            &src.name,
            "password = \"${DB_PASSWORD}\"\nstorages = [\"default\"]"
        )
    );
    let cfg = ws.config(&body);
    let with_env = |args: &[&str], set: bool| {
        let mut c = backstop();
        c.args(args).arg("--config").arg(&cfg);
        for v in [
            "BOX_CLIENT_ID",
            "BOX_CLIENT_SECRET",
            "HC_PING_URL",
            "DB_PASSWORD",
        ] {
            c.env_remove(v);
        }
        if set {
            c.env("BOX_CLIENT_ID", "id")
                .env("BOX_CLIENT_SECRET", "secret")
                .env("HC_PING_URL", "http://127.0.0.1:1/ping")
                .env("DB_PASSWORD", "unused-with-trust-auth");
        }
        Run::from(c.output().unwrap())
    };
    let r = with_env(&["backup", "--target", "prod"], false);
    assert_eq!(r.code, 2, "a backup reads everything: {}", r.all());
    assert!(
        r.stderr.contains("BOX_CLIENT_ID")
            || r.stderr.contains("HC_PING_URL")
            || r.stderr.contains("DB_PASSWORD"),
        "{}",
        r.all()
    );
    let r = with_env(&["backup", "--target", "prod"], true);
    assert_eq!(r.code, 0, "{}", r.all());

    let dest = TestDb::reserve("bs_scoped_copy");
    let r = with_env(
        &[
            "restore",
            "--target",
            "prod",
            "--into",
            &dest.url(),
            "--create",
        ],
        false,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());
}
