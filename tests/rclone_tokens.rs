//! rclone rewrites its config when it refreshes an OAuth token; backstop
//! runs rclone on a private copy and must write the rotated token back, or
//! the next run starts from a revoked single-use refresh token. Real rclone
//! (its Box backend, pointed at the fake Box token endpoint).

mod support;

use backstop::storage::Storage;
use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET};

/// An rclone config whose Box token has expired, refreshing at the fake.
fn expired_box_remote(fake: &FakeBox, refresh: &str) -> String {
    format!(
        "[rbox]\ntype = box\nclient_id = {CLIENT_ID}\nclient_secret = {CLIENT_SECRET}\ntoken_url = {}/oauth2/token\n\
         token = {{\"access_token\":\"old\",\"token_type\":\"bearer\",\"refresh_token\":\"{refresh}\",\"expiry\":\"2020-01-01T00:00:00Z\"}}\n",
        fake.url
    )
}

fn refresh_token_in(text: &str) -> String {
    let start = text
        .find("\"refresh_token\":\"")
        .expect("a token in the config")
        + 17;
    text[start..start + text[start..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_rclone_refreshed_is_written_back_to_its_config() {
    let fake = FakeBox::start().await;
    let first = fake.issue_refresh_token();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    std::fs::write(&conf, expired_box_remote(&fake, &first)).unwrap();
    let s = backstop::storage::rclone::RcloneStorage::new(&backstop::config::RcloneStorageConfig {
        remote: "rbox:backups".into(),
        prefix: String::new(),
        rclone_config: Some(conf.clone()),
        rclone_config_secret: None,
    })
    .unwrap();
    // The listing itself cannot reach api.box.com from here; the refresh
    // before it goes to the fake token endpoint.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(120), s.list("x/")).await;
    assert_eq!(
        fake.stat(|s| s.refreshes),
        1,
        "rclone refreshed the expired token"
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        !text.contains(&first),
        "the used refresh token is gone from the config:\n{text}"
    );
    assert!(
        fake.refresh_token_is_valid(&refresh_token_in(&text)),
        "the stored refresh token is the valid, rotated one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_rclone_refreshed_is_written_back_to_its_kubernetes_secret() {
    let fake = FakeBox::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    let first = fake.issue_refresh_token();
    kube.put_secret(
        "ops",
        "rclone",
        "rclone.conf",
        &expired_box_remote(&fake, &first),
    );
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("KUBECONFIG", kube.kubeconfig(dir.path(), "ops"));
    let text = "[storage]\ntype = \"rclone\"\nremote = \"rbox:backups\"\nrclone_config_secret = { name = \"rclone\" }\n\n\
                [[targets]]\nname = \"x\"\ntype = \"postgres\"\ndatabase = \"x\"\n";
    let config = backstop::config::Config::parse(text, std::path::Path::new("r.toml")).unwrap();
    let s = backstop::storage::from_config(&config.storages["default"].storage).unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(120), s.list("x/")).await;
    assert_eq!(fake.stat(|s| s.refreshes), 1);
    let stored = kube.secret_value("ops", "rclone", "rclone.conf");
    assert!(
        fake.refresh_token_is_valid(&refresh_token_in(&stored)),
        "the Secret holds the rotated token:\n{stored}"
    );
    assert_eq!(
        kube.state.lock().unwrap().puts,
        1,
        "written back once, conditionally"
    );
}
