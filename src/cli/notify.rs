use super::ConfigArg;
use crate::error::{usage, ExitKind};
use crate::notify::{from_config, notify_all, Event};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through every notifier and report each result.
    Test {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: NotifyCommand) -> anyhow::Result<ExitKind> {
    let NotifyCommand::Test { config } = cmd;
    let cfg = config.load()?;
    let notifiers = from_config(&cfg.notify).map_err(|e| usage(format!("notify: {e:#}")))?;
    if notifiers.is_empty() {
        return Err(usage("no [[notify]] entries in the config"));
    }
    let results = notify_all(&notifiers, Event::Test).await;
    let mut failed = false;
    for (name, result) in &results {
        match result {
            Ok(()) => crate::outln!("{name}: ok"),
            Err(e) => {
                failed = true;
                crate::outln!("{name}: FAILED: {e:#}");
            }
        }
    }
    Ok(if failed {
        ExitKind::Failed
    } else {
        ExitKind::Success
    })
}
