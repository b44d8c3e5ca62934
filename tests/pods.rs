//! Every CronJob's pod, run the way a kubelet would run it: the overlay is
//! rendered with `kubectl kustomize`, and each pod's container runs under
//! podman with the image, command and args (with Kubernetes' `$(VAR)`
//! expansion), env (Secret values from the test, fieldRefs filled in as
//! the API server would), the ConfigMap mounted where the manifest mounts
//! it, each emptyDir as a tmpfs of its size limit, and the securityContext:
//! user and group, read-only root, no capabilities, no privilege escalation,
//! no service account token unless the pod asks for one.
//!
//! Against the loopback PostgreSQL, MariaDB, SeaweedFS and an SMTP server:
//! the watchdog reports a target with no backup, the backup CronJob backs up
//! (checked from outside with `backstop list`), the verify CronJob verifies,
//! the watchdog then passes, and a sharded backup CronJob backs up each of 7
//! targets exactly once across 3 pods.
//!
//! scripts/test builds the image (scripts/image, from the binary these tests
//! run) and names it in BACKSTOP_TEST_IMAGE; where podman cannot run a
//! container scripts/test says so and these tests say they were skipped.

mod support;

use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use support::s3::S3Server;
use support::smtp::{SmtpOptions, SmtpServer};
use support::{psql, unique, Workspace};

fn image() -> Option<String> {
    match std::env::var("BACKSTOP_TEST_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ => {
            eprintln!(
                "SKIPPED: BACKSTOP_TEST_IMAGE is not set (scripts/test sets it after building the image with podman; it said why it could not)"
            );
            None
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An overlay made for the test, over the real base and components, with
/// the test's config and the image under test.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn new(components: &[&str], config: &str, image: &str, patches: &str) -> Overlay {
        let dir = tempfile::tempdir().unwrap();
        let (name, tag) = image.rsplit_once(':').expect("image has a tag");
        let comps: String = components
            .iter()
            .map(|c| {
                format!(
                    "  - {}\n",
                    relative(
                        dir.path(),
                        &root().join("deploy/kubernetes/components").join(c)
                    )
                )
            })
            .collect();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: backstop-ci\nresources:\n  - {}\ncomponents:\n{comps}configMapGenerator:\n  - name: backstop-config\n    behavior: replace\n    files:\n      - backstop.toml\nimages:\n  - name: backstop\n    newName: {name}\n    newTag: {tag}\n{patches}",
                relative(dir.path(), &root().join("deploy/kubernetes/base"))
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("backstop.toml"), config).unwrap();
        Overlay { dir }
    }

    fn render(&self) -> Vec<Value> {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(self.dir.path())
            .output()
            .expect("kubectl is needed (./scripts/test installs it)");
        assert!(
            out.status.success(),
            "kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }
}

/// `target` as a path relative to `dir` (kustomize refuses absolute ones).
fn relative(dir: &std::path::Path, target: &std::path::Path) -> String {
    let dir = dir.canonicalize().unwrap();
    let up = "../".repeat(dir.components().count() - 1);
    format!(
        "{up}{}",
        target
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
            .trim_start_matches('/')
    )
}

/// What the cluster would hold: Secrets by name and key, and the rendered
/// ConfigMaps.
struct Cluster {
    secrets: BTreeMap<(String, String), String>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Cluster {
    fn new(docs: &[Value], secrets: &[(&str, &str, &str)]) -> Cluster {
        let config_maps = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .map(|d| {
                let data = d["data"]
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (d["metadata"]["name"].as_str().unwrap().to_string(), data)
            })
            .collect();
        Cluster {
            secrets: secrets
                .iter()
                .map(|(n, k, v)| ((n.to_string(), k.to_string()), v.to_string()))
                .collect(),
            config_maps,
        }
    }
}

fn cronjob<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no CronJob {name} in the render"))
}

/// Kubernetes quantities as bytes ("8Gi", "256Mi", "1G").
fn quantity(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

/// Kubernetes' `$(VAR)` expansion of command and args: `$$` is a literal
/// `$`, an undefined variable stays as written.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(end) = rest.strip_prefix("$(").and_then(|r| r.find(')')) {
            let name = &rest[2..2 + end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[..3 + end]),
            }
            rest = &rest[3 + end..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// One pod of a CronJob's Job (`index` for an Indexed Job's pods), run to
/// completion under podman as the kubelet would run it.
fn run_pod(job: &Value, cluster: &Cluster, image_check: &str, index: Option<u32>) -> Output {
    let cron_name = job["metadata"]["name"].as_str().unwrap();
    let namespace = job["metadata"]["namespace"].as_str().unwrap_or("default");
    let job_name = format!("{cron_name}-{}", unique("run").replace('_', "-"));
    let pod_name = format!("{job_name}-{}", index.unwrap_or(0));
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "{cron_name}: one container");
    let c = &containers[0];
    let image = c["image"].as_str().unwrap();
    assert_eq!(image, image_check, "{cron_name}: the overlay's image");

    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
            let secret = r[&Value::from("name")].as_str().unwrap();
            let key = r[&Value::from("key")].as_str().unwrap();
            // A kubelet refuses to start the container (CreateContainerConfigError).
            cluster
                .secrets
                .get(&(secret.to_string(), key.to_string()))
                .unwrap_or_else(|| panic!("{cron_name}: env {name} needs Secret {secret} key {key}, which the test cluster does not have"))
                .clone()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.labels['job-name']" => job_name.clone(),
                "metadata.name" => pod_name.clone(),
                "metadata.namespace" => namespace.to_string(),
                other => panic!("{cron_name}: fieldRef {other} is not filled in by this runner"),
            }
        } else {
            panic!("{cron_name}: env {name} has a source this runner does not know: {e:?}");
        };
        env.push((name, value));
    }
    let jspec = &job["spec"]["jobTemplate"]["spec"];
    if jspec["completionMode"] == "Indexed" {
        // The Job controller adds the index to every container's env.
        let index = index.expect("an Indexed Job's pod has an index");
        env.push(("JOB_COMPLETION_INDEX".into(), index.to_string()));
    }

    let pod_sc = &pod["securityContext"];
    let sc = &c["securityContext"];
    let user = sc["runAsUser"]
        .as_u64()
        .or(pod_sc["runAsUser"].as_u64())
        .expect("runAsUser");
    let group = sc["runAsGroup"]
        .as_u64()
        .or(pod_sc["runAsGroup"].as_u64())
        .expect("runAsGroup");
    assert_eq!(pod_sc["runAsNonRoot"], true, "{cron_name}");
    assert_ne!(user, 0, "{cron_name}: runAsNonRoot with uid 0");

    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network=host".into(),
        format!("--name={pod_name}"),
        format!("--user={user}:{group}"),
        "--pull=never".into(),
    ];
    if let Some(fs_group) = pod_sc["fsGroup"].as_u64() {
        args.push(format!("--group-add={fs_group}"));
    }
    if sc["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
        // A kubelet gives a read-only container no writable /tmp or /run of
        // its own: only what the pod mounts.
        args.push("--read-only-tmpfs=false".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    let drops = sc["capabilities"]["drop"].as_sequence().cloned();
    if drops
        .unwrap_or_default()
        .iter()
        .any(|d| d.as_str() == Some("ALL"))
    {
        args.push("--cap-drop=all".into());
    }
    assert!(
        sc["capabilities"]["add"].is_null(),
        "{cron_name}: adds capabilities"
    );
    assert_eq!(
        pod_sc["seccompProfile"]["type"], "RuntimeDefault",
        "{cron_name}"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{cron_name}: this overlay has no Box token, so no pod needs an API token"
    );

    let config_dir = tempfile::tempdir().unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap();
        let path = m["mountPath"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"] == vname)
            .unwrap_or_else(|| panic!("{cron_name}: no volume {vname}"));
        if let Some(cm) = v["configMap"]["name"].as_str() {
            let data = cluster
                .config_maps
                .get(cm)
                .unwrap_or_else(|| panic!("{cron_name}: no ConfigMap {cm}"));
            let dir = config_dir.path().join(vname);
            std::fs::create_dir_all(&dir).unwrap();
            for (k, body) in data {
                std::fs::write(dir.join(k), body).unwrap();
            }
            // World-readable, as a kubelet's projected files (0644).
            Command::new("chmod")
                .args(["-R", "a+rX"])
                .arg(config_dir.path())
                .status()
                .unwrap();
            let ro = if m["readOnly"] == true { ",ro" } else { "" };
            args.push(format!(
                "--mount=type=bind,source={},destination={path}{ro}",
                dir.display()
            ));
        } else if v["emptyDir"].is_mapping() {
            let size = v["emptyDir"]["sizeLimit"]
                .as_str()
                .map(quantity)
                .unwrap_or(1 << 30);
            args.push(format!(
                "--mount=type=tmpfs,destination={path},tmpfs-size={size},tmpfs-mode=1777"
            ));
        } else {
            panic!("{cron_name}: volume {vname} is of a kind this runner does not mount: {v:?}");
        }
    }
    for (k, v) in &env {
        args.push(format!("--env={k}={v}"));
    }
    if let Some(cmd) = c["command"].as_sequence() {
        let cmd: Vec<String> = cmd
            .iter()
            .map(|s| expand(s.as_str().unwrap(), &env))
            .collect();
        args.push(format!("--entrypoint={}", cmd[0]));
        args.push(image.to_string());
        args.extend(cmd[1..].iter().cloned());
    } else {
        args.push(image.to_string());
    }
    for a in c["args"].as_sequence().into_iter().flatten() {
        args.push(expand(a.as_str().unwrap(), &env));
    }
    let out = Command::new("podman").args(&args).output().unwrap();
    eprintln!(
        "--- pod {pod_name} (exit {:?})\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The databases, bucket, mail server and config one test's pods work on.
struct Site {
    s3: S3Server,
    bucket: String,
    pg_dbs: Vec<String>,
    mysql_db: Option<String>,
    smtp: SmtpServer,
    ws: Workspace,
}

impl Site {
    fn new(pg: usize, mysql: bool) -> Site {
        let s3 = support::s3::server();
        let bucket = s3.create_bucket("pods");
        let pg_dbs = (0..pg)
            .map(|i| {
                let db = unique(&format!("pods{i}"));
                psql("postgres", &format!("CREATE DATABASE {db}"));
                psql(
                    &db,
                    &format!("CREATE TABLE canary (id int primary key, note text); INSERT INTO canary SELECT g, 'row ' || g || ' of {db}' FROM generate_series(1, 50) g"),
                );
                db
            })
            .collect();
        let mysql_db = mysql.then(|| {
            let db = unique("podsmy");
            mariadb(&format!(
                "CREATE DATABASE {db}; CREATE TABLE {db}.orders (id int primary key, total decimal(10,2)); INSERT INTO {db}.orders VALUES (1, 9.99), (2, 120.00)"
            ));
            db
        });
        Site {
            s3,
            bucket,
            pg_dbs,
            mysql_db,
            smtp: SmtpServer::start(SmtpOptions::default()),
            ws: Workspace::new(),
        }
    }

    /// The config the pods get in their ConfigMap: every secret through a
    /// `${VAR}` the manifests set from a Secret.
    fn config(&self) -> String {
        let mut c = format!(
            "[storage]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"${{AWS_ACCESS_KEY_ID}}\"\nsecret_access_key = \"${{AWS_SECRET_ACCESS_KEY}}\"\n\n[retry]\nattempts = 1\n\n[[notify]]\ntype = \"smtp\"\non = [\"failure\"]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"backstop <backup@example.org>\"\nto = [\"oncall@example.org\"]\n",
            self.bucket, self.s3.endpoint, self.smtp.port
        );
        for (i, db) in self.pg_dbs.iter().enumerate() {
            c.push_str(&format!(
                "\n[[targets]]\nname = \"pg{i}\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nuser = \"postgres\"\npassword = \"${{DB_PASSWORD}}\"\ndatabase = \"{db}\"\n"
            ));
        }
        if let Some(db) = &self.mysql_db {
            c.push_str(&format!(
                "\n[[targets]]\nname = \"shop\"\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nuser = \"root\"\ndatabase = \"{db}\"\n"
            ));
        }
        c
    }

    fn secrets(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            // Trust auth on the test server: any password is accepted.
            (
                "backstop-db",
                "password",
                "not-checked-by-trust-auth".into(),
            ),
            ("backstop-storage", "access_key_id", self.s3.key.clone()),
            (
                "backstop-storage",
                "secret_access_key",
                self.s3.secret.clone(),
            ),
        ]
    }

    /// `backstop list --json` from outside the pods, with the same config.
    fn listed(&self) -> Vec<serde_json::Value> {
        let config = self.ws.path("outside.toml");
        std::fs::write(&config, self.config()).unwrap();
        let out = support::backstop()
            .args(["list", "--json", "--config"])
            .arg(&config)
            .env("AWS_ACCESS_KEY_ID", &self.s3.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.s3.secret)
            .env("DB_PASSWORD", "x")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("list --json prints an array")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for db in &self.pg_dbs {
            let _ = Command::new("psql")
                .args([
                    "-X",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                ])
                .arg(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .output();
        }
        if let Some(db) = &self.mysql_db {
            let _ = Command::new("mariadb")
                .args(["-h", "127.0.0.1", "-u", "root", "-e"])
                .arg(format!("DROP DATABASE IF EXISTS {db}"))
                .output();
        }
        self.s3.delete_bucket(&self.bucket);
    }
}

fn cluster_for(site: &Site, docs: &[Value]) -> Cluster {
    let secrets = site.secrets();
    let refs: Vec<(&str, &str, &str)> = secrets
        .iter()
        .map(|(n, k, v)| (*n, *k, v.as_str()))
        .collect();
    Cluster::new(docs, &refs)
}

const SCRATCH_PATCH: &str = "patches:\n  - target:\n      kind: CronJob\n      name: backstop-verify\n    patch: |-\n      - op: replace\n        path: /spec/jobTemplate/spec/template/spec/containers/0/args\n        value: [\"verify\", \"--scratch\", \"postgres://postgres@127.0.0.1:5432/postgres\", \"--scratch\", \"mysql://root@127.0.0.1:3306/mysql\"]\n";

#[test]
fn the_backup_verify_and_watchdog_cronjobs_run_under_their_security_context() {
    let Some(image) = image() else { return };
    let site = Site::new(1, true);
    let overlay = Overlay::new(
        &["watchdog", "verify"],
        &site.config(),
        &image,
        SCRATCH_PATCH,
    );
    let docs = overlay.render();
    let cluster = cluster_for(&site, &docs);

    // Before any backup the watchdog finds both targets without one: it
    // fails its Job and mails.
    let watchdog = run_pod(cronjob(&docs, "backstop-watchdog"), &cluster, &image, None);
    assert_eq!(watchdog.status.code(), Some(1), "watchdog with no backups");
    let mails = site.smtp.messages(1, Duration::from_secs(20));
    assert!(
        !mails.is_empty(),
        "the watchdog mailed about the targets without a backup"
    );

    let backup = run_pod(cronjob(&docs, "backstop"), &cluster, &image, None);
    assert_eq!(backup.status.code(), Some(0), "backup pod");
    let listed = site.listed();
    for target in ["pg0", "shop"] {
        let n = listed.iter().filter(|b| b["target"] == target).count();
        assert_eq!(
            n, 1,
            "{target}: one complete backup, seen from outside: {listed:?}"
        );
    }
    // The summary is the last JSON line on stdout (BACKSTOP_LOG_FORMAT=json).
    let stdout = String::from_utf8_lossy(&backup.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("backup printed a summary")).unwrap();
    assert_eq!(summary["event"], "summary", "{stdout}");

    let verify = run_pod(cronjob(&docs, "backstop-verify"), &cluster, &image, None);
    let vout = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(0), "verify pod: {vout}");
    assert!(vout.contains("pg0") && vout.contains("shop"), "{vout}");
    assert!(!vout.contains("FAILED"), "{vout}");

    let watchdog = run_pod(cronjob(&docs, "backstop-watchdog"), &cluster, &image, None);
    assert_eq!(watchdog.status.code(), Some(0), "watchdog after the backup");
    // No scratch database is left behind by the verify pod.
    let left = psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'backstop\\_verify\\_pg0\\_%'",
    );
    assert_eq!(left.trim(), "0");
}

#[test]
fn a_sharded_backup_cronjob_backs_up_each_of_7_targets_exactly_once_in_3_pods() {
    let Some(image) = image() else { return };
    let site = Site::new(7, false);
    let overlay = Overlay::new(&["sharded"], &site.config(), &image, "");
    let docs = overlay.render();
    let cluster = cluster_for(&site, &docs);
    let job = cronjob(&docs, "backstop");
    let jspec = &job["spec"]["jobTemplate"]["spec"];
    assert_eq!(jspec["completionMode"], "Indexed");
    let n = jspec["completions"].as_u64().unwrap() as u32;
    assert_eq!(n, 3);
    assert_eq!(jspec["parallelism"].as_u64(), Some(n as u64));

    let mut outputs = Vec::new();
    for index in 0..n {
        let out = run_pod(job, &cluster, &image, Some(index));
        assert_eq!(out.status.code(), Some(0), "shard {index}");
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    let listed = site.listed();
    for i in 0..7 {
        let target = format!("pg{i}");
        let n = listed
            .iter()
            .filter(|b| b["target"] == target.as_str())
            .count();
        assert_eq!(n, 1, "{target} backed up exactly once: {listed:?}");
    }
    // And each pod took a different, stable subset: shard I has I, I+3, …
    for (index, out) in outputs.iter().enumerate() {
        for i in 0..7 {
            let mine = i % 3 == index;
            let named = out.contains(&format!("\"pg{i}\""));
            assert_eq!(named, mine, "shard {index} and pg{i}: {out}");
        }
    }
}

/// Every client the image ships answers, as uid 10001 with a read-only root
/// and HOME on the /tmp emptyDir, and reaches the loopback servers.
#[test]
fn the_image_clients_run_as_10001_with_a_read_only_root() {
    let Some(image) = image() else { return };
    let run = |script: &str| -> Output {
        Command::new("podman")
            .args([
                "run",
                "--rm",
                "--network=host",
                "--pull=never",
                "--user=10001:10001",
                "--read-only",
                "--read-only-tmpfs=false",
                "--cap-drop=all",
                "--security-opt=no-new-privileges",
                "--mount=type=tmpfs,destination=/tmp,tmpfs-size=67108864,tmpfs-mode=1777",
                "--entrypoint=/bin/sh",
                &image,
                "-ec",
                script,
            ])
            .output()
            .unwrap()
    };
    let out = run(
        "backstop --version; pg_dump --version; pg_restore --version; psql --version; \
         mariadb --version; mariadb-dump --version; rclone version; \
         echo \"HOME=$HOME\"; \
         psql -X -h 127.0.0.1 -U postgres -d postgres -Atc 'select 40+2'; \
         mariadb -h 127.0.0.1 -u root -N -e 'select 40+2'; \
         rclone --config /tmp/rclone.conf lsd /tmp >/dev/null && echo rclone-ok; \
         touch /usr/local/bin/x 2>/dev/null && echo root-writable || echo root-read-only",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "backstop ",
        "pg_dump (PostgreSQL)",
        "pg_restore (PostgreSQL)",
        "psql (PostgreSQL)",
        "mariadb",
        "rclone v",
        "HOME=/tmp",
        "rclone-ok",
        "root-read-only",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
    assert_eq!(
        text.lines().filter(|l| l.trim() == "42").count(),
        2,
        "psql and mariadb reached the loopback servers:\n{text}"
    );
}

#[test]
fn kubernetes_arg_expansion_matches_the_kubelet() {
    let env = vec![("JOB_COMPLETION_INDEX".to_string(), "2".to_string())];
    assert_eq!(expand("$(JOB_COMPLETION_INDEX)/3", &env), "2/3");
    assert_eq!(
        expand("$$(JOB_COMPLETION_INDEX)", &env),
        "$(JOB_COMPLETION_INDEX)"
    );
    assert_eq!(expand("$(UNSET)/3", &env), "$(UNSET)/3");
    assert_eq!(quantity("8Gi"), 8 << 30);
    assert_eq!(quantity("256Mi"), 256 << 20);
}

fn mariadb(sql: &str) {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-e", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
