//! The command line: one file per command. Each command returns the exit
//! kind it ends with; `main` turns errors into exit codes.

pub mod auth;
pub mod backup;
pub mod check;
pub mod config;
pub mod copy;
pub mod init;
pub mod list;
pub mod notify;
pub mod out;
pub mod prune;
pub mod report;
pub mod restore;
pub mod schedule;
pub mod status;
pub mod verify;
pub mod wal;

use crate::config::Config;
use crate::error::{usage, ExitKind};
use crate::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "backstop",
    version,
    about = "Scheduled database backups that are proven restorable",
    long_about = "Scheduled database backups that are proven restorable.\n\n\
        Exit codes: 0 every target succeeded; 1 at least one target failed; \
        2 usage or config error (nothing was attempted); 3 authentication needs a person."
)]
pub struct Cli {
    /// Log format: human lines on a terminal and JSON lines otherwise (auto).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "BACKSTOP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); BACKSTOP_LOG overrides with a full filter.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up every target (or those named with --target).
    Backup(backup::BackupArgs),
    /// Try everything a backup needs: targets, storage, token store,
    /// notifiers (--notify). The first step after deploying.
    Check(check::CheckArgs),
    /// Write a commented starter config for a database URL (postgres://,
    /// mysql://, sqlite:///) and a storage.
    Init(init::InitArgs),
    /// List the complete backups in storage.
    List(list::ListArgs),
    /// Restore a backup (or a dump file) into a PostgreSQL, MariaDB/MySQL
    /// or SQLite database, named by --into URL.
    Restore(restore::RestoreArgs),
    /// Copy existing backups from one storage to another (seed a new
    /// storage, repair a missing copy); what is there already is skipped.
    Copy(copy::CopyArgs),
    /// Prove backups restore: restore each target's newest into a scratch
    /// database, read it through, drop it.
    Verify(verify::VerifyArgs),
    /// Delete backups the retention policy no longer keeps (and orphans).
    Prune(prune::PruneArgs),
    /// Run backups on the [schedule] of the config, in the foreground.
    Schedule(schedule::ScheduleArgs),
    /// Newest complete backup per target; exit 1 when one is too old.
    Status(status::StatusArgs),
    /// The backup history as one self-contained HTML page with plots (or
    /// JSON): sizes, durations, verifies, copies, the retention plan, gaps.
    Report(report::ReportArgs),
    /// Notifications.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// PostgreSQL's write-ahead log, for point-in-time recovery: stream it
    /// to the storages, fetch it back during recovery.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Storage credentials (Box OAuth tokens).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// An engine's helper, which backstop runs as a child process (SQLite's
    /// "dump tool": `internal sqlite snapshot PATH`).
    #[command(hide = true)]
    Internal {
        engine: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the TOML config file. Without it (and without
    /// BACKSTOP_CONFIG): ./backstop.toml, then
    /// $XDG_CONFIG_HOME/backstop/backstop.toml (~/.config/…), then
    /// /etc/backstop/backstop.toml.
    #[arg(long, short = 'c', env = "BACKSTOP_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config file to use: the one named, or the first that exists on
    /// the search path.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.config {
            return Ok(p.clone());
        }
        let candidates = config_search_path();
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| {
                usage(format!(
                    "no config file: pass --config FILE or set BACKSTOP_CONFIG (looked for {})",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(&self.path()?)
    }

    /// Only what the command uses (see [`crate::config::Uses`]).
    pub fn load_for(&self, uses: crate::config::Uses) -> anyhow::Result<Config> {
        Config::load_for(&self.path()?, uses)
    }
}

/// Where a config is looked for when none is named, in order.
pub fn config_search_path() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("backstop.toml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = xdg {
        out.push(dir.join("backstop/backstop.toml"));
    }
    out.push(PathBuf::from("/etc/backstop/backstop.toml"));
    out
}

/// One configured storage, opened, with its key layout.
pub struct OpenStorage {
    pub name: String,
    pub storage: Box<dyn crate::storage::Storage>,
    pub layout: crate::catalog::Layout,
}

/// `--storage NAME` for the commands that read backups.
#[derive(Debug, Args)]
pub struct StorageArg {
    /// Work on this storage only (a [storages.NAME]; [storage] is named
    /// `default`). Default: every storage of the target, in config order
    /// (restore and verify: the first that holds the backup).
    #[arg(long, value_name = "NAME")]
    pub storage: Option<String>,
}

impl StorageArg {
    /// The storages to read a target's backups from: the one named (even
    /// one the target does not write to: `copy` may have put backups
    /// there), else the target's own.
    pub fn of_target<'a>(
        &self,
        config: &Config,
        opened: &'a [OpenStorage],
        target: &crate::config::TargetConfig,
    ) -> Vec<&'a OpenStorage> {
        match &self.storage {
            Some(_) => opened.iter().collect(),
            None => storages_of(config, opened, target),
        }
    }
}

/// The storages a command works on: the one named, or all, in config order.
pub fn open_storages(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<OpenStorage>> {
    if let Some(name) = only {
        storage_named(config, "--storage", name)?;
    }
    config
        .storages
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .map(|(name, entry)| {
            Ok(OpenStorage {
                name: name.clone(),
                storage: crate::storage::from_config(&entry.storage)?,
                layout: crate::catalog::Layout::new(entry.storage.prefix()),
            })
        })
        .collect()
}

/// A usage error unless the config has a storage `name` (given by `flag`).
pub fn storage_named(config: &Config, flag: &str, name: &str) -> anyhow::Result<()> {
    if config.storages.contains_key(name) {
        return Ok(());
    }
    Err(usage(format!(
        "{flag}: no storage named `{name}` (configured: {})",
        config
            .storages
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Of the opened storages, those a target's backups go to.
pub fn storages_of<'a>(
    config: &Config,
    opened: &'a [OpenStorage],
    target: &crate::config::TargetConfig,
) -> Vec<&'a OpenStorage> {
    let names = config.storages_for(target);
    opened
        .iter()
        .filter(|o| names.contains(&o.name.as_str()))
        .collect()
}

/// The storage to restore a target's backup from, and the backup's id: the
/// first storage (in config order) that holds `id` intact; for the newest
/// (`None`/`latest`), the newest backup any storage holds intact, so a copy
/// that failed last night in the first storage does not hide a newer one.
pub async fn locate_backup<'a>(
    storages: &[&'a OpenStorage],
    target: &str,
    id: Option<&str>,
) -> anyhow::Result<(&'a OpenStorage, String)> {
    let mut first_error = None;
    let mut remember = |s: &OpenStorage, e: anyhow::Error| {
        if storages.len() > 1 {
            tracing::warn!(target_name = target, storage = %s.name, "{e:#}");
        }
        first_error.get_or_insert(e);
    };
    if let Some(id) = id.filter(|i| *i != "latest") {
        for s in storages {
            match crate::restore::choose_backup(s.storage.as_ref(), &s.layout, target, Some(id))
                .await
            {
                Ok(b) => return Ok((s, b.manifest.id.0)),
                Err(e) => remember(s, e),
            }
        }
    } else {
        // The newest backup *attempt* over every storage must be intact in
        // one of them: a newest copy damaged everywhere is refused, never
        // passed over for an older backup (regression: an older backup of
        // another storage was restored in its place).
        let mut intact: Option<(&OpenStorage, crate::catalog::Backup)> = None;
        let mut damaged: Option<crate::catalog::Damaged> = None;
        for s in storages {
            match crate::catalog::list_target(s.storage.as_ref(), &s.layout, target).await {
                Ok(listing) => {
                    if let Some(b) = listing.backups.last() {
                        let newer = intact
                            .as_ref()
                            .is_none_or(|(_, f)| b.manifest.started_at > f.manifest.started_at);
                        if newer {
                            intact = Some((s, b.clone()));
                        }
                    }
                    if let Some(d) = listing.damaged_newest() {
                        if damaged
                            .as_ref()
                            .is_none_or(|n| (d.time, &d.id) > (n.time, &n.id))
                        {
                            damaged = Some(d.clone());
                        }
                    }
                }
                Err(e) => remember(s, e),
            }
        }
        let key = |b: &crate::catalog::Backup| (Some(b.manifest.started_at), b.manifest.id.clone());
        match (intact, damaged) {
            (Some((s, b)), d) if d.as_ref().is_none_or(|d| (d.time, d.id.clone()) <= key(&b)) => {
                return Ok((s, b.manifest.id.0))
            }
            (older, Some(d)) => {
                let older = match older {
                    Some((s, b)) => format!(
                        "the newest intact backup is {} (in {}); restore it explicitly with --backup {}",
                        b.manifest.id, s.name, b.manifest.id
                    ),
                    None => "there is no intact backup".to_string(),
                };
                anyhow::bail!(
                    "the newest backup of target `{target}`, {}, is damaged in every storage that holds it ({}); {older}",
                    d.id,
                    d.why
                );
            }
            (None, None) if first_error.is_none() => {
                return Err(usage(format!("target `{target}` has no complete backup")))
            }
            _ => {}
        }
    }
    Err(first_error.unwrap_or_else(|| usage(format!("target `{target}` has no storage"))))
}

/// A copy of a backup that proved damaged when read, in one storage.
pub struct DamagedCopyOf {
    pub storage: String,
    pub why: String,
}

/// Run `attempt` (a restore or verify) on the backup [`locate_backup`]
/// finds. When the copy it reads proves damaged (its bytes do not match
/// the manifest), the failure is named in a warning, the copy is marked
/// damaged in its storage (so `status` and the next runs see it), and the
/// same backup is read from the next storage that holds it; only when
/// every copy is damaged does the last failure stand. Every damaged copy of
/// the backup (found now or marked before) is returned, so that verify
/// fails on them until `backstop copy` replaces them.
pub async fn from_intact_copy<'a, T>(
    storages: &[&'a OpenStorage],
    target: &str,
    id: Option<&str>,
    mut attempt: impl AsyncFnMut(&'a OpenStorage, String) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<DamagedCopyOf>)> {
    let (first, id) = locate_backup(storages, target, id).await?;
    let others = storages
        .iter()
        .copied()
        .filter(|s| !std::ptr::eq(*s, first));
    let mut damaged = Vec::new();
    let mut last = None;
    for s in std::iter::once(first).chain(others) {
        if !std::ptr::eq(s, first)
            && crate::restore::choose_backup(s.storage.as_ref(), &s.layout, target, Some(&id))
                .await
                .is_err()
        {
            continue; // not there, or damaged by its listing already
        }
        match attempt(s, id.clone()).await {
            Err(e) if crate::error::has::<crate::error::DamagedCopy>(&e) => {
                tracing::warn!(
                    target_name = target,
                    storage = %s.name,
                    "the copy of backup {id} in storage `{}` is damaged ({e:#}); repair it with `backstop copy`",
                    s.name
                );
                mark_damaged(s, target, &id).await;
                damaged.push(DamagedCopyOf {
                    storage: s.name.clone(),
                    why: format!("{e:#}"),
                });
                last = Some(e);
            }
            Ok(t) => {
                let known: Vec<String> = damaged.iter().map(|d| d.storage.clone()).collect();
                for other in storages.iter().filter(|o| !known.contains(&o.name)) {
                    if let Ok(listing) =
                        crate::catalog::list_target(other.storage.as_ref(), &other.layout, target)
                            .await
                    {
                        if let Some(d) = listing.damaged.iter().find(|d| d.id.0 == id) {
                            damaged.push(DamagedCopyOf {
                                storage: other.name.clone(),
                                why: d.why.clone(),
                            });
                        }
                    }
                }
                return Ok((t, damaged));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("the located storage was tried"))
}

/// Best effort: a mark a person can act on, not a condition of the run.
/// The copy is read through once more first: only bytes that mismatch
/// again are marked, never a copy a read cut short in transit.
async fn mark_damaged(s: &OpenStorage, target: &str, id: &str) {
    let marked = async {
        let b =
            crate::restore::choose_backup(s.storage.as_ref(), &s.layout, target, Some(id)).await?;
        let end = crate::copy::End {
            name: &s.name,
            storage: s.storage.as_ref(),
            layout: &s.layout,
        };
        match crate::copy::first_damaged_object(end, &b.manifest).await? {
            Some(why) => crate::catalog::mark_damaged(s.storage.as_ref(), &b.manifest_key, &why).await,
            None => {
                tracing::warn!(target_name = target, storage = %s.name, "backup {id} read back intact on a second read: not marked damaged");
                Ok(())
            }
        }
    }
    .await;
    if let Err(e) = marked {
        tracing::warn!(target_name = target, storage = %s.name, "could not mark the damaged copy: {e:#}");
    }
}

/// The targets a command works on: all, or the ones named (each must exist).
pub fn select_targets<'a>(
    config: &'a Config,
    names: &[String],
) -> anyhow::Result<Vec<&'a crate::config::TargetConfig>> {
    if names.is_empty() {
        return Ok(config.targets.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.target(n).ok_or_else(|| {
                let known: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
                usage(format!(
                    "unknown target `{n}` (configured: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// The target a single-target command works on: the one named, or the only
/// one configured.
pub fn one_target(config: &Config, name: Option<&str>) -> anyhow::Result<String> {
    match name {
        Some(n) => select_targets(config, &[n.to_string()]).map(|t| t[0].name().to_string()),
        None => match config.targets.as_slice() {
            [only] => Ok(only.name().to_string()),
            many => Err(usage(format!(
                "--target is needed: the config has {} targets ({})",
                many.len(),
                many.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            ))),
        },
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitKind> {
    // The summary goes to stdout: a table when a person reads stdout, one
    // JSON line when a program does — whatever stderr (the logs) is.
    // Regression: a terminal with stderr redirected got the JSON line.
    let json = !std::io::IsTerminal::is_terminal(&std::io::stdout());
    match cli.command {
        Command::Backup(args) => backup::run(args, json).await,
        Command::Check(args) => check::run(args).await,
        Command::Init(args) => init::run(args),
        Command::List(args) => list::run(args).await,
        Command::Restore(args) => restore::run(args).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Copy(args) => copy::run(args).await,
        Command::Verify(args) => verify::run(args, json).await,
        Command::Status(args) => status::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Schedule(args) => schedule::run(args, json).await,
        Command::Notify(cmd) => notify::run(cmd).await,
        Command::Auth(cmd) => auth::run(cmd).await,
        Command::Wal(cmd) => wal::run(cmd).await,
        Command::Config(cmd) => config::run(cmd),
        Command::Internal { engine, args } => {
            let helper = crate::engine::engine(&engine).and_then(|e| e.helper(&args));
            match helper {
                Some(done) => done.map(|()| ExitKind::Success),
                None => Err(usage(format!("no helper `{engine}` {args:?}"))),
            }
        }
    }
}
