use super::{select_targets, ConfigArg};
use crate::codec::Codec;
use crate::config::{Config, RetentionConfig, TargetConfig};
use crate::error::ExitKind;
use crate::pipeline::{run_backup, BackupJob, Destination};
use crate::prune::{prune_target, PruneRequest};
use crate::report::{hostname, PruneSummary, RunReport, Status};
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
    /// Try each target once, whatever `[retry]` says: for a run by hand,
    /// where a wrong password should fail now, not after the retries.
    #[arg(long)]
    pub no_retry: bool,
    /// When another run on this host is backing up or pruning a target,
    /// wait for it instead of failing that target.
    #[arg(long)]
    pub wait: bool,
    /// Back up only shard I of N (`I/N`, 0 ≤ I < N): the targets at
    /// positions I, I+N, I+2N… of the config. N pods of one Indexed Job,
    /// each given `$JOB_COMPLETION_INDEX/N`, back up every target once.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// A physical base backup of each (PostgreSQL) target's whole cluster
    /// with pg_basebackup, for point-in-time recovery with the WAL that
    /// `backstop wal stream` stores. Needs a role with REPLICATION.
    #[arg(long)]
    pub physical: bool,
}

fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let parsed = text
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(format!("`{text}` is not I/N with 0 <= I < N (e.g. 0/3)")),
    }
}

pub async fn run(args: BackupArgs, json: bool) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let mut plan = Plan::new(&config, &args.targets)?;
    plan.once = args.no_retry;
    plan.wait = args.wait;
    if args.physical {
        if let Some(t) = plan
            .targets
            .iter()
            .find(|t| !matches!(t, TargetConfig::Postgres(_)))
        {
            return Err(crate::error::usage(format!(
                "--physical: target {} is not PostgreSQL (base backups and WAL are PostgreSQL's)",
                t.name()
            )));
        }
        plan.physical = true;
    }
    if let Some((i, n)) = args.shard {
        plan.targets = plan
            .targets
            .into_iter()
            .enumerate()
            .filter(|(at, _)| at % n == i)
            .map(|(_, t)| t)
            .collect();
        tracing::info!(
            shard = %format!("{i}/{n}"),
            targets = %plan.targets.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
            "backing up this shard's targets"
        );
    }
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
    storages: Vec<super::OpenStorage>,
    codec: Codec,
    notifiers: Vec<Box<dyn crate::notify::Notifier>>,
    encryption: Option<crate::crypto::Recipients>,
    /// Each target is tried once (`--no-retry`).
    pub once: bool,
    /// Wait for a target another run holds (`--wait`).
    pub wait: bool,
    /// Base backups instead of dumps (`--physical`).
    pub physical: bool,
}

impl<'a> Plan<'a> {
    pub fn new(config: &'a Config, names: &[String]) -> anyhow::Result<Plan<'a>> {
        Ok(Plan {
            targets: select_targets(config, names)?,
            storages: super::open_storages(config, None)?,
            codec: Codec::from_config(&config.compression),
            encryption: config
                .encryption
                .as_ref()
                .map(crate::crypto::Recipients::from_config)
                .transpose()?,
            notifiers: crate::notify::from_config(&config.notify)
                .map_err(|e| crate::error::usage(format!("notify: {e:#}")))?,
            config,
            once: false,
            wait: false,
            physical: false,
        })
    }

    /// One run over every target: backups, prunes, notifications, metrics,
    /// the summary on stdout.
    pub async fn run(&self, cancel: &CancellationToken, json: bool) -> RunReport {
        let (config, codec, notifiers) = (self.config, self.codec, &self.notifiers);
        let started_at = Utc::now();
        crate::notify::notify_all(notifiers, crate::notify::Event::Started).await;
        let mut reports = Vec::new();
        // Targets run one after another: a dump already takes a core, and the
        // compressor the others.
        for target in self.targets.iter().copied() {
            let source = match (self.physical, target) {
                (true, TargetConfig::Postgres(pg)) => crate::engine::postgres::physical_source(pg),
                _ => crate::engine::from_config(target),
            };
            let retry = match self.once {
                true => crate::config::RetryConfig {
                    attempts: 1,
                    ..config.retry_for(target)
                },
                false => config.retry_for(target),
            };
            let storages = super::storages_of(config, &self.storages, target);
            let lock = crate::lock::lock_target(target.name(), &config.origin, self.wait);
            let _held = match lock {
                Ok(held) => held,
                Err(e) => {
                    tracing::error!(target_name = target.name(), "{e:#}");
                    let now = Utc::now();
                    reports.push(
                        crate::report::TargetReport::ok(target.name(), now, 0.0).failed(
                            crate::report::Stage::Busy,
                            format!("{e:#}"),
                            Vec::new(),
                        ),
                    );
                    continue;
                }
            };
            let mut attempt = 1;
            // A retry dumps again only for the storages still without a copy.
            let mut pending: Vec<&str> = storages.iter().map(|s| s.name.as_str()).collect();
            let mut done_copies: Vec<crate::report::CopyReport> = Vec::new();
            let mut held_id: Option<String> = None;
            let mut report = loop {
                let destinations = storages
                    .iter()
                    .filter(|s| pending.contains(&s.name.as_str()))
                    .map(|s| Destination {
                        name: &s.name,
                        storage: s.storage.as_ref(),
                        layout: &s.layout,
                    })
                    .collect();
                let report = run_backup(BackupJob {
                    target: target.name(),
                    source: source.as_ref(),
                    destinations,
                    codec,
                    encryption: self.encryption.as_ref(),
                    cancel: cancel.clone(),
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                })
                .await;
                for c in report.copies.iter().filter(|c| c.status == Status::Success) {
                    pending.retain(|p| *p != c.storage);
                    done_copies.push(c.clone());
                    held_id = held_id.or(report.backup_id.clone());
                }
                let permanent = permanent_cause_of(&report);
                if let (Some(why), Status::Failed) = (permanent, report.status) {
                    tracing::error!(
                        target_name = target.name(),
                        "not retried: {why}, which another try will not change"
                    );
                }
                let can_retry = report.stage.is_some_and(crate::report::Stage::retryable)
                    && permanent.is_none();
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
            // Every storage's copy, in config order: the ones an earlier
            // attempt completed, and what the last attempt left.
            let last: Vec<_> = report
                .copies
                .iter()
                .filter(|c| c.status != Status::Success)
                .cloned()
                .collect();
            report.copies = storages
                .iter()
                .filter_map(|s| {
                    done_copies
                        .iter()
                        .chain(&last)
                        .find(|c| c.storage == s.name)
                        .cloned()
                })
                .collect();
            if report.backup_id.is_none() {
                report.backup_id = held_id;
            }
            // Retention runs in each storage that holds this run's backup.
            for s in &storages {
                let holds = report
                    .copies
                    .iter()
                    .any(|c| c.storage == s.name && c.status == Status::Success);
                if !holds {
                    continue;
                }
                if let Some(retention) = config.retention_for(target, &s.name) {
                    report
                        .prune
                        .push(prune_after_backup(s, target.name(), retention).await);
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
        let places: Vec<_> = self
            .storages
            .iter()
            .map(|s| (s.storage.as_ref(), &s.layout))
            .collect();
        finish_run(&run, config, &places, notifiers, json).await;
        run
    }
}

/// Everything after the work: notifications, metrics, the summary. None of
/// it can change the exit code.
pub async fn finish_run(
    run: &RunReport,
    config: &crate::config::Config,
    places: &crate::notify::metrics::Places<'_>,
    notifiers: &[Box<dyn crate::notify::Notifier>],
    json: bool,
) {
    crate::notify::notify_all(notifiers, crate::notify::Event::Finished(run)).await;
    if let Some(m) = &config.metrics {
        if let Err(e) = crate::notify::metrics::publish(m, run, places).await {
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
    storage: &super::OpenStorage,
    target: &str,
    retention: &RetentionConfig,
) -> PruneSummary {
    let policy = retention.policy();
    let result = prune_target(PruneRequest {
        storage_name: &storage.name,
        storage: storage.storage.as_ref(),
        layout: &storage.layout,
        target,
        policy: &policy,
        orphan_grace: retention.orphan_grace.0,
        now: Utc::now(),
        dry_run: false,
    })
    .await;
    match result {
        Ok(r) => PruneSummary {
            storage: storage.name.clone(),
            error: (!r.errors.is_empty()).then(|| r.errors.join("; ")),
            deleted: r.deleted,
            orphans_deleted: r.orphans,
        },
        Err(e) => {
            tracing::error!(target_name = target, "prune failed: {e:#}");
            PruneSummary {
                storage: storage.name.clone(),
                error: Some(format!("{e:#}")),
                ..PruneSummary::default()
            }
        }
    }
}

/// A failed attempt's permanent cause, from its error and the tool's last
/// lines (see [`crate::retry::permanent_cause`]).
fn permanent_cause_of(report: &crate::report::TargetReport) -> Option<&'static str> {
    std::iter::once(report.error.as_deref().unwrap_or(""))
        .chain(report.stderr_tail.iter().map(String::as_str))
        .find_map(crate::retry::permanent_cause)
}
