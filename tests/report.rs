//! `backstop report`: the page's numbers are the manifests' numbers, it
//! says when a storage is empty or a manifest damaged and still renders,
//! and in headless Chromium it loads with no console error and no request
//! leaving the file. SQLite targets: no server needed.

mod support;

use std::path::{Path, PathBuf};
use support::*;

fn target(name: &str, db: &Path) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\ntype = \"sqlite\"\npath = \"{}\"\nretry = {{ attempts = 1 }}\n\n",
        db.display()
    )
}

/// Every `data-NAME="…"` of the row of backup `id`.
fn row_attr(html: &str, id: &str, name: &str) -> Option<String> {
    let row = html.split(&format!("<tr data-id=\"{id}\"")).nth(1)?;
    let row = &row[..row.find('>')?];
    let value = row.split(&format!(" data-{name}=\"")).nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

#[test]
fn the_pages_numbers_are_the_manifests_and_an_empty_or_damaged_storage_is_said() {
    let ws = Workspace::new();
    let app = sqlite_notes(&ws, "app.db", 300);
    let lone = sqlite_notes(&ws, "lone.db", 5);
    let idle = sqlite_notes(&ws, "idle.db", 1);
    let targets = format!(
        "{}{}{}",
        target("app", &app),
        target("lone", &lone),
        target("idle", &idle)
    );
    let cfg = ws.config(&targets);
    for t in ["app", "app", "app", "lone"] {
        let r = run(&["backup", "--target", t], &cfg);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let r = run(&["verify", "--target", "app"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    // A policy the backups did not prune by yet: the page shows its plan.
    let cfg = ws.config(&format!("[retention]\nkeep_last = 2\n\n{targets}"));

    let page = ws.path("report.html");
    let r = run(
        &["report", "--html", page.to_str().unwrap(), "--json"],
        &cfg,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();

    // Every manifest's figures, in the JSON and in the page's rows.
    let manifests: Vec<PathBuf> = ws
        .stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 4);
    for m in &manifests {
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
        let id = m["id"].as_str().unwrap();
        let raw: u64 = m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["raw_bytes"].as_u64().unwrap())
            .sum();
        let stored: u64 = m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["stored_bytes"].as_u64().unwrap())
            .sum();
        let t = json["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == m["target"])
            .unwrap();
        let entry = t["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} in the JSON"));
        assert_eq!(entry["figures"]["raw_bytes"], raw);
        assert_eq!(entry["figures"]["stored_bytes"], stored);
        assert_eq!(
            row_attr(&html, id, "raw").as_deref(),
            Some(&*raw.to_string())
        );
        assert_eq!(
            row_attr(&html, id, "stored").as_deref(),
            Some(&*stored.to_string())
        );
    }
    // The retention plan: keep_last = 2 of app's three, so one goes next.
    let app_json = &json["targets"][0];
    assert_eq!(app_json["name"], "app");
    assert_eq!(
        app_json["plans"][0]["prune_next"].as_array().unwrap().len(),
        1
    );
    assert!(html.contains("The next prune deletes 1 backup"), "{html}");
    // Proven: the verify's record is the summary's newest proven backup.
    let newest = app_json["newest"]["backup"].as_str().unwrap();
    assert_eq!(app_json["newest_proven"]["backup"], newest);
    assert!(html.contains("data-verified=\"passed\""));
    // One backup: plotted and listed; no backup at all: said so.
    assert_eq!(json["targets"][1]["backups"].as_array().unwrap().len(), 1);
    assert!(html.contains("No backups since"), "the idle target: {html}");
    assert!(html.contains("never proven"));
    for forbidden in ["<script", "http://", "https://", "<img", "<link", "@import"] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }

    // A damaged manifest: named, and the page still renders the rest.
    let damaged = manifests
        .iter()
        .find(|p| p.to_string_lossy().contains("/lone/"))
        .unwrap();
    std::fs::write(damaged, b"{ not json").unwrap();
    let r = run(&["report", "--html", page.to_str().unwrap()], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("is damaged"), "{html}");
    assert!(html.contains("manifest unreadable"), "{html}");
    assert!(html.contains("</html>"));

    // Where it goes must be said; --identity never goes into a stored page.
    let r = run(&["report"], &cfg);
    assert_eq!(r.code, 2, "{}", r.all());
    let r = run(
        &[
            "report",
            "--output",
            "default",
            "--identity",
            "/nonexistent",
        ],
        &cfg,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    // --output stores it beside the targets' folders, not in one.
    let r = run(&["report", "--output", "default"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    let stored: Vec<_> = ws
        .stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".html"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].to_string_lossy().contains("/_reports/"));
    let r = run(&["list", "--json"], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Chromium's verdict on a page: console messages and every URL it asked
/// the network for (from its net log), plus a screenshot per size.
struct Rendered {
    console: Vec<String>,
    requests: Vec<String>,
}

fn render(page: &Path, shots: &Path, stem: &str) -> Rendered {
    let mut console = Vec::new();
    let mut requests = Vec::new();
    for (w, h) in [(1280, 800), (390, 844)] {
        let profile = tempfile::tempdir().unwrap();
        let netlog = profile.path().join("net.json");
        let shot = shots.join(format!("{stem}-{w}x{h}.png"));
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--log-net-log={}", netlog.display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("--window-size={w},{h}"))
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium runs");
        assert!(
            shot.exists(),
            "no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        console.extend(
            stderr
                .lines()
                .filter(|l| l.contains("CONSOLE"))
                .map(str::to_string),
        );
        let log = std::fs::read_to_string(&netlog).unwrap_or_default();
        for url in log.split("\"url\":\"").skip(1) {
            let url = &url[..url.find('"').unwrap_or(url.len())];
            // Chromium's own traffic (updates, sign-in, dictionaries) is
            // not the page's.
            let host = url
                .split("://")
                .nth(1)
                .unwrap_or("")
                .split(['/', ':', '?'])
                .next()
                .unwrap_or("");
            let browsers_own = ["google.com", "googleapis.com", "gvt1.com"]
                .iter()
                .any(|d| host == *d || host.ends_with(&format!(".{d}")));
            if !url.starts_with("file://") && !url.starts_with("data:") && !browsers_own {
                requests.push(url.to_string());
            }
        }
    }
    Rendered { console, requests }
}

#[test]
fn the_page_loads_in_chromium_with_no_console_error_and_no_request() {
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("chromium is not installed (scripts/services.sh ensure_test_tools installs it)");
    }
    let ws = Workspace::new();
    let app = sqlite_notes(&ws, "app.db", 50);
    let cfg = ws.config(&target("app", &app));
    for _ in 0..2 {
        assert_eq!(run(&["backup"], &cfg).code, 0);
    }
    let page = ws.path("report.html");
    let r = run(&["report", "--html", page.to_str().unwrap()], &cfg);
    assert_eq!(r.code, 0, "{}", r.all());
    // Kept as test artefacts.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let seen = render(&page, &shots, "report");
    assert!(seen.console.is_empty(), "console: {:?}", seen.console);
    assert!(seen.requests.is_empty(), "requests: {:?}", seen.requests);

    // The check can fail: a page that logs an error and fetches an image.
    let html = std::fs::read_to_string(&page).unwrap();
    let bad = ws.path("bad.html");
    let without_policy: String = html
        .split("<meta http-equiv=\"Content-Security-Policy\"")
        .enumerate()
        .map(|(i, part)| match i {
            0 => part.to_string(),
            _ => part[part.find('>').unwrap() + 1..].to_string(),
        })
        .collect();
    std::fs::write(
        &bad,
        without_policy.replace(
            "</body>",
            "<img src=\"http://127.0.0.1:9/x.png\"><script>console.error('broken')</script></body>",
        ),
    )
    .unwrap();
    let seen = render(&bad, &shots, "control");
    assert!(!seen.console.is_empty(), "the console error is seen");
    assert!(
        seen.requests.iter().any(|u| u.contains("127.0.0.1:9")),
        "the request is seen: {:?}",
        seen.requests
    );
}
