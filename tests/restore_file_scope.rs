//! `restore --file` writes only its `--into` database, whatever the file
//! says (`pg_dump -C`'s `CREATE DATABASE` and `\connect`, pg_dumpall's
//! several databases, a psql meta-command), and accepts every archive that
//! pg_restore accepts (pg_dump 18 writing a custom archive to a file).

mod support;

use support::{database_exists, psql, real_pg_dump, Run, TestDb, PG_HOST};

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

fn restore_file(file: &std::path::Path, dest: &TestDb, extra: &[&str]) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    Run::from(
        support::backstop()
            .current_dir(cwd.path())
            .env("HOME", cwd.path())
            .env_remove("XDG_CONFIG_HOME")
            .arg("restore")
            .arg("--file")
            .arg(file)
            .args(["--into", &dest.url()])
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// Regression: a `pg_dump -C` plain file restored `--into shop_copy
/// --create` loaded into the live `shop` when... it \connect-ed there.
/// Now it loads into the copy, with the database's comment and setting
/// pointed at the copy, and the source is untouched.
#[test]
fn restore_file_of_a_pg_dump_create_file_writes_only_the_destination() {
    let shop = TestDb::create("bs_scope_shop");
    shop.sql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;
         COMMENT ON DATABASE \"{0}\" IS 'the shop';
         ALTER DATABASE \"{0}\" SET work_mem = '7MB';",
        shop.name
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.sql");
    sh(&format!(
        "{} -h {PG_HOST} -U postgres -C --clean --if-exists -d {} > {}",
        real_pg_dump(),
        shop.name,
        file.display()
    ));
    let before = shop.fingerprint();
    for extra in [&["--create"][..], &["--create", "--no-owner"][..]] {
        let dest = TestDb::reserve("bs_scope_copy");
        let r = restore_file(&file, &dest, extra);
        assert_eq!(r.code, 0, "{extra:?}: {}", r.all());
        assert_eq!(dest.fingerprint(), before, "the copy holds the data");
        assert_eq!(
            psql(
                "postgres",
                &format!(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{}'",
                    dest.name
                )
            ),
            "the shop",
            "the file's comment went to the copy"
        );
        assert_eq!(
            psql(
                "postgres",
                &format!(
                    "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                     WHERE d.datname = '{}' AND s.setrole = 0",
                    dest.name
                )
            ),
            "work_mem=7MB"
        );
    }
    assert_eq!(shop.fingerprint(), before, "the source is untouched");

    // The same file when no `shop` exists: nothing is created under its name.
    let gone = TestDb::reserve("bs_scope_gone");
    let moved = dir.path().join("gone.sql");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&shop.name, &gone.name);
    std::fs::write(&moved, text).unwrap();
    let dest = TestDb::reserve("bs_scope_copy2");
    let r = restore_file(&moved, &dest, &["--create"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !database_exists(&gone.name),
        "the file's database was not created"
    );
    assert_eq!(dest.fingerprint(), before);
}

/// A pg_dumpall file holds several databases, and a psql meta-command can
/// run a shell: both are refused with exit 2 naming the statement, and the
/// created destination is gone again.
#[test]
fn restore_file_refuses_a_second_database_and_meta_commands() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("shell-ran");
    for (name, body) in [
        (
            "dumpall.sql",
            "CREATE DATABASE a;\n\\connect a\nCREATE TABLE t (a int);\n\\connect postgres\nCREATE TABLE leak (a int);\n".to_string(),
        ),
        (
            "shell.sql",
            format!("CREATE TABLE t (a int);\n\\! touch {}\n", marker.display()),
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(
            &file,
            format!("--\n-- PostgreSQL database dump\n--\n\n{body}\n--\n-- PostgreSQL database dump complete\n--\n\n"),
        )
        .unwrap();
        let dest = TestDb::reserve("bs_scope_refused");
        let r = restore_file(&file, &dest, &["--create"]);
        assert_eq!(r.code, 2, "{name}: {}", r.all());
        assert!(r.stderr.contains("was refused"), "{name}: {}", r.all());
        assert!(!database_exists(&dest.name), "{name}: the destination is gone");
    }
    assert!(!marker.exists(), "the shell command never ran");
    assert_eq!(
        psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'leak'"
        ),
        "0"
    );
}

/// Regression: a gzip file with one byte flipped was refused, but as
/// "truncated" (the garbled end had no trailer). The message now says
/// what was found: the gzip data does not decode. Nothing is left.
#[test]
fn a_damaged_gzip_file_is_named_damaged_not_truncated() {
    let src = TestDb::create("bs_gzbad");
    src.sql("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sql.gz");
    sh(&format!(
        "{} -h {PG_HOST} -U postgres -d {} | gzip > {}",
        real_pg_dump(),
        src.name,
        file.display()
    ));
    support::flip_middle_bit(&file);
    let dest = TestDb::reserve("bs_gzbad_dest");
    let r = restore_file(&file, &dest, &["--create"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("is damaged: its gzip data does not decode"),
        "{}",
        r.all()
    );
    assert!(!r.stderr.contains("truncated"), "{}", r.all());
    assert!(!database_exists(&dest.name));
}

/// Regression: a failing restore's `ERROR:` lines from psql were logged at
/// INFO with `target_name=""`. They are errors, under the destination.
#[test]
fn a_failing_restores_tool_errors_are_logged_as_errors_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.sql");
    std::fs::write(
        &file,
        "--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (a int);\nINSERT INTO nope VALUES (1);\n--\n-- PostgreSQL database dump complete\n--\n",
    )
    .unwrap();
    let dest = TestDb::reserve("bs_scope_errlog");
    let r = restore_file(&file, &dest, &["--create"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("relation \\\"nope\\\" does not exist") && l.contains("\"child\""))
        .unwrap_or_else(|| panic!("{}", r.all()));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "ERROR", "{line}");
    assert_eq!(v["target_name"], dest.name.as_str(), "{line}");
    assert!(!database_exists(&dest.name));
}
