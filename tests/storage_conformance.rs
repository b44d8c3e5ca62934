//! One conformance suite that every storage backend runs. Adding a backend
//! means adding one test function that builds it and calls `conformance`.

mod support;

use backstop::storage::{self, Storage, StorageError};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

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

/// Everything a backend must do. `root` is a fresh prefix for this run;
/// `many` is how many keys the paging check writes (over 1000 crosses the
/// S3 page size).
pub async fn conformance(s: &dyn Storage, root: &str, many: usize) {
    // Round trip with checksum, across part boundaries (> 8 MiB for S3).
    let data = pseudo_random(9 << 20 | 12345, 7);
    let key = format!("{root}/rt/2026-01-01/obj.dump.zst");
    put(s, &key, &data).await.unwrap();
    let back = read_all(s, &key).await.unwrap();
    assert_eq!(
        Sha256::digest(&back),
        Sha256::digest(&data),
        "round trip changes nothing"
    );
    let listed = s.list(&format!("{root}/rt/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, data.len() as u64);

    // Never overwrite: committing onto an existing key fails, the original stays.
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

    // Invisible until commit; abort leaves nothing.
    let pending = format!("{root}/abort/obj");
    let mut up = s.create(&pending).await.unwrap();
    up.write(Bytes::from(pseudo_random(9 << 20, 5)))
        .await
        .unwrap();
    assert!(
        keys(s, &format!("{root}/abort/")).await.is_empty(),
        "visible before commit"
    );
    assert!(matches!(
        read_all(s, &pending).await,
        Err(StorageError::NotFound { .. })
    ));
    up.abort().await.unwrap();
    assert!(
        keys(s, &format!("{root}/abort/")).await.is_empty(),
        "abort leaves nothing"
    );
    // A small upload aborted before any part went out.
    let mut up = s.create(&pending).await.unwrap();
    up.write(Bytes::from_static(b"tiny")).await.unwrap();
    up.abort().await.unwrap();
    assert!(keys(s, &format!("{root}/abort/")).await.is_empty());

    // An empty stream commits to an empty object.
    let empty = format!("{root}/empty/obj");
    let up = s.create(&empty).await.unwrap();
    up.commit().await.unwrap();
    assert_eq!(read_all(s, &empty).await.unwrap(), Vec::<u8>::new());
    assert_eq!(s.list(&format!("{root}/empty/")).await.unwrap()[0].size, 0);

    // Keys with every allowed character.
    let odd = format!("{root}/chars/AZaz09._-/x.y_z-0.manifest.json");
    put(s, &odd, b"{}").await.unwrap();
    assert_eq!(read_all(s, &odd).await.unwrap(), b"{}");
    assert_eq!(keys(s, &format!("{root}/chars/")).await, vec![odd.clone()]);
    // Keys that could escape or confuse are refused before any I/O.
    for bad in ["../x", "/abs", "a//b", "sp ace"] {
        assert!(
            matches!(s.create(bad).await, Err(StorageError::InvalidKey { .. })),
            "{bad}"
        );
    }

    // Concurrent uploads to different keys.
    let uploads = (0..4).map(|i| {
        let key = format!("{root}/concurrent/{i}");
        async move {
            let data = pseudo_random(3 << 20, 100 + i);
            put(s, &key, &data).await.unwrap();
            (key, data)
        }
    });
    for (key, data) in futures::future::join_all(uploads).await {
        assert_eq!(read_all(s, &key).await.unwrap(), data, "{key}");
    }

    // Listing by prefix, over more than one page.
    let page_root = format!("{root}/many/");
    let small = futures::stream::iter(0..many)
        .map(|i| {
            let key = format!("{page_root}{i:05}");
            async move { put(s, &key, b"x").await.unwrap() }
        })
        .buffer_unordered(16);
    small.collect::<Vec<_>>().await;
    let listed = keys(s, &page_root).await;
    assert_eq!(listed.len(), many, "every key listed once");
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    // A prefix is a string prefix, not only a directory.
    assert_eq!(
        keys(s, &format!("{page_root}0000")).await.len(),
        10.min(many)
    );
    assert!(keys(s, &format!("{root}/nothing-here/")).await.is_empty());

    // Delete; deleting again (or a missing key) succeeds; a missing key
    // opens as NotFound.
    s.delete(&key).await.unwrap();
    s.delete(&key).await.unwrap();
    assert!(keys(s, &format!("{root}/rt/")).await.is_empty());
    match read_all(s, &key).await {
        Err(StorageError::NotFound { key: k }) => assert_eq!(k, key),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Clean up everything this run wrote.
    for m in s.list(&format!("{root}/")).await.unwrap() {
        s.delete(&m.key).await.unwrap();
    }
    assert!(keys(s, &format!("{root}/")).await.is_empty());
}

#[tokio::test]
async fn local_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage::local::LocalStorage::new(dir.path());
    conformance(&s, "conf", 1100).await;
    // Nothing left behind: no temp files either.
    let leftovers: Vec<_> = walk(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn s3_storage_conforms() {
    let server = support::s3::server();
    let bucket = server.create_bucket("conformance");
    let s = server.storage(&bucket);
    conformance(&s, "conf", 1100).await;
    assert!(
        s.pending_uploads("").await.unwrap().is_empty(),
        "no multipart upload left behind"
    );
    server.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn box_storage_conforms() {
    use support::fake_box::{FakeBox, CLIENT_ID, CLIENT_SECRET};
    let fake = FakeBox::start().await;
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
    let backstop::config::StorageConfig::Box(b) = &config.storage else {
        panic!("box storage")
    };
    let s = storage::boxcom::BoxStorage::new(b).unwrap();
    s.preflight().await.unwrap();
    conformance(&s, "conf", 1100).await;
    assert_eq!(fake.open_sessions(), 0);
    assert!(fake.files().is_empty(), "{:?}", fake.files());
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "spool files are removed"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn rclone_local_remote_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = rclone_storage(
        dir.path(),
        "[disk]\ntype = local\n",
        &format!("disk:{}", data.display()),
    );
    conformance(&s, "conf", 30).await;
    assert!(walk(&data).is_empty(), "{:?}", walk(&data));
}

#[tokio::test(flavor = "multi_thread")]
async fn rclone_webdav_remote_conforms() {
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
    let _server = Kill(
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
    conformance(&s, "conf", 30).await;
    assert!(walk(&served).is_empty(), "{:?}", walk(&served));
}
