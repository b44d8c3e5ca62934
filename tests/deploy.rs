//! The Kubernetes manifests, rendered offline with `kubectl kustomize`:
//! security settings, schedule, failure policy, secrets only by reference,
//! and configs that backstop itself accepts. (scripts/check-deploy validates
//! the same renders against the Kubernetes schemas.)

use serde_norway::Value;
use std::path::Path;
use std::process::Command;

fn render(dir: &str) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(dir))
        .output()
        .expect("kubectl is needed (./scripts/test installs it)");
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

const RENDERS: [&str; 2] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/usingandunderstandingai",
];

#[test]
fn cronjobs_meet_pod_security_restricted_and_never_overlap() {
    for dir in RENDERS {
        let docs = render(dir);
        let jobs = kind(&docs, "CronJob");
        assert!(!jobs.is_empty(), "{dir}");
        for job in jobs {
            let name = s(&job["metadata"]["name"]);
            let spec = &job["spec"];
            assert_eq!(spec["timeZone"], "America/Chicago", "{dir} {name}");
            assert_eq!(spec["concurrencyPolicy"], "Forbid", "{dir} {name}");
            assert!(spec["startingDeadlineSeconds"].as_u64().is_some());
            assert_eq!(spec["successfulJobsHistoryLimit"], 3);
            assert_eq!(spec["failedJobsHistoryLimit"], 3);
            let jspec = &spec["jobTemplate"]["spec"];
            for key in [
                "backoffLimit",
                "activeDeadlineSeconds",
                "ttlSecondsAfterFinished",
            ] {
                assert!(jspec[key].as_u64().is_some(), "{dir} {name}: {key}");
            }
            let pod = &jspec["template"]["spec"];
            assert_eq!(pod["restartPolicy"], "Never");
            // A token only where the Box token store needs API access.
            let needs_api = !kind(&docs, "Role").is_empty();
            assert_eq!(
                pod["automountServiceAccountToken"], needs_api,
                "{dir} {name}"
            );
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true);
            assert!(
                psc["runAsUser"].as_u64().unwrap() > 0,
                "numeric non-root user"
            );
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
            let containers = pod["containers"].as_sequence().unwrap();
            assert_eq!(containers.len(), 1, "{dir} {name}");
            for c in containers {
                let csc = &c["securityContext"];
                assert_eq!(csc["allowPrivilegeEscalation"], false);
                assert_eq!(csc["readOnlyRootFilesystem"], true);
                assert_eq!(
                    csc["capabilities"]["drop"],
                    Value::Sequence(vec!["ALL".into()])
                );
                assert!(c["resources"]["limits"]["memory"].as_str().is_some());
                let mounts: Vec<&str> = c["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|m| s(&m["mountPath"]))
                    .collect();
                assert!(
                    mounts.contains(&"/tmp") && mounts.contains(&"/etc/backstop"),
                    "{mounts:?}"
                );
                // Exit 2 (config) and 3 (auth) fail the Job at once.
                let rules = jspec["podFailurePolicy"]["rules"].as_sequence().unwrap();
                let fail_job = rules
                    .iter()
                    .find(|r| r["action"] == "FailJob")
                    .expect("a FailJob rule");
                assert_eq!(fail_job["onExitCodes"]["containerName"], c["name"]);
                let codes: Vec<u64> = fail_job["onExitCodes"]["values"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert!(codes.contains(&2) && codes.contains(&3), "{codes:?}");
            }
        }
        let backup = kind(&docs, "CronJob")
            .into_iter()
            .find(|j| j["metadata"]["name"] == "backstop")
            .unwrap();
        assert_eq!(backup["spec"]["schedule"], "0 2 * * *");
        // backstop retries a failing target itself: exit 1 must not make
        // the Job dump every target again.
        let rules = backup["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
            .as_sequence()
            .unwrap();
        let fail_job = rules.iter().find(|r| r["action"] == "FailJob").unwrap();
        assert!(
            fail_job["onExitCodes"]["values"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v.as_u64() == Some(1)),
            "{dir}: exit 1 fails the Job"
        );
    }
}

#[test]
fn secrets_come_only_from_secret_key_refs() {
    for dir in RENDERS {
        let docs = render(dir);
        for job in kind(&docs, "CronJob") {
            for c in job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
            {
                for env in c["env"].as_sequence().unwrap() {
                    let name = s(&env["name"]);
                    let secretish = ["PASSWORD", "SECRET", "TOKEN", "KEY"]
                        .iter()
                        .any(|w| name.contains(w));
                    if secretish {
                        assert!(
                            env.get("value").is_none(),
                            "{dir}: {name} has a literal value"
                        );
                        assert!(
                            env["valueFrom"]["secretKeyRef"]["name"].as_str().is_some(),
                            "{dir}: {name} must come from a Secret"
                        );
                    }
                }
            }
        }
        assert!(
            kind(&docs, "Secret").is_empty(),
            "{dir}: no Secret objects (and so no secret values) in the manifests"
        );
    }
}

#[test]
fn api_access_is_one_secret_get_update_patch_and_only_where_needed() {
    let base = render("deploy/kubernetes/base");
    for k in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
        assert!(
            kind(&base, k).is_empty(),
            "base (S3) needs no API access: unexpected {k}"
        );
    }
    let docs = render("deploy/kubernetes/overlays/usingandunderstandingai");
    assert!(kind(&docs, "ClusterRole").is_empty() && kind(&docs, "ClusterRoleBinding").is_empty());
    let roles = kind(&docs, "Role");
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(
        rule["resources"],
        serde_norway::from_str::<Value>("[secrets]").unwrap()
    );
    let names = rule["resourceNames"]
        .as_sequence()
        .expect("limited by resourceNames");
    assert_eq!(names.len(), 1, "exactly one resourceName");
    let verbs: Vec<&str> = rule["verbs"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(verbs, vec!["get", "update", "patch"]);
    for forbidden in ["list", "create", "delete", "watch", "*"] {
        assert!(!verbs.contains(&forbidden), "{forbidden}");
    }
    let binding = kind(&docs, "RoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], "backstop");
    // The Secret the Role names is the one the config writes the token to.
    let toml = s(&kind(&docs, "ConfigMap")[0]["data"]["backstop.toml"]);
    assert!(
        toml.contains(&format!("name = \"{}\"", s(&names[0]))),
        "{toml}"
    );
    let sa = kind(&docs, "ServiceAccount");
    assert_eq!(sa.len(), 1);
    assert_eq!(
        sa[0]["automountServiceAccountToken"], false,
        "only the pods that need it mount a token"
    );
}

#[test]
fn the_seed_overlay_matches_the_seed_setup_and_its_config_is_valid() {
    let docs = render("deploy/kubernetes/overlays/usingandunderstandingai");
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"], "usingandunderstandingai",
            "{:?}",
            d["metadata"]["name"]
        );
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/name"], "backstop",
            "every object is labelled: {:?}",
            d["metadata"]["name"]
        );
    }
    let jobs = kind(&docs, "CronJob");
    let names: Vec<&str> = jobs.iter().map(|j| s(&j["metadata"]["name"])).collect();
    assert_eq!(
        names,
        vec!["backstop", "backstop-verify", "backstop-watchdog"]
    );
    for job in &jobs {
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"][0]["name"], "docker-registry");
        let env = pod["containers"][0]["env"].as_sequence().unwrap();
        let from = |n: &str| {
            env.iter()
                .find(|e| e["name"] == n)
                .map(|e| s(&e["valueFrom"]["secretKeyRef"]["name"]).to_string())
        };
        assert_eq!(from("DB_PASSWORD").as_deref(), Some("shared-secrets"));
        assert_eq!(from("BOX_CLIENT_ID").as_deref(), Some("backstop-box-app"));
        assert_eq!(
            from("BOX_CLIENT_SECRET").as_deref(),
            Some("backstop-box-app")
        );
        assert!(
            from("AWS_ACCESS_KEY_ID").is_none(),
            "Box replaces the base's S3 keys"
        );
        // The dead man's switch URL is a secret, in every job that loads
        // the config.
        assert_eq!(from("HC_PING_URL").as_deref(), Some("backstop-ping"));
    }
    let verify = &jobs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(verify["args"][0], "verify");
    assert!(verify["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "PGPASSWORD"));
    let watchdog = &jobs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        watchdog["args"],
        serde_norway::from_str::<Value>(
            "[status, --max-age, 26h, --notify, --interval, 1h, --repeat, 24h, --notify-recovery]"
        )
        .unwrap()
    );
    assert_eq!(
        jobs[2]["spec"]["schedule"], "30 * * * *",
        "--interval matches the watchdog's schedule"
    );

    // The ConfigMap's backstop.toml is a config backstop accepts.
    let cm = kind(&docs, "ConfigMap")[0];
    let toml = s(&cm["data"]["backstop.toml"]);
    // SAFETY of set_var: this test binary reads these variables nowhere else.
    for var in ["DB_PASSWORD", "BOX_CLIENT_ID", "BOX_CLIENT_SECRET"] {
        std::env::set_var(var, "x");
    }
    std::env::set_var("HC_PING_URL", "https://hc-ping.example/check");
    let config =
        backstop::config::Config::parse(toml, Path::new("configmap:backstop.toml")).unwrap();
    let targets: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    assert_eq!(targets, vec!["prod", "dev"]);
    assert!(toml.contains("host = \"mail-service\"") && toml.contains("port = 2525"));
    assert!(toml.contains("host = \"postgres\""));
    assert!(matches!(
        config.storages["default"].storage,
        backstop::config::StorageConfig::Box(_)
    ));
    assert!(toml.contains("folder = \"usingandunderstanding-backups\""));
    // Regression (nothing alerted when the whole cluster was down): the
    // seed overlay pings a dead man's switch from every backup run.
    assert!(
        config
            .notify
            .iter()
            .any(|n| matches!(n, backstop::config::notify::NotifyConfig::Ping(_))),
        "{toml}"
    );
}

#[test]
fn the_network_policy_selects_every_backstop_pod_and_lets_nothing_in() {
    let docs = render("deploy/kubernetes/overlays/usingandunderstandingai");
    let policies = kind(&docs, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let spec = &policies[0]["spec"];
    let selector = spec["podSelector"]["matchLabels"].as_mapping().unwrap();
    assert!(!selector.is_empty(), "a policy for backstop's pods only");
    for job in kind(&docs, "CronJob") {
        let labels = &job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector {
            assert_eq!(
                &labels[k],
                v,
                "{}: its pods must carry {k:?} for the policy to apply",
                s(&job["metadata"]["name"])
            );
        }
    }
    let types: Vec<&str> = spec["policyTypes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(types, vec!["Ingress", "Egress"]);
    assert!(
        spec["ingress"].as_sequence().unwrap().is_empty(),
        "nothing connects in"
    );
    let egress = spec["egress"].as_sequence().unwrap();
    let ports: Vec<u64> = egress
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    for needed in [53, 5432, 2525, 443] {
        assert!(
            ports.contains(&needed),
            "egress to port {needed}: {ports:?}"
        );
    }
    for rule in egress {
        assert!(
            !rule["to"].is_null(),
            "every egress rule names where: {rule:?}"
        );
    }
}

#[test]
fn the_sharded_component_runs_n_indexed_pods_each_with_its_shard() {
    let docs = render_with("sharded");
    let job = kind(&docs, "CronJob")[0];
    let jspec = &job["spec"]["jobTemplate"]["spec"];
    assert_eq!(jspec["completionMode"], "Indexed");
    let n = jspec["completions"].as_u64().unwrap();
    assert_eq!(jspec["parallelism"].as_u64(), Some(n), "all shards at once");
    let args: Vec<&str> = jspec["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(
        args,
        vec!["backup", "--shard", &format!("$(JOB_COMPLETION_INDEX)/{n}")],
        "N in the argument equals completions"
    );
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

/// The base with one optional component, as a site adding it would
/// deploy it (kustomize takes relative paths only).
fn render_with(component: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
            relative(dir.path(), &root.join("deploy/kubernetes/base")),
            relative(dir.path(), &root.join("deploy/kubernetes/components").join(component))
        ),
    )
    .unwrap();
    render(dir.path().to_str().unwrap())
}

/// Every `backstop_…` metric name an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("backstop_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The metric families backstop writes (src/notify/metrics.rs).
fn exported_metrics() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/notify/metrics.rs"))
        .unwrap()
}

#[test]
fn the_alert_rules_fire_on_the_series_that_should_fire_them() {
    let docs = render_with("alerting");
    let rules = kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let groups = &rules[0]["spec"]["groups"];
    let dir = tempfile::tempdir().unwrap();
    let mut file = serde_norway::Mapping::new();
    file.insert("groups".into(), groups.clone());
    std::fs::write(
        dir.path().join("backstop-rules.yaml"),
        serde_norway::to_string(&file).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes/components/alerting/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    for args in [
        vec!["check", "rules", "backstop-rules.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("promtool is needed (./scripts/test installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert the issue asks for is there, and each has a test case.
    let tests = std::fs::read_to_string(dir.path().join("alerts.test.yaml")).unwrap();
    let exported = exported_metrics();
    for rule in groups[0]["rules"].as_sequence().unwrap() {
        let alert = s(&rule["alert"]);
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test case"
        );
        for name in metric_names(s(&rule["expr"])) {
            assert!(
                exported.contains(&format!("\"{name}\"")),
                "{alert} uses {name}, which backstop does not export"
            );
        }
    }
    for needed in [
        "BackstopBackupFailed",
        "BackstopNoRecentBackup",
        "BackstopVerifyFailed",
        "BackstopBoxTokenNearExpiry",
        "BackstopCopyMissing",
    ] {
        assert!(tests.contains(needed), "{needed}");
    }
}

#[test]
fn the_grafana_dashboard_shows_only_metrics_backstop_exports() {
    let docs = render_with("alerting");
    let cm = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "backstop-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"], "1",
        "Grafana's sidecar finds dashboards by this label"
    );
    let json: serde_json::Value =
        serde_json::from_str(s(&cm["data"]["backstop-dashboard.json"])).unwrap();
    let panels = json["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let exported = exported_metrics();
    let mut used = std::collections::BTreeSet::new();
    for p in panels {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().unwrap() {
            for name in metric_names(t["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&format!("\"{name}\"")),
                    "panel {} uses {name}, which backstop does not export",
                    p["title"]
                );
                used.insert(name);
            }
        }
    }
    for family in [
        "backstop_last_success_timestamp_seconds",
        "backstop_backup_size_bytes",
        "backstop_verify_success",
        "backstop_copy_stored",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

#[test]
fn the_wal_streamer_is_one_restricted_replica_that_never_overlaps() {
    let docs = render_with("pitr");
    let deployments = kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let d = deployments[0];
    assert_eq!(d["spec"]["replicas"], 1, "one streamer per target");
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "an update never runs two streamers at once"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(&args[..2], ["wal", "stream"]);
    let spool = args
        .iter()
        .position(|a| *a == "--spool")
        .map(|i| args[i + 1]);
    let mounted: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| s(&m["mountPath"]))
        .collect();
    assert!(
        spool.is_some_and(|p| mounted.contains(&p)),
        "the spool is a mounted volume: {args:?} {mounted:?}"
    );
    let base = kind(&docs, "CronJob")
        .into_iter()
        .find(|j| j["metadata"]["name"] == "backstop-base-backup")
        .expect("the weekly base backup");
    let bargs: Vec<&str> = base["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(bargs.contains(&"--physical"), "{bargs:?}");
}
