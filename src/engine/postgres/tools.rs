//! Finding PostgreSQL client tools whose major version fits the server.
//!
//! pg_dump refuses servers newer than itself, and pg_restore refuses archives
//! from a newer pg_dump, so we pick the lowest installed client whose major
//! is at least the one required. Debian's `/usr/bin/pg_dump` is a wrapper
//! script; the real binaries live in `/usr/lib/postgresql/<major>/bin`, which
//! we search first.

use crate::process::{run_capture, ChildCommand};
use crate::secret::Secret;
use anyhow::{bail, Context};
use std::fmt;
use std::path::{Path, PathBuf};

/// A PostgreSQL version as `server_version_num` (150019 = 15.19, 90624 = 9.6.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgVersion(pub u32);

impl PgVersion {
    /// Comparable major: 15 → 1500, 9.6 → 906.
    pub fn major_key(self) -> u32 {
        if self.0 >= 100_000 {
            self.0 / 10_000 * 100
        } else {
            self.0 / 100
        }
    }

    pub fn major_string(self) -> String {
        let k = self.major_key();
        if k >= 1000 {
            (k / 100).to_string()
        } else {
            format!("{}.{}", k / 100, k % 100)
        }
    }

    /// Parse "15.19", "16beta2", "9.6.24", "17.2 (Debian 17.2-1)".
    pub fn parse(text: &str) -> Option<PgVersion> {
        let t = text.trim();
        let digits_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let nums: Vec<u32> = t[..digits_end]
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        match nums.as_slice() {
            [major, rest @ ..] if *major >= 10 => Some(PgVersion(
                major * 10_000 + rest.first().copied().unwrap_or(0),
            )),
            [major, minor, rest @ ..] => Some(PgVersion(
                major * 10_000 + minor * 100 + rest.first().copied().unwrap_or(0),
            )),
            _ => None,
        }
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 100_000 {
            write!(f, "{}.{}", self.0 / 10_000, self.0 % 10_000)
        } else {
            write!(
                f,
                "{}.{}.{}",
                self.0 / 10_000,
                self.0 / 100 % 100,
                self.0 % 100
            )
        }
    }
}

/// One installation of client tools: a directory with pg_dump and friends.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub dir: PathBuf,
    pub version: PgVersion,
}

impl PgTools {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The tool, or an error naming the directory that lacks it.
    pub fn require(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.tool(name);
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "{name} not found beside pg_dump {} in {}",
                self.version,
                self.dir.display()
            )
        }
    }
}

/// Directories to search, most specific first. `BACKSTOP_PG_BIN_DIRS`
/// (colon-separated) goes before all others.
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(extra) = std::env::var("BACKSTOP_PG_BIN_DIRS") {
        dirs.extend(std::env::split_paths(&extra));
    }
    for pattern_root in [
        "/usr/lib/postgresql",
        "/usr/libexec",
        "/usr/local/pgsql",
        "/opt",
    ] {
        if let Ok(entries) = std::fs::read_dir(pattern_root) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    pattern_root == "/usr/lib/postgresql" || n.starts_with("postgresql")
                })
                .flat_map(|p| [p.join("bin"), p])
                .collect();
            found.sort();
            found.reverse();
            dirs.extend(found);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// Every pg_dump found, one per major version (the first found wins),
/// sorted by version.
pub fn discover() -> Vec<PgTools> {
    let mut found: Vec<PgTools> = Vec::new();
    for dir in candidate_dirs() {
        let pg_dump = dir.join("pg_dump");
        if !pg_dump.is_file() {
            continue;
        }
        let Some(version) = tool_version(&pg_dump) else {
            continue;
        };
        if found
            .iter()
            .any(|t| t.version.major_key() == version.major_key())
        {
            continue;
        }
        found.push(PgTools { dir, version });
    }
    found.sort_by_key(|t| t.version);
    found
}

/// `pg_dump --version` → its version, None when it does not run.
pub fn tool_version(program: &Path) -> Option<PgVersion> {
    let (finished, out) = run_capture(&ChildCommand::new(program).arg("--version"), None).ok()?;
    if !finished.success() {
        return None;
    }
    // "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
    let after = out.split(')').nth(1).unwrap_or(&out);
    PgVersion::parse(after)
}

/// The newest psql installed: any psql runs plain SQL against any server.
pub fn newest_psql(found: &[PgTools]) -> anyhow::Result<PathBuf> {
    found
        .iter()
        .rev()
        .map(|t| t.tool("psql"))
        .find(|p| p.is_file())
        .context("no psql found (install the PostgreSQL client tools)")
}

/// The lowest installed tools whose major is ≥ `needed`'s.
pub fn select<'a>(
    found: &'a [PgTools],
    needed: PgVersion,
    what: &str,
) -> anyhow::Result<&'a PgTools> {
    found
        .iter()
        .filter(|t| t.version.major_key() >= needed.major_key())
        .min_by_key(|t| t.version)
        .ok_or_else(|| {
            let list = if found.is_empty() {
                "none".to_string()
            } else {
                found
                    .iter()
                    .map(|t| format!("{} in {}", t.version, t.dir.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            anyhow::Error::new(crate::error::NoFittingTools(format!(
                "{what} is PostgreSQL {needed}; no pg_dump of major {} or newer is installed \
                 (found: {list}). Install the PostgreSQL {} client tools, or set pg_dump_path",
                needed.major_string(),
                needed.major_string()
            )))
        })
}

/// What to check for a libpq connection failure, from its message; the
/// summary and the failure mail carry it next to the cause.
pub fn connect_hint(message: &str) -> Option<&'static str> {
    let hints: [(&str, &str); 7] = [
        ("Connection refused", "nothing listens there: is the server running, on that host and port (listen_addresses, port; in Kubernetes the Service and its targetPort)?"),
        ("could not translate host name", "the host name does not resolve: check `host` (in Kubernetes the Service name, and the namespace as `name.namespace`)"),
        ("Network is unreachable", "no route to the server: check the network path (NetworkPolicy, firewall, VPN)"),
        ("timeout expired", "the server did not answer in time: check the network path (NetworkPolicy, firewall) and that the host is right"),
        ("password authentication failed", "the server refused the credentials: check `user` and `password`/`password_file`"),
        ("no pg_hba.conf entry", "the server's pg_hba.conf does not admit this client (host, user, database, SSL)"),
        ("does not exist", "check `database` and `user`: the server does not know one of them"),
    ];
    hints
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, hint)| *hint)
}

/// libpq connection settings, handed to children through the environment so
/// the password never appears in a command line.
#[derive(Debug, Clone)]
pub struct PgConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub database: String,
    pub sslmode: Option<String>,
}

impl PgConn {
    pub fn apply(&self, mut cmd: ChildCommand) -> ChildCommand {
        cmd = cmd
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGAPPNAME", "backstop");
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd = cmd.env("PGCONNECT_TIMEOUT", "15");
        }
        if let Some(pw) = &self.password {
            cmd.env.push(("PGPASSWORD".into(), pw.clone()));
        }
        if let Some(mode) = &self.sslmode {
            cmd = cmd.env("PGSSLMODE", mode);
        }
        cmd
    }

    pub fn with_database(&self, database: &str) -> PgConn {
        PgConn {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// "postgres@db.example:5432/app" for messages.
    pub fn endpoint(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// Run one SQL statement with psql and return its unaligned output.
    pub fn query(&self, psql: &Path, sql: &str) -> anyhow::Result<String> {
        let cmd = self.apply(
            ChildCommand::new(psql)
                .arg("-X")
                .arg("-A")
                .arg("-t")
                .arg("-w")
                .arg("-v")
                .arg("ON_ERROR_STOP=1"),
        );
        let (finished, out) = run_capture(&cmd, Some(sql))
            .with_context(|| format!("running psql against {}", self.endpoint()))?;
        if !finished.success() {
            bail!(
                "{} ({})",
                finished.describe_with_last_line(),
                self.endpoint()
            );
        }
        Ok(out.trim().to_string())
    }

    /// The server's version, asked with any psql we have.
    pub fn server_version(&self, found: &[PgTools]) -> anyhow::Result<(PgVersion, String)> {
        let psql = newest_psql(found)?;
        let out = self
            .query(&psql, "SELECT current_setting('server_version_num') || ' ' || current_setting('server_version');")
            .with_context(|| format!("connecting to {}", self.endpoint()))?;
        let (num, text) = out.split_once(' ').unwrap_or((&out, &out));
        let num: u32 = num.parse().with_context(|| {
            format!(
                "unexpected server_version_num `{num}` from {}",
                self.endpoint()
            )
        })?;
        Ok((PgVersion(num), text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(v: u32) -> PgTools {
        PgTools {
            dir: PathBuf::from(format!("/pg/{v}")),
            version: PgVersion(v),
        }
    }

    #[test]
    fn parses_versions_old_and_new() {
        assert_eq!(
            PgVersion::parse("15.19 (Debian 15.19-0+deb12u1)"),
            Some(PgVersion(150019))
        );
        assert_eq!(PgVersion::parse("16beta2"), Some(PgVersion(160000)));
        assert_eq!(PgVersion::parse("9.6.24"), Some(PgVersion(90624)));
        assert_eq!(PgVersion::parse("abc"), None);
        assert_eq!(PgVersion(90624).major_string(), "9.6");
        assert_eq!(PgVersion(170002).major_string(), "17");
        assert_eq!(PgVersion(170002).to_string(), "17.2");
    }

    #[test]
    fn selects_lowest_client_at_or_above_server_major() {
        let found = vec![tools(140010), tools(150019), tools(170002)];
        assert_eq!(
            select(&found, PgVersion(150003), "x").unwrap().version,
            PgVersion(150019)
        );
        assert_eq!(
            select(&found, PgVersion(160001), "x").unwrap().version,
            PgVersion(170002)
        );
        assert_eq!(
            select(&found, PgVersion(90624), "x").unwrap().version,
            PgVersion(140010)
        );
        // A newer minor of the same major still matches.
        assert_eq!(
            select(&found, PgVersion(140099), "x").unwrap().version,
            PgVersion(140010)
        );
    }

    #[test]
    fn no_fitting_client_names_server_and_found_versions() {
        let found = vec![tools(150019)];
        let err = select(&found, PgVersion(180001), "server db:5432")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server db:5432 is PostgreSQL 18.1"), "{err}");
        assert!(err.contains("found: 15.19 in /pg/150019"), "{err}");
        assert!(err.contains("major 18 or newer"), "{err}");
    }
}
