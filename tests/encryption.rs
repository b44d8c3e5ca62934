//! Client-side encryption with age, against the real PostgreSQL, SeaweedFS
//! and the `age` CLI: nothing leaves in clear text, backups restore with
//! the identity and only with it, and standard tools restore them too.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::*;

/// A database whose rows hold a marker that must never appear in storage.
const MARKER: &str = "personal-data-7f3a9c";

fn source_db() -> TestDb {
    let db = TestDb::create("bs_age");
    db.sql(&format!(
        "CREATE TABLE people (id int PRIMARY KEY, email text);
         INSERT INTO people SELECT g, '{MARKER}-' || g || '@example.org' FROM generate_series(1, 5000) g;"
    ));
    db
}

/// `age-keygen` output (the real CLI) and its public key.
fn age_key(ws: &Workspace, name: &str) -> (PathBuf, String) {
    let path = ws.path(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen runs (apt package age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    (
        path,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

fn encryption(recipients: &[&str]) -> String {
    let list: Vec<String> = recipients.iter().map(|r| format!("\"{r}\"")).collect();
    format!("[encryption]\nrecipients = [{}]\n\n", list.join(", "))
}

/// Every stored object of a backup is an age file that holds no clear text.
fn assert_no_clear_text(files: &[PathBuf]) {
    let objects: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    assert!(!objects.is_empty(), "no objects in {files:?}");
    for p in objects {
        let name = p.to_string_lossy();
        assert!(name.ends_with(".zst.age"), "{name} is not named .age");
        let bytes = std::fs::read(p).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{name}");
        assert!(!String::from_utf8_lossy(&bytes).contains(MARKER), "{name}");
        let unzstd = Command::new("zstd")
            .args(["-dc", "-q"])
            .arg(p)
            .output()
            .unwrap();
        assert!(
            !unzstd.status.success(),
            "{name} decompresses without decryption"
        );
    }
}

#[test]
fn encrypted_backups_store_no_clear_text_and_restore_with_the_identity() {
    let src = source_db();
    let ws = Workspace::new();
    let (key, public) = age_key(&ws, "key.txt");
    let cfg = ws.config(&format!(
        "{}{}",
        encryption(&[&public]),
        pg_target("enc", &src.name, "globals = true")
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let files = ws.stored_files();
    assert_no_clear_text(&files);
    let manifest = std::fs::read_to_string(ws.stored_file(".manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["encryption_recipients"], serde_json::json!([public]));
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret_line = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(!manifest.contains(secret_line) && !r.all().contains(secret_line));

    let dest = TestDb::reserve("bs_age_restored");
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--identity",
            key.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());
    // Spooled for pg_restore --jobs: decrypted on the way to the spool file.
    let parallel = TestDb::reserve("bs_age_jobs");
    let r = run(
        &[
            "restore",
            "--into",
            &parallel.url(),
            "--create",
            "--jobs",
            "2",
            "--identity",
            key.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(parallel.fingerprint(), src.fingerprint());

    // The identity from the environment; the globals object decrypts too.
    let out = backstop()
        .args([
            "restore",
            "--globals",
            "--into",
            &format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres"),
            "--config",
        ])
        .arg(&cfg)
        .env("BACKSTOP_AGE_IDENTITY", &key)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("roles that existed"), "{}", r.all());
}

#[test]
fn an_encrypted_backup_restores_with_age_zstd_and_pg_restore_alone() {
    let src = source_db();
    let ws = Workspace::new();
    let (key, public) = age_key(&ws, "key.txt");
    let cfg = ws.config(&format!(
        "{}{}",
        encryption(&[&public]),
        pg_target("enc", &src.name, "")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let object = ws.stored_file(".dump.zst.age");
    let dest = TestDb::create("bs_age_manual");
    // The README's manual restore, word for word but for the names.
    let script = format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -dc | pg_restore --no-owner -h {PG_HOST} -p {PG_PORT} -U postgres -d '{}'",
        key.display(),
        object.display(),
        dest.name
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dest.sql("SELECT count(*) FROM people"), "5000");
    assert_eq!(
        dest.sql("SELECT md5(string_agg(email, ',' ORDER BY id)) FROM people"),
        src.sql("SELECT md5(string_agg(email, ',' ORDER BY id)) FROM people")
    );
}

#[test]
fn restore_without_the_right_identity_exits_2_naming_the_recipients() {
    let src = source_db();
    let ws = Workspace::new();
    let (_, public) = age_key(&ws, "key.txt");
    let (other, _) = age_key(&ws, "other.txt");
    let cfg = ws.config(&format!(
        "{}{}",
        encryption(&[&public]),
        pg_target("enc", &src.name, "")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let dest = TestDb::reserve("bs_age_nokey");
    let r = run(&["restore", "--into", &dest.url(), "--create"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&public) && r.stderr.contains("--identity"),
        "{}",
        r.all()
    );
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--identity",
            other.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&public) && r.stderr.contains("no identity"),
        "{}",
        r.all()
    );
    assert!(!database_exists(&dest.name));
    assert_eq!(restore_temps(&dest.name), "0");
    // verify refuses the same way, before creating a scratch database.
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = run(
        &[
            "verify",
            "--scratch",
            &scratch,
            "--identity",
            other.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains(&public), "{}", r.all());
}

/// The bug never to have (WAL-G, CVE-2021-38599): a missing key made a run
/// store clear text. With [encryption] present and no usable recipient,
/// nothing is dumped and nothing is stored.
#[test]
fn encryption_without_a_usable_recipient_fails_closed_before_the_dump() {
    let src = source_db();
    let ws = Workspace::new();
    let marker = ws.path("pg_dump-ran");
    let wrapper = ws.script(
        "pg_dump",
        &format!(
            "touch '{}'; exec '{}' \"$@\"",
            marker.display(),
            real_pg_dump()
        ),
    );
    let target = pg_target(
        "enc",
        &src.name,
        &format!("pg_dump_path = \"{}\"", wrapper.display()),
    );
    let id = age::x25519::Identity::generate();
    let private = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
    for (encryption, expect) in [
        (
            "[encryption]\nrecipients = []\n".to_string(),
            "recipients: none given",
        ),
        ("[encryption]\n".to_string(), "recipients: none given"),
        (
            "[encryption]\nrecipients_file = \"/nonexistent/recipients.txt\"\n".to_string(),
            "cannot read /nonexistent/recipients.txt",
        ),
        (
            "[encryption]\nrecipients = [\"age1typo\"]\n".to_string(),
            "recipients[0]",
        ),
        (
            format!("[encryption]\nrecipients = [\"{private}\"]\n"),
            "private key",
        ),
    ] {
        let cfg = ws.config(&format!("{encryption}\n{target}"));
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 2, "{encryption}: {}", r.all());
        assert!(r.stderr.contains(expect), "{encryption}: {}", r.all());
        assert!(!r.all().contains(&private));
        assert!(!marker.exists(), "{encryption}: pg_dump ran");
        assert!(
            ws.stored_files().is_empty(),
            "{encryption}: {:?}",
            ws.stored_files()
        );
    }
}

#[test]
fn encrypted_backups_on_s3_verify_and_restore_from_a_file() {
    let s3 = support::s3::server();
    let bucket = s3.create_bucket("bs-age");
    let src = source_db();
    let ws = Workspace::new();
    // An SSH key as the recipient, decrypted with the SSH private key.
    let ssh_key = ws.path("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "backstop-test", "-f"])
        .arg(&ssh_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    let text = format!(
        "{}\n{}{}",
        s3.storage_toml(&bucket, &s3.endpoint),
        encryption(&[public.trim()]),
        pg_target("enc", &src.name, "")
    );
    let cfg = ws.path("s3.toml");
    std::fs::write(&cfg, text).unwrap();
    let env = s3.env();
    let go = |args: &[&str]| {
        let mut c = backstop();
        c.args(args)
            .arg("--config")
            .arg(&cfg)
            .envs(env.iter().cloned());
        Run::from(c.output().unwrap())
    };
    let r = go(&["backup"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = go(&[
        "verify",
        "--scratch",
        &scratch,
        "--identity",
        ssh_key.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());

    // The same object as a bare file (no manifest): sniffed through age.
    let listed = go(&["list", "--json"]);
    let key = serde_json::from_str::<serde_json::Value>(&listed.stdout).unwrap()[0]["objects"][0]
        ["key"]
        .as_str()
        .map(str::to_string);
    let key = key.unwrap_or_else(|| panic!("no object key in {}", listed.stdout));
    let local = ws.path("copy.dump.zst.age");
    std::fs::write(&local, s3.get(&bucket, &key)).unwrap();
    let dest = TestDb::reserve("bs_age_file");
    let file = local.to_str().unwrap();
    let r = go(&["restore", "--file", file, "--into", &dest.url(), "--create"]);
    assert_eq!(r.code, 2, "without an identity: {}", r.all());
    let r = go(&[
        "restore",
        "--file",
        file,
        "--into",
        &dest.url(),
        "--create",
        "--identity",
        ssh_key.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.sql("SELECT count(*) FROM people"), "5000");
    s3.delete_bucket(&bucket);
}

/// A damaged encrypted object (same size, one byte changed) is refused by
/// its checksum, and nothing is restored.
#[test]
fn a_damaged_encrypted_object_restores_nothing() {
    let src = source_db();
    let ws = Workspace::new();
    let (key, public) = age_key(&ws, "key.txt");
    let cfg = ws.config(&format!(
        "{}{}",
        encryption(&[&public]),
        pg_target("enc", &src.name, "")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    ws.damage_stored(".dump.zst.age");
    let dest = TestDb::reserve("bs_age_trunc");
    let r = run(
        &[
            "restore",
            "--into",
            &dest.url(),
            "--create",
            "--identity",
            key.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("checksum mismatch"), "{}", r.all());
    assert!(!database_exists(&dest.name));
    assert_eq!(restore_temps(&dest.name), "0");
}

/// Regression: with `[encryption]` set, manifests still held the
/// database's settings, its comment, role settings, table names and row
/// counts in clear. Canaries in each (and in a column value) appear in no
/// stored byte, on local disk and on S3, while restore and verify still
/// get all of it back with the identity.
#[test]
fn encrypted_backups_store_nothing_that_describes_the_database() {
    const CANARIES: [&str; 5] = [
        "canary-comment-5d1e",
        "canary-setting-83af",
        "canary-role-setting-c2b7",
        "canary_table_9e04",
        "canary-value-41fa",
    ];
    let src = TestDb::create("bs_sealed");
    let role = unique("bs_sealed_role");
    psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN"));
    src.sql(&format!(
        "COMMENT ON DATABASE \"{db}\" IS '{}';
         ALTER DATABASE \"{db}\" SET app.api_key = '{}';
         ALTER ROLE \"{role}\" IN DATABASE \"{db}\" SET app.k = '{}';
         CREATE TABLE {} (id int PRIMARY KEY, v text);
         INSERT INTO {3} SELECT g, '{}' FROM generate_series(1, 100) g;",
        CANARIES[0],
        CANARIES[1],
        CANARIES[2],
        CANARIES[3],
        CANARIES[4],
        db = src.name,
    ));
    let s3 = support::s3::server();
    let bucket = s3.create_bucket("bs-sealed");
    let ws = Workspace::new();
    let (key, public) = age_key(&ws, "key.txt");
    let text = format!(
        "[storage]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n\n[storages.s3]\n{}{}{}",
        ws.backups().display(),
        s3.storage_toml(&bucket, &s3.endpoint)
            .trim_start_matches("[storage]\n"),
        encryption(&[&public]),
        pg_target(
            "sealed",
            &src.name,
            "globals = true\nstorages = [\"default\", \"s3\"]"
        )
    );
    let cfg = ws.path("sealed.toml");
    std::fs::write(&cfg, text).unwrap();
    let go = |args: &[&str]| {
        Run::from(
            backstop()
                .args(args)
                .arg("--config")
                .arg(&cfg)
                .envs(s3.env())
                .output()
                .unwrap(),
        )
    };
    let r = go(&["backup"]);
    assert_eq!(r.code, 0, "{}", r.all());

    let mut stored: Vec<(String, Vec<u8>)> = ws
        .stored_files()
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let keys = s3.keys(&bucket);
    assert!(
        keys.iter().any(|k| k.ends_with(".manifest.json")),
        "{keys:?}"
    );
    stored.extend(keys.iter().map(|k| (k.clone(), s3.get(&bucket, k))));
    assert!(
        stored.len() >= 6,
        "data, globals and manifest in each: {stored:?}"
    );
    for (name, bytes) in &stored {
        let text = String::from_utf8_lossy(bytes);
        for canary in CANARIES {
            assert!(!text.contains(canary), "{canary} is in {name}");
        }
        assert!(!text.contains(&src.name), "the database name is in {name}");
    }

    // With the identity, restore and verify get everything back.
    let id = key.to_str().unwrap();
    let dest = TestDb::reserve("bs_sealed_copy");
    let r = go(&[
        "restore",
        "--into",
        &dest.url(),
        "--create",
        "--identity",
        id,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dest.fingerprint(), src.fingerprint());
    assert_eq!(
        psql(
            "postgres",
            &format!(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{}'",
                dest.name
            )
        ),
        CANARIES[0]
    );
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    for storage in ["default", "s3"] {
        let r = go(&[
            "--log-format",
            "json",
            "verify",
            "--storage",
            storage,
            "--scratch",
            &scratch,
            "--identity",
            id,
        ]);
        assert_eq!(r.code, 0, "{storage}: {}", r.all());
        let v = &r.summary()["targets"][0]["verified"];
        assert_eq!(v["tables_compared"], 1, "{storage}: {v}");
    }
    // Without it, a restore says what is missing before touching anything.
    let none = TestDb::reserve("bs_sealed_none");
    let r = go(&["restore", "--into", &none.url(), "--create"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!database_exists(&none.name));
    psql("postgres", &format!("DROP ROLE \"{role}\""));
    s3.delete_bucket(&bucket);
}
