use super::ConfigArg;
use crate::error::ExitKind;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print it resolved, with secrets redacted.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitKind> {
    match cmd {
        ConfigCommand::Check { config } => {
            let path = config.path()?;
            let cfg = crate::config::Config::load(&path)?;
            crate::outln!("# {}: valid", path.display());
            crate::outln!("{}", cfg.to_redacted_toml());
            Ok(ExitKind::Success)
        }
    }
}
