//! `backstop report`: the backup history as one HTML page (or JSON), from
//! the storages alone (see [`crate::history`]).

use super::{select_targets, ConfigArg};
use crate::config::HumanDuration;
use crate::error::{usage, ExitKind};
use crate::history::{gather, page, Source, TargetInput};
use chrono::Utc;
use clap::Args;
use std::path::PathBuf;

/// Reports kept in a storage by `--output` (older ones are deleted).
const REPORTS_KEPT: usize = 10;
/// Under the storage's prefix; `_` is not allowed in a target name, so no
/// target's listing ever sees a report.
const REPORTS_FOLDER: &str = "_reports";

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these targets (repeat the flag); default: every target.
    #[arg(long, short = 't', value_name = "NAME")]
    pub target: Vec<String>,
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// How far back the plots and tables go (the retention plan always
    /// covers every backup).
    #[arg(long, default_value = "90d")]
    pub since: HumanDuration,
    /// Write the page to this file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print the page's data as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Store the page in this storage too, under `_reports/` beside the
    /// targets' folders (the newest 10 are kept).
    #[arg(long, value_name = "STORAGE")]
    pub output: Option<String>,
    /// age identity that opens encrypted manifests' sealed part (database
    /// name, server): without it an encrypted backup shows only what its
    /// manifest keeps in clear. Only this flag opens them, never the
    /// config's identity_file: a page is easily passed around.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitKind> {
    if args.html.is_none() && !args.json && args.output.is_none() {
        return Err(usage(
            "report: say where it goes: --html FILE, --json, or --output STORAGE",
        ));
    }
    if args.identity.is_some() && args.output.is_some() {
        return Err(usage(
            "report: --output stores the page in clear beside the backups, and --identity \
             would put what encrypted manifests seal into it; use one or the other",
        ));
    }
    let config = args.config.load_for(crate::config::Uses {
        target: match args.target.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        },
        storage: args.storage.storage.as_deref(),
        notify: false,
        source_credentials: false,
    })?;
    if let Some(out) = &args.output {
        super::storage_named(&config, "--output", out)?;
    }
    let targets = select_targets(&config, &args.target)?;
    let opened = super::open_storages(&config, None)?;
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(args.since.0).unwrap_or(chrono::Duration::MAX);
    let inputs = targets
        .iter()
        .map(|t| TargetInput {
            name: t.name(),
            engine: t.engine().label(),
            sources: args
                .storage
                .of_target(&config, &opened, t)
                .into_iter()
                .map(|s| Source {
                    name: &s.name,
                    storage: s.storage.as_ref(),
                    layout: &s.layout,
                    policy: config.retention_for(t, &s.name).map(|r| r.policy()),
                })
                .collect(),
        })
        .collect();
    let history = gather(inputs, since, now, args.identity.as_deref()).await;
    let html = page::render(&history);
    if let Some(path) = &args.html {
        crate::fsutil::write_atomic(path, html.as_bytes(), 0o644)
            .map_err(|e| anyhow::anyhow!("writing the report to {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), bytes = html.len(), "report written");
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&history).expect("the history serializes")
        );
    }
    if let Some(name) = &args.output {
        let s = opened
            .iter()
            .find(|s| &s.name == name)
            .expect("checked above");
        store(s, &html, now).await?;
    }
    Ok(ExitKind::Success)
}

/// Store the page under `_reports/` and delete all but the newest few.
async fn store(
    s: &super::OpenStorage,
    html: &str,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let folder = s.layout.target_prefix(REPORTS_FOLDER);
    let key = format!(
        "{folder}backstop-report-{}.html",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    );
    crate::storage::put_bytes(s.storage.as_ref(), &key, html.to_string().into())
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("storing the report as {key}")))?;
    tracing::info!(storage = %s.name, key = %key, "report stored");
    let mut reports: Vec<String> = s
        .storage
        .list(&folder)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("listing {folder}")))?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".html"))
        .collect();
    // The stamp sorts by time.
    reports.sort();
    let surplus = reports.len().saturating_sub(REPORTS_KEPT);
    for old in &reports[..surplus] {
        if let Err(e) = s.storage.delete(old).await {
            tracing::warn!(key = %old, "deleting an old report: {e}");
        }
    }
    Ok(())
}
