//! Prometheus metrics per target, as a node_exporter textfile (written
//! atomically) and/or pushed to a Pushgateway.
//!
//! A CronJob's pod starts fresh every time, so nothing is remembered in
//! memory: the last successful backup's time and size come from the storage
//! listing, and `backstop_backups_total` continues from the previous
//! textfile when there is one. In a Pushgateway each push replaces the group,
//! so there it counts the last run only.

use crate::catalog::{list_target, Layout};
use crate::config::notify::MetricsConfig;
use crate::report::{RunReport, Status};
use crate::storage::Storage;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct TargetMetrics {
    pub target: String,
    pub last_run_timestamp: f64,
    pub last_run_success: bool,
    pub last_success_timestamp: Option<f64>,
    pub backup_size_bytes: Option<u64>,
    pub backup_duration_seconds: f64,
    /// The newest backup attempt left a manifest but is damaged.
    pub newest_damaged: bool,
    /// This run's copy per storage: stored or not.
    pub copies: Vec<(String, bool)>,
}

/// (target, status) → count.
pub type Totals = BTreeMap<(String, String), u64>;

fn ts(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Where a run's backups go: each storage and its key layout.
pub type Places<'a> = [(&'a dyn Storage, &'a Layout)];

/// Gather per-target figures from this run and the storage listings (for
/// a target that failed now: its newest complete backup in any storage).
pub async fn collect(report: &RunReport, places: &Places<'_>) -> Vec<TargetMetrics> {
    let mut out = Vec::new();
    for t in &report.targets {
        let (last_success_timestamp, backup_size_bytes, newest_damaged) =
            if t.status == Status::Success {
                (Some(ts(t.finished_at)), Some(t.stored_bytes), false)
            } else {
                newest_anywhere(&t.target, places).await
            };
        out.push(TargetMetrics {
            target: t.target.clone(),
            last_run_timestamp: ts(t.finished_at),
            last_run_success: t.status == Status::Success,
            last_success_timestamp,
            backup_size_bytes,
            backup_duration_seconds: t.duration_seconds,
            newest_damaged,
            copies: t
                .copies
                .iter()
                .map(|c| (c.storage.clone(), c.status == Status::Success))
                .collect(),
        });
    }
    out
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format.
pub fn render(metrics: &[TargetMetrics], totals: &Totals) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        if samples.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let per = |f: &dyn Fn(&TargetMetrics) -> Option<String>| -> Vec<(String, String)> {
        metrics
            .iter()
            .filter_map(|m| f(m).map(|v| (format!("target=\"{}\"", label(&m.target)), v)))
            .collect()
    };
    family(
        "backstop_last_success_timestamp_seconds",
        "gauge",
        "End time of the newest complete backup.",
        per(&|m| m.last_success_timestamp.map(|v| v.to_string())),
    );
    family(
        "backstop_last_run_timestamp_seconds",
        "gauge",
        "End time of the last backup attempt.",
        per(&|m| Some(m.last_run_timestamp.to_string())),
    );
    family(
        "backstop_last_run_success",
        "gauge",
        "1 if the last backup attempt succeeded, else 0.",
        per(&|m| Some(if m.last_run_success { "1" } else { "0" }.to_string())),
    );
    family(
        "backstop_backup_size_bytes",
        "gauge",
        "Stored size of the newest complete backup.",
        per(&|m| m.backup_size_bytes.map(|v| v.to_string())),
    );
    family(
        "backstop_newest_backup_damaged",
        "gauge",
        "1 if the newest backup attempt is damaged (verify fails, restore of latest refuses).",
        per(&|m| Some(if m.newest_damaged { "1" } else { "0" }.to_string())),
    );
    family(
        "backstop_backup_duration_seconds",
        "gauge",
        "Duration of the last backup attempt.",
        per(&|m| Some(m.backup_duration_seconds.to_string())),
    );
    family(
        "backstop_copy_stored",
        "gauge",
        "1 if the last backup attempt stored its copy in this storage, else 0.",
        metrics
            .iter()
            .flat_map(|m| {
                m.copies.iter().map(|(storage, ok)| {
                    (
                        format!(
                            "target=\"{}\",storage=\"{}\"",
                            label(&m.target),
                            label(storage)
                        ),
                        if *ok { "1" } else { "0" }.to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        "backstop_backups_total",
        "counter",
        "Backup attempts by outcome.",
        totals
            .iter()
            .map(|((t, s), n)| {
                (
                    format!("target=\"{}\",status=\"{}\"", label(t), label(s)),
                    n.to_string(),
                )
            })
            .collect(),
    );
    out
}

/// This run's attempts added to `previous`.
pub fn add_run(previous: Totals, metrics: &[TargetMetrics]) -> Totals {
    let mut totals = previous;
    for m in metrics {
        let status = if m.last_run_success {
            "success"
        } else {
            "failure"
        };
        *totals
            .entry((m.target.clone(), status.to_string()))
            .or_default() += 1;
        totals
            .entry((
                m.target.clone(),
                if m.last_run_success {
                    "failure"
                } else {
                    "success"
                }
                .into(),
            ))
            .or_default();
    }
    totals
}

/// Counters from a previous textfile (missing or unreadable: none).
pub fn previous_totals(text: &str) -> Totals {
    let mut totals = Totals::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("backstop_backups_total{"))
    {
        let Some((labels, value)) = line["backstop_backups_total{".len()..].split_once("} ") else {
            continue;
        };
        let get = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = start + labels[start..].find('"')?;
            Some(labels[start..end].to_string())
        };
        if let (Some(t), Some(s), Ok(n)) =
            (get("target"), get("status"), value.trim().parse::<u64>())
        {
            totals.insert((t, s), n);
        }
    }
    totals
}

pub fn write_textfile(path: &Path, body: &str) -> anyhow::Result<()> {
    // The collector must never read a half-written file. Regression: the
    // textfile had no directory fsync and left its temp file on failure.
    Ok(crate::fsutil::write_atomic(path, body.as_bytes(), 0o644)?)
}

/// The newest complete backup of a target in any storage (time, size),
/// and whether a storage's newest attempt is damaged.
async fn newest_anywhere(target: &str, places: &Places<'_>) -> (Option<f64>, Option<u64>, bool) {
    let (mut newest, mut damaged) = (None::<crate::catalog::Backup>, false);
    for (storage, layout) in places {
        match list_target(*storage, layout, target).await {
            Ok(l) => {
                damaged |= l.damaged_newest().is_some();
                if let Some(b) = l.backups.last() {
                    if newest
                        .as_ref()
                        .is_none_or(|n| n.manifest.finished_at < b.manifest.finished_at)
                    {
                        newest = Some(b.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target_name = %target, storage = %storage.describe(), "metrics: cannot list storage for the last success: {e:#}");
            }
        }
    }
    (
        newest.as_ref().map(|b| ts(b.manifest.finished_at)),
        newest.as_ref().map(|b| b.manifest.stored_bytes()),
        damaged,
    )
}

/// Write the textfile and/or push, per the config.
pub async fn publish(
    config: &MetricsConfig,
    report: &RunReport,
    places: &Places<'_>,
) -> anyhow::Result<()> {
    let metrics = collect(report, places).await;
    let mut expiries = Vec::new();
    for (storage, _) in places {
        if let Some(at) = storage.credential_expires_at().await {
            expiries.push((storage.describe(), ts(at)));
        }
    }
    let extra = render_expiries(&expiries);
    deliver(config, "", |previous| {
        render(&metrics, &add_run(previous, &metrics)) + &extra
    })
    .await
}

/// A verify run's result per target, beside the backup metrics: its own
/// textfile (`NAME-verify.prom` next to `NAME.prom`) or Pushgateway group
/// (job `JOB-verify`), so neither run overwrites the other's figures.
pub async fn publish_verify(
    config: &MetricsConfig,
    report: &RunReport,
    proven: &[(String, f64)],
) -> anyhow::Result<()> {
    let mut body = render_verify(report);
    if !proven.is_empty() {
        let name = "backstop_last_proven_timestamp_seconds";
        body.push_str(&format!("# HELP {name} When a verify last restored one of the target's backups and its checks passed (recorded beside the backup).\n# TYPE {name} gauge\n"));
        for (target, at) in proven {
            body.push_str(&format!("{name}{{target=\"{}\"}} {at}\n", label(target)));
        }
    }
    deliver(config, "-verify", |_| body.clone()).await
}

/// The verify families: when each target was last verified, and whether
/// that verify passed.
pub fn render_verify(report: &RunReport) -> String {
    let mut out = String::new();
    type Value = dyn Fn(&crate::report::TargetReport) -> String;
    let families: [(&str, &str, &Value); 2] = [
        (
            "backstop_verify_last_run_timestamp_seconds",
            "End time of the last verify of the target's newest backup.",
            &|t| ts(t.finished_at).to_string(),
        ),
        (
            "backstop_verify_success",
            "1 if the last verify restored the newest backup and its checks passed, else 0.",
            &|t| {
                if t.status == Status::Success {
                    "1"
                } else {
                    "0"
                }
                .to_string()
            },
        ),
    ];
    for (name, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for t in &report.targets {
            out.push_str(&format!(
                "{name}{{target=\"{}\"}} {}\n",
                label(&t.target),
                value(t)
            ));
        }
    }
    out
}

/// What a running WAL streamer reports about one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalMetrics {
    pub target: String,
    /// When the streamer last reported: it is alive.
    pub updated_timestamp: f64,
    /// When a WAL file was last stored in every storage.
    pub last_stored_timestamp: Option<f64>,
    /// WAL the server has written that no storage holds yet: the data a
    /// lost server would take with it now.
    pub unstored_bytes: Option<u64>,
    /// A segment was missing before one stored (a restore cannot cross
    /// it), or the server invalidated the slot.
    pub gap: bool,
    pub receiver_restarts: u64,
    pub store_failures: u64,
}

/// A WAL streamer's figures: its own textfile (`NAME-wal.prom`) or
/// Pushgateway group (job `JOB-wal`), rewritten while it runs.
pub async fn publish_wal(config: &MetricsConfig, wal: &WalMetrics) -> anyhow::Result<()> {
    let body = render_wal(wal);
    deliver(config, "-wal", |_| body.clone()).await
}

pub fn render_wal(m: &WalMetrics) -> String {
    let families: [(&str, &str, &str, Option<String>); 6] = [
        (
            "backstop_wal_updated_timestamp_seconds",
            "gauge",
            "When the WAL streamer last reported (it reports every 30 s while it runs).",
            Some(m.updated_timestamp.to_string()),
        ),
        (
            "backstop_wal_last_stored_timestamp_seconds",
            "gauge",
            "When a WAL file was last stored in every storage.",
            m.last_stored_timestamp.map(|v| v.to_string()),
        ),
        (
            "backstop_wal_unstored_bytes",
            "gauge",
            "WAL the server has written that is not in every storage yet.",
            m.unstored_bytes.map(|v| v.to_string()),
        ),
        (
            "backstop_wal_gap",
            "gauge",
            "1 if WAL is missing (a segment never stored, or the slot lost WAL): no restore crosses it until the next base backup.",
            Some(if m.gap { "1" } else { "0" }.to_string()),
        ),
        (
            "backstop_wal_receiver_restarts_total",
            "counter",
            "Times pg_receivewal stopped and was restarted since the streamer started.",
            Some(m.receiver_restarts.to_string()),
        ),
        (
            "backstop_wal_store_failures_total",
            "counter",
            "Times storing WAL failed (and was retried) since the streamer started.",
            Some(m.store_failures.to_string()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{target=\"{}\"}} {v}\n",
                label(&m.target)
            ));
        }
    }
    out
}

/// When each storage's self-refreshed credential expires.
fn render_expiries(expiries: &[(String, f64)]) -> String {
    if expiries.is_empty() {
        return String::new();
    }
    let name = "backstop_storage_credential_expiry_timestamp_seconds";
    let mut out = format!("# HELP {name} When the storage's refresh token is revoked unless a run uses it (Box OAuth).\n# TYPE {name} gauge\n");
    for (storage, at) in expiries {
        out.push_str(&format!("{name}{{storage=\"{}\"}} {at}\n", label(storage)));
    }
    out
}

/// `path` with `suffix` before its extension: backstop.prom → backstop-verify.prom.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    if suffix.is_empty() {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}{suffix}"),
    };
    path.with_file_name(name)
}

/// Write `body` (given the counters so far) to the textfile and/or the
/// Pushgateway; `suffix` names a separate file and group.
async fn deliver(
    config: &MetricsConfig,
    suffix: &str,
    body: impl Fn(Totals) -> String,
) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    if let Some(path) = &config.textfile {
        let path = sibling(path, suffix);
        let previous = std::fs::read_to_string(&path)
            .map(|t| previous_totals(&t))
            .unwrap_or_default();
        if let Err(e) = write_textfile(&path, &body(previous)) {
            errors.push(format!("textfile {}: {e:#}", path.display()));
        }
    }
    if let Some(gateway) = &config.pushgateway {
        let url = format!(
            "{}/metrics/job/{}{suffix}/instance/{}",
            gateway.expose().trim_end_matches('/'),
            config.job,
            config.instance
        );
        let result = async {
            let resp = crate::http::client()?
                .put(url)
                .header("content-type", "text/plain; version=0.0.4")
                .body(body(Totals::new()))
                .timeout(std::time::Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", crate::http::cause(e)))?;
            anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
            Ok(())
        }
        .await;
        if let Err(e) = result {
            errors.push(format!("pushgateway: {e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(target: &str, ok: bool) -> TargetMetrics {
        TargetMetrics {
            target: target.into(),
            last_run_timestamp: 1_700_000_100.5,
            last_run_success: ok,
            last_success_timestamp: ok.then_some(1_700_000_100.5),
            backup_size_bytes: ok.then_some(1234),
            backup_duration_seconds: 3.25,
            newest_damaged: !ok,
            copies: vec![("default".into(), ok), ("offsite".into(), true)],
        }
    }

    #[test]
    fn counters_continue_from_the_previous_textfile() {
        let first = render(
            &[m("prod", true)],
            &add_run(Totals::new(), &[m("prod", true)]),
        );
        let again = add_run(previous_totals(&first), &[m("prod", false)]);
        assert_eq!(again[&("prod".to_string(), "success".to_string())], 1);
        assert_eq!(again[&("prod".to_string(), "failure".to_string())], 1);
        let text = render(&[m("prod", false)], &again);
        assert!(
            text.contains("backstop_last_run_success{target=\"prod\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("backstop_backup_size_bytes{"),
            "no size without a known backup: {text}"
        );
        assert!(
            text.contains("backstop_newest_backup_damaged{target=\"prod\"} 1"),
            "a damaged newest backup is a metric of its own: {text}"
        );
    }

    #[test]
    fn a_copy_missing_in_one_storage_is_a_sample_of_its_own() {
        let text = render(&[m("prod", false)], &Totals::new());
        assert!(
            text.contains("backstop_copy_stored{target=\"prod\",storage=\"default\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("backstop_copy_stored{target=\"prod\",storage=\"offsite\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn verify_metrics_go_to_their_own_file_and_group() {
        assert_eq!(
            sibling(Path::new("/var/lib/node/backstop.prom"), "-verify"),
            Path::new("/var/lib/node/backstop-verify.prom")
        );
        assert_eq!(
            sibling(Path::new("/var/lib/node/backstop.prom"), ""),
            Path::new("/var/lib/node/backstop.prom")
        );
        let now = chrono::Utc::now();
        let target = |name: &str, status| crate::report::TargetReport {
            status,
            ..crate::report::TargetReport::ok(name, now, 1.0)
        };
        let report = RunReport {
            event: "verify",
            tool_version: String::new(),
            host: String::new(),
            started_at: now,
            finished_at: now,
            targets: vec![
                target("prod", Status::Success),
                target("dev", Status::Failed),
            ],
        };
        let text = render_verify(&report);
        assert!(
            text.contains("backstop_verify_success{target=\"prod\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backstop_verify_success{target=\"dev\"} 0"),
            "{text}"
        );
        assert_eq!(
            text.matches("backstop_verify_last_run_timestamp_seconds{")
                .count(),
            2
        );
    }

    #[test]
    fn a_refresh_token_expiry_is_exported_per_storage() {
        let text = render_expiries(&[("box:backups".into(), 1_700_000_000.0)]);
        assert!(
            text.contains("backstop_storage_credential_expiry_timestamp_seconds{storage=\"box:backups\"} 1700000000"),
            "{text}"
        );
        assert!(render_expiries(&[]).is_empty());
    }
}
