//! `backstop copy`: replicate existing backups from one storage to another.

use super::{select_targets, ConfigArg};
use crate::copy::{copy_target, End, Selection};
use crate::error::{usage, ExitKind};
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target (repeatable); default: every target.
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// A backup id, `latest`, or `all`.
    #[arg(long, default_value = "all")]
    pub backup: String,
    /// The storage to copy from.
    #[arg(long, value_name = "NAME")]
    pub from: String,
    /// The storage to copy to; backups already complete there are skipped.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Also read the backups already complete in --to, and replace any
    /// whose bytes do not match its manifest (as `verify` reports them).
    #[arg(long)]
    pub check: bool,
    /// JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CopyArgs) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    if args.from == args.to {
        return Err(usage("--from and --to name the same storage"));
    }
    let targets = select_targets(&config, &args.targets)?;
    let from = super::open_storages(&config, Some(&args.from))?.remove(0);
    let to = super::open_storages(&config, Some(&args.to))?.remove(0);
    if !matches!(args.backup.as_str(), "all" | "latest") && targets.len() != 1 {
        return Err(usage("--backup ID needs exactly one --target"));
    }
    fn end(s: &super::OpenStorage) -> End<'_> {
        End {
            name: &s.name,
            storage: s.storage.as_ref(),
            layout: &s.layout,
        }
    }
    to.storage
        .preflight()
        .await
        .with_context(|| format!("storage `{}`", to.name))?;
    let mut reports = Vec::new();
    for t in targets {
        let selection = match args.backup.as_str() {
            "all" => Selection::All,
            "latest" => Selection::Latest,
            id => Selection::Id(id),
        };
        let report = copy_target(end(&from), end(&to), t.name(), selection, args.check).await?;
        if !args.json {
            for id in &report.copied {
                crate::outln!("{:<12} copied  {id}  {} → {}", t.name(), from.name, to.name);
            }
            for id in &report.skipped {
                crate::outln!(
                    "{:<12} present {id}  already complete in {}",
                    t.name(),
                    to.name
                );
            }
            for (id, why) in &report.failed {
                crate::outln!("{:<12} FAILED  {id}: {why}", t.name());
            }
        }
        reports.push(report);
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialize")
        );
    }
    Ok(if reports.iter().any(|r| r.needs_person) {
        ExitKind::AuthNeeded
    } else if reports.iter().any(|r| !r.failed.is_empty()) {
        ExitKind::Failed
    } else {
        ExitKind::Success
    })
}
