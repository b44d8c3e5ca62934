use super::{select_targets, ConfigArg};
use crate::error::{usage, ExitKind};
use crate::prune::{prune_target, PruneRequest};
use chrono::Utc;
use clap::Args;

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Print the plan without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: PruneArgs) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let names: Vec<String> = args.target.into_iter().collect();
    let targets = select_targets(&config, &names)?;
    let (storage, layout) = super::open_storage(&config)?;
    let now = Utc::now();
    let mut reports = Vec::new();
    for t in targets {
        let Some(retention) = config.retention_for(t) else {
            if names.is_empty() {
                tracing::info!(
                    target_name = t.name(),
                    "no retention configured: nothing to prune"
                );
                continue;
            }
            return Err(usage(format!(
                "target `{}` has no [retention] (nor [targets.retention])",
                t.name()
            )));
        };
        let policy = retention.policy();
        let report = prune_target(PruneRequest {
            storage: storage.as_ref(),
            layout: &layout,
            target: t.name(),
            policy: &policy,
            orphan_grace: retention.orphan_grace.0,
            now,
            dry_run: args.dry_run,
        })
        .await?;
        if !args.json {
            crate::out!("{}", report.render_human());
        }
        reports.push(report);
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialize")
        );
    }
    Ok(if reports.iter().any(|r| !r.errors.is_empty()) {
        ExitKind::Failed
    } else {
        ExitKind::Success
    })
}
