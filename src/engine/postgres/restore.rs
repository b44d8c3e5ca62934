//! Restore: stream a stored object back through the decompressor into
//! pg_restore (custom format) or psql (plain), checking SHA-256 and size on
//! the way, into a new database that is renamed into place only when
//! everything succeeded.
//!
//! The last decompressed bytes are held back until the whole stored object
//! has been hashed: a corrupted or truncated object makes us kill the tool
//! before it reads to the end, and the half-loaded database is dropped.

use crate::catalog::Layout;
use crate::codec::decoder;
use crate::engine::postgres::archive::{DumpInspector, DumpKind};
use crate::engine::postgres::database::{Fidelity, PgDatabaseProps};
use crate::engine::postgres::globals::{self as pg_globals, GlobalsPlan, TablespaceCheck};
use crate::engine::postgres::plain_filter::PlainFilter;
use crate::engine::postgres::tools::{self as pgtools, PgConn, PgVersion};
use crate::error::usage;
use crate::fetch::{fetch_into, open_dump_file, pump, Pumped, StoredObject};
use crate::process::{Finished, Running};
pub use crate::restore::{open_backup, Mode, RestoreOutcome};
use crate::sql::{ident, literal};
use crate::storage::Storage;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Decompressed bytes withheld until the checksum is verified.
const HOLDBACK_BYTES: usize = 256 << 10;
pub struct RestoreRequest {
    pub target: String,
    /// A backup id, or None for the newest.
    pub backup: Option<String>,
    pub into: PgConn,
    /// Where CREATE, RENAME and DROP DATABASE run: a database other than
    /// the destination (and the one that drops what it created).
    pub maintenance: PgConn,
    pub mode: Mode,
    pub fidelity: Fidelity,
    /// `pg_restore --jobs N` (custom format): the object is first spooled,
    /// decompressed and checked, to a file in this directory.
    pub parallel: Option<Parallel>,
    /// The age identity file for encrypted backups (see
    /// [`crate::crypto::identity_path`]).
    pub identity: Option<std::path::PathBuf>,
    pub cancel: CancellationToken,
}

pub use crate::restore::Parallel;

/// What is restored, however it was found: a backup with its manifest, or
/// a dump file backstop did not write.
struct Restorable {
    /// The backup id, or the file's key.
    label: String,
    load: Load,
    props: Option<PgDatabaseProps>,
    /// For a file without properties: the encoding its header names.
    encoding: Option<String>,
    dumped_with: Option<PgVersion>,
    /// The server the dump was taken from: a dump restores only into the
    /// same or a newer major.
    dumped_from: Option<PgVersion>,
    manifest: Option<crate::catalog::Manifest>,
}

/// Restore a backup (`--backup ID` or the newest) of a target.
pub async fn restore(
    storage: &dyn Storage,
    layout: &Layout,
    req: RestoreRequest,
) -> anyhow::Result<RestoreOutcome> {
    let backup = open_backup(
        storage,
        layout,
        &req.target,
        req.backup.as_deref(),
        req.identity.as_deref(),
    )
    .await?;
    let m = backup.manifest;
    if m.source_type != "postgres" {
        bail!(usage(format!(
            "backup {} is a {} backup; restore supports postgres",
            m.id, m.source_type
        )));
    }
    let object = m
        .object("database")
        .ok_or_else(|| anyhow!("manifest {} names no database object", backup.manifest_key))?
        .clone();
    let props: Option<PgDatabaseProps> = match &m.database_properties {
        Some(v) => Some(serde_json::from_value(v.clone()).with_context(|| {
            format!("reading the database properties in {}", backup.manifest_key)
        })?),
        None => None,
    };
    let load = Load {
        object: StoredObject::of_backup(&m, &object, req.identity.as_deref())?,
        kind: if m.format == "custom" {
            DumpKind::Custom
        } else {
            DumpKind::Plain
        },
        fidelity: req.fidelity,
    };
    // A wrong key is found before any database is touched.
    load.check_identity(storage).await?;
    let r = Restorable {
        label: m.id.0.clone(),
        load,
        props,
        encoding: None,
        dumped_with: PgVersion::parse(&m.dump_tool_version),
        dumped_from: PgVersion::parse(&m.server_version),
        manifest: Some(m),
    };
    restore_into(storage, r, req).await
}

/// Restore a standard dump file that backstop did not write (the old
/// `pg_dump | gzip | rclone` objects): `.sql`, `.sql.gz`, `.sql.zst`, custom
/// archives, compressed or not, found as `key` in `storage`. The codec and
/// format are read from the bytes; the dump must be complete.
pub async fn restore_file(
    storage: &dyn Storage,
    key: &str,
    req: RestoreRequest,
) -> anyhow::Result<RestoreOutcome> {
    let (object, head) = open_dump_file(storage, key, req.identity.as_deref()).await?;
    let (kind, encoding) = if head.starts_with(b"PGDMP") {
        (DumpKind::Custom, None)
    } else if head.starts_with(b"--") || head.starts_with(b"\\") || head.starts_with(b"SET ") {
        let text = String::from_utf8_lossy(&head);
        let encoding = text
            .split("SET client_encoding = '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .map(str::to_string);
        (DumpKind::Plain, encoding)
    } else {
        bail!(usage(format!(
            "{key} is neither a pg_dump custom archive nor plain SQL (after {}); tar and directory formats are not supported",
            crate::codec::describe(object.algorithm)
        )));
    };
    let r = Restorable {
        label: key.to_string(),
        load: Load {
            object,
            kind,
            fidelity: req.fidelity,
        },
        props: None,
        encoding,
        dumped_with: None,
        dumped_from: crate::engine::postgres::archive::dumped_from(&head)
            .as_deref()
            .and_then(PgVersion::parse),
        manifest: None,
    };
    restore_into(storage, r, req).await
}

/// The restore runs into a new database under a temporary name on the same
/// server, and only a complete restore is renamed into place: the
/// destination is untouched by every failure, and no single huge
/// transaction is needed (thousands of tables or large objects restore on
/// default `max_locks_per_transaction`).
async fn restore_into(
    storage: &dyn Storage,
    r: Restorable,
    req: RestoreRequest,
) -> anyhow::Result<RestoreOutcome> {
    if req.parallel.is_some() && r.load.kind != DumpKind::Custom {
        bail!(usage(format!(
            "--jobs needs a custom-format backup; {} is plain SQL (psql restores it in one stream)",
            r.label
        )));
    }
    tracing::info!(backup = %r.label, database = %req.into.database, "preparing restore");
    let format = if r.load.kind == DumpKind::Custom {
        "custom"
    } else {
        "plain"
    };
    let prepared = {
        let (into, maint, mode, fidelity) = (
            req.into.clone(),
            req.maintenance.clone(),
            req.mode,
            req.fidelity,
        );
        let create_as = match (&r.props, &r.encoding) {
            (Some(p), _) => CreateAs::Props(Box::new(p.clone())),
            (None, Some(enc)) if !enc.eq_ignore_ascii_case("UTF8") => {
                CreateAs::Encoding(enc.clone())
            }
            _ => CreateAs::ServerDefault,
        };
        let versions = (r.dumped_with, r.dumped_from);
        tokio::task::spawn_blocking(move || {
            prepare(&into, &maint, mode, fidelity, &create_as, versions)
        })
        .await
        .context("restore preparation task")??
    };
    let temp_conn = req.into.with_database(&prepared.temp);
    let psql = prepared.tools.require("psql")?;

    // The tool's lines are logged under the target (the destination, for a file).
    let who = match req.target.is_empty() {
        true => req.into.database.as_str(),
        false => req.target.as_str(),
    };
    let loaded = async {
        let cmd = restore_command(&prepared.tools, format, &temp_conn, req.fidelity)?;
        match &req.parallel {
            Some(p) => {
                let spool = spool_object(storage, &r.load, &p.spool_dir, &req.cancel).await?;
                let cmd = cmd.arg(format!("--jobs={}", p.jobs)).arg(spool.as_os_str());
                run_to_end(&cmd, who, &req.cancel).await?;
                Ok(r.load.expected.as_ref().map_or(0, |(n, _)| *n))
            }
            None => stream_into(storage, &r.load, &cmd, &prepared.temp, who, &req.cancel).await,
        }
    }
    .await;
    let finished = match loaded {
        Ok(bytes) if !req.cancel.is_cancelled() => {
            let (maint, psql, temp, into, mode, fidelity, props) = (
                req.maintenance.clone(),
                psql.clone(),
                prepared.temp.clone(),
                req.into.database.clone(),
                req.mode,
                req.fidelity,
                r.props.clone(),
            );
            tokio::task::spawn_blocking(move || {
                put_in_place(&maint, &psql, &temp, &into, mode, fidelity, props.as_ref())
            })
            .await
            .context("restore finishing task")?
            .map(|kept| (bytes, kept))
        }
        Ok(_) => Err(anyhow!("interrupted by signal")),
        Err(e) => Err(e),
    };
    match finished {
        Ok((bytes, kept_replaced)) => {
            tracing::info!(backup = %r.label, database = %req.into.database, bytes, "restore complete");
            Ok(RestoreOutcome {
                backup_id: r.label,
                database: req.into.database.clone(),
                bytes,
                kept_replaced,
                manifest: r.manifest,
            })
        }
        Err(e) => {
            let (maint, psql_c, temp) =
                (req.maintenance.clone(), psql.clone(), prepared.temp.clone());
            match tokio::task::spawn_blocking(move || drop_database(&maint, &psql_c, &temp)).await {
                Ok(Ok(())) => {
                    tracing::info!(database = %prepared.temp, "dropped the unfinished restore; the destination is untouched")
                }
                _ => tracing::warn!(
                    database = %prepared.temp,
                    "could not drop the unfinished restore database; drop it by hand"
                ),
            }
            Err(e.context(format!(
                "restoring {} into {} (nothing was changed there)",
                r.label,
                req.into.endpoint()
            )))
        }
    }
}

/// How the database the restore loads is created.
enum CreateAs {
    /// As the source had it (from the manifest).
    Props(Box<PgDatabaseProps>),
    /// A dump file whose header names a non-UTF8 encoding: that encoding,
    /// with the C locale (which fits every encoding).
    Encoding(String),
    /// The server's defaults (a UTF8 dump file, or an old manifest).
    ServerDefault,
}

/// The size a stored globals script may have (it is read into memory).
const GLOBALS_LIMIT: usize = 64 << 20;

/// Apply a backup's stored globals (`pg_dumpall --globals-only`) to the
/// cluster `conn` points at: missing roles are created with attributes,
/// settings and memberships; existing roles are left unchanged; tablespaces
/// whose directory the server lacks are skipped.
pub async fn restore_globals(
    storage: &dyn Storage,
    layout: &Layout,
    target: &str,
    backup: Option<&str>,
    conn: &PgConn,
    identity: Option<&std::path::Path>,
) -> anyhow::Result<(String, GlobalsPlan)> {
    let b = open_backup(storage, layout, target, backup, identity).await?;
    let m = &b.manifest;
    let object = m.object("globals").ok_or_else(|| {
        usage(format!(
            "backup {} holds no globals (set `globals = true` on target `{target}` to store them)",
            m.id
        ))
    })?;
    let stored = crate::storage::get_bytes(storage, &object.key, GLOBALS_LIMIT)
        .await
        .with_context(|| format!("reading {}", object.key))?;
    let actual = hex::encode(Sha256::digest(&stored));
    if stored.len() as u64 != object.stored_bytes || actual != object.sha256 {
        return Err(anyhow::Error::new(crate::error::DamagedCopy(format!(
            "checksum mismatch for {}: the manifest says SHA-256 {}, storage returned {actual}",
            object.key, object.sha256
        ))));
    }
    let stored = match StoredObject::of_backup(m, object, identity)?.decrypt {
        None => stored,
        Some(d) => d.decrypt_all(&stored, &object.key)?,
    };
    let script = crate::codec::decode_all(m.compression.algorithm, &stored)
        .with_context(|| format!("decompressing {}", object.key))?;
    let mut inspector = DumpInspector::new(DumpKind::Globals);
    inspector.write_all(&script)?;
    inspector
        .finish()
        .map_err(|why| anyhow!("{}: {why}", object.key))?;
    let script = String::from_utf8(script).context("the globals script is not UTF-8")?;
    let conn = conn.clone();
    let plan = tokio::task::spawn_blocking(move || apply_globals(&conn, &script))
        .await
        .context("globals task")??;
    Ok((m.id.0.clone(), plan))
}

fn apply_globals(conn: &PgConn, script: &str) -> anyhow::Result<GlobalsPlan> {
    let psql = pgtools::newest_psql(&pgtools::discover())?;
    let lines = |sql: &str| -> anyhow::Result<HashSet<String>> {
        Ok(conn
            .query(&psql, sql)?
            .lines()
            .map(str::to_string)
            .collect())
    };
    let roles = lines("SELECT rolname FROM pg_roles;")?;
    let tablespaces = lines("SELECT spcname FROM pg_tablespace;")?;
    let plan = pg_globals::plan(script, &roles, |name, location| {
        if tablespaces.contains(name) {
            return TablespaceCheck::Exists;
        }
        let is_dir = conn.query(
            &psql,
            &format!(
                "SELECT coalesce((pg_stat_file({}, true)).isdir, false);",
                literal(location)
            ),
        );
        match is_dir.as_deref() {
            Ok("t") => TablespaceCheck::Create,
            Ok(_) => TablespaceCheck::Skip(format!(
                "its directory {location} does not exist on the destination server"
            )),
            Err(e) => {
                TablespaceCheck::Skip(format!("cannot check its directory {location}: {e:#}"))
            }
        }
    });
    if !plan.roles_sql.is_empty() {
        conn.query(
            &psql,
            &format!("BEGIN;\n{}\nCOMMIT;", plan.roles_sql.join("\n")),
        )
        .context("creating the roles (nothing was changed)")?;
    }
    for statement in &plan.tablespaces_sql {
        conn.query(&psql, statement)
            .with_context(|| format!("applying `{statement}`"))?;
    }
    for (name, why) in &plan.skipped_tablespaces {
        tracing::warn!(tablespace = %name, "tablespace skipped: {why}");
    }
    Ok(plan)
}

/// pg_restore for custom archives, psql for plain SQL, into `conn`.
fn restore_command(
    tools: &pgtools::PgTools,
    format: &str,
    conn: &PgConn,
    f: Fidelity,
) -> anyhow::Result<crate::process::ChildCommand> {
    let cmd = if format == "custom" {
        let mut c = crate::process::ChildCommand::new(tools.require("pg_restore")?)
            .arg("--exit-on-error")
            .arg("--no-password")
            .arg("--dbname")
            .arg(&conn.database);
        for (on, flag) in [
            (f.no_owner, "--no-owner"),
            (f.no_acl, "--no-privileges"),
            (f.no_tablespaces, "--no-tablespaces"),
        ] {
            if on {
                c = c.arg(flag);
            }
        }
        c
    } else {
        crate::process::ChildCommand::new(tools.require("psql")?)
            .arg("-X")
            .arg("-q")
            .arg("-w")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-f")
            .arg("-")
    };
    Ok(conn.apply(cmd))
}

/// Drop `name` through the maintenance connection `conn`. Subscriptions in
/// it are detached from their slots and dropped first (DROP DATABASE
/// refuses otherwise; without a slot nothing on the publisher is touched); FORCE (PostgreSQL 13+) ends leftover sessions, such as those
/// of a restore tool just killed; older servers get a plain DROP.
pub fn drop_database(conn: &PgConn, psql: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let has_subscriptions = conn
        .query(
            psql,
            &format!(
                "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = {};",
                literal(name)
            ),
        )
        .map(|n| n != "0")
        .unwrap_or(false);
    if has_subscriptions {
        let detach = "DO $$ DECLARE s record; BEGIN \
             FOR s IN SELECT subname FROM pg_subscription WHERE subdbid = \
               (SELECT oid FROM pg_database WHERE datname = current_database()) LOOP \
               EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', s.subname); \
               EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', s.subname); \
               EXECUTE format('DROP SUBSCRIPTION %I', s.subname); \
             END LOOP; END $$;";
        if let Err(e) = conn.with_database(name).query(psql, detach) {
            tracing::warn!(
                database = name,
                "could not detach subscriptions before dropping: {e:#}"
            );
        }
    }
    conn.query(
        psql,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", ident(name)),
    )
    .or_else(|_| conn.query(psql, &format!("DROP DATABASE IF EXISTS {};", ident(name))))
    .map(|_| ())
}

struct Prepared {
    tools: pgtools::PgTools,
    /// The new database the restore loads, renamed into place at the end.
    temp: String,
}

/// A name for the database being loaded: recognisable, unique, ≤ 63 bytes.
fn temp_name(target: &str) -> String {
    format!("{}{:08x}", temp_prefix(target), fastrand::u32(..))
}

fn temp_prefix(target: &str) -> String {
    let mut base: String = target.chars().take(30).collect();
    while base.len() > 30 {
        base.pop();
    }
    format!("{base}_bs_restore_")
}

/// Databases an interrupted restore of `db` left (killed before it could
/// drop them) that nobody is connected to: named, never dropped here, as
/// another restore may be about to use one.
fn warn_leftovers(maint: &PgConn, psql: &std::path::Path, db: &str) {
    let prefix = temp_prefix(db);
    let sql = format!(
        "SELECT string_agg(datname, ', ') FROM pg_database d WHERE starts_with(datname, {}) \
         AND length(datname) = {} AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname);",
        literal(&prefix),
        prefix.len() + 8
    );
    if let Ok(found) = maint.query(psql, &sql) {
        if !found.is_empty() {
            tracing::warn!(
                database = %db,
                "left by an interrupted restore, with no session: {found}; drop them with DROP DATABASE when no restore is running"
            );
        }
    }
}

fn prepare(
    into: &PgConn,
    maint: &PgConn,
    mode: Mode,
    fidelity: Fidelity,
    create_as: &CreateAs,
    (dumped_with, dumped_from): (Option<PgVersion>, Option<PgVersion>),
) -> anyhow::Result<Prepared> {
    let props = match create_as {
        CreateAs::Props(p) => Some(p),
        _ => None,
    };
    let found = pgtools::discover();
    let (server, _) = maint.server_version(&found)?;
    if let Some(from) = dumped_from.filter(|f| f.major_key() > server.major_key()) {
        bail!(usage(format!(
            "the dump was taken from PostgreSQL {} and {} runs PostgreSQL {}: a dump restores \
             only into the same or a newer major (nothing was created)",
            from.major_string(),
            into.endpoint(),
            server.major_string()
        )));
    }
    // pg_restore must be at least as new as the server and as the pg_dump
    // that wrote the archive.
    let needed = dumped_with.map_or(server, |d| d.max(server));
    let tools = pgtools::select(
        &found,
        needed,
        &format!("the server at {} (or the dump)", into.endpoint()),
    )?
    .clone();
    let psql = tools.require("psql")?;
    let db = &into.database;
    let exists = maint.query(
        &psql,
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = {};",
            literal(db)
        ),
    )? != "0";
    let place = format!("{}:{}", into.host, into.port);
    match (mode, exists) {
        (Mode::Create, true) => bail!(usage(format!(
            "database `{db}` already exists on {place}; choose a new name, or pass --replace to replace it"
        ))),
        (Mode::Empty | Mode::Replace { .. }, false) => bail!(usage(format!(
            "database `{db}` does not exist on {place}; pass --create to create it"
        ))),
        (Mode::Empty, true) => {
            let relations = into
                .query(
                    &psql,
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r','p','v','m','S','f') \
                     AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%';",
                )
                .map_err(|e| usage(format!("cannot inspect database `{db}`: {e:#}")))?;
            if relations != "0" {
                bail!(usage(format!(
                    "database `{db}` is not empty ({relations} relations); pass --replace to replace it, or --create with a new name"
                )));
            }
        }
        _ => {}
    }
    if let Some(p) = props {
        check_destination(maint, &psql, p, fidelity)?;
    }
    warn_leftovers(maint, &psql, db);
    let temp = temp_name(db);
    let create = match create_as {
        CreateAs::Props(p) => p.create_sql(&temp, fidelity),
        CreateAs::Encoding(enc) => format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LOCALE 'C';",
            ident(&temp),
            literal(enc)
        ),
        CreateAs::ServerDefault => {
            tracing::warn!("no database properties are known (a dump file, or a manifest of an older backstop): the database gets the server's defaults");
            format!("CREATE DATABASE {} TEMPLATE template0;", ident(&temp))
        }
    };
    if let Err(e) = maint.query(&psql, &create) {
        let text = format!("{e:#}");
        if let (Some(p), true) = (
            props,
            ["locale", "collation", "encoding", "LC_", "ICU", "provider"]
                .iter()
                .any(|w| text.contains(w)),
        ) {
            bail!(usage(format!(
                "the server at {place} cannot create the database as the source had it ({}): {text}. \
                 Pass --server-locale to use that server's default locale instead (the encoding stays {})",
                p.describe_locale(),
                p.encoding
            )));
        }
        return Err(e.context(format!("creating database {temp} for the restore")));
    }
    tracing::info!(database = %temp, "created the database the restore loads");
    Ok(Prepared { tools, temp })
}

/// Stop before anything is created when the destination lacks what the
/// source's database needs: its roles, its tablespace.
fn check_destination(
    maint: &PgConn,
    psql: &std::path::Path,
    p: &PgDatabaseProps,
    f: Fidelity,
) -> anyhow::Result<()> {
    let roles = p.roles(f);
    if !roles.is_empty() {
        let list = roles
            .iter()
            .map(|r| literal(r))
            .collect::<Vec<_>>()
            .join(", ");
        let present = maint.query(
            psql,
            &format!("SELECT rolname FROM pg_roles WHERE rolname IN ({list});"),
        )?;
        let present: Vec<&str> = present.lines().collect();
        let missing: Vec<&String> = roles
            .iter()
            .filter(|r| !present.contains(&r.as_str()))
            .collect();
        if !missing.is_empty() {
            bail!(usage(format!(
                "the destination server lacks the role(s) {} that own or have privileges on the database; \
                 restore the globals first (backstop restore --globals), or pass --no-owner and --no-acl",
                missing.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if !f.no_tablespaces && p.tablespace != "pg_default" {
        let n = maint.query(
            psql,
            &format!(
                "SELECT count(*) FROM pg_tablespace WHERE spcname = {};",
                literal(&p.tablespace)
            ),
        )?;
        if n == "0" {
            bail!(usage(format!(
                "the destination server has no tablespace `{}` (the source database's); create it, or pass --no-tablespaces",
                p.tablespace
            )));
        }
    }
    Ok(())
}

/// Give the loaded database the source's settings and privileges, then
/// rename it into place; for a replace, the old database is renamed away in
/// the same transaction, so the name is never missing or half-restored.
/// Returns the name the replaced database was kept under.
fn put_in_place(
    maint: &PgConn,
    psql: &std::path::Path,
    temp: &str,
    target: &str,
    mode: Mode,
    f: Fidelity,
    props: Option<&PgDatabaseProps>,
) -> anyhow::Result<Option<String>> {
    if let Some(p) = props {
        let finish = p.finish_sql(temp, f).join("\n");
        if !finish.is_empty() {
            maint
                .query(psql, &finish)
                .context("applying the database's settings, comment and privileges")?;
        }
    }
    if mode == Mode::Create {
        maint
            .query(
                psql,
                &format!(
                    "ALTER DATABASE {} RENAME TO {};",
                    ident(temp),
                    ident(target)
                ),
            )
            .with_context(|| format!("renaming the restored database to {target}"))?;
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let mut old: String = target.chars().take(40).collect();
    while old.len() > 40 {
        old.pop();
    }
    // Two replaces within one second (a runbook run twice) must not collide
    // on the name the old database is kept under.
    let base = format!("{old}_replaced_{stamp}");
    let taken = maint
        .query(
            psql,
            &format!(
                "SELECT datname FROM pg_database WHERE datname LIKE {};",
                literal(&format!("{base}%"))
            ),
        )
        .with_context(|| format!("choosing the name {target} is kept under"))?;
    let taken: Vec<&str> = taken.lines().map(str::trim).collect();
    let old = std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}_{n}")))
        .find(|name| !taken.contains(&name.as_str()))
        .expect("an unused name");
    let terminate = if matches!(mode, Mode::Replace { .. }) {
        format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid();\n",
            literal(target)
        )
    } else {
        String::new()
    };
    maint
        .query(
            psql,
            &format!(
                "{terminate}BEGIN;\nALTER DATABASE {} RENAME TO {};\nALTER DATABASE {} RENAME TO {};\nCOMMIT;",
                ident(target),
                ident(&old),
                ident(temp),
                ident(target)
            ),
        )
        .with_context(|| format!("swapping the restored database in place of {target} (it is unchanged)"))?;
    if matches!(
        mode,
        Mode::Replace {
            keep_replaced: true
        }
    ) {
        tracing::info!(database = %old, "kept the replaced database");
        return Ok(Some(old));
    }
    if let Err(e) = drop_database(maint, psql, &old) {
        tracing::warn!(database = %old, "the restore is in place, but the replaced database could not be dropped: {e:#}");
    }
    Ok(None)
}

/// Stream the object, decompressed, into a file in `dir` (pg_restore
/// --jobs needs a seekable file), checking its SHA-256 and that the dump is
/// complete; the file is removed when the returned handle is dropped, and
/// at once on any failure.
async fn spool_object(
    storage: &dyn Storage,
    load: &Load,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> anyhow::Result<tempfile::TempPath> {
    let file = tempfile::Builder::new()
        .prefix(".backstop-restore-")
        .suffix(".dump")
        .tempfile_in(dir)
        .with_context(|| format!("creating a spool file in {}", dir.display()))?;
    let (file, path) = file.into_parts();
    let inspector = Arc::new(std::sync::Mutex::new(Some(DumpInspector::new(load.kind))));
    let sink = Inspecting {
        inspector: Arc::clone(&inspector),
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
    };
    fetch_into(storage, load, Box::new(sink), cancel)
        .await
        .with_context(|| format!("spooling into {}", dir.display()))?;
    load.judge_complete(&inspector)
        .map_err(|why| anyhow!("{why}; nothing was restored"))?;
    Ok(path)
}

/// Run a restore tool that reads its own input, to the end; a signal kills it.
async fn run_to_end(
    cmd: &crate::process::ChildCommand,
    who: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let running = cmd.spawn(Stdio::null(), Stdio::null(), who)?;
    let kill = running.kill_handle();
    let mut wait = tokio::task::spawn_blocking(move || running.wait());
    let finished = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            kill.kill();
            let _ = wait.await;
            bail!("interrupted by signal");
        }
        done = &mut wait => done.context("restore tool task")??,
    };
    if !finished.success() {
        bail!("{}", finished.describe_with_last_line());
    }
    Ok(())
}

/// One stored object to stream into a restore tool.
#[derive(Clone)]
pub struct Load {
    pub object: StoredObject,
    pub kind: DumpKind,
    /// Plain SQL is filtered for `--no-owner`/`--no-acl`/`--no-tablespaces`
    /// (pg_restore takes them as flags).
    pub fidelity: Fidelity,
}

impl std::ops::Deref for Load {
    type Target = StoredObject;
    fn deref(&self) -> &StoredObject {
        &self.object
    }
}

impl Load {
    /// Whether the decoded dump was complete (the inspector saw it all).
    fn judge_complete(
        &self,
        inspector: &std::sync::Mutex<Option<DumpInspector>>,
    ) -> Result<(), String> {
        let verdict = inspector
            .lock()
            .expect("inspector lock")
            .take()
            .map(DumpInspector::finish);
        match verdict {
            Some(Err(why)) => Err(format!("{}: {why}", self.key)),
            _ => Ok(()),
        }
    }
}

/// Stream the object into the command's stdin; returns the stored bytes read.
async fn stream_into(
    storage: &dyn Storage,
    load: &Load,
    cmd: &crate::process::ChildCommand,
    cmd_database: &str,
    who: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let key = load.key.clone();
    let mut stream = storage
        .open(&key)
        .await
        .with_context(|| format!("opening {key}"))?;
    let mut running = cmd.spawn(Stdio::piped(), Stdio::null(), who)?;
    let stdin = running.child.stdin.take().expect("stdin was piped");
    let kill = running.kill_handle();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let size = load.expected.as_ref().map(|(n, _)| *n);
    let (load, into) = (load.clone(), cmd_database.to_string());
    let worker = std::thread::spawn(move || feed(rx, stdin, running, &load, &into));

    let mut read_error = None;
    let progress = crate::progress::Progress::reading(who, size);
    let mut read = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                kill.kill();
                read_error = Some(anyhow!("interrupted by signal"));
                break;
            }
            next = stream.next() => match next {
                Some(Ok(chunk)) => {
                    read += chunk.len() as u64;
                    if let Some(p) = &progress {
                        p.read(read);
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // the feeder stopped; it reports why
                    }
                }
                Some(Err(e)) => {
                    kill.kill();
                    read_error = Some(anyhow!(e).context(format!("reading {key} from {}", storage.describe())));
                    break;
                }
                None => break,
            }
        }
    }
    drop(tx);
    let (feed_result, finished) = tokio::task::spawn_blocking(move || worker.join())
        .await
        .context("restore feeder task")?
        .map_err(|_| anyhow!("restore feeder thread panicked"))?;
    if let Some(e) = read_error {
        return Err(e);
    }
    let finished = finished?;
    // A checksum failure (or a truncated dump) is the root cause even though
    // it made us kill the restore tool, so it is reported first.
    match feed_result {
        Err(FeedError::Damaged(msg)) => Err(anyhow::Error::new(crate::error::DamagedCopy(msg))),
        Err(FeedError::Checksum(msg)) => bail!(msg),
        // Damaged data, or a statement the dump may not run: why the tool
        // was stopped, or why it failed (it was fed garbage).
        Err(FeedError::Decode(e)) => Err(e),
        Err(FeedError::Io(e)) if finished.success() => bail!("decompressing {key}: {e}"),
        _ if !finished.success() => bail!("{}", finished.describe_with_last_line()),
        Err(FeedError::Io(e)) => bail!("decompressing {key}: {e}"),
        Ok(n) => Ok(n),
    }
}

enum FeedError {
    /// The stored bytes do not match the manifest.
    Damaged(String),
    /// The dump is not complete.
    Checksum(String),
    Decode(anyhow::Error),
    Io(std::io::Error),
}

/// Decompressed bytes pass through the dump inspector on their way.
struct Inspecting<W: Write> {
    inspector: Arc<std::sync::Mutex<Option<DumpInspector>>>,
    inner: W,
}

impl<W: Write> Write for Inspecting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(i) = self.inspector.lock().expect("inspector lock").as_mut() {
            i.write_all(data)?;
        }
        self.inner.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `into` names the database the tool loads (plain SQL stays inside it).
fn feed(
    mut rx: mpsc::Receiver<Bytes>,
    stdin: std::process::ChildStdin,
    running: Running,
    load: &Load,
    into: &str,
) -> (Result<u64, FeedError>, std::io::Result<Finished>) {
    let release = Arc::new(AtomicBool::new(false));
    let stopped_reading = Arc::new(AtomicBool::new(false));
    let holdback = Holdback {
        inner: stdin,
        buf: Vec::with_capacity(2 * HOLDBACK_BYTES),
        release: Arc::clone(&release),
        stopped_reading: Arc::clone(&stopped_reading),
    };
    let filtered: Box<dyn Write + Send> = match load.kind {
        DumpKind::Plain => Box::new(PlainFilter::new(
            holdback,
            load.fidelity,
            into,
            Arc::clone(&release),
        )),
        DumpKind::Custom | DumpKind::Globals => Box::new(holdback),
    };
    let inspector = Arc::new(std::sync::Mutex::new(Some(DumpInspector::new(load.kind))));
    let inspecting = Inspecting {
        inspector: Arc::clone(&inspector),
        inner: filtered,
    };
    let mut dec = match decoder(load.algorithm, inspecting) {
        Ok(d) => d,
        Err(e) => {
            running.kill();
            return (Err(FeedError::Io(e)), running.wait());
        }
    };
    let verified = (|| {
        let pumped = pump(&mut rx, load, &mut dec);
        if pumped.error.is_some() {
            // The tool must not see EOF on a stream that failed to decode.
            running.kill();
        }
        let Pumped {
            size,
            hasher,
            error: decode_error,
        } = pumped;
        let stopped = |why: String| {
            FeedError::Checksum(format!(
                "{why}; the restore was stopped before it committed"
            ))
        };
        load.judge_checksum(size, hasher).map_err(|why| {
            FeedError::Damaged(format!(
                "{why}; the restore was stopped before it committed"
            ))
        })?;
        if let Some(e) = decode_error {
            return Err(FeedError::Decode(e));
        }
        // A damaged compressed stream is named as such, before the dump
        // inspector would call its garbled end truncated.
        dec.check_end().map_err(|e| {
            FeedError::Decode(anyhow!(
                "{} is damaged: its {} data does not decode ({e})",
                load.key,
                crate::codec::describe(load.algorithm)
            ))
        })?;
        // Everything decoded so far reaches the inspector (the held-back
        // tail stays held): the dump must be complete before it is released.
        dec.flush().map_err(FeedError::Io)?;
        load.judge_complete(&inspector).map_err(stopped)?;
        Ok(size)
    })();
    match verified {
        Ok(size) => {
            release.store(true, Ordering::SeqCst);
            // Flushes the held-back tail; dropping the decoder closes stdin,
            // and only now can the tool reach EOF and commit.
            let finished = dec
                .finish()
                .map_err(FeedError::Io)
                .and_then(|()| match stopped_reading.load(Ordering::SeqCst) {
                    true => Err(FeedError::Io(std::io::Error::other(
                        "the restore tool stopped reading its input before the end",
                    ))),
                    false => Ok(size),
                });
            (finished, running.wait())
        }
        Err(e) => {
            // Regression (restore of a corrupted gzip object committed a
            // partial schema): stdin must stay open until the tool is dead,
            // or it sees EOF and commits the truncated script.
            running.kill();
            let finished = running.wait();
            drop(dec);
            (Err(e), finished)
        }
    }
}

/// Passes bytes on, except the last `HOLDBACK_BYTES`, until released.
/// When the tool stops reading (it failed), the rest is decoded on into
/// nothing: a damaged object is then still found and named, rather than
/// hidden behind the tool's error about the garbage it was fed.
struct Holdback<W: Write> {
    inner: W,
    buf: Vec<u8>,
    release: Arc<AtomicBool>,
    /// Set when the tool closed its input early.
    stopped_reading: Arc<AtomicBool>,
}

impl<W: Write> Holdback<W> {
    fn pass(&mut self, upto: usize) -> std::io::Result<()> {
        if !self.stopped_reading.load(Ordering::SeqCst) {
            match self.inner.write_all(&self.buf[..upto]) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.stopped_reading.store(true, Ordering::SeqCst)
                }
                other => other?,
            }
        }
        self.buf.drain(..upto);
        Ok(())
    }
}

impl<W: Write> Write for Holdback<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 2 * HOLDBACK_BYTES {
            self.pass(self.buf.len() - HOLDBACK_BYTES)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.release.load(Ordering::SeqCst) {
            self.pass(self.buf.len())?;
        }
        match self.stopped_reading.load(Ordering::SeqCst) {
            true => Ok(()),
            false => self.inner.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdback_withholds_the_tail_until_released() {
        let release = Arc::new(AtomicBool::new(false));
        let mut h = Holdback {
            inner: Vec::new(),
            buf: Vec::new(),
            release: Arc::clone(&release),
            stopped_reading: Arc::new(AtomicBool::new(false)),
        };
        let data: Vec<u8> = (0..(3 * HOLDBACK_BYTES)).map(|i| i as u8).collect();
        for part in data.chunks(10_000) {
            h.write_all(part).unwrap();
        }
        h.flush().unwrap();
        assert!(h.inner.len() <= data.len() - HOLDBACK_BYTES);
        assert_eq!(&h.inner[..], &data[..h.inner.len()]);
        release.store(true, Ordering::SeqCst);
        h.flush().unwrap();
        assert_eq!(h.inner, data);
    }
}
