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

/// A database's default character set and collation; an error when it
/// does not exist.
pub fn charset_of(
    tools: &MyTools,
    server: &MyConn,
    db: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let found = query(
        tools,
        &server.with_database(""),
        &format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
            literal(db)
        ),
    )?;
    match found.split_once('\t') {
        Some((cs, coll)) => Ok((
            cs.to_string(),
            Some(coll.to_string()).filter(|c| !c.is_empty()),
        )),
        None => bail!("database `{db}` does not exist on {}", server.endpoint()),
    }
}

/// CREATE DATABASE with a character set and collation.
pub fn create_sql(db: &str, charset: &str, collation: Option<&str>) -> String {
    format!(
        "CREATE DATABASE {} CHARACTER SET {}{};",
        ident(db),
        ident(charset),
        collation
            .map(|c| format!(" COLLATE {}", ident(c)))
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
