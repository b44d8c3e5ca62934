//! `backstop wal …`: the write-ahead log of PostgreSQL targets, for
//! point-in-time recovery (see [`crate::pitr`]).

use super::restore::IdentityArg;
use super::ConfigArg;
use crate::engine::TargetConfig;
use crate::error::{usage, ExitKind};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Stream a PostgreSQL target's WAL into its storages, in the
    /// foreground until stopped (on Kubernetes: a Deployment with one
    /// replica). Needs a role with REPLICATION; creates the physical
    /// replication slot backstop_<target>.
    Stream(StreamArgs),
    /// PostgreSQL's restore_command: write WAL file NAME to PATH.
    /// `restore_command = 'backstop wal fetch --config … --target … %f %p'`.
    /// Exit 1 only when no storage holds it; 126 (recovery stops) on any
    /// other failure.
    Fetch(FetchArgs),
    /// Read back every stored WAL file of a target and check it: hashes,
    /// one cluster, no gaps within a timeline, a history file for every
    /// later timeline. Exit 1 naming each problem.
    Verify(VerifyWalArgs),
}

#[derive(Debug, Args)]
pub struct VerifyWalArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, short = 't')]
    pub target: Option<String>,
    #[command(flatten)]
    pub identity: IdentityArg,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The PostgreSQL target (may be left out when the config has one).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Where pg_receivewal writes before a file is stored (at most a few
    /// segments of 16 MiB; the open one is lost with it: a local disk, an
    /// emptyDir). Default: $TMPDIR/backstop-wal-<target>.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// How often completed WAL files are looked for and stored.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, short = 't')]
    pub target: Option<String>,
    #[command(flatten)]
    pub identity: IdentityArg,
    /// The WAL file recovery asks for (%f).
    pub name: String,
    /// Where recovery wants it (%p).
    pub path: PathBuf,
}

pub async fn run(cmd: WalCommand) -> anyhow::Result<ExitKind> {
    match cmd {
        WalCommand::Stream(args) => stream(args).await,
        WalCommand::Verify(args) => verify(args).await,
        WalCommand::Fetch(args) => Ok(match fetch(args).await {
            Ok(kind) => kind,
            // A config or storage that cannot be opened is no proof the
            // file is absent: recovery must stop, not end.
            Err(e) => {
                tracing::error!("wal fetch: {e:#}");
                ExitKind::StopRecovery
            }
        }),
    }
}

fn postgres_target<'a>(
    config: &'a crate::config::Config,
    name: &str,
) -> anyhow::Result<&'a crate::engine::postgres::config::PostgresTarget> {
    match config.target(name) {
        Some(TargetConfig::Postgres(t)) => Ok(t),
        _ => Err(usage(format!(
            "target {name}: point-in-time recovery is for PostgreSQL targets"
        ))),
    }
}

/// A `wal` command's config, its PostgreSQL target and the storages it
/// writes to (opened). `streams`: only the streamer connects to the
/// server and publishes metrics.
struct WalTarget {
    config: crate::config::Config,
    target: String,
    opened: Vec<super::OpenStorage>,
}

impl WalTarget {
    fn open(config: &ConfigArg, target: Option<&str>, streams: bool) -> anyhow::Result<WalTarget> {
        let config = config.load_for(crate::config::Uses {
            target,
            storage: None,
            notify: streams,
            source_credentials: streams,
        })?;
        let target = super::one_target(&config, target)?;
        postgres_target(&config, &target)?;
        let opened = super::open_storages(&config, None)?;
        Ok(WalTarget {
            config,
            target,
            opened,
        })
    }

    fn storages(&self) -> Vec<&super::OpenStorage> {
        let t = self
            .config
            .target(&self.target)
            .expect("one_target checked it");
        super::storages_of(&self.config, &self.opened, t)
    }

    fn pg(&self) -> &crate::engine::postgres::config::PostgresTarget {
        postgres_target(&self.config, &self.target).expect("checked at open")
    }
}

async fn fetch(args: FetchArgs) -> anyhow::Result<ExitKind> {
    let w = WalTarget::open(&args.config, args.target.as_deref(), false)?;
    let identity = args.identity.path(Some(&w.config));
    Ok(crate::pitr::fetch::fetch(
        &args.name,
        &args.path,
        &w.target,
        &w.storages(),
        identity.as_deref(),
    )
    .await)
}

async fn stream(args: StreamArgs) -> anyhow::Result<ExitKind> {
    let w = WalTarget::open(&args.config, args.target.as_deref(), true)?;
    let target = w.target.clone();
    let recipients = w
        .config
        .encryption
        .as_ref()
        .map(crate::crypto::Recipients::from_config)
        .transpose()?;
    let spool = args
        .spool
        .unwrap_or_else(|| std::env::temp_dir().join(format!("backstop-wal-{target}")));
    let storages = w.storages();
    let streamer = crate::pitr::stream::Streamer {
        conn: crate::engine::postgres::conn_of(w.pg()),
        slot: crate::pitr::stream::slot_name(&target),
        target,
        spool,
        storages: &storages,
        recipients,
        poll: args.poll,
        metrics: w.config.metrics.clone(),
    };
    let cancel = crate::signals::install();
    streamer.run(cancel).await?;
    Ok(ExitKind::Success)
}

async fn verify(args: VerifyWalArgs) -> anyhow::Result<ExitKind> {
    let w = WalTarget::open(&args.config, args.target.as_deref(), false)?;
    let (config, target) = (&w.config, &w.target);
    let storages = w.storages();
    let identity = args.identity.path(Some(config));
    let mut sound = true;
    for s in storages {
        let archive = crate::pitr::archive::WalArchive::new(s.storage.as_ref(), &s.layout, target);
        let report = crate::pitr::check::check(&archive, identity.as_deref(), None, None).await?;
        crate::outln!(
            "{target} in {}: {} segments on timeline(s) {:?}{}",
            s.name,
            report.segments,
            report.timelines,
            if report.problems.is_empty() {
                ", all sound"
            } else {
                ""
            }
        );
        for p in &report.problems {
            crate::outln!("  PROBLEM {p}");
        }
        sound &= report.problems.is_empty();
    }
    Ok(if sound {
        ExitKind::Success
    } else {
        ExitKind::Failed
    })
}
