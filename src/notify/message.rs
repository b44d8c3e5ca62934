//! Turning a run report into words: a subject that says what failed at a
//! glance, a plain-text body, and an HTML alternative that stays readable.

use crate::report::{human_bytes, RunReport, Stage, Status, TargetReport};

/// "pg_dump exited 1", "connect failed", ...: the short cause for subjects.
pub fn short_reason(t: &TargetReport) -> String {
    match (t.stage, t.error.as_deref()) {
        (Some(Stage::Dump), Some(e)) => e.split(':').next().unwrap_or(e).trim().to_string(),
        (Some(Stage::Interrupted), _) => "interrupted".into(),
        (Some(Stage::Stale), _) => "no recent backup".into(),
        (Some(Stage::Verify), _) => "does not restore".into(),
        (Some(stage), _) => format!("{} failed", stage.as_str()),
        (None, _) => "failed".into(),
    }
}

pub fn subject(report: &RunReport) -> String {
    let failed: Vec<&TargetReport> = report
        .targets
        .iter()
        .filter(|t| t.status == Status::Failed)
        .collect();
    let prune_failed = report
        .targets
        .iter()
        .any(|t| t.prune.iter().any(|p| p.error.is_some()));
    if failed.is_empty() && !prune_failed {
        let names: Vec<&str> = report.targets.iter().map(|t| t.target.as_str()).collect();
        return format!("[backstop] OK {} on {}", names.join(", "), report.host);
    }
    if failed.is_empty() {
        return format!("[backstop] FAILED prune on {}", report.host);
    }
    let parts: Vec<String> = failed
        .iter()
        .map(|t| format!("{} ({})", t.target, short_reason(t)))
        .collect();
    format!("[backstop] FAILED {} on {}", parts.join(", "), report.host)
}

/// Where to look next: `kubectl logs` in Kubernetes (from the downward
/// API variables our manifests set), else the host's logs.
pub fn where_to_look() -> String {
    let ns = std::env::var("POD_NAMESPACE").ok();
    match (
        std::env::var("JOB_NAME").ok(),
        std::env::var("POD_NAME").ok(),
    ) {
        (Some(job), _) => format!(
            "kubectl logs job/{job}{}",
            ns.map(|n| format!(" -n {n}")).unwrap_or_default()
        ),
        (None, Some(pod)) => format!(
            "kubectl logs {pod}{}",
            ns.map(|n| format!(" -n {n}")).unwrap_or_default()
        ),
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            "kubectl logs on the backup Job's pod".into()
        }
        _ => "the log of this run (journalctl for a systemd timer, the cron mail, or the terminal)"
            .into(),
    }
}

pub fn text_body(report: &RunReport) -> String {
    let failed = report
        .targets
        .iter()
        .filter(|t| t.status == Status::Failed)
        .count();
    let mut out = format!(
        "backstop run on {}: {} of {} targets failed\nstarted {}, finished {} ({:.1}s)\n\n",
        report.host,
        failed,
        report.targets.len(),
        report.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        report.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
        (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0
    );
    for t in &report.targets {
        match t.status {
            Status::Success => {
                out.push_str(&format!(
                    "{}: OK, {} stored ({} raw) in {:.1}s\n",
                    t.target,
                    human_bytes(t.stored_bytes),
                    human_bytes(t.raw_bytes),
                    t.duration_seconds
                ));
                if let Some(key) = &t.manifest_key {
                    out.push_str(&format!(
                        "  backup: {}\n  manifest: {key}\n",
                        t.backup_id.as_deref().unwrap_or("")
                    ));
                }
            }
            Status::Failed => {
                out.push_str(&format!(
                    "{}: FAILED at stage {} after {:.1}s\n  error: {}\n",
                    t.target,
                    t.stage.map(|s| s.as_str()).unwrap_or("?"),
                    t.duration_seconds,
                    t.error.as_deref().unwrap_or("unknown")
                ));
                if !t.stderr_tail.is_empty() {
                    out.push_str("  last lines of the dump tool's stderr:\n");
                    for line in &t.stderr_tail {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
            }
        }
        if t.copies.len() > 1 {
            for c in &t.copies {
                match &c.error {
                    None => {
                        out.push_str(&format!("  storage {}: holds the new backup\n", c.storage))
                    }
                    Some(e) => out.push_str(&format!("  storage {}: FAILED: {e}\n", c.storage)),
                }
            }
        }
        for p in &t.prune {
            let label = match t.prune.len() {
                1 => "prune".to_string(),
                _ => format!("prune in {}", p.storage),
            };
            out.push_str(&format!("  {label}: {}\n", p.describe()));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Look further: {}\n-- \n{}\n",
        where_to_look(),
        report.tool_version
    ));
    out
}

pub fn html_body(report: &RunReport) -> String {
    let mut rows = String::new();
    for t in &report.targets {
        let (colour, status) = match t.status {
            Status::Success => ("#1a7f37", "OK".to_string()),
            Status::Failed => ("#cf222e", format!("FAILED ({})", short_reason(t))),
        };
        let detail = match t.status {
            Status::Success => format!(
                "{} stored, {} raw, {:.1}s<br><code>{}</code>",
                human_bytes(t.stored_bytes),
                human_bytes(t.raw_bytes),
                t.duration_seconds,
                escape(t.manifest_key.as_deref().unwrap_or(""))
            ),
            Status::Failed => {
                let mut d = escape(t.error.as_deref().unwrap_or(""));
                if !t.stderr_tail.is_empty() {
                    d.push_str(&format!(
                        "<pre style=\"background:#f6f8fa;padding:6px;white-space:pre-wrap\">{}</pre>",
                        escape(&t.stderr_tail.join("\n"))
                    ));
                }
                d
            }
        };
        rows.push_str(&format!(
            "<tr><td style=\"padding:4px 8px\"><b>{}</b></td><td style=\"padding:4px 8px;color:{colour}\"><b>{status}</b></td><td style=\"padding:4px 8px\">{detail}</td></tr>",
            escape(&t.target)
        ));
    }
    format!(
        "<html><body style=\"font-family:sans-serif\"><p>{}</p><table border=\"1\" cellspacing=\"0\">{rows}</table>\
         <p>Look further: <code>{}</code></p><p style=\"color:#666\">{}</p></body></html>",
        escape(&subject(report)),
        escape(&where_to_look()),
        escape(&report.tool_version)
    )
}

/// One short paragraph for chat webhooks and ping bodies.
pub fn short_text(report: &RunReport) -> String {
    let mut out = subject(report);
    for t in report.targets.iter().filter(|t| t.status == Status::Failed) {
        out.push_str(&format!(
            "\n{}: {}",
            t.target,
            t.error.as_deref().unwrap_or("")
        ));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
