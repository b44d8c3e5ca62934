//! Restore you can trust, against the real PostgreSQL on this machine: the
//! database comes back as it was (encoding, locale, owner, privileges,
//! settings), or not at all.

mod support;

use support::*;

/// A role that exists for one test and is dropped afterwards.
struct TestRole {
    name: String,
}

impl TestRole {
    fn create(prefix: &str) -> TestRole {
        let name = unique(prefix);
        psql("postgres", &format!("CREATE ROLE \"{name}\" LOGIN"));
        TestRole { name }
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c",
            ])
            .arg(format!("DROP ROLE IF EXISTS \"{}\"", self.name))
            .output();
    }
}

fn backup_ok(cfg: &std::path::Path) {
    let r = run(&["backup"], cfg);
    assert_eq!(r.code, 0, "{}", r.all());
}

fn db_setting(db: &str, sql: &str) -> String {
    psql(
        "postgres",
        &format!("SELECT {sql} FROM pg_database d WHERE d.datname = '{db}'"),
    )
}

/// Regression (silent corruption of non-UTF-8 databases): a SQL_ASCII
/// database holding byte 0xe9 came back as UTF8 with invalid bytes, and a
/// LATIN1 one silently became UTF8.
#[test]
fn sql_ascii_and_latin1_databases_restore_with_their_own_encoding() {
    for (encoding, locale) in [("SQL_ASCII", "C"), ("LATIN1", "C")] {
        let src = TestDb::reserve("bs_enc");
        psql(
            "postgres",
            &format!(
                "CREATE DATABASE \"{}\" TEMPLATE template0 ENCODING '{encoding}' LOCALE '{locale}'",
                src.name
            ),
        );
        // 0xe9 is é in LATIN1 and an undecodable byte in UTF8.
        src.sql("CREATE TABLE t (v text); INSERT INTO t VALUES (convert_from('\\x6361666ee9'::bytea, 'LATIN1'));");
        for format in ["custom", "plain"] {
            let ws = Workspace::new();
            let cfg = ws.config(&pg_target(
                "enc",
                &src.name,
                &format!("format = \"{format}\""),
            ));
            backup_ok(&cfg);
            let dest = TestDb::reserve("bs_enc_restored");
            let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
            assert_eq!(r.code, 0, "{encoding} {format}: {}", r.all());
            assert_eq!(
                db_setting(
                    &dest.name,
                    "pg_encoding_to_char(d.encoding) || ' ' || d.datcollate || ' ' || d.datctype"
                ),
                format!("{encoding} {locale} {locale}"),
                "{format}"
            );
            assert_eq!(
                dest.sql("SELECT encode(convert_to(upper(v), 'LATIN1'), 'hex') FROM t"),
                src.sql("SELECT encode(convert_to(upper(v), 'LATIN1'), 'hex') FROM t"),
                "{encoding} {format}: the bytes come back as they were"
            );
        }
    }
}

/// Regression (database-level properties were lost with --create: anyone
/// could connect to the restored copy of a locked-down database).
#[test]
fn create_recreates_owner_acl_settings_comment_and_connection_limit() {
    let owner = TestRole::create("bs_owner");
    let reader = TestRole::create("bs_reader");
    let src = TestDb::create("bs_props");
    let rd_name = reader.name.clone();
    let (o, rd, db) = (&owner.name, &rd_name, &src.name);
    psql(
        "postgres",
        &format!(
            "ALTER DATABASE \"{db}\" OWNER TO \"{o}\";
             REVOKE CONNECT, TEMPORARY ON DATABASE \"{db}\" FROM PUBLIC;
             GRANT CONNECT ON DATABASE \"{db}\" TO \"{rd}\";
             ALTER DATABASE \"{db}\" SET search_path TO app, \"My Schema\", public;
             ALTER DATABASE \"{db}\" SET work_mem TO '8MB';
             ALTER ROLE \"{rd}\" IN DATABASE \"{db}\" SET statement_timeout TO '5s';
             COMMENT ON DATABASE \"{db}\" IS 'prod''s data';
             ALTER DATABASE \"{db}\" CONNECTION LIMIT 17;"
        ),
    );
    src.sql(&format!(
        "CREATE SCHEMA app AUTHORIZATION \"{o}\"; CREATE TABLE app.t (id int); INSERT INTO app.t VALUES (1);
         ALTER TABLE app.t OWNER TO \"{o}\"; GRANT SELECT ON app.t TO \"{rd}\";"
    ));
    let describe = |name: &str| {
        let row = db_setting(
            name,
            "pg_get_userbyid(d.datdba) || ' ' || d.datconnlimit || ' ' || coalesce(shobj_description(d.oid, 'pg_database'), '-') \
             || ' ' || (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a)",
        )
        .replace(name, "DB");
        let settings = psql(
            "postgres",
            &format!(
                "SELECT string_agg(coalesce(pg_get_userbyid(nullif(setrole, 0)), '*') || ':' || array_to_string(setconfig, ';'), ' ' ORDER BY 1) \
                 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{name}'"
            ),
        );
        format!("{row} {settings}")
    };
    for format in ["custom", "plain"] {
        let ws = Workspace::new();
        let cfg = ws.config(&pg_target("props", db, &format!("format = \"{format}\"")));
        backup_ok(&cfg);
        let dest = TestDb::reserve("bs_props_restored");
        let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
        assert_eq!(r.code, 0, "{format}: {}", r.all());
        assert_eq!(describe(&dest.name), describe(db), "{format}");
        assert!(describe(db).contains("17 prod's data"), "{}", describe(db));
        assert_eq!(
            dest.sql("SELECT tableowner FROM pg_tables WHERE tablename = 't'"),
            *o
        );
        assert_eq!(
            dest.sql(&format!(
                "SELECT has_table_privilege('{rd}', 'app.t', 'SELECT')"
            )),
            "t"
        );
    }
    // Roles the destination lacks stop the restore before anything is
    // created, naming them and the flags that accept the difference.
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("props", db, ""));
    backup_ok(&cfg);
    psql(
        "postgres",
        &format!(
            "REVOKE ALL ON DATABASE \"{db}\" FROM \"{rd}\"; ALTER ROLE \"{rd}\" IN DATABASE \"{db}\" RESET ALL;"
        ),
    );
    src.sql(&format!("REVOKE ALL ON app.t FROM \"{rd}\";"));
    drop(reader);
    assert_eq!(
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{rd}'")
        ),
        "0"
    );
    let dest = TestDb::reserve("bs_props_noroles");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("lacks the role") && r.stderr.contains("--no-acl"),
        "{}",
        r.all()
    );
    assert!(!database_exists(&dest.name));
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--no-owner",
            "--no-acl",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.sql("SELECT count(*) FROM app.t"), "1");
}

/// Rewrite the stored (zstd) object of the only backup with `edit`, and fix
/// its manifest's size and SHA-256, as a backup whose content fails on
/// restore would look.
fn rewrite_object(ws: &Workspace, edit: impl Fn(String) -> String) {
    let files = ws.stored_files();
    let object = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".sql.zst"))
        .expect("a plain zstd object");
    let manifest = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap();
    let plain = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(object)
        .output()
        .unwrap()
        .stdout;
    let edited = edit(String::from_utf8(plain).unwrap());
    let tmp = ws.path("edited.sql");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::remove_file(object).unwrap();
    assert!(std::process::Command::new("zstd")
        .args(["-q", "-o"])
        .arg(object)
        .arg(&tmp)
        .status()
        .unwrap()
        .success());
    let bytes = std::fs::read(object).unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    m["objects"][0]["sha256"] = sha.into();
    m["objects"][0]["stored_bytes"] = bytes.len().into();
    std::fs::write(manifest, serde_json::to_vec(&m).unwrap()).unwrap();
}

/// Regression (a failed plain-format restore committed part of the dump:
/// the large-object data's own BEGIN/COMMIT ended psql's single
/// transaction early). A statement that fails after the large objects must
/// leave an existing empty database with nothing from the dump.
#[test]
fn failed_plain_restore_after_large_objects_leaves_the_destination_untouched() {
    let src = TestDb::create("bs_lo");
    src.sql(
        "CREATE TABLE docs (id int PRIMARY KEY, body oid);
         INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat('x', 1000), 'UTF8')) FROM generate_series(1, 5) g;
         CREATE TABLE later (id int); INSERT INTO later VALUES (1);",
    );
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("lo", &src.name, "format = \"plain\""));
    backup_ok(&cfg);
    rewrite_object(&ws, |sql| {
        assert!(sql.contains("lo_open"), "the dump holds large-object data");
        let at = sql
            .rfind("--\n-- PostgreSQL database dump complete")
            .unwrap();
        format!("{}SELECT 1/0;\n{}", &sql[..at], &sql[at..])
    });
    let dest = TestDb::create("bs_lo_dest");
    let r = run(&["restore", "--into", &dest.url()], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("division by zero"),
        "the ERROR line is shown: {}",
        r.all()
    );
    assert_eq!(dest.user_relations(), 0, "no table of the dump is left");
    assert_eq!(
        dest.sql("SELECT count(*) FROM pg_largeobject_metadata"),
        "0"
    );
    assert_eq!(
        restore_temps(&dest.name),
        "0",
        "the half-loaded database is dropped"
    );
    // The same backup unedited restores, large objects included.
    let ws2 = Workspace::new();
    let cfg2 = ws2.config(&pg_target("lo", &src.name, "format = \"plain\""));
    backup_ok(&cfg2);
    let r = run(&["restore", "--into", &dest.url()], &cfg2);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        dest.sql("SELECT count(*) FROM pg_largeobject_metadata"),
        "5"
    );
    assert_eq!(src.fingerprint(), dest.fingerprint());
}

/// Regression (a forced single transaction made big schemas unrestorable:
/// "out of shared memory" on default max_locks_per_transaction).
#[test]
fn thousands_of_tables_restore_and_verify_on_default_settings() {
    let src = TestDb::create("bs_many");
    // In batches: one transaction creating them all runs out of locks too.
    for batch in 0..10 {
        src.sql(&format!(
            "DO $$ BEGIN FOR i IN {}..{} LOOP
               EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, v text)', i);
             END LOOP; END $$;",
            batch * 200 + 1,
            batch * 200 + 200
        ));
    }
    src.sql("INSERT INTO t1 (v) VALUES ('a'), ('b');");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("many", &src.name, ""));
    backup_ok(&cfg);
    let dest = TestDb::reserve("bs_many_restored");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        dest.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        "2000"
    );
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = run(&["verify", "--scratch", &scratch], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = &r.summary()["targets"][0]["verified"];
    assert_eq!(v["tables"], 2000, "{v}");
    assert_eq!(v["tables_compared"], 2000, "{v}");
    assert_eq!(v["rows"], 2, "{v}");

    // 20,000 large objects, in both formats.
    let los = TestDb::create("bs_many_lo");
    for _ in 0..4 {
        los.sql("SELECT count(lo_from_bytea(0, '\\x0102')) FROM generate_series(1, 5000);");
    }
    for format in ["custom", "plain"] {
        let ws = Workspace::new();
        let cfg = ws.config(&pg_target(
            "lo",
            &los.name,
            &format!("format = \"{format}\""),
        ));
        backup_ok(&cfg);
        let dest = TestDb::reserve("bs_many_lo_restored");
        let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
        assert_eq!(r.code, 0, "{format}: {}", r.all());
        assert_eq!(
            dest.sql("SELECT count(*) FROM pg_largeobject_metadata"),
            "20000",
            "{format}"
        );
    }
}

/// `--replace` swaps in a complete restore (ending the old database's
/// sessions) and `--keep-replaced` keeps the old one; a failed replace
/// leaves the existing database exactly as it was.
#[test]
fn replace_swaps_in_only_a_complete_restore() {
    let src = TestDb::create("bs_repl_src");
    src.sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('from backup');");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("prod", &src.name, ""));
    backup_ok(&cfg);
    let dev = TestDb::create("bs_repl_dev");
    dev.sql(
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('old dev'); CREATE TABLE dev_only (x int);",
    );

    // Without --replace a non-empty database is refused (exit 2).
    let r = run(&["restore", "--into", &dev.url()], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--replace"), "{}", r.all());

    // A session connected to dev does not stop the replace.
    let mut session = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            PG_HOST,
            "-U",
            "postgres",
            "-d",
            &dev.name,
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = run(
        &[
            "restore",
            "--into",
            &dev.url(),
            "--replace",
            "--keep-replaced",
        ],
        &cfg,
    );
    let _ = session.kill();
    let _ = session.wait();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dev.sql("SELECT v FROM t"), "from backup");
    assert_eq!(
        dev.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'dev_only'"),
        "0"
    );
    let kept = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("the replaced database is kept as "))
        .expect("names the kept database")
        .to_string();
    let kept_db = TestDb { name: kept };
    assert_eq!(kept_db.sql("SELECT v FROM t"), "old dev");

    // A damaged object: the replace fails and dev is untouched.
    let data = ws.stored_file(".dump.zst");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&data, bytes).unwrap();
    dev.sql("UPDATE t SET v = 'current dev'");
    let r = run(&["restore", "--into", &dev.url(), "--replace"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(dev.sql("SELECT v FROM t"), "current dev");
    assert_eq!(restore_temps(&dev.name), "0");
}

/// A restore into a database that does not exist, without --create, is a
/// usage error that says to pass --create.
#[test]
fn restore_into_a_missing_database_without_create_suggests_create() {
    let src = TestDb::create("bs_missing");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("m", &src.name, ""));
    backup_ok(&cfg);
    let dest = TestDb::reserve("bs_missing_dest");
    let r = run(&["restore", "--into", &dest.url()], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("pass --create"), "{}", r.all());
    assert!(!database_exists(&dest.name));
}

/// Regression (verify failed on unpopulated materialized views, as in stock
/// pagila, and left its scratch database behind when the dump held a
/// subscription).
#[test]
fn verify_reports_unpopulated_matviews_and_drops_scratch_with_a_subscription() {
    let src = TestDb::create("bs_mv");
    let sub = unique("bs_sub");
    src.sql(&format!(
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g;
         CREATE MATERIALIZED VIEW empty_mv AS SELECT * FROM t WITH NO DATA;
         CREATE MATERIALIZED VIEW full_mv AS SELECT * FROM t;
         CREATE SUBSCRIPTION {sub} CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' PUBLICATION p
           WITH (connect = false, slot_name = NONE, enabled = false);"
    ));
    let ws = Workspace::new();
    let target = unique("mv").replace('_', "-");
    let cfg = ws.config(&pg_target(&target, &src.name, ""));
    backup_ok(&cfg);
    // A scratch URL naming a database that does not exist still creates and
    // drops through one connection (regression: the scratch database leaked).
    for scratch_db in ["postgres", "template1"] {
        let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{scratch_db}");
        let r = run(&["verify", "--scratch", &scratch], &cfg);
        assert_eq!(r.code, 0, "{}", r.all());
        let v = &r.summary()["targets"][0]["verified"];
        assert_eq!(v["unpopulated_matviews"][0], "public.empty_mv", "{v}");
        assert_eq!(v["tables"], 2, "the table and the populated view: {v}");
        assert_eq!(
            psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'backstop_verify_{}%'",
                    target.replace('-', "_")
                )
            ),
            "0"
        );
    }
    // Regression (verify --scratch leaked the scratch database when the URL
    // named a database that does not exist: created through one connection,
    // dropped through another): everything goes through the one named, so
    // a missing one fails at once and leaves nothing.
    let missing = format!(
        "postgres://postgres@{PG_HOST}:{PG_PORT}/{}",
        unique("bs_nowhere")
    );
    let r = run(&["verify", "--scratch", &missing], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.summary()["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        r.all()
    );
    assert_eq!(
        psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'backstop_verify_{}%'",
                target.replace('-', "_")
            )
        ),
        "0"
    );
    src.sql(&format!("ALTER SUBSCRIPTION {sub} DISABLE; ALTER SUBSCRIPTION {sub} SET (slot_name = NONE); DROP SUBSCRIPTION {sub};"));
}

/// Regression (verify and restore of "latest" silently fell back to an
/// older backup when the newest was damaged).
#[test]
fn a_damaged_newest_backup_fails_verify_and_restore_latest_names_both() {
    let src = TestDb::create("bs_latest");
    src.sql("CREATE TABLE t (v int); INSERT INTO t VALUES (1);");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("l", &src.name, ""));
    backup_ok(&cfg);
    src.sql("INSERT INTO t VALUES (2);");
    backup_ok(&cfg);
    let list = run(&["list", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let (older, newest) = (
        rows[0]["id"].as_str().unwrap().to_string(),
        rows[1]["id"].as_str().unwrap().to_string(),
    );
    let newest_object = ws
        .stored_files()
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains(&newest) && p.to_string_lossy().ends_with(".dump.zst")
        })
        .unwrap();
    let bytes = std::fs::read(&newest_object).unwrap();
    std::fs::write(&newest_object, &bytes[..bytes.len() / 2]).unwrap();

    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = run(&["verify", "--scratch", &scratch], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let err = r.summary()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains(&newest) && err.contains("damaged"), "{err}");

    let dest = TestDb::reserve("bs_latest_dest");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&newest) && r.stderr.contains(&format!("--backup {older}")),
        "{}",
        r.all()
    );
    assert!(!database_exists(&dest.name));
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--backup",
            &older,
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.sql("SELECT count(*) FROM t"), "1");

    // Regression: status called the damaged newest backup STALE with the
    // age of the older one. It says DAMAGED and names the newest intact.
    let r = run(&["status"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("DAMAGED"), "{}", r.all());
    assert!(
        r.stdout.contains(&format!("newest intact: {older}")),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("STALE"), "{}", r.all());

    // Metrics say so too, after a run that could not replace it.
    let failing = ws.script("pg_dump_fails", "exit 1");
    let prom = ws.path("backstop.prom");
    let cfg = ws.config(&format!(
        "[metrics]\ntextfile = \"{}\"\n\n{}",
        prom.display(),
        pg_target(
            "l",
            &src.name,
            &format!("pg_dump_path = \"{}\"", failing.display())
        )
    ));
    assert_eq!(run(&["backup"], &cfg).code, 1);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("backstop_newest_backup_damaged{target=\"l\"} 1"),
        "{metrics}"
    );
}

/// Regression (prune deleted the data of a backup whose manifest would not
/// parse): the damaged backup is kept and reported, even past the grace.
#[test]
fn prune_keeps_the_data_of_a_backup_whose_manifest_will_not_parse() {
    let src = TestDb::create("bs_badmanifest");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}\n[retention]\nkeep_last = 1\norphan_grace = \"1s\"\n",
        pg_target("b", &src.name, "")
    ));
    backup_ok(&cfg);
    let manifest = ws.stored_file(".manifest.json");
    std::fs::write(&manifest, b"{ not json").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = run(&["prune"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("damaged"), "{}", r.all());
    let files = ws.stored_files();
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".dump.zst")),
        "the data stays: {files:?}"
    );
    assert!(files.contains(&manifest));
}

/// Regression (`--no-owner` was ignored for plain format: restoring into a
/// cluster without the owning roles failed). For both formats, the
/// options restore without the roles; without them the ERROR names the role.
#[test]
fn no_owner_and_no_acl_restore_without_the_roles_in_both_formats() {
    let src = TestDb::create("bs_noowner");
    let role = TestRole::create("bs_gone");
    let r = &role.name;
    src.sql(&format!(
        "CREATE SCHEMA app AUTHORIZATION \"{r}\";
         CREATE TABLE app.t (v text); ALTER TABLE app.t OWNER TO \"{r}\";
         GRANT SELECT ON app.t TO \"{r}\"; INSERT INTO app.t VALUES ('GRANT SELECT ON t TO x;');
         CREATE FUNCTION app.f() RETURNS text LANGUAGE sql AS $$ SELECT 'ALTER TABLE t OWNER TO y;' $$;
         ALTER FUNCTION app.f() OWNER TO \"{r}\";"
    ));
    let workspaces: Vec<(Workspace, std::path::PathBuf)> = ["custom", "plain"]
        .iter()
        .map(|format| {
            let ws = Workspace::new();
            let cfg = ws.config(&pg_target(
                "o",
                &src.name,
                &format!("format = \"{format}\""),
            ));
            backup_ok(&cfg);
            (ws, cfg)
        })
        .collect();
    src.sql(&format!(
        "REASSIGN OWNED BY \"{r}\" TO postgres; DROP OWNED BY \"{r}\";"
    ));
    drop(role);
    for (_ws, cfg) in &workspaces {
        let dest = TestDb::reserve("bs_noowner_dest");
        let fail = run(&["restore", "--into", &dest.url(), "--create"], cfg);
        assert_eq!(fail.code, 1, "{}", fail.all());
        assert!(
            fail.stderr.contains("does not exist") && fail.stderr.contains("ERROR"),
            "{}",
            fail.all()
        );
        assert!(!database_exists(&dest.name));
        let ok = run(
            &[
                "restore",
                "--into",
                &dest.url(),
                "--create",
                "--no-owner",
                "--no-acl",
            ],
            cfg,
        );
        assert_eq!(ok.code, 0, "{}", ok.all());
        assert_eq!(
            dest.sql("SELECT tableowner FROM pg_tables WHERE tablename = 't'"),
            "postgres"
        );
        assert_eq!(dest.sql("SELECT v FROM app.t"), "GRANT SELECT ON t TO x;");
        assert_eq!(dest.sql("SELECT app.f()"), "ALTER TABLE t OWNER TO y;");
    }
}

/// `--jobs` restores a custom backup through a spool file that is checked
/// (SHA-256, complete archive) before pg_restore sees it, and removed after,
/// also when the object is damaged.
#[test]
fn jobs_restore_through_a_checked_spool_file_that_is_removed() {
    let src = TestDb::create("bs_jobs");
    src.sql(
        "CREATE TABLE a AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;
         CREATE TABLE b AS SELECT g AS id, repeat('x', 50) AS v FROM generate_series(1, 50000) g;
         ALTER TABLE a ADD PRIMARY KEY (id); CREATE INDEX ON b (v);",
    );
    let ws = Workspace::new();
    let spool = ws.path("spool");
    std::fs::create_dir(&spool).unwrap();
    let spool_arg = spool.display().to_string();
    let cfg = ws.config(&pg_target("j", &src.name, ""));
    backup_ok(&cfg);
    let dest = TestDb::reserve("bs_jobs_dest");
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--jobs",
            "2",
            "--spool-dir",
            &spool_arg,
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool file is removed"
    );

    let data = ws.stored_file(".dump.zst");
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x20;
    std::fs::write(&data, bytes).unwrap();
    let dest2 = TestDb::reserve("bs_jobs_dest2");
    let r = run(
        &[
            "restore",
            "--into",
            &dest2.url(),
            "--create",
            "--jobs",
            "2",
            "--spool-dir",
            &spool_arg,
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!database_exists(&dest2.name));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    // Plain backups restore through psql: --jobs is a usage error.
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("p", &src.name, "format = \"plain\""));
    backup_ok(&cfg);
    let r = run(
        &["restore", "--into", &dest2.url(), "--create", "--jobs", "2"],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--jobs needs a custom-format backup"),
        "{}",
        r.all()
    );
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// The old pipeline's objects (`pg_dump | gzip`, in `{date}/{db}.sql.gz`)
/// and other standard dump files restore with `restore --file`, from a local
/// path (no config needed) or a storage key; a truncated one — what the old
/// pipeline stored when pg_dump died — is refused and leaves nothing.
#[test]
fn dump_files_of_the_old_pipeline_restore_with_file() {
    let src = TestDb::create("bs_legacy");
    src.sql("CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT 'naïve ' || g FROM generate_series(1, 3000) g;");
    let ws = Workspace::new();
    let pg_dump = format!(
        "{} -h {PG_HOST} -U postgres -d {}",
        real_pg_dump(),
        src.name
    );
    let dir = ws.path("legacy/2026-01-01");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    sh(&format!("{pg_dump} | gzip > {d}/db.sql.gz"));
    sh(&format!("{pg_dump} > {d}/db.sql"));
    sh(&format!("{pg_dump} | zstd -q > {d}/db.sql.zst"));
    sh(&format!("{pg_dump} -Fc > {d}/db.dump"));
    sh(&format!(
        "{pg_dump} | head -c 20000 | gzip > {d}/truncated.sql.gz"
    ));
    let cwd = tempfile::tempdir().unwrap(); // no backstop.toml here
    let restore_file = |file: &str, dest: &TestDb, extra: &[&str]| {
        Run::from(
            backstop()
                .current_dir(cwd.path())
                .env("HOME", cwd.path())
                .env_remove("XDG_CONFIG_HOME")
                .args(["restore", "--file", file, "--into", &dest.url(), "--create"])
                .args(extra)
                .output()
                .unwrap(),
        )
    };
    for (file, extra) in [
        ("db.sql.gz", &[][..]),
        ("db.sql", &[][..]),
        ("db.sql.zst", &["--no-owner"][..]),
        ("db.dump", &["--jobs", "2"][..]),
    ] {
        let dest = TestDb::reserve("bs_legacy_dest");
        let r = restore_file(&format!("{d}/{file}"), &dest, extra);
        assert_eq!(r.code, 0, "{file}: {}", r.all());
        assert_eq!(src.fingerprint(), dest.fingerprint(), "{file}");
    }
    let dest = TestDb::reserve("bs_legacy_trunc");
    let r = restore_file(&format!("{d}/truncated.sql.gz"), &dest, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("truncated"), "{}", r.all());
    assert!(!database_exists(&dest.name));

    // A key in the configured storage.
    let cfg = ws.config(&pg_target("x", &src.name, ""));
    sh(&format!(
        "mkdir -p {b}/legacy && cp -r {d} {b}/legacy/",
        b = ws.backups().display()
    ));
    let dest = TestDb::reserve("bs_legacy_key");
    let r = run(
        &[
            "restore",
            "--file",
            "legacy/2026-01-01/db.sql.gz",
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
}

/// Without --config or BACKSTOP_CONFIG, ./backstop.toml is used, and a
/// missing config names the places it was looked for.
#[test]
fn the_config_is_found_on_the_search_path() {
    let src = TestDb::create("bs_search");
    let ws = Workspace::new();
    ws.config(&pg_target("s", &src.name, ""));
    let r = Run::from(
        backstop()
            .current_dir(ws.dir.path())
            .args(["config", "check"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("backstop.toml: valid"), "{}", r.all());
    let empty = tempfile::tempdir().unwrap();
    let r = Run::from(
        backstop()
            .current_dir(empty.path())
            .env("HOME", empty.path())
            .env_remove("XDG_CONFIG_HOME")
            .args(["list"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("no config file") && r.stderr.contains("/etc/backstop/backstop.toml"),
        "{}",
        r.all()
    );
}

/// A restore killed with SIGKILL cannot drop its temporary database: the
/// next restore of that name says so, and leaves it (another restore may
/// be about to use one).
#[test]
fn a_killed_restores_leftover_is_named_by_the_next_restore_and_kept() {
    let src = TestDb::create("bs_left");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("left", &src.name, ""));
    backup_ok(&cfg);
    let dest = TestDb::reserve("bs_left_dest");
    let base: String = dest.name.chars().take(30).collect();
    let leftover = TestDb {
        name: format!("{base}_bs_restore_deadbeef"),
    };
    psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", leftover.name),
    );
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains(&leftover.name), "{}", r.all());
    assert!(database_exists(&leftover.name), "named, not dropped");
}

/// Regression: a database holding only large objects verified as
/// "0 tables", proving nothing. Large objects are counted as the dump
/// streams (custom and plain) and verify reads each one back and compares
/// the count; a manifest that says otherwise fails verify.
#[test]
fn verify_counts_large_objects_against_the_dump() {
    let src = TestDb::create("bs_lo_only");
    src.sql("SELECT lo_from_bytea(0, decode(md5(g::text), 'hex')) FROM generate_series(1, 25) g");
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    for format in ["custom", "plain"] {
        let ws = Workspace::new();
        let cfg = ws.config(&pg_target(
            "lo",
            &src.name,
            &format!("format = \"{format}\""),
        ));
        backup_ok(&cfg);
        let r = run(
            &["--log-format", "json", "verify", "--scratch", &scratch],
            &cfg,
        );
        assert_eq!(r.code, 0, "{format}: {}", r.all());
        let v = &r.summary()["targets"][0]["verified"];
        assert_eq!(v["large_objects"], 25, "{format}: {v}");

        let manifest = ws.stored_file(".manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        assert_eq!(m["objects"][0]["large_objects"], 25, "{format}: {m}");
        m["objects"][0]["large_objects"] = serde_json::json!(26);
        std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let r = run(&["verify", "--scratch", &scratch], &cfg);
        assert_eq!(r.code, 1, "{format}: {}", r.all());
        assert!(
            r.all()
                .contains("has 25 large objects, but the dump holds 26"),
            "{}",
            r.all()
        );
    }
}
