//! Fault injection, kept running: the experiments that found the hardening
//! bugs, against the real PostgreSQL, a real filesystem (a full tmpfs) and
//! real processes. Every case checks the two numbers that matter: backups
//! published by failed runs (must be 0) and good backups lost (must be 0).
//! tests/README.md lists the cases.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// Complete backups in the workspace's storage, by id.
fn backups(cfg: &Path) -> Vec<String> {
    let r = run(&["list", "--json"], cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The invariant after a failed run: no new backup, every old one intact.
fn assert_nothing_published_nothing_lost(case: &str, cfg: &Path, before: &[String]) {
    let after = backups(cfg);
    let published: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    let lost: Vec<&String> = before.iter().filter(|id| !after.contains(id)).collect();
    assert!(
        published.is_empty(),
        "{case}: a failed run published {published:?}"
    );
    assert!(lost.is_empty(), "{case}: good backups lost: {lost:?}");
    eprintln!("faults: {case}: 0 published by the failed run, 0 good backups lost");
}

fn seeded_db(prefix: &str, rows: u32) -> TestDb {
    let db = TestDb::create(prefix);
    db.sql(&format!(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, {rows}) g"
    ));
    db
}

/// The producer killed (SIGKILL) or cut off with exit 0 at 10, 50 and 90 %
/// of the dump, in both formats: nothing is published, the good backup taken
/// before stays.
#[test]
fn producer_killed_or_truncated_at_fractions_of_the_dump() {
    let src = seeded_db("bs_fault_frac", 100_000);
    for format in ["custom", "plain"] {
        let ws = Workspace::new();
        let good_cfg = ws.config(&pg_target(
            "f",
            &src.name,
            &format!("format = \"{format}\""),
        ));
        let r = run(&["backup"], &good_cfg);
        assert_eq!(r.code, 0, "{}", r.all());
        let before = backups(&good_cfg);
        let full = r.summary()["targets"][0]["raw_bytes"].as_u64().unwrap();
        for pct in [10, 50, 90] {
            let cut = full * pct / 100;
            for (how, tail) in [("killed", "kill -9 $$"), ("exit 0", "exit 0")] {
                let wrapper = ws.script(
                    "pg_dump_fault",
                    &format!(
                        "[ \"$1\" = --version ] && exec {real} --version\n{real} \"$@\" | head -c {cut}\n{tail}",
                        real = real_pg_dump()
                    ),
                );
                let cfg = ws.config(&pg_target(
                    "f",
                    &src.name,
                    &format!(
                        "format = \"{format}\"\npg_dump_path = \"{}\"",
                        wrapper.display()
                    ),
                ));
                let r = run(&["backup"], &cfg);
                let case = format!("{format} producer {how} at {pct}%");
                assert_eq!(r.code, 1, "{case}: {}", r.all());
                assert_eq!(r.summary()["targets"][0]["stage"], "dump", "{case}");
                assert_nothing_published_nothing_lost(&case, &good_cfg, &before);
            }
        }
    }
}

/// A tmpfs of `bytes`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// ENOSPC on the data object and, with room for exactly the data, on the
/// manifest: the run fails at that stage, nothing is published, no temp
/// file or data object is left behind.
#[test]
fn a_full_disk_on_data_or_manifest_publishes_nothing_and_leaves_nothing() {
    let src = seeded_db("bs_fault_enospc", 30_000);
    let body = |path: &Path| {
        format!(
            "[storage]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n[compression]\nalgorithm = \"none\"\n{}",
            path.display(),
            pg_target("full", &src.name, "")
        )
    };
    // The data object's size, from a backup to a roomy directory.
    let ws = Workspace::new();
    let cfg = ws.path("roomy.toml");
    std::fs::write(&cfg, body(&ws.path("roomy"))).unwrap();
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let stored = r.summary()["targets"][0]["stored_bytes"].as_u64().unwrap();

    for (case, size, stage) in [
        ("ENOSPC on the data object", stored / 2, "upload"),
        (
            "ENOSPC on the manifest",
            stored.div_ceil(4096) * 4096,
            "manifest",
        ),
    ] {
        let mnt = ws.path(&format!("tmpfs-{stage}"));
        let _fs = Tmpfs::mount(&mnt, size);
        let cfg = ws.path(&format!("{stage}.toml"));
        std::fs::write(&cfg, body(&mnt)).unwrap();
        let r = run(&["backup"], &cfg);
        assert_eq!(r.code, 1, "{case}: {}", r.all());
        let t = &r.summary()["targets"][0];
        assert_eq!(t["stage"], stage, "{case}: {t}");
        assert!(
            t["error"].as_str().unwrap().contains("No space left"),
            "{case}: {t}"
        );
        let left: Vec<_> = std::fs::read_dir(&mnt)
            .unwrap()
            .flatten()
            .flat_map(|d| walk_files(&d.path()))
            .collect();
        assert!(left.is_empty(), "{case}: left behind {left:?}");
        assert_nothing_published_nothing_lost(case, &cfg, &[]);
    }
}

fn walk_files(p: &Path) -> Vec<std::path::PathBuf> {
    if p.is_file() {
        return vec![p.to_path_buf()];
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().flat_map(|e| walk_files(&e.path())).collect())
        .unwrap_or_default()
}

/// SIGTERM or SIGINT in the middle of a restore, a replace and a verify:
/// the destination is untouched, and no half-loaded or scratch database is
/// left on the server.
#[test]
fn signals_during_restore_replace_and_verify_leave_the_server_as_it_was() {
    let src = seeded_db("bs_fault_sig", 600_000);
    let ws = Workspace::new();
    let target = unique("sig").replace('_', "-");
    let cfg = ws.config(&pg_target(&target, &src.name, "format = \"plain\""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let dest = TestDb::create("bs_fault_sig_dest");
    dest.sql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42);");
    let new_db = TestDb::reserve("bs_fault_sig_new");
    let verify_prefix = format!("backstop_verify_{}", target.replace('-', "_"));
    // Scoped to this test's names: other tests restore at the same time.
    let leftovers = || {
        let verify = psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{verify_prefix}%'"),
        );
        let n: u32 = [
            verify,
            restore_temps(&new_db.name),
            restore_temps(&dest.name),
        ]
        .iter()
        .map(|c| c.parse::<u32>().unwrap())
        .sum();
        n.to_string()
    };
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        (
            "SIGTERM during restore --create",
            vec![
                "restore".into(),
                "--into".into(),
                new_db.url(),
                "--create".into(),
            ],
            libc::SIGTERM,
        ),
        (
            "SIGINT during restore --replace",
            vec![
                "restore".into(),
                "--into".into(),
                dest.url(),
                "--replace".into(),
            ],
            libc::SIGINT,
        ),
        (
            "SIGTERM during verify",
            vec!["verify".into(), "--scratch".into(), scratch.clone()],
            libc::SIGTERM,
        ),
    ];
    for (case, args, signal) in cases {
        let mut child = backstop()
            .args(&args)
            .arg("--config")
            .arg(&cfg)
            .env("BACKSTOP_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the restore is loading (it says so when it created its
        // temporary database), then signal it mid-load.
        let stderr = child.stderr.take().unwrap();
        let (loading_tx, loading_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("created the database the restore loads") {
                    let _ = loading_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        loading_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{case}: the restore never started"));
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let mut r = Run::from(out);
        r.stderr = reader.join().unwrap();
        assert_eq!(r.code, 1, "{case}: {}", r.all());
        assert!(r.all().contains("interrupted"), "{case}: {}", r.all());
        assert_eq!(leftovers(), "0", "{case}: a database was left behind");
        assert!(!database_exists(&new_db.name), "{case}");
        assert_eq!(
            dest.sql("SELECT x FROM keep_me"),
            "42",
            "{case}: the destination changed"
        );
        eprintln!("faults: {case}: destination untouched, nothing left on the server");
    }
}

/// Several backups of one target at once (same second) and a prune running
/// beside them, as from separate hosts or pods (each its own lock
/// directory: the host lock does not keep them apart): every backup is
/// published under its own id, the prune deletes only what retention says,
/// and nothing half-written is taken.
#[test]
fn concurrent_backups_and_prunes_keep_every_good_backup() {
    let src = seeded_db("bs_fault_conc", 20_000);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}\n[retention]\nkeep_last = 10\norphan_grace = \"1h\"\n",
        pg_target("c", &src.name, "")
    ));
    let spawn = |args: &[&str]| {
        let host = tempfile::tempdir().unwrap().keep();
        backstop()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("BACKSTOP_LOCK_DIR", host)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs: Vec<_> = (0..4).map(|_| spawn(&["backup"])).collect();
    runs.push(spawn(&["prune"]));
    runs.push(spawn(&["prune"]));
    for child in runs {
        let r = Run::from(child.wait_with_output().unwrap());
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let ids = backups(&cfg);
    assert_eq!(ids.len(), 4, "four runs, four backups: {ids:?}");
    let dest = TestDb::reserve("bs_fault_conc_dest");
    for id in &ids {
        let r = run(
            &["restore", "--backup", id, "--into", &dest.url(), "--create"],
            &cfg,
        );
        assert_eq!(r.code, 0, "{id}: {}", r.all());
        psql("postgres", &format!("DROP DATABASE \"{}\"", dest.name));
    }
    eprintln!("faults: 4 concurrent backups + 2 prunes: 4 published, 0 lost");
}

/// Damaged objects and manifests, as storage faults leave them: restore,
/// verify, status and prune each say so and none loses a good backup.
#[test]
fn damaged_objects_and_manifests_are_reported_never_lost() {
    let src = seeded_db("bs_fault_dmg", 5_000);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}\n[retention]\nkeep_last = 5\norphan_grace = \"1s\"\n",
        pg_target("d", &src.name, "")
    ));
    for _ in 0..3 {
        assert_eq!(run(&["backup"], &cfg).code, 0);
    }
    let ids = backups(&cfg);
    let files = ws.stored_files();
    let find = |id: &str, suffix: &str| {
        files
            .iter()
            .find(|p| p.to_string_lossy().contains(id) && p.to_string_lossy().ends_with(suffix))
            .unwrap()
            .clone()
    };
    // Oldest: its object flipped (same size: only the SHA-256 can tell).
    let obj = find(&ids[0], ".dump.zst");
    flip_middle_bit(&obj);
    // Middle: manifest truncated.
    let man = find(&ids[1], ".manifest.json");
    let text = std::fs::read(&man).unwrap();
    std::fs::write(&man, &text[..text.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));

    let dest = TestDb::reserve("bs_fault_dmg_dest");
    let r = run(
        &[
            "restore",
            "--backup",
            &ids[0],
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("checksum mismatch"), "{}", r.all());
    let r = run(
        &[
            "restore",
            "--backup",
            &ids[1],
            "--into",
            &dest.url(),
            "--create",
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("damaged"), "{}", r.all());
    assert!(!database_exists(&dest.name));

    let r = run(&["prune"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        man.exists() && find(&ids[1], ".dump.zst").exists(),
        "prune kept the damaged backup"
    );
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    let r = run(&["verify", "--scratch", &scratch], &cfg);
    assert_eq!(r.code, 0, "the newest is intact: {}", r.all());
    assert_eq!(r.summary()["targets"][0]["backup_id"], ids[2].as_str());
    // The restore that found ids[0]'s object damaged marked it damaged
    // (it is listed so from now on); its data is kept all the same.
    let after = backups(&cfg);
    assert!(after.contains(&ids[2]), "{after:?}");
    assert!(obj.exists(), "the damaged backup's data is kept");
    eprintln!("faults: damaged object + damaged manifest: reported, 0 good backups lost");
}
