//! Backups through S3 (SeaweedFS on loopback): a large round trip, nothing
//! half-visible after failures, retries of transient errors, clear auth errors.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::faulty_proxy::FaultyProxy;
use support::*;

fn s3_env(cmd: &mut std::process::Command, server: &s3::S3Server) {
    cmd.env("BS_S3_KEY", &server.key)
        .env("BS_S3_SECRET", &server.secret);
}

fn run_s3(args: &[&str], config: &std::path::Path, server: &s3::S3Server) -> Run {
    let mut cmd = backstop();
    cmd.args(args).arg("--config").arg(config);
    s3_env(&mut cmd, server);
    Run::from(cmd.output().unwrap())
}

/// `run_s3` off the test's async runtime, where the fake servers live.
async fn run_s3_async(args: Vec<String>, cfg: &std::path::Path) -> Run {
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_s3(&args, &cfg, &s3::server())
    })
    .await
    .unwrap()
}

fn write_config(ws: &Workspace, storage: &str, targets: &str) -> std::path::PathBuf {
    let p = ws.path("backstop.toml");
    std::fs::write(&p, format!("{storage}\n{targets}")).unwrap();
    p
}

async fn assert_bucket_clean(server: &s3::S3Server, bucket: &str) {
    let storage = server.storage(bucket);
    use backstop::storage::Storage;
    let objects = storage.list("").await.unwrap();
    assert!(
        objects.is_empty(),
        "no object may exist after a failed backup: {objects:?}"
    );
    let pending = storage.pending_uploads("").await.unwrap();
    assert!(
        pending.is_empty(),
        "no multipart upload may be left: {pending:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_backup_through_s3_round_trips() {
    let server = s3::server();
    let bucket = server.create_bucket("large");
    let src = TestDb::create("bs_s3_large");
    // ~230 MB of random bytes: stored size stays above 200 MB after zstd.
    src.sql(
        "CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
         INSERT INTO blobs SELECT g, decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex')
         FROM generate_series(1, 3600000) g;",
    );
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        &server.storage_toml(&bucket, &server.endpoint),
        &format!(
            "[compression]\nalgorithm = \"zstd\"\nlevel = 1\n\n{}",
            pg_target("large", &src.name, "")
        ),
    );
    let r = run_s3_async(vec!["backup".into()], &cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let stored = r.summary()["targets"][0]["stored_bytes"].as_u64().unwrap();
    assert!(stored >= 200_000_000, "stored only {stored} bytes");

    let dest = TestDb::reserve("bs_s3_large_restored");
    let r = run_s3_async(
        ["restore", "-t", "large", "--into", &dest.url(), "--create"]
            .map(String::from)
            .to_vec(),
        &cfg,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
    server.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_dump_leaves_no_object_and_no_multipart_upload() {
    let server = s3::server();
    let bucket = server.create_bucket("failed");
    let db = TestDb::create("bs_s3_fail");
    let ws = Workspace::new();
    // 20 MB of output (several parts went out) and then a failure.
    let wrapper = ws.script(
        "pg_dump_fails",
        &format!(
            "[ \"$1\" = --version ] && exec {} --version\nhead -c 20000000 /dev/urandom\necho 'pg_dump: error: lost connection' >&2\nexit 1",
            real_pg_dump()
        ),
    );
    let cfg = write_config(
        &ws,
        &server.storage_toml(&bucket, &server.endpoint),
        &format!(
            "[compression]\nalgorithm = \"none\"\n\n{}",
            pg_target(
                "fails",
                &db.name,
                &format!("pg_dump_path = \"{}\"", wrapper.display())
            )
        ),
    );
    let r = run_s3_async(vec!["backup".into()], &cfg).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["stage"], "dump");
    assert_bucket_clean(&server, &bucket).await;
    server.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_upload_aborts_the_multipart_upload() {
    let server = s3::server();
    let bucket = server.create_bucket("sigterm");
    let db = TestDb::create("bs_s3_term");
    let ws = Workspace::new();
    let marker = ws.path("written");
    let wrapper = ws.script(
        "pg_dump_hangs",
        &format!(
            "[ \"$1\" = --version ] && exec {} --version\nhead -c 20000000 /dev/urandom\ntouch '{}'\nexec sleep 300",
            real_pg_dump(),
            marker.display()
        ),
    );
    let cfg = write_config(
        &ws,
        &server.storage_toml(&bucket, &server.endpoint),
        &format!(
            "[compression]\nalgorithm = \"none\"\n\n{}",
            pg_target(
                "hangs",
                &db.name,
                &format!("pg_dump_path = \"{}\"", wrapper.display())
            )
        ),
    );
    let mut cmd = backstop();
    cmd.args(["backup", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    s3_env(&mut cmd, &server);
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "dump never wrote its output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Parts are in flight or done: the multipart upload exists now.
    let storage = server.storage(&bucket);
    let mut seen_pending = false;
    for _ in 0..100 {
        if !storage.pending_uploads("").await.unwrap().is_empty() {
            seen_pending = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_pending,
        "the multipart upload should be visible as pending mid-backup"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(r.summary()["targets"][0]["stage"], "interrupted");
    assert_bucket_clean(&server, &bucket).await;
    server.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_on_parts_are_retried_with_the_same_bytes() {
    let server = s3::server();
    let bucket = server.create_bucket("retry");
    let src = TestDb::create("bs_s3_retry");
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, data bytea);
         INSERT INTO t SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 700000) g;",
    );
    // Fail the first three part uploads with 503 SlowDown.
    let proxy = FaultyProxy::start(&server.endpoint, "partNumber=", 3).await;
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        &server.storage_toml(&bucket, &proxy.url),
        &format!(
            "[compression]\nalgorithm = \"none\"\n\n{}",
            pg_target("retry", &src.name, "")
        ),
    );
    let r = run_s3_async(vec!["backup".into()], &cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        proxy.state.failed.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "faults were injected"
    );
    assert!(
        r.stderr.contains("retrying"),
        "retries are logged: {}",
        r.stderr
    );
    let dest = TestDb::reserve("bs_s3_retry_restored");
    let r = run_s3_async(
        ["restore", "-t", "retry", "--into", &dest.url(), "--create"]
            .map(String::from)
            .to_vec(),
        &cfg,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(src.fingerprint(), dest.fingerprint());
    server.delete_bucket(&bucket);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_bucket_errors_fail_fast_with_a_clear_message() {
    let server = s3::server();
    let bucket = server.create_bucket("auth");
    let db = TestDb::create("bs_s3_auth");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let target = pg_target("auth", &db.name, "");

    let cfg = write_config(
        &ws,
        &server.storage_toml(&bucket, &server.endpoint),
        &target,
    );
    let started = Instant::now();
    let mut cmd = backstop();
    cmd.args(["backup", "--config"]).arg(&cfg);
    cmd.env("BS_S3_KEY", &server.key)
        .env("BS_S3_SECRET", "wrong-secret-value-123");
    let r = Run::from(
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "403 must not be retried at length"
    );
    let err = r.summary()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&bucket) && err.contains(&server.endpoint),
        "{err}"
    );
    assert!(
        err.contains("403")
            || err.contains("SignatureDoesNotMatch")
            || err.contains("AccessDenied"),
        "{err}"
    );
    assert!(
        !r.all().contains("wrong-secret-value-123"),
        "the secret never appears"
    );

    let missing = unique("nobucket").replace('_', "-");
    let cfg = write_config(
        &ws,
        &server.storage_toml(&missing, &server.endpoint),
        &target,
    );
    let r = run_s3_async(vec!["backup".into()], &cfg).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let err = r.summary()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");
    // SeaweedFS creates buckets on PUT; the preflight check must stop us first.
    server.delete_bucket(&missing);
    server.delete_bucket(&bucket);
}

#[test]
fn missing_credentials_are_a_config_error() {
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        "[storage]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\n",
        &pg_target("x", "postgres", ""),
    );
    let r = Run::from(
        backstop()
            .args(["backup", "--config"])
            .arg(&cfg)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no S3 credentials"), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_aborts_multipart_uploads_a_crashed_run_left_behind() {
    use backstop::storage::Storage;
    let server = s3::server();
    let bucket = server.create_bucket("stale");
    let storage = server.storage(&bucket);
    // A run that crashed mid-upload: parts went out, nobody aborted.
    let mut upload = storage
        .create("app/2026-01-01/app-20260101T000000Z.dump.zst")
        .await
        .unwrap();
    upload
        .write(bytes::Bytes::from(vec![7u8; 9 << 20]))
        .await
        .unwrap();
    std::mem::forget(upload);
    assert_eq!(storage.pending_uploads("app/").await.unwrap().len(), 1);

    let layout = backstop::catalog::Layout::new("");
    let policy = backstop::retention::Policy {
        keep_last: 1,
        ..Default::default()
    };
    let prune_with = |grace: u64, dry_run: bool| backstop::prune::PruneRequest {
        storage_name: "default",
        storage: &storage,
        layout: &layout,
        target: "app",
        policy: &policy,
        orphan_grace: std::time::Duration::from_secs(grace),
        now: chrono::Utc::now(),
        dry_run,
    };
    let prune = |grace: u64| prune_with(grace, false);
    // Within the grace period (it may be a run in progress): left alone.
    let report = backstop::prune::prune_target(prune(3600)).await.unwrap();
    assert!(report.aborted_uploads.is_empty());
    assert_eq!(storage.pending_uploads("app/").await.unwrap().len(), 1);
    // Older than the grace period: a dry run lists exactly the abort it
    // would make (regression: it left stale uploads out) and makes none.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let dry = backstop::prune::prune_target(prune_with(0, true))
        .await
        .unwrap();
    assert_eq!(
        dry.aborted_uploads,
        vec!["app/2026-01-01/app-20260101T000000Z.dump.zst".to_string()]
    );
    assert!(dry
        .render_human()
        .contains("abort upload app/2026-01-01/app-20260101T000000Z.dump.zst"));
    assert_eq!(storage.pending_uploads("app/").await.unwrap().len(), 1);
    // And the real prune aborts it.
    let report = backstop::prune::prune_target(prune(0)).await.unwrap();
    assert_eq!(
        report.aborted_uploads,
        vec!["app/2026-01-01/app-20260101T000000Z.dump.zst".to_string()]
    );
    assert!(storage.pending_uploads("app/").await.unwrap().is_empty());
    server.delete_bucket(&bucket);
}

/// Regression (a lost response to the manifest PUT destroyed a good backup:
/// the retry got 412, backstop called it "already exists", deleted the data
/// and left a manifest pointing at nothing), and the same for a lost
/// CompleteMultipartUpload response (the retry finds no such upload).
/// The server acted both times; our own earlier write must count.
#[tokio::test(flavor = "multi_thread")]
async fn lost_responses_to_our_own_completed_writes_keep_the_backup() {
    use support::faulty_proxy::Fault;
    let server = s3::server();
    let src = TestDb::create("bs_s3_lost");
    src.sql(
        "CREATE TABLE t (id int, v bytea);
         INSERT INTO t SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 300000) g;",
    );
    for (what, matcher) in [
        ("manifest PUT", "PUT  && .manifest.json?"),
        ("CompleteMultipartUpload", "POST  && uploadId="),
    ] {
        let bucket = server.create_bucket("bs-lost");
        let proxy =
            FaultyProxy::start_with(&server.endpoint, matcher, 1, Fault::LoseResponse).await;
        let ws = Workspace::new();
        let cfg = write_config(
            &ws,
            &server.storage_toml(&bucket, &proxy.url),
            &format!(
                "[compression]\nalgorithm = \"none\"\n\n{}",
                pg_target("lost", &src.name, "")
            ),
        );
        let r = run_s3_async(vec!["backup".into()], &cfg).await;
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert_eq!(
            proxy.state.failed.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{what}: the response was lost once"
        );
        assert!(
            r.stderr
                .contains("an earlier attempt of this run succeeded"),
            "{what}: {}",
            r.stderr
        );
        let list = run_s3_async(vec!["list".into(), "--json".into()], &cfg).await;
        let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{what}: {}", list.all());
        let dest = TestDb::reserve("bs_s3_lost_restored");
        let r = run_s3_async(
            ["restore", "--into", &dest.url(), "--create"]
                .map(String::from)
                .to_vec(),
            &cfg,
        )
        .await;
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert_eq!(src.fingerprint(), dest.fingerprint());
        server.delete_bucket(&bucket);
    }
}

/// The rest of the network faults, one backup each through the proxy:
/// connections closed before and after the server acted (on a part, on the
/// manifest PUT, on CompleteMultipartUpload) and a slow network. Every run
/// publishes exactly one backup that restores; none is lost.
#[tokio::test(flavor = "multi_thread")]
async fn connection_resets_and_delays_publish_exactly_one_good_backup() {
    use support::faulty_proxy::Fault;
    let server = s3::server();
    let src = TestDb::create("bs_s3_resets");
    src.sql(
        "CREATE TABLE t (id int, v bytea);
         INSERT INTO t SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 300000) g;",
    );
    let cases = [
        (
            "reset before a part",
            Fault::ResetBefore,
            "PUT  && partNumber=",
            1,
        ),
        (
            "reset after a part",
            Fault::ResetAfter,
            "PUT  && partNumber=",
            1,
        ),
        (
            "reset after the manifest PUT",
            Fault::ResetAfter,
            "PUT  && .manifest.json?",
            1,
        ),
        (
            "reset after CompleteMultipartUpload",
            Fault::ResetAfter,
            "POST  && uploadId=",
            1,
        ),
        (
            "slow parts",
            Fault::Delay(std::time::Duration::from_millis(400)),
            "partNumber=",
            3,
        ),
    ];
    for (what, fault, matcher, times) in cases {
        let bucket = server.create_bucket("bs-resets");
        let proxy = FaultyProxy::start_with(&server.endpoint, matcher, times, fault).await;
        let ws = Workspace::new();
        let cfg = write_config(
            &ws,
            &server.storage_toml(&bucket, &proxy.url),
            &format!(
                "[compression]\nalgorithm = \"none\"\n\n{}",
                pg_target("resets", &src.name, "")
            ),
        );
        let r = run_s3_async(vec!["backup".into()], &cfg).await;
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert_eq!(
            proxy.state.failed.load(std::sync::atomic::Ordering::SeqCst),
            times,
            "{what}: the fault was injected"
        );
        let list = run_s3_async(vec!["list".into(), "--json".into()], &cfg).await;
        let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{what}: {}", list.all());
        let dest = TestDb::reserve("bs_s3_resets_restored");
        let r = run_s3_async(
            ["restore", "--into", &dest.url(), "--create"]
                .map(String::from)
                .to_vec(),
            &cfg,
        )
        .await;
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert_eq!(src.fingerprint(), dest.fingerprint(), "{what}");
        assert!(
            server
                .storage(&bucket)
                .pending_uploads("")
                .await
                .unwrap()
                .is_empty(),
            "{what}"
        );
        server.delete_bucket(&bucket);
    }
}

/// Regression: a stalled S3 request took 120 s per try (a manifest PUT
/// 722 s in all). With `idle_timeout`, a request that receives nothing is
/// dropped and retried: the manifest PUT that stalls (the proxy holds it
/// far longer than the timeout) is retried, and the backup completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_is_dropped_after_idle_timeout_and_retried() {
    use support::faulty_proxy::Fault;
    let server = s3::server();
    let src = TestDb::create("bs_s3_stall");
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let bucket = server.create_bucket("bs-stall");
    let proxy = FaultyProxy::start_with(
        &server.endpoint,
        "PUT  && .manifest.json?",
        1,
        Fault::Delay(std::time::Duration::from_secs(600)),
    )
    .await;
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        &format!(
            "{}idle_timeout = \"2s\"\n",
            server.storage_toml(&bucket, &proxy.url)
        ),
        &pg_target("stall", &src.name, ""),
    );
    let r = run_s3_async(vec!["backup".into()], &cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        proxy.state.failed.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(
        r.stderr.contains("retrying"),
        "the stalled PUT was retried: {}",
        r.all()
    );
    let list = run_s3_async(vec!["list".into(), "--json".into()], &cfg).await;
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{}", list.all());
    server.delete_bucket(&bucket);
}

/// A server (or proxy) that drops `If-None-Match` still cannot make a
/// commit replace an existing object: the existence check refuses first,
/// and the object that was there stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_if_none_match_still_never_overwrites() {
    use backstop::storage::{put_bytes, StorageError};
    use support::faulty_proxy::Fault;
    let server = s3::server();
    let bucket = server.create_bucket("bs-inm");
    let proxy =
        FaultyProxy::start_with(&server.endpoint, "PUT ", 100, Fault::DropIfNoneMatch).await;
    let direct = server.storage(&bucket);
    let mut config = server.config(&bucket);
    config.endpoint = Some(proxy.url.clone());
    let proxied = backstop::storage::s3::S3Storage::new(&config).unwrap();
    let key = "t/2026-01-01/t-20260101T000000.000Z-aaaaa.dump";
    put_bytes(&direct, key, bytes::Bytes::from_static(b"first"))
        .await
        .unwrap();
    let err = put_bytes(&proxied, key, bytes::Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        backstop::storage::get_bytes(&direct, key, 100)
            .await
            .unwrap(),
        b"first"
    );
    server.delete_bucket(&bucket);
}
