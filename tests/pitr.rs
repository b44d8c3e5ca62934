//! Point-in-time recovery against real PostgreSQL servers of every major
//! the matrix has from 15 (real replication: pg_receivewal on a slot,
//! pg_basebackup, recovery with backstop as restore_command) and S3
//! storage (SeaweedFS), which a recovering server (user postgres) reads
//! like any client.
//!
//! Each test makes a throwaway cluster of its own (initdb on a free port)
//! and removes it, and every restored data directory is started as a
//! server on a private port to prove what it holds.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::s3::S3Server;

fn bin_dir(major: &str) -> Option<PathBuf> {
    let matrix = std::env::var("BACKSTOP_TEST_PG_MATRIX").expect(
        "BACKSTOP_TEST_PG_MATRIX is not set: run the tests with ./scripts/test, which fetches PostgreSQL 14-18",
    );
    matrix.split(',').find_map(|e| {
        let mut p = e.splitn(3, ':');
        if p.next()? != major {
            return None;
        }
        p.nth(1).map(PathBuf::from)
    })
}

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

/// A shell command as the user PostgreSQL runs as (postgres when we are
/// root: initdb refuses root).
fn as_pg(script: &str) -> std::process::Output {
    let out = if is_root() {
        Command::new("su").args(["postgres", "-c", script]).output()
    } else {
        Command::new("sh").args(["-c", script]).output()
    }
    .unwrap();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private PostgreSQL server on a data directory.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn chown_to_pg(path: &Path) {
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
        }
    }

    fn init(bin: &Path) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Command::new("chmod")
            .args(["755"])
            .arg(dir.path())
            .status()
            .unwrap();
        Self::chown_to_pg(dir.path());
        let data = dir.path().join("data");
        let out = as_pg(&format!(
            "{}/initdb -D {} -U postgres -A trust -E UTF8 --locale=C",
            bin.display(),
            data.display()
        ));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = Server {
            bin: bin.to_path_buf(),
            data,
            port: free_port(),
            _dir: Some(dir),
        };
        s.start().expect("the new cluster starts");
        s
    }

    fn on(bin: &Path, data: PathBuf) -> Server {
        // The directory holding it gets the server's log.
        Self::chown_to_pg(data.parent().unwrap());
        Server {
            bin: bin.to_path_buf(),
            data,
            port: free_port(),
            _dir: None,
        }
    }

    /// Start and wait until it accepts connections (for a recovering
    /// server: once recovery reached consistency, or ended).
    fn start(&self) -> Result<(), String> {
        let log = self.data.with_extension("log");
        let out = as_pg(&format!(
            "{}/pg_ctl -D {} -l {} -w -t 120 -o \"-p {} -k /tmp -c listen_addresses=127.0.0.1\" start",
            self.bin.display(),
            self.data.display(),
            log.display(),
            self.port
        ));
        match out.status.success() {
            true => Ok(()),
            false => Err(std::fs::read_to_string(&log).unwrap_or_default()),
        }
    }

    fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Wait until recovery has ended (promoted) and return the rows.
    fn ids_after_recovery(&self) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.sql("SELECT pg_is_in_recovery()") == "t" {
            assert!(Instant::now() < deadline, "recovery did not end");
            std::thread::sleep(Duration::from_millis(200));
        }
        self.sql("SELECT id FROM canary ORDER BY id")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_pg(&format!(
            "{}/pg_ctl -D {} -m immediate stop",
            self.bin.display(),
            self.data.display()
        ));
    }
}

/// The config, the bucket and the streamer of one test.
struct Site {
    s3: S3Server,
    bucket: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    bin: PathBuf,
    streamer: Option<Child>,
}

impl Site {
    fn new(server: &Server, target: &str) -> Site {
        Site::reached_at(server, target, None, "")
    }

    /// A site whose storage is reached at `endpoint` (a proxy in front of
    /// the S3 server), with `extra` appended to the config.
    fn reached_at(server: &Server, target: &str, endpoint: Option<&str>, extra: &str) -> Site {
        let s3 = support::s3::server();
        let bucket = s3.create_bucket("pitr");
        let dir = tempfile::tempdir().unwrap();
        // The recovering server (user postgres) reads this config in its
        // restore_command: world-readable, credentials inline.
        Command::new("chmod")
            .args(["755"])
            .arg(dir.path())
            .status()
            .unwrap();
        let config = dir.path().join("backstop.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\n[[targets]]\nname = \"{target}\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"postgres\"\nretry = {{ attempts = 1 }}\n{extra}",
                endpoint.unwrap_or(&s3.endpoint), s3.key, s3.secret, server.port
            ),
        )
        .unwrap();
        Command::new("chmod")
            .args(["644"])
            .arg(&config)
            .status()
            .unwrap();
        Site {
            s3,
            bucket,
            dir,
            config,
            bin: server.bin.clone(),
            streamer: None,
        }
    }

    /// The target is now `server` (a restored server promoted to primary).
    fn point_at(&self, server: &Server) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let config: String = config
            .lines()
            .map(|l| match l.starts_with("port = ") {
                true => format!("port = {}\n", server.port),
                false => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&self.config, config).unwrap();
    }

    fn run(&self, args: &[&str]) -> support::Run {
        let mut c = support::backstop();
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("BACKSTOP_PG_BIN_DIRS", &self.bin);
        support::Run::from(c.output().unwrap())
    }

    fn start_streamer(&mut self) {
        let spool = self.dir.path().join("spool");
        let child = support::backstop()
            .args(["wal", "stream", "--poll", "200ms", "--config"])
            .arg(&self.config)
            .arg("--spool")
            .arg(&spool)
            .env("BACKSTOP_PG_BIN_DIRS", &self.bin)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stream.log")).unwrap())
            .spawn()
            .unwrap();
        self.streamer = Some(child);
    }

    /// SIGKILL the streamer and its pg_receivewal at once, as a pod's
    /// death does.
    fn kill_streamer(&mut self) {
        if let Some(mut c) = self.streamer.take() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wal_keys(&self) -> Vec<String> {
        self.s3
            .keys(&self.bucket)
            .into_iter()
            .filter(|k| k.contains(".wal/"))
            .collect()
    }

    /// Wait until the segment `name` is stored.
    fn wait_stored(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .wal_keys()
            .iter()
            .any(|k| k.contains(&format!("/{name}.")))
        {
            assert!(
                Instant::now() < deadline,
                "{name} was not stored; stream log:\n{}",
                std::fs::read_to_string(self.dir.path().join("stream.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill_streamer();
        self.s3.delete_bucket(&self.bucket);
    }
}

/// Commit a row, then let the clock move on: the returned time falls
/// between this commit and the next.
fn commit(server: &Server, id: i64) -> chrono::DateTime<chrono::Utc> {
    server.sql(&format!("INSERT INTO canary VALUES ({id})"));
    std::thread::sleep(Duration::from_millis(600));
    let at = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(600));
    at
}

/// Complete the current segment (its own statement: a switch inside the
/// transaction of an insert would leave the commit in the next segment)
/// and wait until it is stored.
fn switch_and_wait(server: &Server, site: &Site) {
    let segment = server.sql("SELECT pg_walfile_name(pg_switch_wal())");
    site.wait_stored(&segment);
}

fn restore_and_read(site: &Site, bin: &Path, args: &[&str]) -> Vec<i64> {
    let (restored, _root) = restore_to(site, bin, args);
    restored.ids_after_recovery()
}

/// Restore with `args` and start the result (a server dropped before its
/// directory).
fn restore_to(site: &Site, bin: &Path, args: &[&str]) -> (Server, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    Command::new("chmod")
        .args(["755"])
        .arg(root.path())
        .status()
        .unwrap();
    let pgdata = root.path().join("restored");
    let mut all = vec!["restore", "--pgdata", pgdata.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = site.run(&all);
    assert_eq!(r.code, 0, "{}", r.all());
    let restored = Server::on(bin, pgdata);
    if let Err(log) = restored.start() {
        panic!("the restored server did not start:\n{log}");
    }
    (restored, root)
}

/// A new cluster of `major` with a `canary` table, its WAL streaming to a
/// new bucket, and a first base backup (the streamer first: its slot keeps
/// the WAL the base backup starts from).
fn streaming(major: &str, target: &str) -> (PathBuf, Server, Site) {
    let bin = bin_dir(major)
        .unwrap_or_else(|| panic!("PostgreSQL {major} is not in BACKSTOP_TEST_PG_MATRIX"));
    let primary = Server::init(&bin);
    primary.sql("CREATE TABLE canary (id bigint PRIMARY KEY)");
    let mut site = Site::new(&primary, target);
    site.start_streamer();
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    (bin, primary, site)
}

fn round_trip(major: &str) {
    let (bin, primary, mut site) = streaming(major, &format!("pitr{major}"));
    let t1 = commit(&primary, 1);
    let t2 = commit(&primary, 2);
    commit(&primary, 3);
    switch_and_wait(&primary, &site);

    // Killed mid-segment and restarted: nothing lost, nothing twice.
    primary.sql("INSERT INTO canary VALUES (4)");
    site.kill_streamer();
    primary.sql("INSERT INTO canary VALUES (5)");
    site.start_streamer();
    switch_and_wait(&primary, &site);
    site.kill_streamer();
    let keys = site.wal_keys();
    let mut names: Vec<&str> = keys
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().split('.').next().unwrap())
        .collect();
    let stored = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), stored, "a segment stored twice: {keys:?}");

    // status shows the restorable window, from the listings alone.
    let r = site.run(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let window = &rows[0]["pitr"];
    let from: chrono::DateTime<chrono::Utc> = window["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = window["to"].as_str().unwrap().parse().unwrap();
    assert!(
        from < t1 && t2 < to,
        "the window {from} … {to} holds t1 and t2: {}",
        r.stdout
    );
    assert!(window["gap_before"].is_null(), "{}", r.stdout);
    assert!(site.run(&["status"]).stdout.contains("point in time:"));

    assert_eq!(
        restore_and_read(&site, &bin, &["--to-time", &t1.to_rfc3339()]),
        vec![1],
        "PostgreSQL {major} at t1"
    );
    assert_eq!(
        restore_and_read(&site, &bin, &["--to-time", &t2.to_rfc3339()]),
        vec![1, 2],
        "at t2"
    );
    assert_eq!(
        restore_and_read(&site, &bin, &["--latest"]),
        vec![1, 2, 3, 4, 5],
        "latest"
    );
    // Cleanup: the slot goes with the cluster.
    drop(primary);
}

#[test]
fn restores_to_a_second_on_postgresql_15() {
    round_trip("15");
}

#[test]
fn restores_to_a_second_on_postgresql_16() {
    round_trip("16");
}

#[test]
fn restores_to_a_second_on_postgresql_17() {
    round_trip("17");
}

#[test]
fn restores_to_a_second_on_postgresql_18() {
    round_trip("18");
}

/// Regression (CI, PostgreSQL 15): the streamer was killed just after a
/// segment completed, while pg_receivewal zero-filled the next `.partial`;
/// every restart refused the short file ("has 10436608 bytes, should be 0
/// or 16777216") and no WAL was stored again.
#[test]
fn a_streamer_killed_while_zero_filling_a_segment_resumes() {
    let (bin, primary, mut site) = streaming("17", "zerofill");
    commit(&primary, 1);
    switch_and_wait(&primary, &site);
    site.kill_streamer();
    let current = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let partial = site
        .dir
        .path()
        .join("spool")
        .join(format!("{current}.partial"));
    std::fs::write(&partial, vec![0u8; 10_436_608]).unwrap();
    primary.sql("INSERT INTO canary VALUES (2)");
    site.start_streamer();
    switch_and_wait(&primary, &site);
    site.kill_streamer();
    assert!(!partial.exists(), "the unwritten .partial was replaced");
    assert_eq!(restore_and_read(&site, &bin, &["--latest"]), vec![1, 2]);
}

/// Regression: a storage that failed for longer than one request's
/// retries ended the streamer (and the Deployment's pod restarted it into
/// a crash loop). Now pg_receivewal stops, so the slot keeps the WAL on
/// the server, storing is retried with backoff, and streaming resumes with
/// nothing lost; the failures show in the streamer's metrics.
#[test]
fn a_storage_outage_while_streaming_is_retried_and_loses_nothing() {
    use std::sync::atomic::Ordering;
    use support::faulty_proxy::FaultyProxy;
    let bin = bin_dir("16").expect("PostgreSQL 16 in the matrix");
    let primary = Server::init(&bin);
    primary.sql("CREATE TABLE canary (id bigint PRIMARY KEY)");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = support::s3::server().endpoint.clone();
    // No faults until the outage begins.
    let proxy = runtime.block_on(FaultyProxy::start(&upstream, "PUT && .wal/", 0));
    let metrics = tempfile::tempdir().unwrap();
    let textfile = metrics.path().join("backstop.prom");
    let mut site = Site::reached_at(
        &primary,
        "outage",
        Some(&proxy.url),
        &format!("\n[metrics]\ntextfile = \"{}\"\n", textfile.display()),
    );
    site.start_streamer();
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    commit(&primary, 1);
    switch_and_wait(&primary, &site);

    // Every try of the next two stores fails (6 requests each).
    proxy.state.failures_left.store(12, Ordering::SeqCst);
    commit(&primary, 2);
    switch_and_wait(&primary, &site);
    assert!(proxy.state.failed.load(Ordering::SeqCst) >= 12);
    let log = std::fs::read_to_string(site.dir.path().join("stream.log")).unwrap();
    assert!(log.contains("storing WAL failed"), "{log}");
    let figures = std::fs::read_to_string(metrics.path().join("backstop-wal.prom")).unwrap();
    let failures: u64 = figures
        .lines()
        .find_map(|l| l.strip_prefix("backstop_wal_store_failures_total{target=\"outage\"} "))
        .expect("the failures are counted")
        .parse()
        .unwrap();
    assert!(failures >= 1, "{figures}");
    assert!(
        figures.contains("backstop_wal_gap{target=\"outage\"} 0"),
        "{figures}"
    );
    site.kill_streamer();
    assert_eq!(restore_and_read(&site, &bin, &["--latest"]), vec![1, 2]);
}

/// After a point-in-time restore the restored server is the primary, on a
/// new timeline: its WAL streams into the same target beside the old
/// timeline's, with the history file, and a restore of the latest goes
/// from the timeline-1 base backup across the switch.
#[test]
fn a_restored_server_streams_a_new_timeline_that_restores_across_the_switch() {
    let (bin, primary, mut site) = streaming("17", "timeline");
    let t1 = commit(&primary, 1);
    commit(&primary, 2);
    switch_and_wait(&primary, &site);
    site.kill_streamer();
    drop(primary);
    let (restored, _root) = restore_to(&site, &bin, &["--to-time", &t1.to_rfc3339()]);
    assert_eq!(restored.ids_after_recovery(), vec![1]);
    site.point_at(&restored);
    site.start_streamer();
    restored.sql("INSERT INTO canary VALUES (10)");
    switch_and_wait(&restored, &site);
    site.kill_streamer();
    let keys = site.wal_keys();
    assert!(
        keys.iter().any(|k| k.contains("00000002.history")),
        "{keys:?}"
    );
    let r = site.run(&["wal", "verify"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(restore_and_read(&site, &bin, &["--latest"]), vec![1, 10]);
}

/// The server invalidated the slot while the streamer was down (it held
/// more than max_slot_wal_keep_size): PostgreSQL 17 then streams from
/// "now" as if nothing were missing. The streamer makes the slot again and
/// reports the gap (log, metric, `wal verify`), and a new base backup
/// closes it: restores from it are whole and the metric clears.
#[test]
fn a_slot_the_server_invalidated_is_a_gap_that_a_new_base_backup_closes() {
    let bin = bin_dir("17").expect("PostgreSQL 17 in the matrix");
    let primary = Server::init(&bin);
    primary.sql("CREATE TABLE canary (id bigint PRIMARY KEY)");
    let metrics = tempfile::tempdir().unwrap();
    let textfile = metrics.path().join("backstop.prom");
    let mut site = Site::reached_at(
        &primary,
        "slotlost",
        None,
        &format!("\n[metrics]\ntextfile = \"{}\"\n", textfile.display()),
    );
    site.start_streamer();
    assert_eq!(site.run(&["backup", "--physical"]).code, 0);
    commit(&primary, 1);
    switch_and_wait(&primary, &site);
    site.kill_streamer();

    primary.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'");
    primary.sql("SELECT pg_reload_conf()");
    for i in 2..8 {
        primary.sql(&format!("INSERT INTO canary VALUES ({i})"));
        primary.sql("SELECT pg_switch_wal()");
    }
    primary.sql("CHECKPOINT");
    let status =
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'backstop_slotlost'";
    assert_eq!(primary.sql(status), "lost");

    site.start_streamer();
    primary.sql("INSERT INTO canary VALUES (20)");
    switch_and_wait(&primary, &site);
    assert_eq!(primary.sql(status), "reserved", "the slot is made again");
    let log = std::fs::read_to_string(site.dir.path().join("stream.log")).unwrap();
    assert!(log.contains("invalidated the replication slot"), "{log}");
    let gap = |value: u8| {
        let want = format!("backstop_wal_gap{{target=\"slotlost\"}} {value}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let figures = std::fs::read_to_string(metrics.path().join("backstop-wal.prom"))
                .unwrap_or_default();
            if figures.contains(&want) {
                return;
            }
            assert!(Instant::now() < deadline, "no `{want}` in:\n{figures}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    gap(1);
    let r = site.run(&["wal", "verify"]);
    assert_eq!(r.code, 1, "the gap is named: {}", r.all());

    // A new base backup: from it on, restores are whole.
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    primary.sql("INSERT INTO canary VALUES (21)");
    switch_and_wait(&primary, &site);
    gap(0);
    site.kill_streamer();
    assert_eq!(
        restore_and_read(&site, &bin, &["--latest"]),
        vec![1, 2, 3, 4, 5, 6, 7, 20, 21]
    );
}

/// Encrypted WAL in two storages (S3 and a local directory): each holds
/// every file as age ciphertext. Regression: a segment lost from the first
/// storage made a restore to a time after it refuse, though the second
/// storage holds it all; now the restore proves the second's WAL whole
/// and uses it (`wal fetch` reads the storages in order).
#[test]
fn encrypted_wal_in_two_storages_restores_when_one_lost_a_segment() {
    let bin = bin_dir("18").expect("PostgreSQL 18 in the matrix");
    let primary = Server::init(&bin);
    primary.sql("CREATE TABLE canary (id bigint PRIMARY KEY)");
    let keys = tempfile::tempdir().unwrap();
    let offsite = tempfile::tempdir().unwrap();
    for dir in [keys.path(), offsite.path()] {
        Command::new("chmod").arg("755").arg(dir).status().unwrap();
    }
    let id = age::x25519::Identity::generate();
    let identity = keys.path().join("age-key.txt");
    let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
    std::fs::write(&identity, format!("{secret}\n")).unwrap();
    // restore_command runs as the server's user: it must read the key.
    Command::new("chmod")
        .arg("644")
        .arg(&identity)
        .status()
        .unwrap();
    let mut site = Site::reached_at(
        &primary,
        "sealed",
        None,
        &format!(
            "\n[encryption]\nrecipients = [\"{}\"]\n\n[storages.offsite]\ntype = \"local\"\npath = \"{}\"\n",
            id.to_public(),
            offsite.path().display()
        ),
    );
    site.start_streamer();
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    commit(&primary, 1);
    let first = primary.sql("SELECT pg_walfile_name(pg_switch_wal())");
    site.wait_stored(&first);
    let t2 = commit(&primary, 2);
    // Recovery to t2 stops at the first commit after it.
    commit(&primary, 3);
    let last = primary.sql("SELECT pg_walfile_name(pg_switch_wal())");
    site.wait_stored(&last);
    // The local copy is written after the S3 one: wait for it too.
    let local_wal = || -> Vec<String> {
        let out = Command::new("find")
            .arg(offsite.path())
            .args(["-path", "*.wal/*", "-type", "f"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !local_wal().iter().any(|f| f.contains(&last)) {
        assert!(Instant::now() < deadline, "{last} never reached offsite");
        std::thread::sleep(Duration::from_millis(200));
    }
    site.kill_streamer();
    let s3_wal = site.wal_keys();
    assert!(
        s3_wal.iter().all(|k| k.ends_with(".zst.age")),
        "every stored WAL file is encrypted: {s3_wal:?}"
    );
    assert!(local_wal().iter().all(|f| f.ends_with(".zst.age")));
    let r = site.run(&["wal", "verify", "--identity", identity.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());

    // The first storage loses the segment holding row 1: a gap there.
    let victim = s3_wal.iter().find(|k| k.contains(&first)).unwrap().clone();
    let storage = site.s3.storage(&site.bucket);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use backstop::storage::Storage;
        storage.delete(&victim).await.unwrap();
    });
    // The local storage keeps its files private to the user who wrote
    // them; restore_command runs as the server's user.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(offsite.path())
        .status()
        .unwrap();
    assert_eq!(
        restore_and_read(
            &site,
            &bin,
            &[
                "--to-time",
                &t2.to_rfc3339(),
                "--identity",
                identity.to_str().unwrap()
            ]
        ),
        vec![1, 2]
    );
}

/// restore_command's exit codes: 1 only when the storage was read and
/// holds no such file; 126 (recovery stops) when the storage or config
/// cannot be read, never a "not found" that would end recovery early.
#[test]
fn wal_fetch_says_absent_only_when_it_knows() {
    let bin = bin_dir("17").expect("PostgreSQL 17 in the matrix");
    let primary = Server::init(&bin);
    let site = Site::new(&primary, "fetch");
    let dest = site.dir.path().join("wal");
    let r = site.run(&[
        "wal",
        "fetch",
        "000000010000000000000042",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "absent: {}", r.all());
    assert!(!dest.exists());
    let r = site.run(&["wal", "fetch", "00000002.history", dest.to_str().unwrap()]);
    assert_eq!(r.code, 1, "no such timeline: {}", r.all());

    let broken = site.dir.path().join("broken.toml");
    let text = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace(&site.s3.endpoint, "http://127.0.0.1:9");
    std::fs::write(&broken, text).unwrap();
    let out = support::backstop()
        .args(["wal", "fetch", "--config"])
        .arg(&broken)
        .args(["000000010000000000000042", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(126),
        "storage down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::backstop()
        .args(["wal", "fetch", "--config", "/nonexistent/backstop.toml"])
        .args(["000000010000000000000042", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(126),
        "no config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A restore refuses, before touching the directory, a target before the
/// oldest base backup, a directory in use, and a time the stored WAL does
/// not reach.
#[test]
fn point_in_time_restores_refuse_what_they_cannot_do() {
    let bin = bin_dir("17").expect("PostgreSQL 17 in the matrix");
    let primary = Server::init(&bin);
    primary.sql("CREATE TABLE canary (id bigint PRIMARY KEY)");
    let site = Site::new(&primary, "refuse");
    let root = tempfile::tempdir().unwrap();
    let pgdata = root.path().join("restored");
    let r = site.run(&["restore", "--pgdata", pgdata.to_str().unwrap(), "--latest"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("no base backup is stored"), "{}", r.all());

    let before = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(300));
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = site.run(&[
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--to-time",
        &before.to_rfc3339(),
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains("before the oldest base backup"),
        "{}",
        r.all()
    );
    assert!(!pgdata.exists());

    // No streamer ran: the WAL the base backup needs is not stored.
    let r = site.run(&["restore", "--pgdata", pgdata.to_str().unwrap(), "--latest"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("is not stored"), "{}", r.all());
    assert!(!pgdata.exists());

    std::fs::create_dir_all(pgdata.join("base")).unwrap();
    let r = site.run(&["restore", "--pgdata", pgdata.to_str().unwrap(), "--latest"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("not empty"), "{}", r.all());

    let r = site.run(&["restore", "--pgdata", pgdata.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains("--to-time, --to-lsn or --latest"),
        "{}",
        r.all()
    );
}

/// The weekly proof: a canary row, a restore to the second after it into
/// a scratch directory, a temporary server paused there (never promoted),
/// the canary checked, everything removed; and a clear failure when the
/// WAL is not being stored.
#[test]
fn verify_pitr_proves_a_paused_restore_and_fails_without_the_streamer() {
    let (_bin, primary, mut site) = streaming("17", "proof");
    let scratches = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("backstop-pitr-verify-")
            })
            .count()
    };
    let before = scratches();
    let r = site.run(&["verify", "--pitr"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.all().contains(
            "paused there: the canary row from before is present, the one from after is not"
        ),
        "{}",
        r.all()
    );
    assert_eq!(scratches(), before, "the scratch cluster was removed");
    assert_eq!(
        primary.sql("SELECT count(*) FROM backstop_pitr_canary"),
        "2",
        "two canary rows, nothing else touched"
    );

    site.kill_streamer();
    let r = site.run(&["verify", "--pitr", "--pitr-timeout", "3s"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("is `backstop wal stream` running"),
        "{}",
        r.all()
    );
}

/// Retention: base backups are kept by the policy on their own, and the
/// WAL older than the oldest kept base backup goes with the bases that
/// needed it; what is kept still restores.
#[test]
fn prune_deletes_only_the_wal_no_kept_base_backup_needs() {
    let (bin, primary, mut site) = streaming("16", "prune");
    commit(&primary, 1);
    switch_and_wait(&primary, &site);
    // A nightly dump beside the base backups: kept on its own.
    let r = site.run(&["backup"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = site.run(&["backup", "--physical"]);
    assert_eq!(r.code, 0, "{}", r.all());
    commit(&primary, 2);
    switch_and_wait(&primary, &site);
    let listed: serde_json::Value =
        serde_json::from_str(&site.run(&["list", "--json"]).stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let newest_base = listed
        .iter()
        .rev()
        .find(|b| b["format"] == "basebackup")
        .unwrap();
    let start = newest_base["objects"][0]["physical"]["start_lsn"]
        .as_str()
        .unwrap()
        .to_string();
    let start_segment = primary.sql(&format!("SELECT pg_walfile_name('{start}'::pg_lsn)"));
    let before: Vec<String> = site.wal_keys();
    assert!(before
        .iter()
        .any(|k| k.contains("/000000010000000000000002.")));

    let r = site.run(&["prune", "--keep-last", "1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let listed: serde_json::Value =
        serde_json::from_str(&site.run(&["list", "--json"]).stdout).unwrap();
    let formats: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["format"].as_str().unwrap())
        .collect();
    assert_eq!(
        formats,
        vec!["custom", "basebackup"],
        "the newest dump and the newest base"
    );
    let after = site.wal_keys();
    let name = |k: &String| k.rsplit('/').next().unwrap()[..24].to_string();
    for k in &before {
        let kept = after.contains(k);
        assert_eq!(
            kept,
            name(k) >= start_segment,
            "{k}: the kept base starts at {start_segment}"
        );
    }
    site.kill_streamer();
    assert_eq!(restore_and_read(&site, &bin, &["--latest"]), vec![1, 2]);
}

/// A stored segment whose bytes no longer match the hash in its name:
/// `wal verify` names it, and a restore that would replay it refuses
/// before the data directory exists.
#[test]
fn a_damaged_segment_is_named_by_wal_verify_and_refused_by_restore() {
    let (_bin, primary, mut site) = streaming("17", "damage");
    commit(&primary, 1);
    switch_and_wait(&primary, &site);
    commit(&primary, 2);
    switch_and_wait(&primary, &site);
    site.kill_streamer();
    let r = site.run(&["wal", "verify"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("all sound"), "{}", r.stdout);

    // The newest segment, rewritten with one byte changed (still valid zstd).
    let mut keys: Vec<String> = site
        .wal_keys()
        .into_iter()
        .filter(|k| !k.contains("history"))
        .collect();
    keys.sort();
    let victim = keys.last().unwrap().clone();
    let mut raw = zstd::decode_all(&site.s3.get(&site.bucket, &victim)[..]).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x40;
    let damaged = zstd::encode_all(&raw[..], 3).unwrap();
    let storage = site.s3.storage(&site.bucket);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use backstop::storage::Storage;
        storage.delete(&victim).await.unwrap();
        backstop::storage::put_bytes(&storage, &victim, damaged.into())
            .await
            .unwrap();
    });

    let r = site.run(&["wal", "verify"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("PROBLEM") && r.stdout.contains(&victim) && r.stdout.contains("damaged"),
        "{}",
        r.stdout
    );
    let root = tempfile::tempdir().unwrap();
    let pgdata = root.path().join("restored");
    let r = site.run(&["restore", "--pgdata", pgdata.to_str().unwrap(), "--latest"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("not sound, nothing was restored"),
        "{}",
        r.all()
    );
    assert!(!pgdata.exists(), "the data directory was never made");
}

/// Regression: pg_receivewal failing for a reason that does not pass (a
/// role without REPLICATION) was restarted every 5 s forever; now the
/// streamer stops at once, naming it.
#[test]
fn a_streamer_without_replication_privilege_stops_instead_of_retrying() {
    let bin = bin_dir("17").expect("PostgreSQL 17 in the matrix");
    let primary = Server::init(&bin);
    primary.sql("CREATE ROLE reader LOGIN");
    primary.sql("SELECT pg_create_physical_replication_slot('backstop_norepl', true)");
    let site = Site::new(&primary, "norepl");
    let text = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace("user = \"postgres\"", "user = \"reader\"");
    std::fs::write(&site.config, text).unwrap();
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_backstop"))
        .args(["wal", "stream", "--config"])
        .arg(&site.config)
        .arg("--spool")
        .arg(site.dir.path().join("spool"))
        .env("BACKSTOP_PG_BIN_DIRS", &site.bin)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not retried"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it stopped, it did not keep retrying"
    );
}
