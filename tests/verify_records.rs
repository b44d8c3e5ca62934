//! `verify` keeps what it proved beside the backup (a record per verify,
//! never the backup's own objects), `list`, `status` and the metrics show
//! when each target was last proven, and prune removes the records with
//! their backup. SQLite targets: no server needed.

mod support;

use support::*;

fn config(ws: &Workspace, db: &std::path::Path, extra: &str) -> std::path::PathBuf {
    ws.config(&format!(
        "[[targets]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\nretry = {{ attempts = 1 }}\n\n[metrics]\ntextfile = \"{}\"\n{extra}",
        db.display(),
        ws.path("metrics/backstop.prom").display()
    ))
}

fn records(ws: &Workspace) -> Vec<std::path::PathBuf> {
    ws.stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".verify-"))
        .collect()
}

fn list(cfg: &std::path::Path) -> Vec<serde_json::Value> {
    let r = run(&["list", "--json"], cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn a_verify_is_recorded_beside_its_backup_shown_and_pruned_with_it() {
    let ws = Workspace::new();
    let db = sqlite_notes(&ws, "app.db", 250);
    std::fs::create_dir_all(ws.path("metrics")).unwrap();
    let cfg = config(&ws, &db, "");
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let r = run(&["status"], &cfg);
    assert!(r.stdout.contains("proven: never"), "{}", r.stdout);
    let objects_before: Vec<_> = ws.stored_files();

    let r = run(&["verify"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let found = records(&ws);
    assert_eq!(found.len(), 1, "one record: {found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-passed.json"), "{name}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap();
    let backups = list(&cfg);
    let id = backups[0]["id"].as_str().unwrap();
    assert_eq!(record["backup"], id);
    assert_eq!(record["passed"], true);
    assert_eq!(record["tables"], 2, "{record}");
    assert_eq!(record["rows"], 252, "{record}");
    assert!(record["duration_seconds"].as_f64().unwrap() >= 0.0);
    // The backup itself is untouched: every object it had, the same bytes.
    for p in &objects_before {
        assert!(p.exists(), "{p:?} is still there");
    }
    assert_eq!(ws.stored_files().len(), objects_before.len() + 1);

    // list, status and the metrics say when it was last proven.
    let backups = list(&cfg);
    let verifications = backups[0]["verifications"].as_array().unwrap();
    assert_eq!(verifications.len(), 1);
    assert_eq!(verifications[0]["passed"], true);
    let r = run(&["list"], &cfg);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        r.stdout.contains("VERIFIED") && r.stdout.contains(&today),
        "{}",
        r.stdout
    );
    let r = run(&["status", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["proven"]["backup"], id, "{}", r.stdout);
    let figures = std::fs::read_to_string(ws.path("metrics/backstop-verify.prom")).unwrap();
    let proven: f64 = figures
        .lines()
        .find_map(|l| l.strip_prefix("backstop_last_proven_timestamp_seconds{target=\"app\"} "))
        .expect("the last proof is a metric")
        .parse()
        .unwrap();
    let at = verifications[0]["at"].as_str().unwrap();
    let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
    assert_eq!(proven, at.timestamp_millis() as f64 / 1000.0);

    // A verify that fails records that too: a stored copy that matches its
    // manifest byte for byte but holds no database (what a broken dump
    // tool would have stored).
    let object = ws.stored_file(".db.zst");
    let raw = b"this is not an SQLite database\n".repeat(64);
    let stored = zstd::encode_all(&raw[..], 3).unwrap();
    let manifest = ws.stored_file(".manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["objects"][0]["raw_bytes"] = raw.len().into();
    m["objects"][0]["stored_bytes"] = stored.len().into();
    m["objects"][0]["sha256"] = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&stored)).into()
    };
    std::fs::write(&object, &stored).unwrap();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let r = run(&["verify"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let found = records(&ws);
    assert_eq!(found.len(), 2);
    let failed = found
        .iter()
        .find(|p| p.to_string_lossy().ends_with("-failed.json"))
        .expect("a failed record");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(failed).unwrap()).unwrap();
    assert_eq!(record["passed"], false);
    assert!(
        record["why"].as_str().unwrap().contains("not a database"),
        "the reason is kept: {record}"
    );
    let r = run(&["list"], &cfg);
    assert!(r.stdout.contains("FAILED"), "{}", r.stdout);
    // Still proven by the earlier pass.
    let r = run(&["status", "--json"], &cfg);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["proven"]["backup"], id);

    // A newer backup, then keep only it: the old backup goes with its
    // records, and nothing of it is left behind.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap() + "\n[retention]\nkeep_last = 1\n",
    )
    .unwrap();
    let r = run(&["prune"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(records(&ws).is_empty(), "{:?}", ws.stored_files());
    assert!(
        !ws.stored_files()
            .iter()
            .any(|p| p.to_string_lossy().contains(id)),
        "{:?}",
        ws.stored_files()
    );
}

/// An encrypted backup's record keeps nothing its manifest seals: no
/// table or row counts.
#[test]
fn the_record_of_an_encrypted_backup_holds_no_counts() {
    let ws = Workspace::new();
    let db = sqlite_notes(&ws, "app.db", 40);
    std::fs::create_dir_all(ws.path("metrics")).unwrap();
    let id = age::x25519::Identity::generate();
    let key = ws.path("age-key.txt");
    std::fs::write(
        &key,
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&id.to_string())
        ),
    )
    .unwrap();
    let cfg = config(
        &ws,
        &db,
        &format!("\n[encryption]\nrecipients = [\"{}\"]\n", id.to_public()),
    );
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let r = run(&["verify", "--identity", key.to_str().unwrap()], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let found = records(&ws);
    assert_eq!(found.len(), 1);
    let text = std::fs::read_to_string(&found[0]).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["passed"], true);
    for sealed in ["tables", "rows", "tables_compared"] {
        assert!(record.get(sealed).is_none(), "{sealed} in {text}");
    }
    assert!(!text.contains("notes"), "{text}");
}
