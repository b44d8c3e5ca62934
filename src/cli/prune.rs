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
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// Print the plan without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// When another run on this host is backing up or pruning a target,
    /// wait for it instead of skipping that target.
    #[arg(long)]
    pub wait: bool,
    /// With any --keep-… flag, this policy replaces the config's retention
    /// for this run (for every target and storage selected).
    #[command(flatten)]
    pub keep: crate::config::RetentionConfig,
}

pub async fn run(args: PruneArgs) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let names: Vec<String> = args.target.into_iter().collect();
    let targets = select_targets(&config, &names)?;
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let now = Utc::now();
    let mut reports = Vec::new();
    // The lock a backup of each target takes: a prune never runs beside a
    // backup of the same target.
    let mut held = Vec::new();
    let mut busy = false;
    let mut free = Vec::new();
    for t in targets {
        match crate::lock::lock_target(t.name(), &config.origin, args.wait) {
            Ok(lock) => {
                held.push(lock);
                free.push(t);
            }
            Err(e) => {
                tracing::error!(target_name = t.name(), "{e:#}");
                busy = true;
            }
        }
    }
    let pairs = free.into_iter().flat_map(|t| {
        args.storage
            .of_target(&config, &opened, t)
            .into_iter()
            .map(move |s| (t, s))
    });
    for (t, s) in pairs {
        let given = (!args.keep.policy().is_empty()).then_some(&args.keep);
        let Some(retention) = given.or(config.retention_for(t, &s.name)) else {
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
            storage_name: &s.name,
            storage: s.storage.as_ref(),
            layout: &s.layout,
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
    drop(held);
    Ok(if busy || reports.iter().any(|r| !r.errors.is_empty()) {
        ExitKind::Failed
    } else {
        ExitKind::Success
    })
}
