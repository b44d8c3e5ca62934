//! The runbooks are code: every shell block of docs/kubernetes.md and the
//! README marked `<!-- runbook: … -->` runs here as written, in order, in
//! one bash (`set -euo pipefail`), against the test servers. The variables
//! the docs ask the reader to set once (NS, CONFIG, PROD, DEV, NEW) are the
//! test's own; `kubectl` is a stand-in that records what it was asked
//! (there is no cluster) and keeps a port-forward running until killed.
//! Where a README block names the reader's own things, SUBSTITUTIONS says
//! what the test uses instead.

mod support;

use std::path::Path;
use std::process::Command;
use support::{psql, unique, TestDb, Workspace};

/// The marked blocks of a Markdown file, in order.
fn runbook_blocks(doc: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("<!-- runbook:") {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence, "```sh",
            "{doc}: a runbook marker must precede a ```sh block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push(body.join("\n"));
    }
    blocks
}

/// A fake kubectl on PATH that logs its arguments.
fn kubectl_stand_in(ws: &Workspace) -> std::path::PathBuf {
    let bin = ws.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = ws.path("kubectl.log");
    ws.script(
        "bin/kubectl",
        &format!(
            "echo \"$*\" >> {}\ncase \"$*\" in *port-forward*) exec sleep 120 >/dev/null 2>&1 </dev/null ;; esac",
            log.display()
        ),
    );
    bin
}

fn run_blocks(ws: &Workspace, blocks: &[String], env: &[(&str, String)], cwd: &Path) -> String {
    assert!(!blocks.is_empty(), "no runbook blocks found");
    let bin = kubectl_stand_in(ws);
    let backstop_dir = Path::new(env!("CARGO_BIN_EXE_backstop")).parent().unwrap();
    let script = format!("set -euo pipefail\n{}\n", blocks.join("\n"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(cwd).env(
        "PATH",
        format!(
            "{}:{}:{}",
            bin.display(),
            backstop_dir.display(),
            std::env::var("PATH").unwrap()
        ),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the runbook failed as written:\n{script}\n---\n{all}"
    );
    all
}

fn matrix_server(major: &str) -> Option<String> {
    let matrix = std::env::var("BACKSTOP_TEST_PG_MATRIX").ok()?;
    matrix.split(',').find_map(|e| {
        let mut p = e.split(':');
        (p.next()? == major).then(|| p.next().unwrap().to_string())
    })
}

fn psql_at(port: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-Atq",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_kubernetes_incident_runbook_runs_as_written() {
    let port = matrix_server("15").expect(
        "BACKSTOP_TEST_PG_MATRIX names PostgreSQL 15 (the 'new cluster'): run ./scripts/test",
    );
    let ws = Workspace::new();
    let prod = TestDb::create("rbprod");
    let owner = unique("rb_owner");
    psql(
        "postgres",
        &format!("CREATE ROLE {owner} LOGIN PASSWORD 'owner-secret'"),
    );
    prod.sql(&format!(
        "CREATE TABLE orders (id int primary key, note text); ALTER TABLE orders OWNER TO {owner};
         INSERT INTO orders SELECT g, 'first ' || g FROM generate_series(1, 10) g"
    ));
    let dev = TestDb::create("rbdev");
    dev.sql("CREATE TABLE dev_only (x int)");
    let new_db = unique("rbnew");

    // The site's config as the runbook's reader has it: other targets and
    // a notifier whose variables are not set on the laptop.
    let config = ws.config(&format!(
        "[[notify]]\ntype = \"ping\"\nurl = \"${{HC_PING_URL}}\"\n\n[[targets]]\nname = \"prod\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nuser = \"postgres\"\npassword = \"${{DB_PASSWORD}}\"\ndatabase = \"{}\"\nglobals = true\n\n[[targets]]\nname = \"other\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nuser = \"postgres\"\npassword = \"${{OTHER_PASSWORD}}\"\ndatabase = \"other\"\n",
        prod.name
    ));
    // Two backups: the first good, the second after a "bad migration".
    let backup = |what: &str| {
        let out = support::backstop()
            .args(["backup", "--target", "prod", "--config"])
            .arg(&config)
            .env("DB_PASSWORD", "x")
            .env("OTHER_PASSWORD", "x")
            .env("HC_PING_URL", "http://127.0.0.1:9/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    backup("the good backup");
    prod.sql("DELETE FROM orders WHERE id > 3");
    backup("the backup after the bad migration");
    prod.sql("DROP TABLE orders");
    let roles_before = psql_at(
        &port,
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles",
    );

    let blocks = runbook_blocks("docs/kubernetes.md");
    assert_eq!(
        blocks.len(),
        4,
        "the incident, older backup, new cluster and dev refresh blocks"
    );
    let url = |db: &str| format!("postgres://postgres@127.0.0.1:5432/{db}");
    let env = [
        ("NS", "backstop-runbook".to_string()),
        ("CONFIG", config.display().to_string()),
        ("PROD", url(&prod.name)),
        ("DEV", url(&dev.name)),
        ("NEW", format!("postgres://postgres@127.0.0.1:{port}")),
        ("DB_PASSWORD", "x".to_string()),
    ];
    // The new cluster's database is "prod" in the docs: make the matrix
    // server's copy unique by running that block with PROD's name there.
    let blocks: Vec<String> = blocks
        .into_iter()
        .map(|b| b.replace("\"$NEW/prod\"", &format!("\"$NEW/{new_db}\"")))
        .collect();
    let out = run_blocks(&ws, &blocks, &env, ws.path("").as_path());

    // After the runbook: prod holds the backup before the newest (10 rows),
    // its damaged predecessors were kept aside, the new cluster has the
    // role and the newest backup (3 rows), dev was refreshed from prod.
    assert_eq!(
        prod.sql("SELECT count(*) FROM orders").trim(),
        "10",
        "{out}"
    );
    let kept = psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '{}_replaced_%'",
            prod.name
        ),
    );
    assert_eq!(
        kept.trim(),
        "2",
        "--keep-replaced kept both replaced databases"
    );
    assert_eq!(
        Command::new("psql")
            .args(["-X", "-Atq", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", &new_db, "-c", "SELECT count(*) || ' ' || pg_get_userbyid(relowner) FROM orders, pg_class WHERE relname = 'orders' GROUP BY relowner"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap(),
        format!("3 {owner}"),
        "the new cluster: the newest backup, owned by its role"
    );
    assert_eq!(dev.sql("SELECT count(*) FROM orders").trim(), "3");
    assert_eq!(
        dev.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'dev_only'")
            .trim(),
        "0"
    );
    let kubectl = std::fs::read_to_string(ws.path("kubectl.log")).unwrap();
    let stop = kubectl
        .find("scale deployment/app --replicas=0")
        .expect("app stopped");
    let start = kubectl
        .find("scale deployment/app --replicas=1")
        .expect("app started");
    assert!(stop < start, "{kubectl}");

    // Clean up: the copies kept aside, the new cluster's database and the
    // roles the globals restore created there.
    for db in psql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{}_replaced_%'",
            prod.name
        ),
    )
    .lines()
    {
        psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"));
    }
    psql_at(
        &port,
        &format!("DROP DATABASE IF EXISTS {new_db} WITH (FORCE)"),
    );
    let before: Vec<&str> = roles_before.split(',').collect();
    for role in psql_at(
        &port,
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles",
    )
    .split(',')
    {
        if !before.contains(&role) && !role.is_empty() {
            let _ = psql_at(&port, &format!("DROP ROLE IF EXISTS \"{role}\""));
        }
    }
    drop(prod);
    drop(dev);
    psql("postgres", &format!("DROP ROLE IF EXISTS {owner}"));
}

/// What the README's laptop blocks name that a test must not touch: its
/// build command (the tests' binary is on PATH) and the copy's database.
const SUBSTITUTIONS: [(&str, &str); 2] = [
    ("cargo run --release -- ", "backstop "),
    ("postgres_copy", "$COPY"),
];

#[test]
fn the_readme_laptop_blocks_run_as_written() {
    let ws = Workspace::new();
    let examples = ws.path("examples");
    std::fs::create_dir_all(&examples).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backstop.toml"),
        examples.join("backstop.toml"),
    )
    .unwrap();
    let copy = unique("readme_copy");
    let blocks: Vec<String> = runbook_blocks("README.md")
        .into_iter()
        .map(|b| {
            SUBSTITUTIONS
                .iter()
                .fold(b, |b, (from, to)| b.replace(from, to))
        })
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "the backup block and the list/restore/check block"
    );
    let out = run_blocks(&ws, &blocks, &[("COPY", copy.clone())], &ws.path(""));
    assert!(
        ws.path("examples/backups").is_dir(),
        "the backups went beside the config: {out}"
    );
    assert!(support::database_exists(&copy), "{out}");
    assert!(
        out.contains("local"),
        "list showed the target's backup: {out}"
    );
    psql("postgres", &format!("DROP DATABASE {copy} WITH (FORCE)"));
}
