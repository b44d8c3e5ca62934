//! Restore and verify for MariaDB/MySQL. The checked dump streams into the
//! `mariadb` client, into a database created for it with the source's
//! character set and collation: the name itself with `--create`, else one
//! beside the existing database that is swapped in whole (`swap.rs`). Any
//! failure drops what was created, so the name is restored or as it was.

use super::tools::{self, ident, literal, DbDefaults, MyConn, MyTools};
use crate::catalog::{Layout, Manifest, ObjectRecord};
use crate::fetch::{fetch_into, StoredObject};
use crate::report::VerifySummary;
use crate::restore::{open_backup, Mode, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use anyhow::{anyhow, bail, Context};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct MysqlRestore {
    pub target: String,
    pub backup: Option<String>,
    /// Which database of a backup that holds several.
    pub database: Option<String>,
    pub into: MyConn,
    /// Create the events disabled (a scratch copy for verify).
    pub events_disabled: bool,
    pub mode: Mode,
    pub identity: Option<PathBuf>,
    pub cancel: CancellationToken,
}

/// `mysql://USER[:PASSWORD]@HOST[:PORT]/DB` (or `mariadb://`); None for
/// another scheme. Errors never echo the URL (it may hold a password).
pub fn parse_url(text: &str) -> Option<anyhow::Result<MyConn>> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "mysql" | "mariadb") {
        return None;
    }
    let usage = crate::error::usage;
    let decode = |s: &str| {
        crate::engine::url::percent_decode(s)
            .ok_or_else(|| usage("invalid percent-encoding in the mysql:// URL"))
    };
    Some((|| {
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| usage("the mysql:// URL names no host"))?;
        let database = decode(url.path().trim_start_matches('/'))?;
        if database.is_empty() || database.contains('/') {
            return Err(usage("the mysql:// URL must end with /DATABASE"));
        }
        if url.query().is_some() {
            return Err(usage("the mysql:// URL takes no parameters"));
        }
        Ok(MyConn {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port: url.port().unwrap_or(3306),
            user: match url.username() {
                "" => "root".into(),
                u => decode(u)?,
            },
            password: url
                .password()
                .map(decode)
                .transpose()?
                .map(crate::secret::Secret::new),
            database,
        })
    })())
}

fn exists(tools: &MyTools, conn: &MyConn, db: &str) -> anyhow::Result<bool> {
    let n = tools::query(
        tools,
        &conn.with_database(""),
        &format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
            literal(db)
        ),
    )?;
    Ok(n.trim() == "1")
}

fn objects_in(tools: &MyTools, conn: &MyConn, db: &str) -> anyhow::Result<u64> {
    let db = literal(db);
    let n = tools::query(
        tools,
        &conn.with_database(""),
        &format!(
            "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db}) + \
             (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db}) + \
             (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db});"
        ),
    )?;
    n.trim().parse().context("counting objects")
}

/// One dumped database of a backup, with what recreating it needs.
struct Dumped {
    name: String,
    object: ObjectRecord,
    defaults: DbDefaults,
}

/// The databases a backup holds: the one of a `database` target, or each
/// of a `databases`/`all` target (objects `database:NAME`).
fn dumped(m: &Manifest, manifest_key: &str) -> anyhow::Result<Vec<Dumped>> {
    let props = m.database_properties.clone().unwrap_or_default();
    let of = |name: &str, object: &ObjectRecord, p: &serde_json::Value| Dumped {
        name: name.to_string(),
        object: object.clone(),
        defaults: serde_json::from_value(p.clone()).unwrap_or_default(),
    };
    if let Some(object) = m.object("database") {
        return Ok(vec![of(&m.database, object, &props)]);
    }
    let several: Vec<Dumped> = m
        .objects
        .iter()
        .filter_map(|o| {
            let name = o.role.strip_prefix(super::ROLE_PREFIX)?;
            Some(of(name, o, &props["databases"][name]))
        })
        .collect();
    if several.is_empty() {
        bail!("manifest {manifest_key} names no database object");
    }
    Ok(several)
}

/// The one database to restore: the backup's only one, or `--database`.
fn pick(m: &Manifest, mut all: Vec<Dumped>, wanted: Option<&str>) -> anyhow::Result<Dumped> {
    let names = || {
        all.iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = match wanted {
        None if all.len() == 1 => 0,
        None => bail!(crate::error::usage(format!(
            "backup {} holds {} databases ({}): choose one with --database NAME",
            m.id,
            all.len(),
            names()
        ))),
        Some(w) => all.iter().position(|d| d.name == w).ok_or_else(|| {
            crate::error::usage(format!(
                "backup {} holds no database `{w}` (it holds: {})",
                m.id,
                names()
            ))
        })?,
    };
    Ok(all.swap_remove(at))
}

/// The backup `req` names, checked to be a MariaDB/MySQL one.
async fn chosen(
    storage: &dyn Storage,
    layout: &Layout,
    req: &MysqlRestore,
) -> anyhow::Result<(Manifest, Vec<Dumped>)> {
    let backup = open_backup(
        storage,
        layout,
        &req.target,
        req.backup.as_deref(),
        req.identity.as_deref(),
    )
    .await?;
    let m = backup.manifest;
    if m.source_type != "mysql" {
        bail!(crate::error::usage(format!(
            "backup {} is a {} backup, not one for a mysql:// URL",
            m.id, m.source_type
        )));
    }
    let dumped = dumped(&m, &backup.manifest_key)?;
    Ok((m, dumped))
}

pub async fn restore(
    storage: &dyn Storage,
    layout: &Layout,
    req: MysqlRestore,
) -> anyhow::Result<RestoreOutcome> {
    let (m, all) = chosen(storage, layout, &req).await?;
    let one = pick(&m, all, req.database.as_deref())?;
    restore_one(storage, m, one, req).await
}

/// Restore one dumped database of backup `m` into `req.into`.
async fn restore_one(
    storage: &dyn Storage,
    m: Manifest,
    one: Dumped,
    req: MysqlRestore,
) -> anyhow::Result<RestoreOutcome> {
    let stored = StoredObject::of_backup(&m, &one.object, req.identity.as_deref())?;
    let what = Loadable {
        label: m.id.0.clone(),
        stored,
        defaults: one.defaults,
        manifest: Some(m),
        check_trailer: false,
    };
    restore_loadable(storage, what, req).await
}

/// Restore a mariadb-dump/mysqldump SQL file backstop did not write (the
/// old `mysqldump | gzip` objects), found as `key` in `storage`: plain,
/// gzip or zstd, encrypted or not. With no manifest to check it against,
/// the dump's own `-- Dump completed` line is the guard: a file without it
/// is loaded and then dropped again, as any failed restore.
pub async fn restore_file(
    storage: &dyn Storage,
    key: &str,
    req: MysqlRestore,
) -> anyhow::Result<RestoreOutcome> {
    let (stored, head) =
        crate::fetch::open_dump_file(storage, key, req.identity.as_deref()).await?;
    let text = String::from_utf8_lossy(&head);
    if text.contains("PostgreSQL database dump") {
        bail!(crate::error::usage(format!(
            "{key} is a pg_dump file: restore it into a postgres:// URL"
        )));
    }
    if !(text.starts_with("--") || text.starts_with("/*")) {
        bail!(crate::error::usage(format!(
            "{key} is not a mariadb-dump/mysqldump SQL file (after {})",
            crate::codec::describe(stored.algorithm)
        )));
    }
    let what = Loadable {
        label: key.to_string(),
        stored,
        defaults: DbDefaults::default(),
        manifest: None,
        check_trailer: true,
    };
    restore_loadable(storage, what, req).await
}

/// What one restore loads: a database of a backup, or a dump file.
struct Loadable {
    /// The backup id, or the file's key.
    label: String,
    stored: StoredObject,
    /// What a database created for it gets.
    defaults: DbDefaults,
    manifest: Option<Manifest>,
    /// A file backstop did not write has no checksum: the dump's own
    /// trailer must be there.
    check_trailer: bool,
}

async fn restore_loadable(
    storage: &dyn Storage,
    what: Loadable,
    req: MysqlRestore,
) -> anyhow::Result<RestoreOutcome> {
    let usage = crate::error::usage;
    let Loadable {
        label,
        stored,
        defaults,
        manifest,
        check_trailer,
    } = what;
    stored.check_identity(storage).await?;
    let db = req.into.database.clone();
    let tools = tokio::task::spawn_blocking(tools::discover).await??;
    let (t, c) = (tools.clone(), req.into.clone());
    let present = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, u64)> {
            let e = exists(&t, &c, &db)?;
            Ok((e, if e { objects_in(&t, &c, &db)? } else { 0 }))
        })
        .await??
    };
    let endpoint = req.into.endpoint();
    match (req.mode, present) {
        (Mode::Create, (true, _)) => bail!(usage(format!(
            "database `{db}` exists on {endpoint}; restore into a new name, use an empty one \
             without --create, or replace it with --replace"
        ))),
        (Mode::Empty, (false, _)) => bail!(usage(format!(
            "database `{db}` does not exist on {endpoint}; add --create"
        ))),
        (Mode::Empty, (true, n)) if n > 0 => bail!(usage(format!(
            "database `{db}` on {endpoint} is not empty ({n} tables, routines or events); \
             restore into a new name with --create, or replace it with --replace"
        ))),
        (Mode::Replace { .. }, (false, _)) => bail!(usage(format!(
            "database `{db}` does not exist on {endpoint}: nothing to replace (use --create)"
        ))),
        _ => {}
    }
    {
        let (t, c, db) = (tools.clone(), req.into.clone(), db.clone());
        tokio::task::spawn_blocking(move || warn_leftovers(&t, &c, &db))
            .await
            .context("leftover check task")?;
    }
    let stamp = format!("{:08x}", fastrand::u32(..));
    let kept = match req.mode {
        Mode::Replace {
            keep_replaced: true,
        } => {
            // The random part keeps two replaces within one second apart.
            let name = format!(
                "{db}_replaced_{}_{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S"),
                &stamp[..4]
            );
            if name.chars().count() > 64 {
                bail!(usage(format!(
                    "`{name}` would be longer than the 64 characters MariaDB allows: \
                     leave out --keep-replaced, or restore into a shorter name"
                )));
            }
            Some(name)
        }
        _ => None,
    };
    // Only --create loads into the name itself (it did not exist); into an
    // existing database the load goes beside it and is swapped in whole,
    // so a failed load never touches it.
    let server = req.into.with_database("");
    let into = match req.mode {
        Mode::Create => req.into.clone(),
        Mode::Empty | Mode::Replace { .. } => req
            .into
            .with_database(&internal_name(&db, "restore", &stamp)),
    };
    {
        let (t, c, name) = (tools.clone(), server.clone(), into.database.clone());
        let create = tools::create_sql(&name, &defaults);
        tokio::task::spawn_blocking(move || tools::query(&t, &c, &create))
            .await
            .context("create task")??;
    }
    let loaded = load(storage, &stored, &tools, &into, &req, check_trailer).await;
    if let Err(e) = loaded {
        drop_or_warn(&into).await;
        return Err(e.context("nothing was restored"));
    }
    let bytes = loaded.expect("checked");
    if into.database != db {
        let keep = matches!(
            req.mode,
            Mode::Replace {
                keep_replaced: true
            }
        );
        let aside = kept
            .clone()
            .unwrap_or_else(|| internal_name(&db, "old", &stamp));
        let (t, restored) = (tools.clone(), into.database.clone());
        let swapped = tokio::task::spawn_blocking(move || {
            let swap = super::swap::Swap {
                tools: &t,
                server: &server,
                live: &db,
                restored: &restored,
                aside: &aside,
                keep,
            };
            swap.run()
        })
        .await
        .context("swap task")?;
        swapped?;
    }
    let db = req.into.database.clone();
    tracing::info!(backup = %label, database = %db, bytes, "restore complete");
    Ok(RestoreOutcome {
        backup_id: label,
        database: db,
        bytes,
        kept_replaced: kept,
        manifest,
    })
}

/// Working databases an interrupted restore of `db` left (killed before
/// it could drop them) that no session uses: named, never dropped here, as
/// another restore may be about to use one.
fn warn_leftovers(tools: &MyTools, conn: &MyConn, db: &str) {
    let mut found = Vec::new();
    for what in ["restore", "old"] {
        let name = internal_name(db, what, "00000000");
        let prefix = &name[..name.len() - 8];
        let sql = format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE LEFT(SCHEMA_NAME, {n}) = {p} \
             AND CHAR_LENGTH(SCHEMA_NAME) = {n} + 8 AND SCHEMA_NAME NOT IN \
             (SELECT DB FROM information_schema.PROCESSLIST WHERE DB IS NOT NULL);",
            n = prefix.chars().count(),
            p = literal(prefix)
        );
        if let Ok(out) = tools::query(tools, &conn.with_database(""), &sql) {
            found.extend(out.lines().filter(|l| !l.is_empty()).map(String::from));
        }
    }
    if !found.is_empty() {
        tracing::warn!(
            database = %db,
            "left by an interrupted restore, with no session: {}; drop them with DROP DATABASE when no restore is running",
            found.join(", ")
        );
    }
}

/// A working name beside `db`.
fn internal_name(db: &str, what: &str, stamp: &str) -> String {
    fit(db, &format!("_bs_{what}_{stamp}"))
}

/// `stem` + `suffix` within MariaDB's 64 characters, the stem cut short
/// when needed.
fn fit(stem: &str, suffix: &str) -> String {
    let mut keep = 64usize.saturating_sub(suffix.chars().count());
    keep = keep.min(stem.chars().count());
    format!("{}{suffix}", stem.chars().take(keep).collect::<String>())
}

/// Stream the checked dump into the client; both must succeed.
async fn load(
    storage: &dyn Storage,
    stored: &StoredObject,
    tools: &MyTools,
    into: &MyConn,
    req: &MysqlRestore,
    check_trailer: bool,
) -> anyhow::Result<u64> {
    let options = into.option_file()?;
    let cmd = tools::command(&tools.client, &options)
        .arg("--default-character-set=utf8mb4")
        .arg("--binary-mode")
        .arg(format!("--database={}", into.database));
    let who = match req.target.is_empty() {
        true => into.database.as_str(),
        false => req.target.as_str(),
    };
    let mut running = cmd.spawn(Stdio::piped(), Stdio::null(), who)?;
    let stdin = running.child.stdin.take().expect("stdin was piped");
    let kill = running.kill_handle();
    let sink: Box<dyn std::io::Write + Send> = match req.events_disabled {
        true => Box::new(super::events::EventsDisabled::new(stdin)),
        false => Box::new(stdin),
    };
    let mut sink: Box<dyn std::io::Write + Send> =
        Box::new(super::db_scope::DatabaseScoped::new(sink));
    let judge = Arc::new(Mutex::new(super::MysqlInspector::default()));
    if check_trailer {
        sink = Box::new(Judged {
            inner: sink,
            judge: Arc::clone(&judge),
        });
    }
    let fed = fetch_into(storage, stored, sink, &req.cancel)
        .await
        .and_then(|bytes| match check_trailer {
            true => judge
                .lock()
                .expect("judge lock")
                .verdict()
                .map(|()| bytes)
                .map_err(|e| anyhow!("{}: {e}", stored.key)),
            false => Ok(bytes),
        });
    if fed.is_err() {
        kill.kill();
    }
    let finished = tokio::task::spawn_blocking(move || running.wait())
        .await
        .context("restore client task")??;
    let bytes = fed?;
    if !finished.success() {
        return Err(anyhow!("{}", finished.describe_with_last_line()));
    }
    Ok(bytes)
}

/// Every byte on its way to the client, also to the trailer check.
struct Judged<W> {
    inner: W,
    judge: Arc<Mutex<super::MysqlInspector>>,
}

impl<W: std::io::Write> std::io::Write for Judged<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        self.judge.lock().expect("judge lock").write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Verify: restore each database of the backup into a scratch database,
/// read every table through (`CHECKSUM TABLE` reads each row), drop it.
pub async fn verify(
    storage: &dyn Storage,
    layout: &Layout,
    v: VerifyRequest<'_>,
    scratch: &MyConn,
) -> anyhow::Result<(RestoreOutcome, VerifySummary)> {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let base = fit(
        &format!("backstop_verify_{}", v.target.replace('-', "_")),
        &format!("_{stamp}"),
    );
    let mut req = MysqlRestore {
        target: v.target.to_string(),
        backup: Some(v.backup_id.clone()),
        database: None,
        into: scratch.clone(),
        events_disabled: true,
        mode: Mode::Create,
        identity: v.identity.clone(),
        cancel: v.cancel.clone(),
    };
    let (m, all) = chosen(storage, layout, &req).await?;
    let several = all.len() > 1;
    let (mut summary, mut bytes, mut names) = (VerifySummary::default(), 0, Vec::new());
    for (i, one) in all.into_iter().enumerate() {
        let name = match several {
            true => fit(&base, &format!("_{i}")),
            false => base.clone(),
        };
        let source = one.name.clone();
        let expected = one.object.tables.clone();
        req.into = scratch.with_database(&name);
        let outcome = restore_one(storage, m.clone(), one, req.clone()).await?;
        let c = req.into.clone();
        let read = tokio::task::spawn_blocking(move || read_through(&c, &expected)).await?;
        if !v.keep {
            drop_or_warn(&req.into).await;
        }
        let read = read.with_context(|| format!("database {source}"))?;
        summary.tables += read.tables;
        summary.rows += read.rows;
        summary.tables_compared += read.tables_compared;
        bytes += outcome.bytes;
        names.push(name);
    }
    let outcome = RestoreOutcome {
        backup_id: m.id.0.clone(),
        database: names.join(", "),
        bytes,
        kept_replaced: None,
        manifest: Some(m),
    };
    Ok((outcome, summary))
}

/// Drop a database backstop created (a failed load's, verify's scratch
/// copy); a failure is a warning that names it.
async fn drop_or_warn(db: &MyConn) {
    let (c, name) = (db.with_database(""), db.database.clone());
    let dropped = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let tools = tools::discover()?;
        tools::query(
            &tools,
            &c,
            &format!("DROP DATABASE IF EXISTS {};", ident(&name)),
        )
        .map(drop)
    })
    .await;
    if !matches!(dropped, Ok(Ok(()))) {
        tracing::warn!(database = %db.database, "could not drop backstop's database; drop it by hand");
    }
}

/// Read every table through, and compare each one's rows with the count
/// the dump holds for it (`expected`, counted as the dump streamed).
fn read_through(
    conn: &MyConn,
    expected: &[crate::engine::postgres::archive::TableRows],
) -> anyhow::Result<VerifySummary> {
    let tools = tools::discover()?;
    let tables = tools::query(
        &tools,
        &conn.with_database(""),
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;",
            literal(&conn.database)
        ),
    )?;
    let mut summary = VerifySummary::default();
    for t in tables.lines().filter(|l| !l.is_empty()) {
        let rows = tools::query(
            &tools,
            conn,
            &format!(
                "CHECKSUM TABLE {0} EXTENDED; SELECT COUNT(*) FROM {0};",
                ident(t)
            ),
        )
        .with_context(|| format!("reading table {t}"))?;
        let count: u64 = rows
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("counting the rows of {t}"))?;
        if let Some(e) = expected.iter().find(|e| e.table == t) {
            if e.rows != count {
                bail!(
                    "table {t} has {count} rows after the restore, but the dump holds {}",
                    e.rows
                );
            }
            summary.tables_compared += 1;
        }
        summary.tables += 1;
        summary.rows += count;
    }
    Ok(summary)
}
