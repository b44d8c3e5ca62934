//! MariaDB/MySQL targets against the MariaDB server on this machine
//! (127.0.0.1:3306, root): a schema with what real applications hold
//! round-trips equal by checksum, restores with standard tools alone,
//! verifies, and a failing or truncated dump never lands.

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

fn mariadb(db: &str, sql: &str) -> String {
    let mut c = Command::new("mariadb");
    c.args([
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
        "-N",
        "-B",
        "--default-character-set=utf8mb4",
    ]);
    if !db.is_empty() {
        c.arg(db);
    }
    let out = c
        .arg("-e")
        .arg(sql)
        .output()
        .expect("the mariadb client runs");
    assert!(
        out.status.success(),
        "mariadb {db}: {}\nSQL: {sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A uniquely named database, dropped when the test ends.
struct MyDb {
    name: String,
}

impl MyDb {
    fn reserve(prefix: &str) -> MyDb {
        MyDb {
            name: unique(prefix),
        }
    }

    fn exists(&self) -> bool {
        mariadb(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
                self.name
            ),
        ) == "1"
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    /// Every table's checksum and row count, and the other objects.
    fn fingerprint(&self) -> Vec<String> {
        let tables = mariadb(
            "",
            &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1", self.name),
        );
        let mut out: Vec<String> = tables
            .lines()
            .map(|t| {
                let sum = mariadb(&self.name, &format!("CHECKSUM TABLE `{t}` EXTENDED"));
                let rows = mariadb(&self.name, &format!("SELECT COUNT(*) FROM `{t}`"));
                format!(
                    "{t}: {} rows, checksum {}",
                    rows,
                    sum.split('\t').nth(1).unwrap_or("?")
                )
            })
            .collect();
        for (what, sql) in [
            ("views", "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY 1) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{}'"),
            ("routines", "SELECT GROUP_CONCAT(ROUTINE_NAME ORDER BY 1) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{}'"),
            ("triggers", "SELECT GROUP_CONCAT(TRIGGER_NAME ORDER BY 1) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{}'"),
            ("events", "SELECT GROUP_CONCAT(EVENT_NAME ORDER BY 1) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{}'"),
            ("charset", "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'"),
        ] {
            out.push(format!("{what}: {}", mariadb("", &sql.replace("{}", &self.name))));
        }
        out
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .output();
    }
}

/// The shop: utf8mb4 text with emoji, blobs, DECIMAL, JSON, a generated
/// column, a foreign key, a view, a trigger, a procedure, an event and a
/// table named with a reserved word.
fn shop() -> MyDb {
    let db = MyDb::reserve("bs_shop");
    mariadb(
        "",
        &format!(
            "CREATE DATABASE `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            db.name
        ),
    );
    mariadb(
        &db.name,
        r#"
        CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100), note TEXT) ENGINE=InnoDB;
        CREATE TABLE `order` (
            id INT PRIMARY KEY AUTO_INCREMENT,
            customer_id INT NOT NULL,
            total DECIMAL(12,2) NOT NULL,
            items JSON,
            photo BLOB,
            total_with_tax DECIMAL(12,2) AS (total * 1.2) STORED,
            FOREIGN KEY (customer_id) REFERENCES customers(id)
        ) ENGINE=InnoDB;
        CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(200)) ENGINE=InnoDB;
        CREATE TABLE legacy_counter (n INT) ENGINE=MyISAM;
        INSERT INTO legacy_counter VALUES (7);
        CREATE VIEW big_orders AS SELECT id, total FROM `order` WHERE total > 100;
        CREATE TRIGGER order_audit AFTER INSERT ON `order` FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
        CREATE PROCEDURE order_count(OUT n INT) SELECT COUNT(*) INTO n FROM `order`;
        CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE id < 0;
        INSERT INTO customers (name, note) VALUES ('Zoë 🦀', 'emoji 😀 and ünïcode'), ('Bob', NULL), ('Ann', 'line\nbreak\ttab ''quote''');
        "#,
    );
    for i in 0..300 {
        mariadb(
            &db.name,
            &format!(
                "INSERT INTO `order` (customer_id, total, items, photo) VALUES ({}, {}.{:02}, '{{\"sku\": \"A{i}\", \"qty\": {i}}}', UNHEX(REPEAT('00FF7F80', {})))",
                i % 3 + 1,
                i * 3,
                i % 100,
                i % 50 + 1
            ),
        );
    }
    db
}

/// A workspace whose config backs up `db` as target `shop`, and that
/// backup made.
fn backed_up(db: &MyDb) -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    let cfg = ws.config(&target(&db.name, ""));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    (ws, cfg)
}

fn target(db: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"shop\"\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\ndatabase = \"{db}\"\nretry = {{ attempts = 1 }}\n{extra}\n"
    )
}

#[test]
fn a_real_world_schema_round_trips_equal_by_checksum() {
    let src = shop();
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, ""));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("not transactional") && r.stderr.contains("legacy_counter (MyISAM)"),
        "a MyISAM table is named as outside the snapshot: {}",
        r.stderr
    );
    let object = ws.stored_file(".sql.zst");

    let dest = MyDb::reserve("bs_shop_restored");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());

    // Standard tools alone.
    let manual = MyDb::reserve("bs_shop_manual");
    mariadb(
        "",
        &format!("CREATE DATABASE `{}` CHARACTER SET utf8mb4", manual.name),
    );
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "set -e; zstd -dc '{}' | mariadb -h 127.0.0.1 -u root '{}'",
                object.display(),
                manual.name
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        manual.fingerprint()[..4],
        src.fingerprint()[..4],
        "tables restore the same with zstd | mariadb"
    );

    // --create refuses an existing name; verify needs a scratch server.
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    let r = run(&["verify"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    let r = run(
        &["verify", "--scratch", "mysql://root@127.0.0.1:3306/mysql"],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let leftovers = mariadb("", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'backstop\\_verify\\_shop\\_%'");
    assert_eq!(leftovers, "0", "the scratch database was dropped");
}

/// A `mariadb-dump` first on PATH that logs its arguments, then misbehaves
/// as told.
fn fake_dump(ws: &Workspace, behaviour: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = ws.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv = ws.path("argv.log");
    let body = format!(
        "echo \"$@\" >> '{}'\ncase \"$*\" in *--version*) exec /usr/bin/mariadb-dump --version ;; esac\n{behaviour}",
        argv.display()
    );
    let script = ws.script("bin/mariadb-dump", &body);
    assert!(script.exists());
    (bin, argv)
}

fn run_with_path(args: &[&str], cfg: &Path, bin: &Path, env: &[(&str, &str)]) -> Run {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut c = backstop();
    c.args(args).arg("--config").arg(cfg).env("PATH", path);
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().unwrap())
}

#[test]
fn a_failing_or_truncated_dump_is_never_stored_and_the_password_stays_off_argv() {
    let src = shop();
    let user = unique("bs_my_user");
    let password = "s3cret-Pa55-for-backstop";
    mariadb("", &format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON `{}`.* TO '{user}'@'%'; GRANT PROCESS ON *.* TO '{user}'@'%'; GRANT SELECT ON mysql.proc TO '{user}'@'%'", src.name));
    let ws = Workspace::new();
    let cfg = ws.config(
        &target(&src.name, "password = \"${BS_MY_PASSWORD}\"")
            .replace("user = \"root\"", &format!("user = \"{user}\"")),
    );
    let env = [("BS_MY_PASSWORD", password)];
    // Exits 0 but stops half-way.
    let (bin, argv) = fake_dump(&ws, "/usr/bin/mariadb-dump \"$@\" | head -c 20000\nexit 0");
    let r = run_with_path(&["backup"], &cfg, &bin, &env);
    assert_eq!(r.code, 1, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["stage"], "dump");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("does not end with `-- Dump completed`"),
        "{t}"
    );
    assert!(ws.stored_files().is_empty(), "{:?}", ws.stored_files());
    // Fails outright.
    let (bin, _) = fake_dump(
        &ws,
        "echo 'mariadb-dump: Got error: 2013: Lost connection' >&2\nexit 2",
    );
    let r = run_with_path(&["backup"], &cfg, &bin, &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("Lost connection"), "{}", r.all());
    assert!(ws.stored_files().is_empty());
    // The real tool, through the same wrapper: works, and never saw the
    // password on its command line.
    let (bin, _) = fake_dump(&ws, "exec /usr/bin/mariadb-dump \"$@\"");
    let r = run_with_path(&["backup"], &cfg, &bin, &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let logged = std::fs::read_to_string(&argv).unwrap();
    assert!(logged.contains("--defaults-extra-file="), "{logged}");
    assert!(!logged.contains(password), "{logged}");
    assert!(!r.all().contains(password));
    mariadb("", &format!("DROP USER '{user}'@'%'"));
}

#[test]
fn a_damaged_backup_restores_nothing() {
    let src = shop();
    let (ws, cfg) = backed_up(&src);
    ws.damage_stored(".sql.zst");
    let dest = MyDb::reserve("bs_shop_damaged");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!dest.exists(), "the half-restored database was dropped");
}

/// Databases whose names start with `prefix` (leftovers of a restore).
fn databases_like(prefix: &str) -> Vec<String> {
    let out = mariadb(
        "",
        &format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{}%' ORDER BY 1",
            prefix.replace('_', "\\_")
        ),
    );
    out.lines().map(String::from).collect()
}

/// The live database changed after its backup: rows, a new table, a view
/// dropped and another made, a routine swapped.
fn change_after_backup(db: &MyDb) {
    mariadb(
        &db.name,
        r#"
        INSERT INTO `order` (customer_id, total) VALUES (2, 999.00);
        CREATE TABLE extra (id INT PRIMARY KEY) ENGINE=InnoDB;
        INSERT INTO extra VALUES (1), (2);
        DROP VIEW big_orders;
        CREATE VIEW small_orders AS SELECT id FROM `order` WHERE total < 10;
        DROP PROCEDURE order_count;
        CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
        "#,
    );
}

#[test]
fn replace_swaps_in_the_whole_backup_and_keeps_the_old_database_when_asked() {
    let live = shop();
    let (_ws, cfg) = backed_up(&live);
    let backed_up = live.fingerprint();
    change_after_backup(&live);
    let changed = live.fingerprint();
    assert_ne!(changed, backed_up);

    let r = run(&["restore", "--into", &live.url(), "--replace"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(live.fingerprint(), backed_up);
    // The trigger came back on the restored table, in the live name.
    let audited = || {
        mariadb(&live.name, "SELECT COUNT(*) FROM audit")
            .parse::<u64>()
            .unwrap()
    };
    let before = audited();
    mariadb(
        &live.name,
        "INSERT INTO `order` (customer_id, total) VALUES (1, 5.00)",
    );
    assert_eq!(audited(), before + 1);
    assert_eq!(
        databases_like(&format!("{}_", live.name)),
        Vec::<String>::new(),
        "nothing is left beside the live database"
    );

    change_after_backup(&live);
    let changed = live.fingerprint();
    let r = run(
        &[
            "restore",
            "--into",
            &live.url(),
            "--replace",
            "--keep-replaced",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(live.fingerprint(), backed_up);
    let kept = databases_like(&format!("{}_replaced_", live.name));
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = MyDb {
        name: kept[0].clone(),
    };
    assert!(r.stdout.contains(&kept.name), "{}", r.all());
    assert_eq!(
        kept.fingerprint(),
        changed,
        "the old database is kept whole"
    );
    assert_eq!(
        mariadb(
            "",
            &format!(
                "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{}'",
                kept.name
            )
        ),
        "DISABLED",
        "the kept copy runs no events"
    );
}

/// A `mariadb` client first on PATH that fails the first load of views or
/// triggers into a database matching the shell pattern `db` (the last step
/// of a swap, or the kept copy's); the file it returns exists once it has.
fn fail_code_load_once(ws: &Workspace, db: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = ws.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("which")
            .arg("mariadb")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mark = ws.path("failed-once");
    ws.script(
        "bin/mariadb",
        &format!(
            r#"in=$(mktemp); cat > "$in"
case " $* " in *" --database="{db}" "*)
  if grep -qi trigger "$in" && [ ! -e '{mark}' ]; then
    touch '{mark}'; rm -f "$in"; echo "ERROR 1419 (HY000): injected failure" >&2; exit 1
  fi ;;
esac
'{real}' "$@" < "$in"; rc=$?; rm -f "$in"; exit $rc"#,
            mark = mark.display(),
            real = real.trim()
        ),
    );
    (bin, mark)
}

/// `restore --replace` into `db` with the code load failing once: the
/// restore fails, says so, and leaves `db` as it was with nothing beside it.
fn replace_failing_once(cfg: &Path, db: &MyDb) {
    let before = db.fingerprint();
    let ws = Workspace::new();
    let (bin, mark) = fail_code_load_once(&ws, &db.name);
    let r = run_with_path(
        &["restore", "--into", &db.url(), "--replace"],
        cfg,
        &bin,
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(mark.exists(), "the failure was injected");
    assert!(r.all().contains("put back as it was"), "{}", r.all());
    assert!(r.all().contains("injected failure"), "{}", r.all());
    assert_eq!(db.fingerprint(), before, "no restored table stayed");
    assert_eq!(
        databases_like(&format!("{}_", db.name)),
        Vec::<String>::new()
    );
}

#[test]
fn a_replace_that_fails_leaves_the_live_database_as_it_was() {
    let live = shop();
    let (ws, cfg) = backed_up(&live);
    change_after_backup(&live);
    let changed = live.fingerprint();

    // The restored views and triggers fail to load into the live name
    // once: the tables have been swapped by then, and must go back.
    replace_failing_once(&cfg, &live);
    assert_eq!(live.fingerprint(), changed);

    // Regression (the put-back judged "were the tables swapped?" by the
    // old tables set aside, so a live database without tables kept the
    // restored ones): a database holding only a routine.
    let bare = MyDb::reserve("bs_bare");
    mariadb("", &format!("CREATE DATABASE `{}`", bare.name));
    mariadb(&bare.name, "CREATE PROCEDURE hello() SELECT 'hello'");
    replace_failing_once(&cfg, &bare);

    // A damaged backup fails before the live database is touched.
    ws.damage_stored(".sql.zst");
    let r = run(&["restore", "--into", &live.url(), "--replace"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(live.fingerprint(), changed);
    assert_eq!(
        databases_like(&format!("{}_", live.name)),
        Vec::<String>::new()
    );
}

/// Regression (a kept copy that could not get its views and triggers back
/// made the run report "nothing was replaced", though it had been, and
/// dropped the restored database's leftovers as if it had failed).
#[test]
fn replace_done_but_keep_incomplete_is_a_warning_not_a_failure() {
    let live = shop();
    let (ws, cfg) = backed_up(&live);
    let backed_up = live.fingerprint();
    change_after_backup(&live);
    let (bin, mark) = fail_code_load_once(&ws, &format!("{}_replaced_*", live.name));
    let r = run_with_path(
        &[
            "restore",
            "--into",
            &live.url(),
            "--replace",
            "--keep-replaced",
        ],
        &cfg,
        &bin,
        &[],
    );
    let kept = databases_like(&format!("{}_replaced_", live.name));
    let _cleanup: Vec<MyDb> = kept.iter().map(|n| MyDb { name: n.clone() }).collect();
    assert!(mark.exists(), "the failure was injected");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("kept copy lacks"), "{}", r.all());
    assert_eq!(live.fingerprint(), backed_up);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        databases_like(&format!("{}_bs_", live.name)),
        Vec::<String>::new(),
        "no working database is left"
    );
}

/// Regression (a failed restore into an existing empty database dropped
/// and recreated it: its comment and anything else the database itself
/// carries were lost). The load now goes beside it and is swapped in.
#[test]
fn an_empty_database_is_restored_into_and_left_as_it_was_when_that_fails() {
    let src = shop();
    let (ws, cfg) = backed_up(&src);
    let empty = MyDb::reserve("bs_empty_dest");
    mariadb(
        "",
        &format!(
            "CREATE DATABASE `{}` CHARACTER SET latin1 COLLATE latin1_swedish_ci COMMENT 'ours'",
            empty.name
        ),
    );
    let own = || {
        mariadb(
            "",
            &format!(
                "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', SCHEMA_COMMENT) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
                empty.name
            ),
        )
    };
    assert_eq!(own(), "latin1 ours");
    ws.damage_stored(".sql.zst");
    let r = run(&["restore", "--into", &empty.url()], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(own(), "latin1 ours", "the database is as it was");
    assert_eq!(
        databases_like(&format!("{}_", empty.name)),
        Vec::<String>::new()
    );

    let (_ws, cfg) = backed_up(&src);
    let r = run(&["restore", "--into", &empty.url()], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(own(), "latin1 ours", "its own properties stay");
    let tables = |db: &MyDb| -> Vec<String> {
        db.fingerprint()
            .into_iter()
            .filter(|l| !l.starts_with("charset:"))
            .collect()
    };
    assert_eq!(tables(&empty), tables(&src));
}

#[test]
fn replace_and_create_refuse_a_wrong_destination_before_touching_it() {
    let live = shop();
    let (_ws, cfg) = backed_up(&live);
    let absent = MyDb::reserve("bs_shop_absent");
    let r = run(&["restore", "--into", &absent.url(), "--replace"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("nothing to replace"), "{}", r.all());
    assert!(!absent.exists());
    let r = run(&["restore", "--into", &live.url(), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--replace"), "{}", r.all());
    let r = run(
        &["restore", "--into", &absent.url(), "--create", "--no-owner"],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("--no-owner is not supported for MariaDB/MySQL"),
        "{}",
        r.all()
    );
    let r = run(
        &[
            "restore",
            "--into",
            "postgres://postgres@127.0.0.1/x",
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("is a MariaDB/MySQL target"),
        "{}",
        r.all()
    );
    assert!(!absent.exists());
}

#[test]
fn several_databases_or_all_of_them_back_up_together_and_restore_one_at_a_time() {
    let shop = shop();
    // A dot in the name (allowed by MariaDB, not in a plain object key) and
    // a character set of its own.
    let blog = MyDb::reserve("bs_blog.v2");
    mariadb(
        "",
        &format!(
            "CREATE DATABASE `{}` CHARACTER SET latin1 COLLATE latin1_swedish_ci",
            blog.name
        ),
    );
    mariadb(
        &blog.name,
        "CREATE TABLE post (id INT PRIMARY KEY, title VARCHAR(50)); INSERT INTO post VALUES (1, 'Café au lait'), (2, 'Smørrebrød');",
    );
    let ws = Workspace::new();
    let config = |which: &str, user: &str| {
        format!(
            "[[targets]]\nname = \"shop\"\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nuser = \"{user}\"\n{which}\nretry = {{ attempts = 1 }}\n"
        )
    };
    let cfg = ws.config(&config(
        &format!("databases = [\"{}\", \"{}\"]", shop.name, blog.name),
        "root",
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let stored = ws.stored_files();
    assert!(
        stored.iter().any(|p| p.to_string_lossy().contains("-2Ev2")),
        "the dot is escaped in the key: {stored:?}"
    );

    let dest = MyDb::reserve("bs_blog_restored");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("holds 2 databases"), "{}", r.all());
    assert!(r.stderr.contains(&blog.name), "{}", r.all());
    let r = run(
        &[
            "restore",
            "--database",
            "nope",
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!dest.exists());
    let r = run(
        &[
            "restore",
            "--database",
            &blog.name,
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), blog.fingerprint(), "latin1 and all");

    let r = run(
        &["verify", "--scratch", "mysql://root@127.0.0.1:3306/mysql"],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let shop_tables = mariadb("", &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_TYPE = 'BASE TABLE'", shop.name));
    assert_eq!(
        r.summary()["targets"][0]["verified"]["tables"].as_u64(),
        Some(shop_tables.parse::<u64>().unwrap() + 1),
        "both databases were read through"
    );

    // all = true: every database the backup user can see, bar the
    // server's own (a user that sees only these two, since other tests
    // create and drop databases on this server all the time).
    // A restore's working database beside them is backstop's, not the
    // user's: never part of `all`.
    let working = MyDb {
        name: format!("{}_bs_restore_0badcafe", shop.name),
    };
    mariadb("", &format!("CREATE DATABASE `{}`", working.name));
    let user = unique("bs_all");
    mariadb(
        "",
        &format!(
            "CREATE USER '{user}'@'%'; GRANT ALL ON `{}`.* TO '{user}'@'%'; GRANT ALL ON `{}`.* TO '{user}'@'%'; GRANT ALL ON `{}`.* TO '{user}'@'%'; GRANT SELECT ON mysql.proc TO '{user}'@'%'",
            shop.name,
            blog.name.replace('_', "\\_"),
            working.name
        ),
    );
    let ws = Workspace::new();
    let cfg = ws.config(&config("all = true", &user));
    let r = run(&["backup"], &cfg);
    mariadb("", &format!("DROP USER '{user}'@'%'"));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["list", "--json"], &cfg);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut roles: Vec<String> = listed[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap().to_string())
        .collect();
    roles.sort();
    let mut expected = vec![
        format!("database:{}", shop.name),
        format!("database:{}", blog.name),
    ];
    expected.sort();
    assert_eq!(roles, expected);
}

#[test]
fn a_target_names_one_database_several_or_all_never_two_of_these() {
    let ws = Workspace::new();
    for (which, ok) in [
        ("database = \"a\"", true),
        ("databases = [\"a\", \"b\"]", true),
        ("all = true", true),
        ("", false),
        ("database = \"a\"\nall = true", false),
        ("databases = [\"a\", \"a\"]", false),
    ] {
        let cfg = ws.config(&format!(
            "[[targets]]\nname = \"shop\"\ntype = \"mysql\"\n{which}\n"
        ));
        let r = run(&["config", "check"], &cfg);
        assert_eq!(r.code == 0, ok, "{which}: {}", r.all());
        if !ok {
            assert_eq!(r.code, 2, "{which}: {}", r.all());
            assert!(
                r.stderr.contains("targets[0].database"),
                "{which}: {}",
                r.all()
            );
        }
    }
}

#[test]
fn a_mariadb_server_is_dumped_with_mariadb_dump_even_when_a_mysqldump_comes_first() {
    let src = shop();
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, ""));
    // MySQL 8's mysqldump, first on PATH; it must not be the one used.
    let bin = ws.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    ws.script(
        "bin/mysqldump",
        "case \"$*\" in *--version*) echo 'mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)'; exit 0 ;; esac\necho 'mysqldump: Couldn'\\''t execute: Unknown table COLUMN_STATISTICS' >&2\nexit 2",
    );
    let r = run_with_path(&["backup"], &cfg, &bin, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["list", "--json"], &cfg);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            ws.backups()
                .join(listed[0]["manifest_key"].as_str().unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        manifest["dump_tool_version"]
            .as_str()
            .unwrap()
            .contains("MariaDB"),
        "{manifest}"
    );
}

#[test]
fn verify_creates_the_scratch_copys_events_disabled_and_restore_keeps_them_as_they_were() {
    let src = shop();
    // An event that would reach beyond its own database if it ran.
    mariadb(
        &src.name,
        "CREATE EVENT purge_elsewhere ON SCHEDULE EVERY 1 HOUR STARTS NOW() + INTERVAL 1 HOUR ENABLE DO DELETE FROM mysql.help_topic WHERE 1 = 0",
    );
    let status = |db: &str| {
        mariadb(
            "",
            &format!("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}' AND EVENT_NAME = 'purge_elsewhere'"),
        )
    };
    assert_eq!(status(&src.name), "ENABLED");
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, "").replace("name = \"shop\"", "name = \"events\""));
    assert_eq!(run(&["backup"], &cfg).code, 0);

    let r = run(
        &[
            "verify",
            "--keep",
            "--scratch",
            "mysql://root@127.0.0.1:3306/mysql",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let kept = databases_like("backstop_verify_events_");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = MyDb {
        name: kept[0].clone(),
    };
    assert_eq!(
        status(&kept.name),
        "DISABLED",
        "the scratch copy runs nothing"
    );

    let dest = MyDb::reserve("bs_events_restored");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(status(&dest.name), "ENABLED", "a restore is faithful");
}

/// A restore killed with SIGKILL cannot drop its working database: the
/// next restore of that name says so, and leaves it.
#[test]
fn a_killed_restores_leftover_is_named_by_the_next_restore_and_kept() {
    let src = shop();
    let (_ws, cfg) = backed_up(&src);
    let dest = MyDb::reserve("bs_left_dest");
    let leftover = MyDb {
        name: format!("{}_bs_restore_deadbeef", dest.name),
    };
    mariadb("", &format!("CREATE DATABASE `{}`", leftover.name));
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains(&leftover.name), "{}", r.all());
    assert!(leftover.exists(), "named, not dropped");
}

/// A SIGKILLed run cannot remove its option file, which holds the
/// password: the next run removes those of processes that are gone.
#[test]
fn option_files_a_killed_run_left_are_removed_by_the_next_run() {
    let src = shop();
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, ""));
    let tmp = ws.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stale = tmp.join(".backstop-my-999999999-k1ll3d.cnf");
    std::fs::write(&stale, "[client]\npassword=\"left-behind\"\n").unwrap();
    let mut c = backstop();
    c.args(["backup", "--config"]).arg(&cfg).env("TMPDIR", &tmp);
    let r = Run::from(c.output().unwrap());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!stale.exists(), "the stale option file was removed");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "this run's own option files went too: {left:?}"
    );
}

#[test]
fn init_writes_a_mysql_starter_config_that_backs_up() {
    let src = shop();
    let ws = Workspace::new();
    let out = ws.path("backstop.toml");
    let r = init_local(&src.url(), &ws, &out);
    assert_eq!(r.code, 0, "{}", r.all());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("type = \"mysql\""), "{text}");
    let r = run(&["backup"], &out);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["status"], "success");
}

/// The old pipeline's files (`mysqldump DB | gzip > DB.sql.gz`) restore
/// with `--file`; one that stops early is loaded, found short and dropped.
#[test]
fn restore_file_loads_an_old_mysqldump_gzip_file_and_refuses_a_truncated_one() {
    let src = shop();
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, ""));
    let restore_file = |file: &Path, dest: &MyDb| {
        let file = file.to_string_lossy();
        run(
            &[
                "restore",
                "--file",
                &file,
                "--into",
                &dest.url(),
                "--create",
            ],
            &cfg,
        )
    };
    let whole = ws.path("shop.sql.gz");
    let dumped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mariadb-dump -h 127.0.0.1 -u root --single-transaction --routines --events '{}' | gzip > '{}'",
            src.name,
            whole.display()
        ))
        .status()
        .unwrap();
    assert!(dumped.success());
    let dest = MyDb::reserve("bs_file_dest");
    let r = restore_file(&whole, &dest);
    assert_eq!(r.code, 0, "{}", r.all());
    let without_charset = |f: Vec<String>| -> Vec<String> {
        f.into_iter()
            .filter(|l| !l.starts_with("charset:"))
            .collect()
    };
    assert_eq!(
        without_charset(dest.fingerprint()),
        without_charset(src.fingerprint())
    );

    // The same file cut short: no `-- Dump completed` at its end.
    let short = ws.path("short.sql.gz");
    let cut = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | head -c 30000 | gzip > '{}'",
            whole.display(),
            short.display()
        ))
        .status()
        .unwrap();
    assert!(cut.success());
    let dest2 = MyDb::reserve("bs_file_short");
    let r = restore_file(&short, &dest2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("Dump completed"), "{}", r.all());
    assert!(!dest2.exists(), "the short load was dropped");

    // A pg_dump file is not for a mysql:// URL.
    let pg = ws.path("pg.sql");
    std::fs::write(
        &pg,
        "--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n",
    )
    .unwrap();
    let r = restore_file(&pg, &dest2);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("postgres://"), "{}", r.all());
    assert!(!dest2.exists());
}

/// Poll `done` until it holds; a minute without it fails the test.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed().as_secs() < 60,
            "waited a minute for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A session holding a live table (an open transaction) would make the
/// swap wait part-way; the swap checks first, gives up after a while, and
/// has changed nothing.
#[test]
fn replace_gives_up_unchanged_while_a_session_holds_the_live_tables() {
    let live = shop();
    let (_ws, cfg) = backed_up(&live);
    change_after_backup(&live);
    let changed = live.fingerprint();
    let mut holder = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", &live.name, "-e"])
        .arg("START TRANSACTION; INSERT INTO customers (name) VALUES ('busy'); SELECT SLEEP(120); ROLLBACK;")
        .spawn()
        .unwrap();
    // The holder has its lock once its row is counted by its own session;
    // from outside, wait until it shows in the process list.
    let sleeping = || {
        mariadb(
            "",
            &format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}' AND INFO LIKE 'SELECT SLEEP%'", live.name),
        ) == "1"
    };
    wait_until("the holder holds its lock", sleeping);
    let r = run(&["restore", "--into", &live.url(), "--replace"], &cfg);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("sessions are using the tables"),
        "{}",
        r.all()
    );
    // The holder's insert was rolled back with its session.
    while mariadb(
        "",
        &format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}'",
            live.name
        ),
    ) != "0"
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(live.fingerprint(), changed);
    assert_eq!(
        databases_like(&format!("{}_", live.name)),
        Vec::<String>::new()
    );
}

/// Regression: `mariadb-dump --databases shop | gzip` (it has `CREATE
/// DATABASE IF NOT EXISTS shop` and `USE shop`) restored `--into
/// …/shop_copy --create` rewrote the live `shop` and left the copy empty,
/// reporting success. The file now loads into the copy; the live database
/// is untouched; a file of two databases is refused (exit 2) and leaves
/// nothing.
#[test]
fn restore_file_of_a_databases_dump_writes_only_into() {
    let src = shop();
    let ws = Workspace::new();
    let cfg = ws.config(&target(&src.name, ""));
    let dump = |names: &str, file: &Path| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mariadb-dump -h 127.0.0.1 -u root --single-transaction --routines --events --add-drop-database --databases {names} | gzip > '{}'",
                file.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
    };
    let one = ws.path("shop.sql.gz");
    dump(&src.name, &one);
    let before = src.fingerprint();
    mariadb(
        &src.name,
        "INSERT INTO customers (name) VALUES ('after the dump')",
    );
    let live = src.fingerprint();
    let dest = MyDb::reserve("bs_scope_copy");
    let r = run(
        &[
            "restore",
            "--file",
            &one.to_string_lossy(),
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let without_charset = |f: Vec<String>| -> Vec<String> {
        f.into_iter()
            .filter(|l| !l.starts_with("charset:"))
            .collect()
    };
    assert_eq!(without_charset(dest.fingerprint()), without_charset(before));
    assert_eq!(src.fingerprint(), live, "the live database is untouched");

    let other = MyDb::reserve("bs_scope_other");
    mariadb("", &format!("CREATE DATABASE `{}`", other.name));
    mariadb(
        &other.name,
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1)",
    );
    let two = ws.path("two.sql.gz");
    dump(&format!("{} {}", src.name, other.name), &two);
    let dest = MyDb::reserve("bs_scope_two");
    let r = run(
        &[
            "restore",
            "--file",
            &two.to_string_lossy(),
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("more than one database"), "{}", r.all());
    assert!(!dest.exists(), "the created destination is gone");
    assert_eq!(src.fingerprint(), live);
    assert_eq!(mariadb(&other.name, "SELECT COUNT(*) FROM t"), "1");
}

/// Regression: MariaDB verify reported `tables_compared: 0` (nothing was
/// compared with the dump), and a database's COMMENT was lost on
/// `--create`. Every table's restored rows are now compared with the rows
/// counted as the dump streamed (a manifest that says otherwise fails
/// verify, naming the table), and the comment comes back.
#[test]
fn verify_compares_every_table_with_the_dump_and_create_keeps_the_comment() {
    let src = shop();
    mariadb(
        "",
        &format!("ALTER DATABASE `{}` COMMENT 'the shop''s data'", src.name),
    );
    let tables: u64 = mariadb(
        "",
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_TYPE = 'BASE TABLE'",
            src.name
        ),
    )
    .parse()
    .unwrap();
    let (ws, cfg) = backed_up(&src);
    let scratch = "mysql://root@127.0.0.1:3306/mysql";
    let r = run(
        &["--log-format", "json", "verify", "--scratch", scratch],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v = &r.summary()["targets"][0]["verified"];
    assert_eq!(v["tables_compared"], tables, "{v}");
    assert!(tables >= 3, "{tables}");

    let dest = MyDb::reserve("bs_comment");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        mariadb(
            "",
            &format!(
                "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
                dest.name
            )
        ),
        "the shop's data"
    );

    // A manifest whose count disagrees with the restored table fails verify.
    let manifest = ws.stored_file(".manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let counted = m["objects"][0]["tables"][0].clone();
    let table = counted["table"].as_str().unwrap().to_string();
    m["objects"][0]["tables"][0]["rows"] = serde_json::json!(counted["rows"].as_u64().unwrap() + 1);
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let r = run(&["verify", "--scratch", scratch], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains(&format!("table {table} has")),
        "{}",
        r.all()
    );
}

/// Regression: mariadb-dump run by a user without TRIGGER, or without
/// SELECT on mysql.proc, leaves the triggers and procedures out and exits
/// 0: such a backup "succeeded" without them. Now the grants are read
/// first: the backup fails naming the GRANT, `check` says the same, and
/// with the documented grants the dump holds every trigger and routine.
#[test]
fn a_backup_user_without_trigger_privilege_no_longer_loses_triggers_silently() {
    let src = shop();
    let user = unique("bs_my_least");
    mariadb(
        "",
        &format!(
            "CREATE USER '{user}'@'%'; GRANT SELECT, SHOW VIEW, EVENT ON `{}`.* TO '{user}'@'%'",
            src.name
        ),
    );
    let ws = Workspace::new();
    let cfg =
        ws.config(&target(&src.name, "").replace("user = \"root\"", &format!("user = \"{user}\"")));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let error = r.summary()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("the triggers (left out without an error)"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "GRANT TRIGGER ON `{}`.* TO '{user}'@'%';",
            src.name
        )),
        "{error}"
    );
    assert!(error.contains("GRANT SELECT ON `mysql`.`proc`"), "{error}");
    assert!(
        r.all().contains("not retried"),
        "a permission is not retried: {}",
        r.all()
    );
    assert!(ws.stored_files().is_empty(), "{:?}", ws.stored_files());
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("✗ target shop") && r.stdout.contains("GRANT TRIGGER"),
        "{}",
        r.stdout
    );

    // The grants the docs and `init` give.
    mariadb(
        "",
        &format!(
            "GRANT TRIGGER ON `{}`.* TO '{user}'@'%'; GRANT SELECT ON mysql.proc TO '{user}'@'%'",
            src.name
        ),
    );
    let r = run(&["check"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("✓ target shop privileges: user"),
        "{}",
        r.stdout
    );
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let dump = std::fs::read(ws.stored_file(".sql.zst")).unwrap();
    let sql = String::from_utf8(zstd::decode_all(&dump[..]).unwrap()).unwrap();
    assert!(
        sql.contains("TRIGGER") && sql.contains("order_audit"),
        "the trigger is in the dump"
    );
    assert!(
        sql.contains("PROCEDURE") && sql.contains("order_count"),
        "the procedure is in the dump"
    );
    mariadb("", &format!("DROP USER '{user}'@'%'"));
}
