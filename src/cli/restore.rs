use super::ConfigArg;
use crate::engine::postgres::engine::PgDestination;
use crate::engine::postgres::restore::restore_globals;
use crate::engine::{postgres::Postgres, Engine};
use crate::error::{usage, ExitKind};
use crate::restore::{Fidelity, Mode, Parallel, RestoreJob, RestoreOptions};
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The target whose backup to restore (may be omitted when the config
    /// has exactly one).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Backup id (see `backstop list`) or `latest` (the newest backup; a
    /// damaged newest backup is refused, not skipped).
    #[arg(long)]
    pub backup: Option<String>,
    /// Where to restore: postgres://USER@HOST:PORT/DB (a password is better
    /// given as PGPASSWORD than in the URL), mysql://USER[:PASSWORD]@HOST:PORT/DB
    /// (or mariadb://), or sqlite:///PATH (written beside PATH, renamed
    /// into place).
    #[arg(long, required_unless_present = "pgdata")]
    pub into: Option<String>,
    /// Point-in-time recovery (PostgreSQL, from `backup --physical` and
    /// `wal stream`): make a new data directory DIR from the newest base
    /// backup before the target, set to replay the stored WAL to
    /// --to-time, --to-lsn or --latest; start a server on it to recover.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["into", "file", "globals", "backup"])]
    pub pgdata: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub pitr: PitrArgs,

    /// Restore a standard dump file instead of a backup: a local path, or a
    /// key in the configured storage (for files the old `pg_dump | gzip` or
    /// `mysqldump | gzip` pipeline left). `.sql`, `.sql.gz`, `.sql.zst`,
    /// pg_dump custom archives; compression and format are read from the
    /// content.
    #[arg(long, conflicts_with_all = ["backup", "globals"])]
    pub file: Option<String>,
    /// Apply the backup's stored globals (roles, memberships, tablespaces)
    /// to the cluster --into points at, instead of restoring a database:
    /// missing roles are created, existing ones left unchanged.
    #[arg(long, conflicts_with_all = ["create", "replace"])]
    pub globals: bool,
    /// Which database to restore from a backup that holds several (a
    /// MariaDB/MySQL target with `databases` or `all`; `backstop list`
    /// shows them).
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    #[command(flatten)]
    pub place: PlaceArgs,
    #[command(flatten)]
    pub fidelity: FidelityArgs,
    #[command(flatten)]
    pub identity: IdentityArg,
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// Restore with N parallel pg_restore jobs (custom-format backups). The
    /// object is first decompressed to a file in --spool-dir (its raw size
    /// is needed there), checked, and deleted afterwards. Pays off for large
    /// databases with several big tables and indexes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Directory for the --jobs spool file (default: the system temp dir).
    #[arg(long, requires = "jobs")]
    pub spool_dir: Option<std::path::PathBuf>,
}

/// Where point-in-time recovery stops (with --pgdata).
#[derive(Debug, Args)]
#[group(multiple = false, requires = "pgdata")]
pub struct PitrArgs {
    /// Recover to this moment (RFC 3339, e.g. 2026-12-04T09:30:00Z): every
    /// transaction committed by then, none after.
    #[arg(long, value_name = "TIME")]
    pub to_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover to this WAL position (as pg_current_wal_lsn() prints it).
    #[arg(long, value_name = "LSN")]
    pub to_lsn: Option<String>,
    /// Recover everything stored.
    #[arg(long)]
    pub latest: bool,
    /// Stop at the target read-only instead of opening for writes (look
    /// first; `SELECT pg_wal_replay_resume()` then promotes).
    #[arg(long, requires = "pgdata")]
    pub pause: bool,
}

/// What happens to the destination name (shared by every restore form).
#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Create the database (it must not exist), with the source's encoding
    /// (MariaDB: character set and collation), locale, owner, privileges
    /// and settings.
    #[arg(long, conflicts_with = "replace")]
    pub create: bool,
    /// Replace an existing database, only with a complete restore: restore
    /// beside it, then swap (PostgreSQL ends its sessions and swaps the
    /// names; MariaDB/MySQL moves all tables in one RENAME TABLE, so stop
    /// the application first; SQLite renames the file), drop the old one.
    #[arg(long)]
    pub replace: bool,
    /// With --replace: keep the old database as DB_replaced_YYYYMMDDHHMMSS (PostgreSQL; `_2`… when taken) or DB_replaced_YYYYMMDDHHMMSS_XXXX (MariaDB).
    #[arg(long, requires = "replace")]
    pub keep_replaced: bool,
    /// PostgreSQL: the database through which databases are created,
    /// renamed and dropped on that server (default: postgres).
    #[arg(long)]
    pub maintenance_db: Option<String>,
}

impl PlaceArgs {
    pub fn mode(&self) -> Mode {
        if self.create {
            Mode::Create
        } else if self.replace {
            Mode::Replace {
                keep_replaced: self.keep_replaced,
            }
        } else {
            Mode::Empty
        }
    }
}

/// The private key for encrypted backups (restore and verify).
#[derive(Debug, Args)]
pub struct IdentityArg {
    /// age identity file (`age-keygen` output, or an unencrypted SSH key)
    /// that decrypts encrypted backups; default: identity_file in
    /// [encryption], then $BACKSTOP_AGE_IDENTITY.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

impl IdentityArg {
    pub fn path(&self, config: Option<&crate::config::Config>) -> Option<std::path::PathBuf> {
        crate::crypto::identity_path(
            self.identity.as_deref(),
            config.and_then(|c| c.encryption.as_ref()),
        )
    }
}

/// How much of the source must carry over (for moving between clusters).
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// Do not restore ownership: objects belong to the restoring user.
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE), on objects or the database.
    #[arg(long)]
    pub no_acl: bool,
    /// Do not restore tablespace assignments: use the server's default.
    #[arg(long)]
    pub no_tablespaces: bool,
    /// Create the database with the destination server's default locale
    /// when it lacks the source's (the encoding is kept).
    #[arg(long)]
    pub server_locale: bool,
}

impl FidelityArgs {
    pub fn fidelity(&self) -> Fidelity {
        Fidelity {
            no_owner: self.no_owner,
            no_acl: self.no_acl,
            no_tablespaces: self.no_tablespaces,
            server_locale: self.server_locale,
        }
    }
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<ExitKind> {
    if let Some(pgdata) = &args.pgdata {
        return run_pitr(&args, pgdata).await;
    }
    let into_url = args
        .into
        .as_deref()
        .expect("clap requires --into without --pgdata");
    let into = crate::engine::destination(into_url)?;
    if let Some(file) = &args.file {
        return run_file(&args, file, into.as_ref()).await;
    }
    if args.globals {
        if into.engine().kind() != Postgres.kind() {
            return Err(usage(
                "--globals restores PostgreSQL roles and tablespaces: --into must be a postgres:// URL",
            ));
        }
        return run_globals(&args, PgDestination(parse_pg_url(into_url)?)).await;
    }
    let config = args.config.load_for(args.uses())?;
    let (target, opened) = open_target(&args, &config)?;
    let engine = config
        .target(&target)
        .expect("one_target checked it")
        .engine();
    if engine.kind() != into.engine().kind() {
        return Err(usage(format!(
            "target `{target}` is a {} target: restore it into a {} URL",
            engine.label(),
            engine.url_form()
        )));
    }
    // Options the engine cannot honour are refused before storage is read.
    args.job(target.clone(), None, None)
        .options
        .refuse_unsupported(engine.label(), engine.restore_options())?;
    let storages = args.storage.of_target(
        &config,
        &opened,
        config.target(&target).expect("one_target checked it"),
    );
    let identity = args.identity.path(Some(&config));
    let (outcome, _damaged) = super::from_intact_copy(
        &storages,
        &target,
        args.backup.as_deref(),
        async |from, backup_id| {
            if opened.len() > 1 {
                tracing::info!(storage = %from.name, backup = %backup_id, "restoring from storage {}", from.name);
            }
            let job = args.job(target.clone(), Some(backup_id), identity.clone());
            into.restore(from.storage.as_ref(), &from.layout, job).await
        },
    )
    .await?;
    Ok(print_outcome(outcome))
}

impl RestoreArgs {
    /// A restore reads the backup (its target's storages and the
    /// identity): not notifiers, other targets, or the source's password.
    fn uses(&self) -> crate::config::Uses<'_> {
        crate::config::Uses {
            target: self.target.as_deref(),
            storage: self.storage.storage.as_deref(),
            notify: false,
            source_credentials: false,
        }
    }

    fn job(
        &self,
        target: String,
        backup: Option<String>,
        identity: Option<std::path::PathBuf>,
    ) -> RestoreJob {
        RestoreJob {
            target,
            backup,
            mode: self.place.mode(),
            identity,
            cancel: crate::signals::install(),
            options: RestoreOptions {
                maintenance_db: self.place.maintenance_db.clone(),
                fidelity: self.fidelity.fidelity(),
                parallel: self.jobs.filter(|&j| j > 1).map(|jobs| Parallel {
                    jobs,
                    spool_dir: self.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
                }),
                database: self.database.clone(),
            },
        }
    }
}

/// `--file`: a dump file backstop did not write, restored by the engine
/// of the `--into` URL.
async fn run_file(
    args: &RestoreArgs,
    file: &str,
    into: &dyn crate::engine::Destination,
) -> anyhow::Result<ExitKind> {
    // A local file needs no config; anything else is a storage key.
    let local = std::path::Path::new(file);
    let (storage, key, identity): (Box<dyn crate::storage::Storage>, String, _) = if local.is_file()
    {
        let dir = local
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = local
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        (
            Box::new(crate::storage::local::LocalStorage::new(dir)),
            name,
            args.identity.path(None),
        )
    } else {
        let config = args.config.load_for(args.uses())?;
        let mut opened = super::open_storages(&config, args.storage.storage.as_deref())?;
        (
            opened.swap_remove(0).storage,
            file.to_string(),
            args.identity.path(Some(&config)),
        )
    };
    let job = args.job(String::new(), None, identity);
    let outcome = into.restore_file(storage.as_ref(), &key, job).await?;
    Ok(print_outcome(outcome))
}

/// `--globals`: PostgreSQL's roles and tablespaces.
async fn run_globals(args: &RestoreArgs, into: PgDestination) -> anyhow::Result<ExitKind> {
    let config = args.config.load_for(args.uses())?;
    let (target, opened) = open_target(args, &config)?;
    let (from, backup_id) = locate(args, &config, &target, &opened).await?;
    let pg = &into.0;
    let (id, plan) = restore_globals(
        from.storage.as_ref(),
        &from.layout,
        &target,
        Some(backup_id.as_str()),
        pg,
        args.identity.path(Some(&config)).as_deref(),
    )
    .await?;
    crate::outln!("applied the globals of {id} to {}:{}", pg.host, pg.port);
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    crate::outln!("  roles created: {}", list(&plan.created_roles));
    crate::outln!(
        "  roles that existed and were left unchanged: {}",
        list(&plan.existing_roles)
    );
    crate::outln!("  tablespaces created: {}", list(&plan.created_tablespaces));
    for (name, why) in &plan.skipped_tablespaces {
        crate::outln!("  tablespace {name} SKIPPED: {why}");
    }
    Ok(ExitKind::Success)
}

/// The target to restore (named, or the only one) and the storages opened.
/// `--pgdata`: point-in-time recovery into a new data directory.
async fn run_pitr(args: &RestoreArgs, pgdata: &std::path::Path) -> anyhow::Result<ExitKind> {
    use crate::pitr::recover::{recover, Action, Recover, RecoveryTarget};
    let to = match (&args.pitr.to_time, &args.pitr.to_lsn, args.pitr.latest) {
        (Some(t), _, _) => RecoveryTarget::Time(*t),
        (_, Some(l), _) => {
            crate::pitr::wal_names::parse_lsn(l).map_err(|e| usage(format!("--to-lsn: {e}")))?;
            RecoveryTarget::Lsn(l.clone())
        }
        (_, _, true) => RecoveryTarget::Latest,
        _ => return Err(usage("--pgdata needs --to-time, --to-lsn or --latest")),
    };
    let config = args.config.load_for(args.uses())?;
    let (target, opened) = open_target(args, &config)?;
    let target_config = config.target(&target).expect("one_target checked it");
    if !matches!(target_config, crate::engine::TargetConfig::Postgres(_)) {
        return Err(usage(format!(
            "--pgdata: target {target} is not PostgreSQL"
        )));
    }
    let config_path = args.config.path()?;
    let config_path = config_path
        .canonicalize()
        .with_context(|| format!("resolving {}", config_path.display()))?;
    let req = Recover {
        storages: args.storage.of_target(&config, &opened, target_config),
        target,
        pgdata: pgdata.to_path_buf(),
        to,
        action: if args.pitr.pause {
            Action::Pause
        } else {
            Action::Promote
        },
        identity: args.identity.path(Some(&config)),
        config: config_path,
        cancel: crate::signals::install(),
    };
    let done = recover(&req).await?;
    crate::outln!(
        "restored base backup {} (from {}) into {}, set to replay the stored WAL through {}; \
         start PostgreSQL on it to recover (as the user that owns it)",
        done.backup_id,
        done.storage,
        pgdata.display(),
        done.wal_until
    );
    Ok(ExitKind::Success)
}

fn open_target(
    args: &RestoreArgs,
    config: &crate::config::Config,
) -> anyhow::Result<(String, Vec<super::OpenStorage>)> {
    let target = super::one_target(config, args.target.as_deref())?;
    let opened = super::open_storages(config, args.storage.storage.as_deref())?;
    Ok((target, opened))
}

/// The storage holding the backup to restore, and its id.
async fn locate<'a>(
    args: &RestoreArgs,
    config: &crate::config::Config,
    target: &str,
    opened: &'a [super::OpenStorage],
) -> anyhow::Result<(&'a super::OpenStorage, String)> {
    let target_config = config.target(target).expect("one_target checked it");
    let storages = args.storage.of_target(config, opened, target_config);
    let (from, id) = super::locate_backup(&storages, target, args.backup.as_deref()).await?;
    if opened.len() > 1 {
        tracing::info!(storage = %from.name, backup = %id, "restoring from storage {}", from.name);
    }
    Ok((from, id))
}

fn print_outcome(outcome: crate::restore::RestoreOutcome) -> ExitKind {
    crate::outln!(
        "restored {} into database {} ({} read)",
        outcome.backup_id,
        outcome.database,
        crate::report::human_bytes(outcome.bytes)
    );
    if let Some(old) = outcome.kept_replaced {
        crate::outln!("the replaced database is kept as {old}");
    }
    ExitKind::Success
}

pub use crate::engine::postgres::url::parse_pg_url;
