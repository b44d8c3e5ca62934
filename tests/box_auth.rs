//! `backstop auth`: importing rclone's Box token, the browser login flow,
//! and a status that never prints a token.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET};
use support::*;

fn config(fake: &FakeBox, ws: &Workspace, token: &std::path::Path, db: &str) -> std::path::PathBuf {
    let auth = format!(
        "method = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_store = {{ type = \"file\", path = \"{}\" }}",
        token.display()
    );
    let p = ws.path("backstop.toml");
    std::fs::write(
        &p,
        format!(
            "{}\n{}",
            fake.config_toml("f", &auth, ws.dir.path()),
            pg_target("x", db, "")
        ),
    )
    .unwrap();
    p
}

async fn cli(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || Run::from(backstop().args(&args).output().unwrap()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn import_rclone_refuses_a_remote_of_rclones_built_in_app() {
    // Regression: `rclone config` without a client id uses rclone's own Box
    // app; its token cannot be refreshed with ours, and was imported silently.
    let fake = FakeBox::start().await;
    let ws = Workspace::new();
    let token = ws.path("box-token.json");
    let cfg = config(&fake, &ws, &token, "postgres");
    let rclone = ws.path("rclone.conf");
    for remote in [
        "[box]\ntype = box\ntoken = {\"access_token\":\"a\",\"token_type\":\"bearer\",\"refresh_token\":\"r\",\"expiry\":\"2020-01-01T00:00:00Z\"}\n".to_string(),
        "[box]\ntype = box\nclient_id = someone-elses-app\nclient_secret = s\ntoken = {\"access_token\":\"a\",\"token_type\":\"bearer\",\"refresh_token\":\"r\",\"expiry\":\"2020-01-01T00:00:00Z\"}\n".to_string(),
    ] {
        std::fs::write(&rclone, remote).unwrap();
        let r = cli(vec![
            "auth".into(),
            "box".into(),
            "import-rclone".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--rclone-config".into(),
            rclone.display().to_string(),
        ])
        .await;
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains("type = \\\"rclone\\\"") || r.stderr.contains("type = \"rclone\""),
            "{}",
            r.all()
        );
        assert!(r.stderr.contains("backstop auth box login"), "{}", r.all());
        assert!(!token.exists(), "nothing was imported");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_rclone_then_backup_and_status() {
    let fake = FakeBox::start().await;
    let db = TestDb::create("bs_import");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let token = ws.path("box-token.json");
    let cfg = config(&fake, &ws, &token, &db.name);
    let refresh = fake.issue_refresh_token();
    let rclone = ws.path("rclone.conf");
    std::fs::write(
        &rclone,
        format!(
            "[other]\ntype = s3\n\n[box]\ntype = box\nclient_id = {CLIENT_ID}\nclient_secret = {CLIENT_SECRET}\ntoken = {{\"access_token\":\"stale-access\",\"token_type\":\"bearer\",\"refresh_token\":\"{refresh}\",\"expiry\":\"2020-01-01T00:00:00Z\"}}\n"
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let r = cli(vec![
        "auth".into(),
        "box".into(),
        "import-rclone".into(),
        "--config".into(),
        c.clone(),
        "--rclone-config".into(),
        rclone.display().to_string(),
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(std::fs::read_to_string(&token).unwrap().contains(&refresh));
    assert!(
        r.stdout.contains("single-use") && r.stdout.contains("rclone config reconnect box:"),
        "the laptop's remote must not be used any more: {}",
        r.stdout
    );
    let r = cli(vec![
        "auth".into(),
        "status".into(),
        "--config".into(),
        c.clone(),
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("method: oauth")
            && r.stdout.contains("expired")
            && r.stdout.contains("age unknown"),
        "{}",
        r.stdout
    );
    assert!(
        !r.all().contains(&refresh) && !r.all().contains("stale-access"),
        "status never prints tokens"
    );

    let textfile = ws.path("backstop.prom");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[metrics]\ntextfile = \"{}\"\n",
        textfile.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let r = cli(vec!["backup".into(), "--config".into(), c.clone()]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !fake.refresh_token_is_valid(&refresh),
        "the imported token was used and rotated"
    );
    // The rotated refresh token's expiry, for the "near expiry" alert.
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("backstop_storage_credential_expiry_timestamp_seconds{"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no expiry metric: {metrics}"));
    let in_60_days = (chrono::Utc::now() + chrono::Duration::days(60)).timestamp() as f64;
    assert!(
        (expiry - in_60_days).abs() < 300.0,
        "{expiry} vs {in_60_days}"
    );
    let r = cli(vec!["auth".into(), "status".into(), "--config".into(), c]).await;
    assert!(
        r.stdout.contains("0 days ago") && r.stdout.contains("valid until"),
        "{}",
        r.stdout
    );

    // A wrong remote name is a usage error.
    let r = cli(vec![
        "auth".into(),
        "box".into(),
        "import-rclone".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--rclone-config".into(),
        rclone.display().to_string(),
        "--remote".into(),
        "other".into(),
    ])
    .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not of type box"), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_runs_the_authorization_code_flow_and_stores_the_token() {
    let fake = FakeBox::start().await;
    let ws = Workspace::new();
    let token = ws.path("state/box-token.json");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    let cfg = config(&fake, &ws, &token, "unused");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = backstop()
        .args([
            "auth",
            "box",
            "login",
            "--port",
            &port.to_string(),
            "--config",
        ])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("login prints the authorize URL")
            .unwrap();
        if line.starts_with("http") {
            break line;
        }
    };
    let parsed = url::Url::parse(&url).unwrap();
    assert!(
        url.starts_with(&format!("{}/authorize?", fake.url)),
        "{url}"
    );
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    // Regression (the OAuth state came from a non-cryptographic RNG): 128
    // bits from the OS, hex.
    assert_eq!(q["state"].len(), 32, "{}", q["state"]);
    assert!(q["state"].chars().all(|c| c.is_ascii_hexdigit()));
    // Act as the browser after consent: Box redirects with code and state.
    let redirect = format!(
        "{}?code={}&state={}",
        q["redirect_uri"],
        fake.issue_code(),
        q["state"]
    );
    let page = backstop::http::client()
        .unwrap()
        .get(&redirect)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&token).unwrap()).unwrap();
    assert!(fake.refresh_token_is_valid(stored["refresh_token"].as_str().unwrap()));
    assert!(stored["refresh_token_issued_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_warns_when_the_refresh_token_nears_sixty_days() {
    let fake = FakeBox::start().await;
    let ws = Workspace::new();
    let token = ws.path("t.json");
    let issued = (chrono::Utc::now() - chrono::Duration::days(50)).to_rfc3339();
    std::fs::write(
        &token,
        format!("{{\"refresh_token\":\"r\",\"refresh_token_issued_at\":\"{issued}\"}}"),
    )
    .unwrap();
    let cfg = config(&fake, &ws, &token, "unused");
    let r = cli(vec![
        "auth".into(),
        "status".into(),
        "--config".into(),
        cfg.display().to_string(),
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("WARNING") && r.stdout.contains("50 days"),
        "{}",
        r.stdout
    );
}
