//! Retention against real storage listings: the plan comes from the storage
//! alone, dry runs delete nothing, data goes before its manifest, orphans
//! older than the grace period go, and a failed backup prunes nothing.

mod support;

use async_trait::async_trait;
use backstop::catalog::{BackupId, CompressionRecord, Layout, Manifest, ObjectRecord};
use backstop::config::Algorithm;
use backstop::storage::local::LocalStorage;
use backstop::storage::{put_bytes, ByteStream, ObjectMeta, Storage, StorageResult, Upload};
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use std::sync::Mutex;
use support::*;

/// Write a complete backup (data object + manifest) as if made at `at`.
async fn fake_backup(
    s: &dyn Storage,
    layout: &Layout,
    target: &str,
    at: DateTime<Utc>,
) -> Manifest {
    let data = format!("dump of {target} at {at}").into_bytes();
    let id = BackupId::new(target, at);
    let key = layout.object_key(target, &id, at, "dump.zst");
    put_bytes(s, &key, Bytes::from(data.clone())).await.unwrap();
    let manifest = Manifest {
        manifest_version: 1,
        id: id.clone(),
        target: target.into(),
        source_type: "postgres".into(),
        database: "db".into(),
        server_version: "15".into(),
        dump_tool: "pg_dump".into(),
        dump_tool_version: "15".into(),
        format: "custom".into(),
        compression: CompressionRecord {
            algorithm: Algorithm::Zstd,
            level: 3,
            levels: vec![],
        },
        encryption_recipients: vec![],
        objects: vec![ObjectRecord {
            role: "database".into(),
            key,
            raw_bytes: data.len() as u64,
            stored_bytes: data.len() as u64,
            sha256: "0".repeat(64),
            tables: vec![],
            large_objects: None,
            physical: None,
        }],
        database_properties: None,
        started_at: at,
        finished_at: at,
        tool_version: "test".into(),
        sealed: None,
    };
    put_bytes(
        s,
        &layout.manifest_key(target, &id, at),
        Bytes::from(serde_json::to_vec(&manifest).unwrap()),
    )
    .await
    .unwrap();
    manifest
}

fn set_mtime(path: &std::path::Path, ago_hours: i64) {
    let t = (Utc::now() - Duration::hours(ago_hours))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(std::process::Command::new("touch")
        .args(["-d", &t])
        .arg(path)
        .status()
        .unwrap()
        .success());
}

fn ids(v: &serde_json::Value, keep: bool) -> Vec<String> {
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == keep)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn prune_follows_the_listing_dry_run_first_then_for_real() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.backups()).unwrap();
    let storage = LocalStorage::new(ws.backups());
    let layout = Layout::new("");
    let now = Utc::now();
    // Ten daily backups, newest today.
    for d in 0..10 {
        fake_backup(
            &storage,
            &layout,
            "app",
            now - Duration::days(d) - Duration::minutes(5),
        )
        .await;
    }
    // An old orphan (crashed run) and a fresh one (a run in progress elsewhere).
    let old_orphan = ws
        .backups()
        .join("app/2020-01-01/app-20200101T000000Z.dump.zst");
    std::fs::create_dir_all(old_orphan.parent().unwrap()).unwrap();
    std::fs::write(&old_orphan, b"partial").unwrap();
    set_mtime(&old_orphan, 48);
    let fresh_orphan = ws
        .backups()
        .join("app/2020-01-02/app-20200102T000000Z.dump.zst");
    std::fs::create_dir_all(fresh_orphan.parent().unwrap()).unwrap();
    std::fs::write(&fresh_orphan, b"partial").unwrap();
    // A temp file of a run killed outright (no cleanup ran), and one of a
    // run in progress.
    let stale_temp = ws
        .backups()
        .join("app/2020-01-01/.backstop-tmp-1-2-3-app-20200101T000000Z.dump.zst");
    std::fs::write(&stale_temp, b"partial").unwrap();
    set_mtime(&stale_temp, 48);
    let live_temp = ws
        .backups()
        .join("app/2020-01-02/.backstop-tmp-4-5-6-app-20200102T010000Z.dump.zst");
    std::fs::write(&live_temp, b"partial").unwrap();

    let cfg = ws.config(&format!(
        "[retention]\nkeep_last = 2\nkeep_daily = 4\norphan_grace = \"24h\"\n\n{}",
        pg_target("app", "unused", "")
    ));
    let before = ws.stored_files();
    let dry = run(&["prune", "--dry-run", "--json"], &cfg);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert_eq!(ws.stored_files(), before, "a dry run deletes nothing");
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(ids(&plan[0], true).len(), 4, "{plan:#}");
    assert_eq!(ids(&plan[0], false).len(), 6);
    assert_eq!(
        plan[0]["orphans"],
        serde_json::json!(["app/2020-01-01/app-20200101T000000Z.dump.zst"])
    );

    let real = run(&["prune", "--json"], &cfg);
    assert_eq!(real.code, 0, "{}", real.all());
    let done: serde_json::Value = serde_json::from_str(&real.stdout).unwrap();
    assert_eq!(
        ids(&done[0], false),
        ids(&plan[0], false),
        "the executed plan is the dry-run plan"
    );
    let list = run(&["list", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let listed: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut kept = ids(&plan[0], true);
    kept.sort();
    assert_eq!(listed, kept);
    assert!(!old_orphan.exists(), "old orphan removed");
    assert!(fresh_orphan.exists(), "orphan within the grace period kept");
    assert!(!stale_temp.exists(), "a crashed run's temp file is removed");
    assert!(
        live_temp.exists(),
        "a temp file within the grace period is left alone"
    );
    assert_eq!(
        done[0]["aborted_uploads"],
        serde_json::json!(["app/2020-01-01/.backstop-tmp-1-2-3-app-20200101T000000Z.dump.zst"])
    );

    // Human output names each decision with its reasons.
    let text = run(&["prune", "--dry-run"], &cfg);
    assert!(
        text.stdout.contains("newest backup") && text.stdout.contains("daily"),
        "{}",
        text.stdout
    );
}

/// Records the order of deletes.
struct Recording {
    inner: LocalStorage,
    deletes: Mutex<Vec<String>>,
}

#[async_trait]
impl Storage for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn create(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        self.inner.create(key).await
    }
    async fn open(&self, key: &str) -> StorageResult<ByteStream> {
        self.inner.open(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.deletes.lock().unwrap().push(key.to_string());
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn data_is_deleted_before_its_manifest_and_the_newest_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Recording {
        inner: LocalStorage::new(dir.path()),
        deletes: Mutex::new(vec![]),
    };
    let layout = Layout::new("p");
    let now = Utc::now();
    let old = fake_backup(&s, &layout, "db", now - Duration::days(400)).await;
    let newest = fake_backup(&s, &layout, "db", now - Duration::days(300)).await;
    let policy = backstop::retention::Policy {
        keep_within: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let report = backstop::prune::prune_target(backstop::prune::PruneRequest {
        storage_name: "default",
        storage: &s,
        layout: &layout,
        target: "db",
        policy: &policy,
        orphan_grace: std::time::Duration::from_secs(3600),
        now,
        dry_run: false,
    })
    .await
    .unwrap();
    assert_eq!(report.deleted, vec![old.id.0.clone()]);
    let deletes = s.deletes.lock().unwrap().clone();
    assert_eq!(
        deletes,
        vec![
            old.objects[0].key.clone(),
            layout.manifest_key("db", &old.id, old.started_at)
        ]
    );
    let listing = backstop::catalog::list_target(&s, &layout, "db")
        .await
        .unwrap();
    assert_eq!(listing.backups.len(), 1);
    assert_eq!(
        listing.backups[0].manifest.id, newest.id,
        "newest kept though older than keep_within"
    );
}

#[test]
fn backup_prunes_only_after_its_own_success() {
    let db = TestDb::create("bs_prune");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let missing = unique("bs_prune_missing");
    let cfg = ws.config(&format!(
        "[retention]\nkeep_last = 1\n\n{}{}",
        pg_target("good", &db.name, ""),
        pg_target("bad", &missing, "")
    ));
    // Old backups for both targets.
    let rt = tokio::runtime::Runtime::new().unwrap();
    std::fs::create_dir_all(ws.backups()).unwrap();
    let storage = LocalStorage::new(ws.backups());
    let layout = Layout::new("");
    rt.block_on(async {
        for t in ["good", "bad"] {
            fake_backup(&storage, &layout, t, Utc::now() - Duration::days(3)).await;
            fake_backup(&storage, &layout, t, Utc::now() - Duration::days(2)).await;
        }
    });
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let s = r.summary();
    assert_eq!(s["targets"][0]["status"], "success");
    assert_eq!(
        s["targets"][0]["prune"][0]["deleted"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{s:#}"
    );
    assert_eq!(s["targets"][1]["status"], "failed");
    assert!(
        s["targets"][1].get("prune").is_none(),
        "a failed target is not pruned"
    );
    let list = run(&["list", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let per_target = |t: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == t)
            .count()
    };
    assert_eq!(per_target("good"), 1, "only the new backup is left");
    assert_eq!(
        per_target("bad"),
        2,
        "the failing target keeps every backup"
    );
}

#[test]
fn retention_without_rules_is_a_config_error() {
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[retention]\norphan_grace = \"1h\"\n\n{}",
        pg_target("x", "postgres", "")
    ));
    let r = run(&["prune"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("retention") && r.stderr.contains("keep_all"),
        "{}",
        r.all()
    );
    let cfg = ws.config(&format!(
        "{}\n[targets.retention]\nkeep_daily = \"x\"\n",
        pg_target("x", "postgres", "")
    ));
    let r = run(&["prune"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("targets[0].retention.keep_daily"),
        "{}",
        r.all()
    );
}
