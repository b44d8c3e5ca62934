//! Notifications against real servers on loopback: aiosmtpd for mail, a
//! recording HTTP server for webhooks, pings and the Pushgateway.

mod support;

use std::time::{Duration, Instant};
use support::recorder::Recorder;
use support::smtp::{self_signed, SmtpOptions, SmtpServer};
use support::*;

const SECRET: &str = "Pw-notify-3e1f-never-print";

fn failing_wrapper(ws: &Workspace) -> std::path::PathBuf {
    ws.script(
        "pg_dump",
        &format!(
            "[ \"$1\" = --version ] && exec {} --version\necho 'pg_dump: error: query failed: ERROR:  permission denied for table secrets_tbl' >&2\nexit 1",
            real_pg_dump()
        ),
    )
}

/// Run a command off the async runtime (the test's servers live on it).
async fn run_async(
    args: &'static [&'static str],
    cfg: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut c = backstop();
        c.args(args).arg("--config").arg(&cfg);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().unwrap())
    })
    .await
    .unwrap()
}

#[test]
fn failure_mail_says_what_failed_with_stderr_tail_and_no_secret() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let good = TestDb::create("bs_mail_ok");
    let ws = Workspace::new();
    let wrapper = failing_wrapper(&ws);
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"backstop <backup@example.org>\"\nto = [\"backup-list@example.org\", \"oncall@example.org\"]\n\n{}{}",
        smtp.port,
        pg_target("broken", &good.name, &format!("password = \"${{BS_PW}}\"\npg_dump_path = \"{}\"", wrapper.display())),
        pg_target("fine", &good.name, "password = \"${BS_PW}\"")
    ));
    let r = Run::from(
        backstop()
            .args(["backup", "--config"])
            .arg(&cfg)
            .env("BS_PW", SECRET)
            .env("JOB_NAME", "backstop-29001")
            .env("POD_NAMESPACE", "usingandunderstandingai")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let msgs = smtp.messages(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "one mail per run");
    let m = &msgs[0];
    assert_eq!(m["mail_from"], "backup@example.org");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["backup-list@example.org", "oncall@example.org"])
    );
    let host = r.summary()["host"].as_str().unwrap().to_string();
    assert_eq!(
        m["subject"],
        format!("[backstop] FAILED broken (pg_dump exited 1) on {host}")
    );
    let text = m["text"].as_str().expect("a text/plain part");
    let html = m["html"].as_str().expect("a text/html alternative");
    assert!(
        text.contains("permission denied for table secrets_tbl"),
        "stderr tail in the body: {text}"
    );
    assert!(text.contains("broken: FAILED at stage dump"), "{text}");
    assert!(text.contains("fine: OK"), "{text}");
    assert!(
        text.contains("kubectl logs job/backstop-29001 -n usingandunderstandingai"),
        "{text}"
    );
    assert!(
        html.contains("permission denied for table secrets_tbl") && html.contains("FAILED"),
        "{html}"
    );
    assert!(
        !m["data"].as_str().unwrap().contains(SECRET),
        "no secret in mail"
    );
    assert!(!r.all().contains(SECRET));
}

#[test]
fn starttls_with_auth_and_a_trusted_self_signed_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = self_signed(certs.path());
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some((&cert, &key)),
        auth: Some("mailer:s3cret-mail-pw"),
    });
    let db = TestDb::create("bs_mail_tls");
    let ws = Workspace::new();
    let notify = |pw: &str| {
        format!(
            "[[notify]]\ntype = \"smtp\"\non = [\"always\"]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\ntls_ca_file = \"{}\"\nusername = \"mailer\"\npassword = \"{pw}\"\nfrom = \"backup@example.org\"\nto = [\"team@example.org\"]\ntimeout = \"3s\"\n\n{}",
            smtp.port,
            ca.display(),
            pg_target("db", &db.name, "")
        )
    };
    let cfg = ws.config(&notify("s3cret-mail-pw"));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let msgs = smtp.messages(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "{}", r.all());
    assert_eq!(msgs[0]["tls"], true);
    assert_eq!(msgs[0]["authenticated"], true);
    assert!(msgs[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("[backstop] OK db on"));

    // A wrong password: the mail fails, the backup result does not change.
    let cfg = ws.config(&notify("wrong-password"));
    std::thread::sleep(Duration::from_millis(1100)); // backup ids have one-second resolution
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("notification failed"), "{}", r.stderr);
    assert!(!r.all().contains("wrong-password"));
    assert_eq!(smtp.messages(2, Duration::from_millis(500)).len(), 1);
}

#[test]
fn smtp_down_changes_nothing_but_is_logged() {
    let db = TestDb::create("bs_mail_down");
    let ws = Workspace::new();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = |target: String| {
        format!(
            "[[notify]]\ntype = \"smtp\"\non = [\"always\"]\nhost = \"127.0.0.1\"\nport = {free_port}\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\ntimeout = \"2s\"\n\n{target}"
        )
    };
    let cfg = ws.config(&body(pg_target("db", &db.name, "")));
    let r = run(&["backup"], &cfg);
    assert_eq!(
        r.code,
        0,
        "a successful backup stays successful: {}",
        r.all()
    );
    assert!(r.stderr.contains("notification failed"), "{}", r.stderr);
    let cfg = ws.config(&body(pg_target("db", &unique("bs_absent"), "")));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "a failed backup still exits 1: {}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_and_webhook_see_start_then_success_or_fail() {
    let server = Recorder::start(200, false).await;
    let db = TestDb::create("bs_ping");
    let ws = Workspace::new();
    let notify = format!(
        "[[notify]]\ntype = \"ping\"\nurl = \"{0}/ping/${{HC_UUID}}\"\n\n[[notify]]\ntype = \"webhook\"\non = [\"always\"]\nurl = \"{0}/hook\"\nheaders = {{ Authorization = \"Bearer ${{HOOK_TOKEN}}\" }}\n\n",
        server.url
    );
    let env = || {
        vec![
            ("HC_UUID", "1f2e3d4c-uuid".to_string()),
            ("HOOK_TOKEN", SECRET.to_string()),
        ]
    };
    let cfg = ws.config(&format!("{notify}{}", pg_target("db", &db.name, "")));
    let r = run_async(&["backup"], cfg.clone(), env()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let seen = server.take();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        calls[0],
        ("GET".into(), "/ping/1f2e3d4c-uuid/start".into()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&("POST".into(), "/ping/1f2e3d4c-uuid".into())),
        "{calls:?}"
    );
    assert!(
        calls.contains(&("POST".into(), "/hook".into())),
        "{calls:?}"
    );
    assert_eq!(calls.len(), 3, "{calls:?}");
    let hook = seen.iter().find(|r| r.path == "/hook").unwrap();
    assert!(hook
        .headers
        .contains(&("authorization".into(), format!("Bearer {SECRET}"))));
    let json: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(json["event"], "summary");
    assert_eq!(json["targets"][0]["target"], "db");
    assert_eq!(json["targets"][0]["status"], "success");
    assert!(json["targets"][0]["backup_id"]
        .as_str()
        .unwrap()
        .starts_with("db-"));
    assert!(
        !r.all().contains(SECRET) && !r.all().contains("1f2e3d4c-uuid"),
        "URLs and headers are secrets"
    );

    let cfg = ws.config(&format!(
        "{notify}{}",
        pg_target("db", &unique("bs_absent"), "")
    ));
    let r = run_async(&["backup"], cfg.clone(), env()).await;
    assert_eq!(r.code, 1);
    let seen = server.take();
    let fail = seen
        .iter()
        .find(|r| r.path == "/ping/1f2e3d4c-uuid/fail")
        .expect("fail ping");
    assert!(
        fail.body.contains("FAILED db (connect failed)"),
        "{}",
        fail.body
    );

    // config check redacts URLs and header values.
    let r = run_async(&["config", "check"], cfg, env()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.stdout.contains(SECRET)
            && !r.stdout.contains("1f2e3d4c-uuid")
            && !r.stdout.contains(&server.url),
        "{}",
        r.stdout
    );

    // notify test reaches every notifier.
    let cfg = ws.config(&format!("{notify}{}", pg_target("db", &db.name, "")));
    let r = run_async(&["notify", "test"], cfg, env()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("ping #0: ok") && r.stdout.contains("webhook #1: ok"),
        "{}",
        r.stdout
    );
    let paths: Vec<String> = server.take().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/ping/1f2e3d4c-uuid/log".to_string()),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_or_silent_endpoints_never_hang_or_change_the_result() {
    let broken = Recorder::start(500, false).await;
    let silent = Recorder::start(200, true).await;
    let db = TestDb::create("bs_hook_fail");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"webhook\"\non = [\"always\"]\nurl = \"{}/hook\"\ntimeout = \"2s\"\n\n[[notify]]\ntype = \"webhook\"\non = [\"success\"]\nurl = \"{}/hook\"\nformat = \"slack\"\ntimeout = \"1s\"\n\n{}",
        broken.url,
        silent.url,
        pg_target("db", &db.name, "")
    ));
    let started = Instant::now();
    let r = run_async(&["backup"], cfg, vec![]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by timeouts: {:?}",
        started.elapsed()
    );
    assert_eq!(
        broken.take().len(),
        3,
        "a 500 is retried a bounded number of times"
    );
    assert_eq!(silent.take().len(), 3);
    assert!(
        r.stderr.contains("webhook #0") && r.stderr.contains("HTTP 500"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no answer within"), "{}", r.stderr);
    let slack: serde_json::Value = serde_json::from_str(&silent.take()[0].body).unwrap();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[backstop] OK db"),
        "{slack}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_textfile_and_pushgateway() {
    let gateway = Recorder::start(200, false).await;
    let db = TestDb::create("bs_metrics");
    let ws = Workspace::new();
    let textfile = ws.path("node/backstop.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let metrics = format!(
        "[metrics]\npushgateway = \"{}\"\ntextfile = \"{}\"\ninstance = \"prod-cluster\"\n\n",
        gateway.url,
        textfile.display()
    );
    let cfg = ws.config(&format!(
        "{metrics}{}{}",
        pg_target("ok", &db.name, ""),
        pg_target("bad", &unique("bs_absent"), "")
    ));
    for _ in 0..2 {
        let r = run_async(&["backup"], cfg.clone(), vec![]).await;
        assert_eq!(r.code, 1, "{}", r.all());
        // Backup ids have a one-second resolution.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let text = std::fs::read_to_string(&textfile).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, target: &str, status: Option<&str>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("target") == Some(target)
                    && status.is_none_or(|st| s.labels.get("status") == Some(st))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let now = chrono::Utc::now().timestamp() as f64;
    assert_eq!(value("backstop_last_run_success", "ok", None), Some(1.0));
    assert_eq!(value("backstop_last_run_success", "bad", None), Some(0.0));
    assert!(
        (now - value("backstop_last_success_timestamp_seconds", "ok", None).unwrap()).abs() < 120.0
    );
    assert_eq!(
        value("backstop_last_success_timestamp_seconds", "bad", None),
        None,
        "never succeeded"
    );
    assert!(value("backstop_backup_size_bytes", "ok", None).unwrap() > 0.0);
    assert!(value("backstop_backup_duration_seconds", "ok", None).unwrap() > 0.0);
    assert!(
        (now - value("backstop_last_run_timestamp_seconds", "bad", None).unwrap()).abs() < 120.0
    );
    assert_eq!(
        value("backstop_backups_total", "ok", Some("success")),
        Some(2.0),
        "counters continue across runs"
    );
    assert_eq!(
        value("backstop_backups_total", "bad", Some("failure")),
        Some(2.0)
    );
    let pushes = gateway.take();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0].method, "PUT");
    assert_eq!(
        pushes[0].path,
        "/metrics/job/backstop/instance/prod-cluster"
    );
    assert!(
        pushes[1]
            .body
            .contains("backstop_last_run_success{target=\"ok\"} 1"),
        "{}",
        pushes[1].body
    );
    assert_eq!(
        value("backstop_copy_stored", "ok", None),
        Some(1.0),
        "the copy in the one storage"
    );

    // verify writes its own file and group, leaving the backup figures be.
    let r = run_async(
        &[
            "verify",
            "--target",
            "ok",
            "--scratch",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ],
        cfg.clone(),
        vec![],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let verify_text = std::fs::read_to_string(ws.path("node/backstop-verify.prom")).unwrap();
    assert!(
        verify_text.contains("backstop_verify_success{target=\"ok\"} 1"),
        "{verify_text}"
    );
    assert_eq!(
        std::fs::read_to_string(&textfile).unwrap(),
        text,
        "backup metrics untouched"
    );
    let pushes = gateway.take();
    assert_eq!(pushes.len(), 3, "the two backups' pushes and the verify's");
    assert_eq!(
        pushes[2].path,
        "/metrics/job/backstop-verify/instance/prod-cluster"
    );
}

#[test]
fn status_exit_codes_for_fresh_stale_and_missing_targets() {
    let db = TestDb::create("bs_status");
    let ws = Workspace::new();
    let cfg = ws.config(&pg_target("fresh", &db.name, ""));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let r = run(&["status", "--max-age", "1h"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("fresh") && r.stdout.contains("ok"),
        "{}",
        r.stdout
    );

    // The same backup is stale for a tiny max-age.
    std::thread::sleep(Duration::from_millis(1100));
    let r = run(&["status", "--max-age", "1s", "--json"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["fresh"], false);

    // A target with no backup at all is stale, and --notify tells the mail.
    let smtp = SmtpServer::start(SmtpOptions::default());
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n\n{}{}",
        smtp.port,
        pg_target("fresh", &db.name, ""),
        pg_target("never", &db.name, "")
    ));
    let r = run(&["status", "--max-age", "1h", "--notify"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("never") && r.stdout.contains("no complete backup"),
        "{}",
        r.stdout
    );
    let msgs = smtp.messages(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0]["subject"]
            .as_str()
            .unwrap()
            .contains("FAILED never (no recent backup)"),
        "{}",
        msgs[0]["subject"]
    );
}

#[test]
fn notify_config_errors_name_the_key() {
    let ws = Workspace::new();
    let cases = [
        ("type = \"smtp\"\nhost = \"h\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]", "notify[0].from"),
        ("type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\", \"bad@@\"]", "notify[0].to[1]"),
        ("type = \"smtp\"\non = [\"sometimes\"]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]", "sometimes"),
        ("type = \"smtp\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]", "host"),
        ("type = \"webhook\"\nurl = \"not a url secret-ish\"", "notify[0].url"),
        ("type = \"pager\"", "unknown notifier type `pager`"),
    ];
    for (body, expect) in cases {
        let cfg = ws.config(&format!(
            "[[notify]]\n{body}\n\n{}",
            pg_target("x", "postgres", "")
        ));
        let r = run(&["config", "check"], &cfg);
        assert_eq!(r.code, 2, "{body}: {}", r.all());
        assert!(
            r.stderr.contains(expect),
            "{body}: expected `{expect}` in {}",
            r.stderr
        );
        assert!(!r.stderr.contains("secret-ish"), "URLs are not echoed");
    }
}

/// HTTP answers are classified once for every client: a 400 (a wrong URL
/// or payload) will not change on a retry and is sent once; a 503 is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_rejects_the_request_is_not_retried() {
    let rejecting = Recorder::start(400, false).await;
    let db = TestDb::create("bs_hook_400");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"webhook\"\non = [\"always\"]\nurl = \"{}/hook\"\ntimeout = \"2s\"\n\n{}",
        rejecting.url,
        pg_target("db", &db.name, "")
    ));
    let r = run_async(&["backup"], cfg, vec![]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(rejecting.take().len(), 1, "a 400 is not retried");
    assert!(
        r.stderr.contains("HTTP 400 Bad Request (not retried)"),
        "{}",
        r.stderr
    );
}

/// Regression (an SMTP relay without STARTTLS under the default `tls`
/// failed with only "STARTTLS is not supported"): the error says to set
/// `tls = "none"`, as the old in-cluster relay on 2525 needs.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_without_starttls_gets_a_hint_to_set_tls_none() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\ntimeout = \"3s\"\n\n{}",
        smtp.port,
        pg_target("x", "postgres", "")
    ));
    let r = run_async(&["notify", "test"], cfg, vec![]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("STARTTLS") && r.all().contains("tls = \"none\""),
        "{}",
        r.all()
    );
    assert!(smtp.messages(0, Duration::from_millis(10)).is_empty());
}

/// Regression (the watchdog mailed every hour while a backup was stale):
/// it alerts in the run after the target became stale, then stays quiet
/// until --repeat, and says once when the target recovered — all derived
/// from the backup's age, no state.
#[test]
fn the_watchdog_alerts_once_then_every_repeat_and_once_on_recovery() {
    let db = TestDb::create("bs_watchdog");
    let ws = Workspace::new();
    let smtp = SmtpServer::start(SmtpOptions::default());
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n\n{}",
        smtp.port,
        pg_target("w", &db.name, "")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    std::thread::sleep(Duration::from_millis(2100));
    // Stale for about 1 s: the watchdog running every 10 s alerts now...
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--max-age",
            "1s",
            "--notify",
            "--interval",
            "10s",
            "--repeat",
            "1h",
        ];
        args.extend_from_slice(extra);
        run(&args, &cfg)
    };
    assert_eq!(watch(&[]).code, 1);
    let first = smtp.messages(1, Duration::from_secs(10));
    assert_eq!(first.len(), 1);
    assert!(
        first[0]["subject"].as_str().unwrap().contains("FAILED w"),
        "{}",
        first[0]["subject"]
    );
    // ...and a run 10 s later (stale for 11 s) stays quiet.
    let r = run(
        &[
            "status",
            "--max-age",
            "1s",
            "--notify",
            "--interval",
            "1s",
            "--repeat",
            "1h",
        ],
        &cfg,
    );
    assert_eq!(r.code, 1, "still stale: {}", r.all());
    assert_eq!(
        smtp.messages(2, Duration::from_millis(1500)).len(),
        1,
        "no second mail"
    );

    // A new backup: the next run says the target recovered, once.
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let r = run(
        &[
            "status",
            "--max-age",
            "2s",
            "--notify",
            "--notify-recovery",
            "--interval",
            "10s",
        ],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let msgs = smtp.messages(2, Duration::from_secs(10));
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[1]["subject"].as_str().unwrap().contains("OK w"),
        "{}",
        msgs[1]["subject"]
    );
}

/// Regression risk found with the dead man's switch: a ping from `verify`
/// or the watchdog's `status` would keep the check green while no backup
/// runs. Pings go out for backup runs only.
#[test]
fn pings_come_from_backup_runs_only() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hc = rt.block_on(Recorder::start(200, false));
    let db = TestDb::create("bs_ping_only");
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[[notify]]\ntype = \"ping\"\nurl = \"{}/check\"\n\n{}",
        hc.url,
        pg_target("p", &db.name, "")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let seen: Vec<String> = hc
        .take()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        vec!["GET /check/start", "POST /check"],
        "start and success"
    );
    let scratch = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/postgres");
    assert_eq!(run(&["verify", "--scratch", &scratch], &cfg).code, 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        run(&["status", "--max-age", "1s", "--notify"], &cfg).code,
        1
    );
    std::thread::sleep(Duration::from_millis(300));
    // (take() returns everything recorded so far.)
    let all: Vec<String> = hc
        .take()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        all,
        vec!["GET /check/start", "POST /check"],
        "verify and status never ping"
    );
}

/// Regression (a failed run took the last success from the first storage
/// only: a target whose backups were all in another storage showed none).
#[test]
fn a_failed_run_reports_the_last_success_from_whichever_storage_holds_it() {
    let db = TestDb::create("bs_metrics_copies");
    let ws = Workspace::new();
    let textfile = ws.path("backstop.prom");
    let head = format!(
        "[storages.second]\ntype = \"local\"\npath = \"{}\"\ncreate = true\n\n[metrics]\ntextfile = \"{}\"\n\n",
        ws.path("second").display(),
        textfile.display()
    );
    let cfg = ws.config(&format!(
        "{head}{}",
        pg_target("prod", &db.name, "storages = [\"second\"]")
    ));
    assert_eq!(run(&["backup"], &cfg).code, 0);
    let cfg = ws.config(&format!(
        "{head}{}",
        pg_target("prod", &unique("bs_absent"), "")
    ));
    let r = run(&["backup"], &cfg);
    assert_eq!(r.code, 1, "{}", r.all());
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        text.contains("backstop_last_run_success{target=\"prod\"} 0"),
        "{text}"
    );
    let last = text
        .lines()
        .find_map(|l| l.strip_prefix("backstop_last_success_timestamp_seconds{target=\"prod\"} "))
        .unwrap_or_else(|| panic!("no last success: {text}"));
    let age = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - last.parse::<f64>().unwrap();
    assert!((0.0..600.0).contains(&age), "{text}");
}
