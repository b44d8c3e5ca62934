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
            assert_eq!(pod["automountServiceAccountToken"], false);
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
fn no_api_access_is_granted_while_no_token_store_needs_it() {
    for dir in RENDERS {
        let docs = render(dir);
        for k in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
            assert!(kind(&docs, k).is_empty(), "{dir}: unexpected {k}");
        }
        let sa = kind(&docs, "ServiceAccount");
        assert_eq!(sa.len(), 1);
        assert_eq!(sa[0]["automountServiceAccountToken"], false);
    }
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
    }
    let jobs = kind(&docs, "CronJob");
    let names: Vec<&str> = jobs.iter().map(|j| s(&j["metadata"]["name"])).collect();
    assert_eq!(names, vec!["backstop", "backstop-watchdog"]);
    for job in &jobs {
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"][0]["name"], "docker-registry");
        let env = pod["containers"][0]["env"].as_sequence().unwrap();
        let pw = env.iter().find(|e| e["name"] == "DB_PASSWORD").unwrap();
        assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"], "shared-secrets");
    }
    let watchdog = &jobs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        watchdog["args"],
        serde_norway::from_str::<Value>("[status, --max-age, 26h, --notify]").unwrap()
    );

    // The ConfigMap's backstop.toml is a config backstop accepts.
    let cm = kind(&docs, "ConfigMap")[0];
    let toml = s(&cm["data"]["backstop.toml"]);
    // SAFETY of set_var: this test binary reads these variables nowhere else.
    for var in ["DB_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        std::env::set_var(var, "x");
    }
    let config =
        backstop::config::Config::parse(toml, Path::new("configmap:backstop.toml")).unwrap();
    let targets: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    assert_eq!(targets, vec!["prod", "dev"]);
    assert!(toml.contains("host = \"mail-service\"") && toml.contains("port = 2525"));
    assert!(toml.contains("host = \"postgres\""));
}
