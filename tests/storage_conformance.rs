//! One conformance suite that every storage backend runs, as named
//! properties: each property is one test per backend (`local::…`,
//! `s3::…`, `boxcom::…`, `rclone_local::…`, `rclone_webdav::…`), so a
//! failure names the backend and the promise it broke. Adding a backend
//! means adding one fixture and one `suite!` line.

mod support;

use backstop::storage::{self, Storage, StorageError};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;

async fn read_all(s: &dyn Storage, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut stream = s.open(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn put(s: &dyn Storage, key: &str, data: &[u8]) -> Result<(), StorageError> {
    let mut up = s.create(key).await?;
    // Uneven chunks, to cross any internal part or buffer boundary.
    for part in data.chunks(777_777) {
        up.write(Bytes::copy_from_slice(part)).await?;
    }
    up.commit().await.map(|_| ())
}

async fn keys(s: &dyn Storage, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How a run killed outright (no chance to abort) leaves an upload behind.
#[derive(Clone, Copy)]
enum KilledRun {
    /// The upload is dropped on the floor without abort or commit.
    Forget,
    /// The backend's temp object stays (rclone's `rcat` target).
    TempObject,
}

/// One backend under test, fresh for each property.
struct Fixture {
    storage: Arc<dyn Storage>,
    /// Keys the paging property writes (over 1000 crosses S3's page size).
    many: usize,
    killed: KilledRun,
    /// What the backend holds beyond its listing (temp files, multipart
    /// uploads, open sessions, spool files): must be empty after each property.
    leftovers: Box<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>,
    _guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl Fixture {
    async fn finish(self, root: &str) {
        let s = &*self.storage;
        for m in s.list(&format!("{root}/")).await.unwrap() {
            s.delete(&m.key).await.unwrap();
        }
        assert!(keys(s, &format!("{root}/")).await.is_empty());
        let left = (self.leftovers)().await;
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

const ROOT: &str = "conf";

async fn round_trip_changes_nothing(f: &Fixture) {
    let s = &*f.storage;
    // Across part boundaries (> 8 MiB for S3).
    let data = pseudo_random(9 << 20 | 12345, 7);
    let key = format!("{ROOT}/rt/2026-01-01/obj.dump.zst");
    put(s, &key, &data).await.unwrap();
    let back = read_all(s, &key).await.unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let listed = s.list(&format!("{ROOT}/rt/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, data.len() as u64);
}

async fn commit_never_overwrites(f: &Fixture) {
    let s = &*f.storage;
    let data = pseudo_random(1 << 20, 9);
    let key = format!("{ROOT}/once/obj");
    put(s, &key, &data).await.unwrap();
    let err = put(s, &key, b"intruder").await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    let err = put(s, &key, &pseudo_random(9 << 20, 3)).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists { .. }),
        "multipart too: {err:?}"
    );
    assert_eq!(
        Sha256::digest(read_all(s, &key).await.unwrap()),
        Sha256::digest(&data)
    );
}

async fn uploads_are_invisible_until_commit_and_abort_leaves_nothing(f: &Fixture) {
    let s = &*f.storage;
    let pending = format!("{ROOT}/abort/obj");
    let mut up = s.create(&pending).await.unwrap();
    up.write(Bytes::from(pseudo_random(9 << 20, 5)))
        .await
        .unwrap();
    assert!(
        keys(s, &format!("{ROOT}/abort/")).await.is_empty(),
        "visible before commit"
    );
    assert!(matches!(
        read_all(s, &pending).await,
        Err(StorageError::NotFound { .. })
    ));
    up.abort().await.unwrap();
    assert!(
        keys(s, &format!("{ROOT}/abort/")).await.is_empty(),
        "abort leaves nothing"
    );
    // A small upload aborted before any part went out.
    let mut up = s.create(&pending).await.unwrap();
    up.write(Bytes::from_static(b"tiny")).await.unwrap();
    up.abort().await.unwrap();
    assert!(keys(s, &format!("{ROOT}/abort/")).await.is_empty());
}

async fn an_empty_stream_commits_an_empty_object(f: &Fixture) {
    let s = &*f.storage;
    let empty = format!("{ROOT}/empty/obj");
    let up = s.create(&empty).await.unwrap();
    up.commit().await.unwrap();
    assert_eq!(read_all(s, &empty).await.unwrap(), Vec::<u8>::new());
    assert_eq!(s.list(&format!("{ROOT}/empty/")).await.unwrap()[0].size, 0);
}

async fn every_allowed_character_works_and_bad_keys_are_refused(f: &Fixture) {
    let s = &*f.storage;
    let odd = format!("{ROOT}/chars/AZaz09._-/x.y_z-0.manifest.json");
    put(s, &odd, b"{}").await.unwrap();
    assert_eq!(read_all(s, &odd).await.unwrap(), b"{}");
    assert_eq!(keys(s, &format!("{ROOT}/chars/")).await, vec![odd.clone()]);
    // Keys that could escape or confuse are refused before any I/O, by
    // every operation.
    for bad in ["../x", "/abs", "a//b", "sp ace"] {
        assert!(
            matches!(s.create(bad).await, Err(StorageError::InvalidKey { .. })),
            "create {bad}"
        );
        assert!(
            matches!(s.open(bad).await, Err(StorageError::InvalidKey { .. })),
            "open {bad}"
        );
        assert!(
            matches!(s.delete(bad).await, Err(StorageError::InvalidKey { .. })),
            "delete {bad}"
        );
    }
}

async fn concurrent_uploads_to_different_keys_do_not_mix(f: &Fixture) {
    let s = &*f.storage;
    let uploads = (0..4).map(|i| {
        let key = format!("{ROOT}/concurrent/{i}");
        async move {
            let data = pseudo_random(3 << 20, 100 + i);
            put(s, &key, &data).await.unwrap();
            (key, data)
        }
    });
    for (key, data) in futures::future::join_all(uploads).await {
        assert_eq!(read_all(s, &key).await.unwrap(), data, "{key}");
    }
}

async fn listing_covers_every_page_and_any_string_prefix(f: &Fixture) {
    let s = &*f.storage;
    let many = f.many;
    let page_root = format!("{ROOT}/many/");
    futures::stream::iter(0..many)
        .map(|i| {
            let key = format!("{page_root}{i:05}");
            async move { put(s, &key, b"x").await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let listed = keys(s, &page_root).await;
    assert_eq!(listed.len(), many, "every key listed once");
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    assert_eq!(
        keys(s, &format!("{page_root}0000")).await.len(),
        10.min(many)
    );
    assert!(keys(s, &format!("{ROOT}/nothing-here/")).await.is_empty());
}

async fn delete_is_idempotent_and_missing_keys_are_not_found(f: &Fixture) {
    let s = &*f.storage;
    let key = format!("{ROOT}/del/obj");
    put(s, &key, b"data").await.unwrap();
    s.delete(&key).await.unwrap();
    s.delete(&key).await.unwrap();
    assert!(keys(s, &format!("{ROOT}/del/")).await.is_empty());
    match read_all(s, &key).await {
        Err(StorageError::NotFound { key: k }) => assert_eq!(k, key),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// A retry that finds our own earlier write (the server acted, the answer
/// was lost) is success; someone else's bytes under the key are not.
async fn a_retried_commit_finds_our_own_write_and_succeeds(f: &Fixture) {
    let s = &*f.storage;
    let data = pseudo_random(2 << 20, 11);
    let key = format!("{ROOT}/ours/obj");
    put(s, &key, &data).await.unwrap();
    let sha = hex::encode(Sha256::digest(&data));
    let mut again = s.create(&key).await.unwrap();
    again.write(Bytes::from(data.clone())).await.unwrap();
    let receipt = storage::commit_verified(s, again, &key, data.len() as u64, &sha)
        .await
        .expect("our own write is recognised");
    assert_eq!(receipt.size, data.len() as u64);
    let other = pseudo_random(2 << 20, 12);
    let mut theirs = s.create(&key).await.unwrap();
    theirs.write(Bytes::from(other.clone())).await.unwrap();
    let err = storage::commit_verified(
        s,
        theirs,
        &key,
        other.len() as u64,
        &hex::encode(Sha256::digest(&other)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(read_all(s, &key).await.unwrap(), data);
}

/// What a killed run leaves (temp files, multipart uploads, temp objects)
/// is listed by `stale_uploads` once old enough, and `remove_stale` clears it.
async fn leftovers_of_killed_runs_are_listed_and_removed(f: &Fixture) {
    let s = &*f.storage;
    let prefix = format!("{ROOT}/killed/");
    match f.killed {
        KilledRun::Forget => {
            let mut up = s.create(&format!("{prefix}obj")).await.unwrap();
            up.write(Bytes::from(pseudo_random(9 << 20, 13)))
                .await
                .unwrap();
            std::mem::forget(up);
        }
        KilledRun::TempObject => {
            put(s, &format!("{prefix}.backstop-tmp-42-obj"), b"half")
                .await
                .unwrap();
        }
    }
    assert!(
        keys(s, &prefix).await.is_empty(),
        "leftovers are not backups"
    );
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(
        s.stale_uploads(&prefix, past).await.unwrap().is_empty(),
        "not before the grace period"
    );
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    for stale in s.stale_uploads(&prefix, future).await.unwrap() {
        s.remove_stale(&stale).await.unwrap();
    }
    assert!(s.stale_uploads(&prefix, future).await.unwrap().is_empty());
}

/// A manifest that does not parse makes its backup damaged, and the data
/// beside it is never an orphan.
async fn listing_with_a_damaged_manifest_keeps_its_data(f: &Fixture) {
    let s = &*f.storage;
    let layout = backstop::catalog::Layout::new(ROOT);
    let stem = format!("{ROOT}/db/2026-01-01/db-20260101T000000.000Z-abcde");
    put(s, &format!("{stem}.dump.zst"), b"data").await.unwrap();
    put(s, &format!("{stem}.manifest.json"), b"{ not json")
        .await
        .unwrap();
    let listing = backstop::catalog::list_target(s, &layout, "db")
        .await
        .unwrap();
    assert!(listing.backups.is_empty());
    assert_eq!(listing.damaged.len(), 1);
    assert_eq!(listing.damaged[0].id.0, "db-20260101T000000.000Z-abcde");
    assert!(listing.orphans.is_empty(), "{:?}", listing.orphans);
}

macro_rules! suite {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            suite!(@props $fixture;
                round_trip_changes_nothing,
                commit_never_overwrites,
                uploads_are_invisible_until_commit_and_abort_leaves_nothing,
                an_empty_stream_commits_an_empty_object,
                every_allowed_character_works_and_bad_keys_are_refused,
                concurrent_uploads_to_different_keys_do_not_mix,
                listing_covers_every_page_and_any_string_prefix,
                delete_is_idempotent_and_missing_keys_are_not_found,
                a_retried_commit_finds_our_own_write_and_succeeds,
                leftovers_of_killed_runs_are_listed_and_removed,
                listing_with_a_damaged_manifest_keeps_its_data
            );
        }
    };
    (@props $fixture:path; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $property() {
                let f = $fixture().await;
                super::$property(&f).await;
                f.finish(super::ROOT).await;
            }
        )+
    };
}

suite!(local, crate::local_fixture);
suite!(s3, crate::s3_fixture);
suite!(boxcom, crate::box_fixture);
suite!(rclone_local, crate::rclone_local_fixture);
suite!(rclone_webdav, crate::rclone_webdav_fixture);

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Files under `dir` (the backend's own directory): after `finish` deleted
/// every listed key, anything left is a temp file or a spool file.
fn files_left(
    dir: std::path::PathBuf,
) -> Box<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync> {
    Box::new(move || {
        let left: Vec<String> = walk(&dir).iter().map(|p| p.display().to_string()).collect();
        Box::pin(async move { left })
    })
}

async fn local_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        storage: Arc::new(storage::local::LocalStorage::new(dir.path())),
        many: 1100,
        killed: KilledRun::Forget,
        leftovers: files_left(dir.path().to_path_buf()),
        _guards: vec![Box::new(dir)],
    }
}

async fn s3_fixture() -> Fixture {
    struct Bucket(support::s3::S3Server, String);
    impl Drop for Bucket {
        fn drop(&mut self) {
            self.0.delete_bucket(&self.1);
        }
    }
    let server = support::s3::server();
    let bucket = server.create_bucket("conformance");
    let probe = Arc::new(server.storage(&bucket));
    Fixture {
        storage: Arc::new(server.storage(&bucket)),
        many: 1100,
        killed: KilledRun::Forget,
        leftovers: Box::new(move || {
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                probe
                    .pending_uploads("")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(k, _)| format!("multipart upload {k}"))
                    .collect()
            })
        }),
        _guards: vec![Box::new(Bucket(server, bucket))],
    }
}

async fn box_fixture() -> Fixture {
    use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET};
    let fake = Arc::new(FakeBox::start().await);
    let spool = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[targets]]\nname = \"x\"\ntype = \"postgres\"\ndatabase = \"x\"\n",
        fake.config_toml(
            "backups/conformance",
            &format!("method = \"ccg\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nsubject_type = \"enterprise\"\nsubject_id = \"42\""),
            spool.path()
        )
    );
    let config = backstop::config::Config::parse(&text, std::path::Path::new("box.toml")).unwrap();
    let backstop::config::StorageConfig::Box(b) = &config.storages["default"].storage else {
        panic!("box storage")
    };
    let s = storage::boxcom::BoxStorage::new(b).unwrap();
    s.preflight().await.unwrap();
    let (fake_c, spool_dir) = (Arc::clone(&fake), spool.path().to_path_buf());
    Fixture {
        storage: Arc::new(s),
        many: 1100,
        killed: KilledRun::Forget,
        leftovers: Box::new(move || {
            let mut left: Vec<String> = walk(&spool_dir)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            left.extend(fake_c.files());
            if fake_c.open_sessions() > 0 {
                left.push(format!("{} open upload sessions", fake_c.open_sessions()));
            }
            Box::pin(async move { left })
        }),
        _guards: vec![Box::new(spool), Box::new(fake)],
    }
}

/// rclone with a private config naming `remote`.
fn rclone_storage(
    conf_dir: &std::path::Path,
    conf: &str,
    remote: &str,
) -> storage::rclone::RcloneStorage {
    let path = conf_dir.join("rclone.conf");
    std::fs::write(&path, conf).unwrap();
    storage::rclone::RcloneStorage::new(&backstop::config::RcloneStorageConfig {
        remote: remote.to_string(),
        prefix: String::new(),
        rclone_config: Some(path),
        rclone_config_secret: None,
    })
    .unwrap()
}

async fn rclone_local_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = rclone_storage(
        dir.path(),
        "[disk]\ntype = local\n",
        &format!("disk:{}", data.display()),
    );
    Fixture {
        storage: Arc::new(s),
        many: 30,
        killed: KilledRun::TempObject,
        leftovers: files_left(data),
        _guards: vec![Box::new(dir)],
    }
}

async fn rclone_webdav_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Kill(
        std::process::Command::new("rclone")
            .args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}")])
            .arg(&served)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rclone is installed (./scripts/test installs it)"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let s = rclone_storage(
        dir.path(),
        &format!("[dav]\ntype = webdav\nurl = http://127.0.0.1:{port}\nvendor = other\n"),
        "dav:backups",
    );
    Fixture {
        storage: Arc::new(s),
        many: 30,
        killed: KilledRun::TempObject,
        leftovers: files_left(served),
        // The server goes before the directory it serves.
        _guards: vec![Box::new(server), Box::new(dir)],
    }
}
