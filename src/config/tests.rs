use super::*;
use crate::error::{exit_kind_of, ExitKind};

const MINIMAL: &str = r#"
[storage]
type = "local"
path = "/tmp/b"

[[targets]]
name = "prod"
type = "postgres"
database = "app"
"#;

fn parse(text: &str) -> anyhow::Result<Config> {
    Config::parse(text, Path::new("/etc/backstop/test.toml"))
}

fn err(text: &str) -> String {
    let e = parse(text).unwrap_err();
    assert_eq!(
        exit_kind_of(&e),
        ExitKind::Usage,
        "config errors are usage errors: {e:#}"
    );
    format!("{e:#}")
}

#[test]
fn example_config_parses_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backstop.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&text, &path).unwrap();
    assert_eq!(config.targets[0].name(), "local");
    assert!(config.retention.is_some());
    // Every key the config types know must appear in the example, set or
    // commented out, so the documentation cannot fall behind the code.
    let mut full = config.clone();
    let TargetConfig::Postgres(pg) = &mut full.targets[0] else {
        panic!("the example's first target is postgres")
    };
    pg.password = Some(Secret::new("x"));
    pg.password_file = Some("x".into());
    pg.pg_dump_path = Some("x".into());
    pg.sslmode = Some("x".into());
    pg.retention = full.retention.clone();
    pg.retry = full.retry;
    pg.storages = vec!["default".into()];
    full.encryption = Some(crate::crypto::EncryptionConfig {
        recipients: vec!["x".into()],
        recipients_file: Some("x".into()),
        identity_file: Some("x".into()),
        resolved: Vec::new(),
    });
    // Storages are checked below, type by type; here only the table name
    // and a storage's own retention.
    let named = std::mem::take(&mut full.storages);
    let mut keys = vec!["storages".to_string()];
    for entry in named.values() {
        let mut entry = entry.clone();
        entry.retention = full.retention.clone();
        let v = toml::Value::try_from(&entry).unwrap();
        collect_keys(&v, &mut keys);
    }
    if let Some(r) = &mut full.retention {
        r.timezone = Some(TimeZoneName(chrono_tz::UTC));
    }
    collect_keys(&toml::Value::try_from(&full).unwrap(), &mut keys);
    // The storage types not used in the example are documented there too.
    let s3 = StorageConfig::S3(S3StorageConfig {
        bucket: "b".into(),
        prefix: "p".into(),
        region: "r".into(),
        endpoint: Some("e".into()),
        path_style: Some(true),
        access_key_id: Some("k".into()),
        secret_access_key: Some(Secret::new("s")),
        storage_class: Some("c".into()),
        idle_timeout: crate::config::HumanDuration(std::time::Duration::from_secs(30)),
    });
    collect_keys(&toml::Value::try_from(&s3).unwrap(), &mut keys);
    // Every notifier and the metrics table, with every optional key set.
    let all_notify: Config = toml::from_str::<toml::Value>(
        r#"
        [storage]
        type = "local"
        path = "x"
        [[targets]]
        type = "postgres"
        name = "x"
        database = "x"
        [[notify]]
        type = "smtp"
        host = "h"
        port = 25
        tls = "none"
        tls_ca_file = "x"
        username = "u"
        password = "p"
        password_file = "f"
        from = "a@b.c"
        to = ["a@b.c"]
        [[notify]]
        type = "webhook"
        url = "http://x"
        headers = { A = "b" }
        [[notify]]
        type = "ping"
        url = "http://x"
        [metrics]
        pushgateway = "http://x"
        textfile = "x"
        [schedule]
        cron = "0 2 * * *"
        timezone = "UTC"
        "#,
    )
    .unwrap()
    .try_into()
    .unwrap();
    collect_keys(
        &toml::Value::try_from(&all_notify.notify).unwrap(),
        &mut keys,
    );
    collect_keys(
        &toml::Value::try_from(&all_notify.metrics).unwrap(),
        &mut keys,
    );
    collect_keys(
        &toml::Value::try_from(&all_notify.schedule).unwrap(),
        &mut keys,
    );
    for storage in [
        r#"
        type = "box"
        folder = "f"
        root_folder_id = "0"
        prefix = "p"
        spool_dir = "/s"
        api_url = "http://x"
        upload_url = "http://x"
        token_url = "http://x"
        authorize_url = "http://x"
        [auth]
        method = "oauth"
        client_id = "i"
        client_secret = "s"
        token_store = { type = "kubernetes-secret", name = "n", key = "k", namespace = "ns" }
        "#,
        r#"
        type = "box"
        folder = "f"
        [auth]
        method = "ccg"
        client_id = "i"
        client_secret = "s"
        subject_type = "enterprise"
        subject_id = "1"
        "#,
        r#"
        type = "rclone"
        remote = "r:p"
        prefix = "p"
        rclone_config = "/c"
        rclone_config_secret = { name = "n", key = "k", namespace = "ns" }
        "#,
    ] {
        let parsed: StorageConfig = toml::from_str(storage).unwrap();
        collect_keys(&toml::Value::try_from(&parsed).unwrap(), &mut keys);
    }
    // The other engines' targets, every key set.
    let engines: Config = toml::from_str::<toml::Value>(
        r#"
        [storage]
        type = "local"
        path = "x"
        [[targets]]
        type = "mysql"
        name = "m"
        host = "h"
        port = 1
        user = "u"
        password = "p"
        password_file = "f"
        database = "d"
        databases = ["d"]
        all = true
        storages = ["default"]
        retry = { attempts = 1 }
        [[targets]]
        type = "sqlite"
        name = "s"
        path = "/x.db"
        storages = ["default"]
        "#,
    )
    .unwrap()
    .try_into()
    .unwrap();
    collect_keys(&toml::Value::try_from(&engines.targets).unwrap(), &mut keys);
    keys.retain(|k| k != "A");
    for key in keys {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            (l.starts_with(&format!("{key} ="))
                || (l.starts_with('[') && l.trim_end().ends_with(&format!(".{key}]"))))
                || l.starts_with(&format!("[{key}]"))
                || l.starts_with(&format!("[[{key}]]"))
        });
        assert!(
            documented,
            "config key `{key}` is not documented in examples/backstop.toml"
        );
    }
}

fn collect_keys(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                out.push(k.clone());
                collect_keys(v, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

#[test]
fn defaults_fill_in_what_is_left_out() {
    let c = parse(MINIMAL).unwrap();
    let TargetConfig::Postgres(pg) = &c.targets[0] else {
        panic!("postgres target")
    };
    assert_eq!(
        (pg.host.as_str(), pg.port, pg.user.as_str()),
        ("localhost", 5432, "postgres")
    );
    assert_eq!(pg.format, PgFormat::Custom);
    assert_eq!(c.compression.algorithm, Algorithm::Zstd);
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let e = err(&MINIMAL.replace("database = \"app\"", "database = \"app\"\nhostt = \"x\""));
    assert!(
        e.contains("test.toml") && e.contains("targets[0]") && e.contains("hostt"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[compression]\nalgo = \"zstd\"\n"));
    assert!(e.contains("compression") && e.contains("algo"), "{e}");
}

#[test]
fn wrong_types_and_values_name_the_key() {
    let e = err(&MINIMAL.replace("database = \"app\"", "database = \"app\"\nport = \"x\""));
    assert!(e.contains("targets[0].port"), "{e}");
    let e = err(&MINIMAL.replace("type = \"postgres\"", "type = \"oracle\""));
    assert!(e.contains("oracle"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[compression]\nalgorithm = \"gzip\"\nlevel = 12\n"
    ));
    assert!(e.contains("compression.level") && e.contains("12"), "{e}");
    let e = err(&MINIMAL.replace("name = \"prod\"", "name = \"Prod_1\""));
    assert!(e.contains("targets[0].name"), "{e}");
}

#[test]
fn duplicate_target_names_are_rejected() {
    let twice =
        format!("{MINIMAL}\n[[targets]]\nname = \"prod\"\ntype = \"postgres\"\ndatabase = \"b\"\n");
    let e = err(&twice);
    assert!(
        e.contains("targets[1].name") && e.contains("duplicate"),
        "{e}"
    );
}

#[test]
fn unset_variable_names_variable_and_key() {
    let e = err(&MINIMAL.replace(
        "database = \"app\"",
        "database = \"app\"\npassword = \"${BACKSTOP_TEST_SURELY_UNSET}\"",
    ));
    assert!(
        e.contains("targets[0].password") && e.contains("BACKSTOP_TEST_SURELY_UNSET"),
        "{e}"
    );
}

#[test]
fn password_file_is_read_and_never_rendered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2-secret\n").unwrap();
    let text = MINIMAL.replace(
        "database = \"app\"",
        "database = \"app\"\npassword_file = \"pw\"",
    );
    let c = Config::parse(&text, &dir.path().join("b.toml")).unwrap();
    let TargetConfig::Postgres(pg) = &c.targets[0] else {
        panic!("postgres target")
    };
    assert_eq!(pg.password.as_ref().unwrap().expose(), "hunter2-secret");
    let rendered = c.to_redacted_toml();
    assert!(
        !rendered.contains("hunter2") && rendered.contains(REDACTED),
        "{rendered}"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn unreadable_password_file_names_file_and_key() {
    let e = err(&MINIMAL.replace(
        "database = \"app\"",
        "database = \"app\"\npassword_file = \"/nonexistent/pw\"",
    ));
    assert!(
        e.contains("targets[0].password_file") && e.contains("/nonexistent/pw"),
        "{e}"
    );
}

#[test]
fn password_and_password_file_together_are_rejected() {
    let e = err(&MINIMAL.replace(
        "database = \"app\"",
        "database = \"app\"\npassword = \"a\"\npassword_file = \"b\"",
    ));
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn malformed_toml_names_the_file() {
    let e = err("[storage\n");
    assert!(e.contains("/etc/backstop/test.toml"), "{e}");
}

/// Regression (config validation gaps: each of these was accepted): every
/// one is refused with exit 2, naming the key, and the context is printed
/// once.
#[test]
fn malformed_values_that_used_to_pass_are_refused_naming_the_key() {
    let s3 = |extra: &str| {
        format!(
            "[storage]\ntype = \"s3\"\nbucket = \"b\"\n{extra}\n[[targets]]\nname = \"p\"\ntype = \"postgres\"\ndatabase = \"d\"\n"
        )
    };
    let with_target = |extra: &str| {
        MINIMAL.replace(
            "database = \"app\"",
            &format!("database = \"app\"\n{extra}"),
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (s3("endpoint = \"not a url\""), "storage.endpoint"),
        (s3("endpoint = \"ftp://minio:9000\""), "storage.endpoint"),
        (
            s3("prefix = \"/abs/prefix\""),
            "storage.prefix: `/abs/prefix` is absolute",
        ),
        (
            with_target("pg_dump_path = \"/nonexistent/pg_dump\""),
            "targets[0].pg_dump_path",
        ),
        (
            format!("{MINIMAL}\n[compression]\nalgorithm = \"zstd\"\nlevel = 0\n"),
            "compression.level: 0",
        ),
        (
            format!("{MINIMAL}\n[retention]\nkeep_within = \"0s\"\n"),
            "retention: keep_within",
        ),
        (
            MINIMAL.replace("database = \"app\"", "database = \"app\"\nport = \"x\""),
            "targets[0].port: invalid type",
        ),
    ];
    for (text, expected) in cases {
        let e = err(&text);
        assert!(e.contains(expected), "expected `{expected}` in: {e}");
        assert!(!e.contains("\nin `"), "context printed twice: {e}");
    }
}

const COPIES: &str = r#"
[storage]
type = "local"
path = "/tmp/a"

[storages.zeta]
type = "local"
path = "/tmp/z"
[storages.zeta.retention]
keep_monthly = 24

[storages.alpha]
type = "local"
path = "/tmp/b"

[retention]
keep_daily = 7

[[targets]]
name = "prod"
type = "postgres"
database = "app"

[[targets]]
name = "dev"
type = "postgres"
database = "dev"
storages = ["alpha"]
[targets.retention]
keep_last = 2
"#;

#[test]
fn named_storages_keep_their_order_and_retention_is_per_storage() {
    let c = parse(COPIES).unwrap();
    let names: Vec<&str> = c.storages.keys().map(String::as_str).collect();
    assert_eq!(names, ["default", "zeta", "alpha"]);
    let (prod, dev) = (&c.targets[0], &c.targets[1]);
    assert_eq!(c.storages_for(prod), ["default", "zeta", "alpha"]);
    assert_eq!(c.storages_for(dev), ["alpha"]);
    let keep = |t, s| c.retention_for(t, s).unwrap().policy();
    assert_eq!(keep(prod, "default").keep_daily, 7);
    assert_eq!(keep(prod, "zeta").keep_monthly, 24);
    assert_eq!(keep(dev, "alpha").keep_last, 2);
    assert_eq!(keep(dev, "zeta").keep_monthly, 24);
}

#[test]
fn storage_names_are_checked() {
    let e = err(&COPIES.replace("storages = [\"alpha\"]", "storages = [\"beta\"]"));
    assert!(
        e.contains(
            "targets[1].storages: no storage named `beta` (configured: default, zeta, alpha)"
        ),
        "{e}"
    );
    let e = err(&COPIES.replace(
        "storages = [\"alpha\"]",
        "storages = [\"alpha\", \"alpha\"]",
    ));
    assert!(e.contains("named twice"), "{e}");
    let e = err(&COPIES.replace("[storages.alpha]", "[storages.default]"));
    assert!(e.contains("[storage] is already named \"default\""), "{e}");
    let e = err(&COPIES.replace("keep_monthly = 24", "keep_montly = 24"));
    assert!(
        e.contains("storages.zeta.retention.keep_montly: unknown field"),
        "{e}"
    );
    let e = err(&COPIES.replace("path = \"/tmp/b\"", "path = \"\""));
    assert!(e.contains("storages.alpha.path: must not be empty"), "{e}");
    let none = "[[targets]]\nname = \"x\"\ntype = \"postgres\"\ndatabase = \"x\"\n";
    assert!(err(none).contains("no storage"), "{}", err(none));
}
