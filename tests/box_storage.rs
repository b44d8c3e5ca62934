//! Box storage against the fake Box API: chunked uploads of several parts,
//! single-use refresh tokens rotated and persisted, a refresh in the middle
//! of a run, concurrent runs sharing a token, invalid_grant → exit code 3.

mod support;

use backstop::storage::Storage;
use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET, PART_SIZE};
use support::*;

fn oauth(token_file: &std::path::Path) -> String {
    format!(
        "method = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"${{BOX_CLIENT_SECRET}}\"\ntoken_store = {{ type = \"file\", path = \"{}\" }}",
        token_file.display()
    )
}

fn write_token(path: &std::path::Path, refresh: &str) {
    std::fs::write(path, format!("{{\"refresh_token\": \"{refresh}\"}}")).unwrap();
}

fn stored_refresh(path: &std::path::Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["refresh_token"].as_str().unwrap().to_string()
}

async fn run_env(args: &[&str], cfg: std::path::PathBuf) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Run::from(
            backstop()
                .args(args)
                .arg("--config")
                .arg(&cfg)
                .env("BOX_CLIENT_SECRET", CLIENT_SECRET)
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_backup_goes_in_parts_and_rotates_the_token_safely() {
    let fake = FakeBox::start().await;
    let src = TestDb::create("bs_box_large");
    // ~34 MB of random bytes: a chunked upload of more than 3 parts.
    src.sql(
        "CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
         INSERT INTO blobs SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 1000000) g;",
    );
    let ws = Workspace::new();
    let token = ws.path("state/box-token.json");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    let first = fake.issue_refresh_token();
    write_token(&token, &first);
    let spool = ws.path("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let cfg = ws.path("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[compression]\nalgorithm = \"none\"\n\n{}",
            fake.config_toml("usingandunderstanding-backups", &oauth(&token), &spool),
            pg_target("big", &src.name, "format = \"custom\"")
        ),
    )
    .unwrap();
    fake.inject(
        "/folders/0/items",
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        1,
    );
    fake.inject(
        "/upload_sessions/",
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        1,
    );
    let r = run_env(&["backup"], cfg.clone()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let stored = r.summary()["targets"][0]["stored_bytes"].as_u64().unwrap();
    assert!(stored > 3 * PART_SIZE as u64, "{stored}");
    assert_eq!(fake.stat(|s| s.sessions), 1);
    assert!(fake.stat(|s| s.parts) >= 4);
    assert!(
        fake.stat(|s| s.commit_202s) >= 1,
        "commit honoured 202 + Retry-After"
    );
    assert_eq!(fake.stat(|s| s.injected), 2, "429 and 500 were retried");
    let files = fake.files();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("usingandunderstanding-backups/big/") && f.ends_with(".dump")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with(".manifest.json")),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool removed"
    );

    // The refresh token was rotated once, persisted, and the old one is dead.
    assert_eq!(fake.stat(|s| s.refreshes), 1);
    let now_stored = stored_refresh(&token);
    assert_ne!(now_stored, first);
    assert!(fake.refresh_token_is_valid(&now_stored) && !fake.refresh_token_is_valid(&first));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&token).unwrap();
    assert!(
        !r.all().contains(&now_stored) && !text.is_empty(),
        "tokens are never printed"
    );

    // Restore reads it back through the 302; the stored access token is reused.
    let dest = TestDb::reserve("bs_box_large_restored");
    let url = dest.url();
    let r = tokio::task::spawn_blocking(move || {
        Run::from(
            backstop()
                .args([
                    "restore", "-t", "big", "--into", &url, "--create", "--config",
                ])
                .arg(&cfg)
                .env("BOX_CLIENT_SECRET", CLIENT_SECRET)
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
    assert_eq!(
        fake.stat(|s| s.refreshes),
        1,
        "a still-valid access token is reused, not refreshed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_access_token_mid_run_is_refreshed_once_and_persisted() {
    let fake = FakeBox::start().await;
    let ws = Workspace::new();
    let token = ws.path("token.json");
    write_token(&token, &fake.issue_refresh_token());
    let text = format!(
        "{}\n[[targets]]\nname = \"x\"\ntype = \"postgres\"\ndatabase = \"x\"\n",
        fake.config_toml("b", &oauth(&token), ws.dir.path())
            .replace("${BOX_CLIENT_SECRET}", CLIENT_SECRET)
    );
    let config = backstop::config::Config::parse(&text, std::path::Path::new("box.toml")).unwrap();
    let backstop::config::StorageConfig::Box(b) = &config.storages["default"].storage else {
        panic!()
    };
    let s = backstop::storage::boxcom::BoxStorage::new(b).unwrap();
    backstop::storage::put_bytes(&s, "x/one", bytes::Bytes::from_static(b"1"))
        .await
        .unwrap();
    let after_first = stored_refresh(&token);
    fake.expire_access_tokens(); // the server forgets them: next call gets 401
    backstop::storage::put_bytes(&s, "x/two", bytes::Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(fake.stat(|s| s.refreshes), 2);
    assert!(fake.stat(|s| s.unauthorized) >= 1);
    let after_second = stored_refresh(&token);
    assert_ne!(after_first, after_second);
    assert!(fake.refresh_token_is_valid(&after_second));
    assert_eq!(fake.valid_refresh_tokens(), 1);
    assert_eq!(s.list("x/").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_sharing_one_token_both_succeed_and_leave_one_valid_token() {
    let fake = FakeBox::start().await;
    let db = TestDb::create("bs_box_twice");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let token = ws.path("token.json");
    write_token(&token, &fake.issue_refresh_token());
    let mut configs = Vec::new();
    for name in ["a", "b"] {
        let cfg = ws.path(&format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "{}\n{}",
                fake.config_toml("shared", &oauth(&token), ws.dir.path()),
                pg_target(name, &db.name, "")
            ),
        )
        .unwrap();
        configs.push(cfg);
    }
    let runs: Vec<_> = configs
        .into_iter()
        .map(|cfg| run_env(&["backup"], cfg))
        .collect();
    for r in futures::future::join_all(runs).await {
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert_eq!(
        fake.valid_refresh_tokens(),
        1,
        "exactly one valid refresh token"
    );
    assert!(
        fake.refresh_token_is_valid(&stored_refresh(&token)),
        "and it is the stored one"
    );
    assert_eq!(
        fake.stat(|s| s.invalid_grants),
        0,
        "the lock made the second run reuse the first's token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_exits_3_and_says_how_to_reauthorise() {
    let fake = FakeBox::start().await;
    let db = TestDb::create("bs_box_grant");
    let ws = Workspace::new();
    let token = ws.path("token.json");
    write_token(&token, "refresh-already-used-or-revoked");
    let cfg = ws.path("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}",
            fake.config_toml("f", &oauth(&token), ws.dir.path()),
            pg_target("x", &db.name, "[targets.retention]\nkeep_last = 2")
        ),
    )
    .unwrap();
    let r = run_env(&["backup"], cfg.clone()).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let t = &r.summary()["targets"][0];
    assert_eq!(t["stage"], "auth");
    let err = t["error"].as_str().unwrap();
    assert!(
        err.contains("invalid_grant") && err.contains("backstop auth box login"),
        "{err}"
    );
    assert!(fake.files().is_empty());
    assert!(!r.all().contains(CLIENT_SECRET));
    // Regression (exit code 3 only from `backup`): every command that
    // meets the revoked token says a person is needed.
    let into = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/x");
    for args in [
        vec!["list"],
        vec!["status"],
        vec!["prune"],
        vec!["restore", "--into", &into, "--create"],
        vec!["verify", "--scratch", &into],
        vec!["check"],
    ] {
        let r = run_env(&args, cfg.clone()).await;
        assert_eq!(r.code, 3, "{args:?}: {}", r.all());
        assert!(r.all().contains("invalid_grant"), "{args:?}: {}", r.all());
        assert!(!r.all().contains(CLIENT_SECRET));
    }
    // Regression (`check` and `copy --to box` exited 1): copying a local
    // backup into the Box storage meets the token too.
    let local = ws.path("local");
    let with_local = ws.path("with-local.toml");
    std::fs::write(
        &with_local,
        format!(
            "{}\n[storages.local]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n\n{}",
            fake.config_toml("f", &oauth(&token), ws.dir.path()),
            local.display(),
            pg_target("x", &db.name, "storages = [\"local\"]")
        ),
    )
    .unwrap();
    let r = run_env(&["backup"], with_local.clone()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run_env(&["copy", "--from", "local", "--to", "default"], with_local).await;
    assert_eq!(r.code, 3, "copy --to box: {}", r.all());
    assert!(r.all().contains("invalid_grant"), "{}", r.all());
}

fn secret_store_auth() -> String {
    format!(
        "method = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"${{BOX_CLIENT_SECRET}}\"\ntoken_store = {{ type = \"kubernetes-secret\", name = \"backstop-box-token\", key = \"token\" }}"
    )
}

async fn run_with_kubeconfig(cfg: std::path::PathBuf, kubeconfig: std::path::PathBuf) -> Run {
    tokio::task::spawn_blocking(move || {
        Run::from(
            backstop()
                .args(["backup", "--config"])
                .arg(&cfg)
                .env("BOX_CLIENT_SECRET", CLIENT_SECRET)
                .env("KUBECONFIG", &kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_sharing_one_kubernetes_secret_both_succeed_with_one_valid_token() {
    let fake = FakeBox::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    let ws = Workspace::new();
    let first = fake.issue_refresh_token();
    kube.put_secret(
        "backups",
        "backstop-box-token",
        "token",
        &format!("{{\"refresh_token\": \"{first}\"}}"),
    );
    let kubeconfig = kube.kubeconfig(ws.dir.path(), "backups");
    let db = TestDb::create("bs_box_secret");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let cfg = ws.path(&format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "{}\n{}",
                fake.config_toml("shared", &secret_store_auth(), ws.dir.path()),
                pg_target(name, &db.name, "")
            ),
        )
        .unwrap();
        runs.push(run_with_kubeconfig(cfg, kubeconfig.clone()));
    }
    for r in futures::future::join_all(runs).await {
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let stored: serde_json::Value =
        serde_json::from_str(&kube.secret_value("backups", "backstop-box-token", "token")).unwrap();
    let stored = stored["refresh_token"].as_str().unwrap();
    assert_ne!(stored, first, "rotated");
    assert!(
        fake.refresh_token_is_valid(stored),
        "the stored refresh token is the valid one"
    );
    assert_eq!(
        fake.valid_refresh_tokens(),
        1,
        "exactly one valid refresh token"
    );
    assert_eq!(
        fake.stat(|s| s.refreshes),
        1,
        "one run refreshed, the other used its token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_that_may_not_be_updated_is_never_refreshed() {
    let fake = FakeBox::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    kube.state.lock().unwrap().allow_update = false;
    let ws = Workspace::new();
    let first = fake.issue_refresh_token();
    kube.put_secret(
        "backups",
        "backstop-box-token",
        "token",
        &format!("{{\"refresh_token\": \"{first}\"}}"),
    );
    let kubeconfig = kube.kubeconfig(ws.dir.path(), "backups");
    let db = TestDb::create("bs_box_ro");
    let cfg = ws.path("b.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}",
            fake.config_toml("f", &secret_store_auth(), ws.dir.path()),
            pg_target("x", &db.name, "")
        ),
    )
    .unwrap();
    let r = run_with_kubeconfig(cfg, kubeconfig).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.summary()["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("may not update"),
        "{}",
        r.all()
    );
    assert_eq!(
        fake.stat(|s| s.refreshes),
        0,
        "the old token was not consumed"
    );
    assert!(fake.refresh_token_is_valid(&first));
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_store_writes_are_conditional_on_resource_version() {
    use backstop::tokens::{kubernetes::SecretStore, SaveOutcome, TokenSet, TokenStore};
    let kube = support::fake_kube::FakeKube::start().await;
    let ws = Workspace::new();
    kube.put_secret("ns1", "tok", "token", "{\"refresh_token\": \"r1\"}");
    std::env::set_var("KUBECONFIG", kube.kubeconfig(ws.dir.path(), "ns1"));
    let store = SecretStore::new("tok", "token", None);
    let read = store.load().await.unwrap();
    assert_eq!(read.token.refresh_token.expose(), "r1");
    let mine = TokenSet {
        access_token: None,
        expires_at: None,
        refresh_token: backstop::config::Secret::new("r2"),
        refresh_token_issued_at: None,
    };
    // Someone else writes first: our write must not land.
    kube.put_secret("ns1", "tok", "token", "{\"refresh_token\": \"theirs\"}");
    match store.save(&mine, &read.version).await.unwrap() {
        SaveOutcome::Conflict(current) => {
            assert_eq!(current.token.refresh_token.expose(), "theirs")
        }
        SaveOutcome::Saved => panic!("a stale write must not succeed"),
    }
    assert_eq!(
        kube.state.lock().unwrap().conflicts,
        1,
        "the API server answered 409"
    );
    let fresh = store.load().await.unwrap();
    assert!(matches!(
        store.save(&mine, &fresh.version).await.unwrap(),
        SaveOutcome::Saved
    ));
    assert!(kube.secret_value("ns1", "tok", "token").contains("r2"));
}
