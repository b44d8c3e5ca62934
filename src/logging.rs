//! Log output: readable lines for a person at a terminal, JSON lines for
//! log collectors (Kubernetes, journald). Logs go to stderr; stdout carries
//! only command results (summaries, listings), so both can be piped apart.

use clap::ValueEnum;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human lines on a terminal, JSON otherwise.
    Auto,
    Human,
    Json,
}

impl LogFormat {
    /// Resolve `auto` against whether stderr is a terminal.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("BACKSTOP_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format.resolve() {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
