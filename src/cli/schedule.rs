use super::backup::Plan;
use super::ConfigArg;
use crate::error::{usage, ExitKind};
use crate::report::Status;
use chrono::Utc;
use clap::Args;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Back up only this target (repeatable).
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
}

/// A small foreground daemon for hosts without Kubernetes or cron: runs
/// `backup` at each tick of `[schedule]`, one run at a time. SIGTERM while
/// idle stops at once; during a run it aborts the run cleanly (dump killed,
/// upload aborted, failure reported and notified) and then stops. A tick
/// missed because a run overran is skipped, not queued.
pub async fn run(args: ScheduleArgs, json: bool) -> anyhow::Result<ExitKind> {
    let path = args.config.path()?;
    let config = crate::config::Config::load(&path)?;
    let schedule = config.schedule.clone().ok_or_else(|| {
        usage(format!(
            "{}: no [schedule] table (cron, timezone)",
            path.display()
        ))
    })?;
    let cron = schedule.parsed().map_err(usage)?;
    let tz = schedule.tz();
    let plan = Plan::new(&config, &args.targets)?;
    let cancel = crate::signals::install();
    loop {
        let next = crate::schedule::next_after(&cron, tz, Utc::now())?;
        tracing::info!(
            next = %next.with_timezone(&tz).to_rfc3339(),
            cron = %schedule.cron,
            timezone = %tz.name(),
            "waiting for the next run"
        );
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => {
                tracing::info!("stopping: no run in progress");
                return Ok(ExitKind::Success);
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let report = plan.run(&cancel, json).await;
        let failed = report
            .targets
            .iter()
            .filter(|t| t.status == Status::Failed)
            .count();
        tracing::info!(
            failed,
            targets = report.targets.len(),
            "scheduled run finished"
        );
        if cancel.is_cancelled() {
            tracing::info!("stopping after the interrupted run was cleaned up");
            return Ok(ExitKind::Success);
        }
    }
}
