//! `backstop schedule`: runs on its cron, one run at a time, and stops
//! cleanly on SIGTERM (aborting a run in progress).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

fn manifests(ws: &Workspace) -> usize {
    ws.stored_files()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .count()
}

#[test]
fn per_second_schedule_runs_twice_then_stops_on_sigterm() {
    let db = TestDb::create("bs_sched");
    db.sql("CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[schedule]\ncron = \"*/2 * * * * *\"\ntimezone = \"America/Chicago\"\n\n{}",
        pg_target("sched", &db.name, "")
    ));
    let child = backstop()
        .args(["schedule", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while manifests(&ws) < 2 {
        assert!(
            Instant::now() < deadline,
            "two scheduled runs did not happen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    let r = Run::from(child.wait_with_output().unwrap());
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "stops promptly"
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("waiting for the next run") && r.stderr.contains("America/Chicago"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.matches("\"event\":\"summary\"").count() >= 2,
        "{}",
        r.stdout
    );
    assert!(ws
        .stored_files()
        .iter()
        .all(|p| !p.to_string_lossy().contains(".backstop-tmp-")));
}

#[test]
fn sigterm_during_a_scheduled_run_aborts_it_cleanly() {
    let db = TestDb::create("bs_sched_abort");
    let ws = Workspace::new();
    let pidfile = ws.path("dump.pid");
    let wrapper = ws.script(
        "pg_dump",
        &format!(
            "[ \"$1\" = --version ] && exec {} --version\necho $$ > '{}'\nhead -c 100000 /dev/urandom\nexec sleep 300",
            real_pg_dump(),
            pidfile.display()
        ),
    );
    let cfg = ws.config(&format!(
        "[schedule]\ncron = \"* * * * * *\"\n\n{}",
        pg_target(
            "slow",
            &db.name,
            &format!("pg_dump_path = \"{}\"", wrapper.display())
        )
    ));
    let child = backstop()
        .args(["schedule", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&pidfile)
        .map(|s| s.trim().is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the scheduled run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let dump_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.summary()["targets"][0]["stage"],
        "interrupted",
        "the aborted run is reported"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{dump_pid}")).exists(),
        "dump killed"
    );
    assert!(ws.stored_files().is_empty(), "{:?}", ws.stored_files());
}

#[test]
fn schedule_without_a_schedule_table_is_a_usage_error() {
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("x", "postgres", ""));
    let r = run(&["schedule"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("[schedule]"), "{}", r.all());
    let cfg = ws.config(&format!(
        "[schedule]\ncron = \"0 25 * * *\"\n\n{}",
        pg_target("x", "postgres", "")
    ));
    let r = run(&["schedule"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("schedule.cron"), "{}", r.all());
}
