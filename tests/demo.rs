//! `./scripts/demo`, the README's first command: it passes in a fresh
//! network namespace where no PostgreSQL of the machine is reachable, it
//! passes beside the machine's own cluster without touching it, and Ctrl-C
//! leaves no cluster and no temp directory behind.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::psql;

fn demo_command(netns: bool) -> Command {
    let script = format!("{}/scripts/demo", env!("CARGO_MANIFEST_DIR"));
    let mut c = if netns {
        let mut c = Command::new("unshare");
        c.args(["-n", "bash", "-c"])
            .arg(format!("ip link set lo up && exec '{script}'"));
        c
    } else {
        Command::new(&script)
    };
    c.env("BACKSTOP_BIN", env!("CARGO_BIN_EXE_backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
    c
}

/// The temp directory the demo announced.
fn work_dir(output: &str) -> String {
    let at = output
        .find("(in /tmp/backstop-demo.")
        .expect("the demo names its directory");
    output[at + 4..].split(')').next().unwrap().to_string()
}

fn machine_databases() -> String {
    psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname IN ('demo', 'demo_restored', 'demo_manual')",
    )
}

#[test]
fn the_demo_passes_without_any_server_of_the_machine_and_beside_it() {
    for netns in [true, false] {
        let out = demo_command(netns).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "netns {netns}: {text}");
        assert!(
            text.contains("== done: backup, verify, restore and the manual restore all agree"),
            "{text}"
        );
        assert!(
            text.contains("notes_restored.db: (250, "),
            "the SQLite file came back: {text}"
        );
        assert!(
            text.contains("+ zstd -dc "),
            "the manual restore is shown: {text}"
        );
        let dir = work_dir(&text);
        assert!(!std::path::Path::new(&dir).exists(), "{dir} was removed");
        assert_eq!(
            machine_databases(),
            "0",
            "the machine's cluster is untouched"
        );
    }
}

#[test]
fn ctrl_c_stops_the_demo_cluster_and_removes_its_directory() {
    use std::os::unix::process::CommandExt;
    // Ctrl-C signals the terminal's whole foreground process group
    // (regression: signalling the script alone flaked, since bash ignores
    // a SIGINT its running child survived, by design).
    let mut child = demo_command(false)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dir = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("(in /tmp/backstop-demo.") {
            dir = Some(work_dir(&line));
        }
        if line.contains("== back up") {
            break;
        }
    }
    let dir = dir.expect("the demo started its cluster");
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!std::path::Path::new(&dir).exists(), "{dir} was removed");
    let running = Command::new("pgrep")
        .args(["-f", &format!("{dir}/data")])
        .output()
        .unwrap();
    assert!(running.stdout.is_empty(), "the demo's postgres is stopped");
}
