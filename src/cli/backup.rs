use super::{select_targets, ConfigArg};
use crate::catalog::Layout;
use crate::codec::Codec;
use crate::config::{Config, RetentionConfig, TargetConfig};
use crate::error::ExitKind;
use crate::pipeline::{run_backup, BackupJob};
use crate::prune::{prune_target, PruneRequest};
use crate::report::{hostname, PruneSummary, RunReport, Status};
use crate::storage::Storage;
use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Back up only this target (repeatable).
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
}

pub async fn run(args: BackupArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let plan = Plan::new(&config, &args.targets)?;
    let cancel = crate::signals::install();
    let run = plan.run(&cancel, json).await;
    Ok(run.exit_kind())
}

/// Everything a backup run needs, checked before anything is attempted
/// (config errors surface here, with exit code 2). `backstop schedule`
/// builds one and runs it at every tick.
pub struct Plan<'a> {
    config: &'a Config,
    targets: Vec<&'a TargetConfig>,
    storage: Box<dyn Storage>,
    layout: Layout,
    codec: Codec,
    notifiers: Vec<Box<dyn crate::notify::Notifier>>,
    encryption: Option<crate::crypto::Recipients>,
}

impl<'a> Plan<'a> {
    pub fn new(config: &'a Config, names: &[String]) -> anyhow::Result<Plan<'a>> {
        let (storage, layout) = super::open_storage(config)?;
        Ok(Plan {
            targets: select_targets(config, names)?,
            storage,
            layout,
            codec: Codec::from_config(&config.compression),
            encryption: config
                .encryption
                .as_ref()
                .map(crate::crypto::Recipients::from_config)
                .transpose()?,
            notifiers: crate::notify::from_config(&config.notify)
                .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?,
            config,
        })
    }

    /// One run over every target: backups, prunes, notifications, metrics,
    /// the summary on stdout.
    pub async fn run(&self, cancel: &CancellationToken, json: bool) -> RunReport {
        let (config, storage, layout, codec, notifiers) = (
            self.config,
            &self.storage,
            &self.layout,
            self.codec,
            &self.notifiers,
        );
        let started_at = Utc::now();
        crate::notify::notify_all(notifiers, crate::notify::Event::Started).await;
        let mut reports = Vec::new();
        // Targets run one after another: a dump already takes a core, and the
        // compressor the others.
        for target in self.targets.iter().copied() {
            let source = crate::source::from_config(target);
            let retry = config.retry_for(target);
            let mut attempt = 1;
            let mut report = loop {
                let report = run_backup(BackupJob {
                    target: target.name(),
                    source: source.as_ref(),
                    storage: storage.as_ref(),
                    layout,
                    codec,
                    encryption: self.encryption.as_ref(),
                    cancel: cancel.clone(),
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                })
                .await;
                let can_retry = report.stage.is_some_and(crate::report::Stage::retryable);
                if report.status == Status::Success || !can_retry || attempt >= retry.attempts {
                    break report;
                }
                tracing::warn!(
                    target_name = target.name(),
                    attempt,
                    "backup failed ({}); trying again in {} ({} of {} attempts left)",
                    report.error.as_deref().unwrap_or("?"),
                    humantime::format_duration(retry.delay.0),
                    retry.attempts - attempt,
                    retry.attempts
                );
                tokio::select! {
                    _ = tokio::time::sleep(retry.delay.0) => {}
                    _ = cancel.cancelled() => break report,
                }
                attempt += 1;
            };
            report.attempts = attempt;
            if report.status == Status::Success {
                if let Some(retention) = config.retention_for(target) {
                    report.prune = Some(
                        prune_after_backup(storage.as_ref(), layout, target.name(), retention)
                            .await,
                    );
                }
            }
            reports.push(report);
        }
        let run = RunReport {
            event: "summary",
            tool_version: crate::TOOL_VERSION.to_string(),
            host: hostname(),
            started_at,
            finished_at: Utc::now(),
            targets: reports,
        };
        finish_run(&run, config, storage.as_ref(), layout, notifiers, json).await;
        run
    }
}

/// Everything after the work: notifications, metrics, the summary. None of
/// it can change the exit code.
pub async fn finish_run(
    run: &RunReport,
    config: &crate::config::Config,
    storage: &dyn Storage,
    layout: &Layout,
    notifiers: &[Box<dyn crate::notify::Notifier>],
    json: bool,
) {
    crate::notify::notify_all(notifiers, crate::notify::Event::Finished(run)).await;
    if let Some(m) = &config.metrics {
        if let Err(e) = crate::notify::metrics::publish(m, run, storage, layout).await {
            tracing::error!("publishing metrics failed: {e:#}");
        }
    }
    if json {
        crate::outln!("{}", serde_json::to_string(run).expect("report serializes"));
    } else {
        crate::out!("{}", run.render_human());
    }
}

/// Retention runs only after this target's backup succeeded in this run, so
/// a failing database never loses its older backups to the policy.
async fn prune_after_backup(
    storage: &dyn Storage,
    layout: &Layout,
    target: &str,
    retention: &RetentionConfig,
) -> PruneSummary {
    let policy = retention.policy();
    let result = prune_target(PruneRequest {
        storage,
        layout,
        target,
        policy: &policy,
        orphan_grace: retention.orphan_grace.0,
        now: Utc::now(),
        dry_run: false,
    })
    .await;
    match result {
        Ok(r) => PruneSummary {
            error: (!r.errors.is_empty()).then(|| r.errors.join("; ")),
            deleted: r.deleted,
            orphans_deleted: r.orphans,
        },
        Err(e) => {
            tracing::error!(target_name = target, "prune failed: {e:#}");
            PruneSummary {
                error: Some(format!("{e:#}")),
                ..PruneSummary::default()
            }
        }
    }
}
