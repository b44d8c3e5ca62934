//! Talking to a MariaDB/MySQL server with its own client tools: the
//! connection goes in a 0600 option file (`--defaults-extra-file`), so the
//! password is never on a command line or in the environment.

use crate::config::Secret;
use crate::process::{run_capture, ChildCommand};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct MyConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub database: String,
}

impl MyConn {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn with_database(&self, database: &str) -> MyConn {
        MyConn {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// The option file every tool reads first; removed when dropped.
    pub fn option_file(&self) -> anyhow::Result<tempfile::TempPath> {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep_option_files(&std::env::temp_dir()));
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{OPTION_FILE_PREFIX}{}-", std::process::id()))
            .suffix(".cnf")
            .tempfile()
            .context("writing the client option file in the temp directory")?;
        let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text = format!(
            "[client]\nhost={}\nport={}\nuser={}\n",
            quote(&self.host),
            self.port,
            quote(&self.user)
        );
        if let Some(p) = &self.password {
            text.push_str(&format!("password={}\n", quote(p.expose())));
        }
        file.write_all(text.as_bytes())?;
        file.flush()?;
        Ok(file.into_temp_path())
    }
}

/// Option files are named `.backstop-my-PID-….cnf`, PID the backstop that
/// wrote it.
const OPTION_FILE_PREFIX: &str = ".backstop-my-";

/// Remove the option files (they hold the password) of backstop processes
/// that are gone: a SIGKILLed run cannot remove its own. Only this user's
/// files; a live process's file is left alone.
fn sweep_option_files(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(OPTION_FILE_PREFIX))
            .filter(|n| n.ends_with(".cnf"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let mine = entry
            .metadata()
            .is_ok_and(|m| m.uid() == uid && m.is_file());
        if gone && mine && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed the client option file an interrupted run left");
        }
    }
}

/// The command-line client: MariaDB's name first, MySQL's as the
/// fallback. (The dump tool is chosen per server: [`dump_for`].)
#[derive(Debug, Clone)]
pub struct MyTools {
    pub client: PathBuf,
}

pub fn discover() -> anyhow::Result<MyTools> {
    match on_path(&["mariadb", "mysql"]).into_iter().next() {
        Some(client) => Ok(MyTools { client }),
        None => Err(anyhow::Error::new(crate::error::NoFittingTools(
            "no MariaDB/MySQL client (mariadb or mysql) on PATH; install mariadb-client".into(),
        ))),
    }
}

/// Every file of these names on PATH, in PATH order, each once (Debian's
/// `mysqldump` is a link to `mariadb-dump`).
fn on_path(names: &[&str]) -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() && seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())) {
                found.push(p);
            }
        }
    }
    found
}

/// The dump tool for a server of this `VERSION()` (see [`super::flavour`]);
/// a warning is logged when it is not of the server's family.
pub fn dump_for(server_version: &str) -> anyhow::Result<super::flavour::Choice> {
    let chosen = super::flavour::choose(server_version, dump_tools()).ok_or_else(|| {
        anyhow::Error::new(crate::error::NoFittingTools(format!(
            "no dump tool (mariadb-dump or mysqldump) on PATH answers --version; the server is {server_version}"
        )))
    })?;
    if let Some(warning) = &chosen.warning {
        tracing::warn!("{warning}");
    }
    Ok(chosen)
}

/// The dump tools on PATH that answer `--version`, with their answer.
pub fn dump_tools() -> Vec<super::flavour::Probed> {
    on_path(&["mariadb-dump", "mysqldump"])
        .into_iter()
        .filter_map(|path| {
            let (finished, out) =
                run_capture(&ChildCommand::new(&path).arg("--version"), None).ok()?;
            finished.success().then(|| super::flavour::Probed {
                path,
                version: out.trim().to_string(),
            })
        })
        .collect()
}

/// A tool with the connection's option file (it must come first).
pub fn command(tool: &Path, options: &Path) -> ChildCommand {
    ChildCommand::new(tool).arg(format!("--defaults-extra-file={}", options.display()))
}

/// Run SQL with the client; tab-separated rows without headers.
pub fn query(tools: &MyTools, conn: &MyConn, sql: &str) -> anyhow::Result<String> {
    let options = conn.option_file()?;
    let mut cmd = command(&tools.client, &options)
        .arg("--batch")
        .arg("--skip-column-names")
        .arg("--default-character-set=utf8mb4");
    if !conn.database.is_empty() {
        cmd = cmd.arg(format!("--database={}", conn.database));
    }
    let (finished, out) = run_capture(&cmd, Some(sql)).with_context(|| {
        format!(
            "running {} against {}",
            tools.client.display(),
            conn.endpoint()
        )
    })?;
    if !finished.success() {
        bail!(
            "{} ({})",
            finished.describe_with_last_line(),
            conn.endpoint()
        );
    }
    Ok(out.trim_end_matches('\n').to_string())
}

/// What a database is created with: character set, collation, comment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbDefaults {
    #[serde(rename = "character_set")]
    pub charset: String,
    #[serde(default)]
    pub collation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Default for DbDefaults {
    fn default() -> Self {
        DbDefaults {
            charset: "utf8mb4".into(),
            collation: None,
            comment: None,
        }
    }
}

/// A database's character set, collation and comment, as the server has
/// them (the comment from `SHOW CREATE DATABASE`: MySQL has no column
/// for it).
pub fn database_defaults(tools: &MyTools, server: &MyConn, db: &str) -> anyhow::Result<DbDefaults> {
    let server = server.with_database("");
    let found = query(
        tools,
        &server,
        &format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
            literal(db)
        ),
    )?;
    let Some((cs, coll)) = found.split_once('\t') else {
        bail!("database `{db}` does not exist on {}", server.endpoint());
    };
    let create = query(
        tools,
        &server,
        &format!("SHOW CREATE DATABASE {};", ident(db)),
    )?;
    Ok(DbDefaults {
        charset: cs.to_string(),
        collation: Some(coll.to_string()).filter(|c| !c.is_empty()),
        comment: comment_of(&create),
    })
}

/// The `COMMENT '…'` that ends a `SHOW CREATE DATABASE` line (batch
/// output: `\\`, `\n` and `\t` escaped; quotes doubled in the literal).
fn comment_of(create: &str) -> Option<String> {
    let (_, quoted) = create.split_once(" COMMENT '")?;
    let inner = quoted.trim_end().strip_suffix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            },
            '\'' => {
                chars.next(); // the doubled quote
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// CREATE DATABASE as `d` says.
pub fn create_sql(db: &str, d: &DbDefaults) -> String {
    format!(
        "CREATE DATABASE {} CHARACTER SET {}{}{};",
        ident(db),
        ident(&d.charset),
        d.collation
            .as_deref()
            .map(|c| format!(" COLLATE {}", ident(c)))
            .unwrap_or_default(),
        d.comment
            .as_deref()
            .map(|c| format!(" COMMENT {}", literal(c)))
            .unwrap_or_default()
    )
}

/// A name as a MariaDB identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_files_of_gone_processes_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid far above pid_max (4194304 at most on Linux): never alive.
        let gone = dir
            .path()
            .join(format!("{OPTION_FILE_PREFIX}999999999-abc.cnf"));
        let live = dir.path().join(format!(
            "{OPTION_FILE_PREFIX}{}-def.cnf",
            std::process::id()
        ));
        let other = dir.path().join("unrelated-999999999.cnf");
        for p in [&gone, &live, &other] {
            std::fs::write(p, "[client]\npassword=\"x\"\n").unwrap();
        }
        sweep_option_files(dir.path());
        assert!(!gone.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}

#[cfg(test)]
mod defaults_tests {
    use super::*;

    #[test]
    fn the_comment_is_read_back_from_show_create_database() {
        let line = "shop\tCREATE DATABASE `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */ COMMENT 'it''s a \\\\ \\n test'";
        assert_eq!(comment_of(line).as_deref(), Some("it's a \\ \n test"));
        assert_eq!(
            comment_of("shop\tCREATE DATABASE `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"),
            None
        );
    }
}
