//! Choosing the dump tool for the server: MariaDB's `mariadb-dump` for a
//! MariaDB server, MySQL's `mysqldump` for a MySQL server, the newest one
//! of the server's family on PATH. The two families diverged (MySQL 8's
//! mysqldump asks MariaDB for COLUMN_STATISTICS; MariaDB's tools do not
//! know every MySQL 8 object), so the other family's tool is only a
//! fallback, with a warning that says what to install. On Debian
//! `mysqldump` may be MariaDB's under the old name: the family is read from
//! each tool's `--version`, not its name.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    MariaDb,
    MySql,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::MariaDb => "MariaDB",
            Flavour::MySql => "MySQL",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Flavour::MariaDb => "mariadb-client",
            Flavour::MySql => "mysql-client",
        }
    }
}

/// The family and (major, minor) of a server's `VERSION()` or a tool's
/// `--version`: `10.11.19-MariaDB-0+deb12u1`, `8.0.36`, `mysqldump  Ver
/// 10.19 Distrib 10.11.19-MariaDB, …`, `mysqldump  Ver 8.0.36 for Linux …`,
/// `mariadb-dump from 11.4.2-MariaDB, client 10.19 …`.
pub fn identify(version: &str) -> (Flavour, Option<(u32, u32)>) {
    let flavour = match version.contains("MariaDB") {
        true => Flavour::MariaDb,
        false => Flavour::MySql,
    };
    let mut parts = number(version).split('.').map(|p| p.parse::<u32>().ok());
    let numbers = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => Some((major, minor)),
        _ => None,
    };
    (flavour, numbers)
}

/// A version for people: `10.11.19-MariaDB`, `8.0.36`.
pub fn short(version: &str) -> String {
    match identify(version).0 {
        Flavour::MariaDb => format!("{}-MariaDB", number(version)),
        Flavour::MySql => number(version).to_string(),
    }
}

/// The server's version number in a version text (`10.11.19`): after
/// `Distrib`, `from` or `Ver` in a tool's, first in a server's.
fn number(version: &str) -> &str {
    let after = ["Distrib ", " from ", "Ver "]
        .iter()
        .find_map(|m| version.split_once(m).map(|(_, rest)| rest))
        .unwrap_or(version)
        .trim_start();
    let end = after
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(after.len());
    &after[..end]
}

/// A dump tool found on PATH, with its `--version` line.
#[derive(Debug, Clone)]
pub struct Probed {
    pub path: PathBuf,
    pub version: String,
}

/// The tool chosen, the extra arguments it needs for this server, and a
/// warning when it is not of the server's family or older than it.
#[derive(Debug)]
pub struct Choice {
    pub tool: Probed,
    pub extra_args: Vec<&'static str>,
    pub warning: Option<String>,
}

/// The dump tool for a server: of its family, newest first; else the
/// other family's newest.
pub fn choose(server_version: &str, found: Vec<Probed>) -> Option<Choice> {
    let (server, server_v) = identify(server_version);
    // Among equals the first on PATH, as a shell would run it.
    let newest = |f: Flavour| {
        found
            .iter()
            .filter(|p| identify(&p.version).0 == f)
            .min_by_key(|p| std::cmp::Reverse(identify(&p.version).1))
            .cloned()
    };
    let other = match server {
        Flavour::MariaDb => Flavour::MySql,
        Flavour::MySql => Flavour::MariaDb,
    };
    let (tool, family) = match newest(server) {
        Some(t) => (t, server),
        None => (newest(other)?, other),
    };
    let tool_v = identify(&tool.version).1;
    let show = |v: Option<(u32, u32)>| v.map_or("?".into(), |(a, b)| format!("{a}.{b}"));
    let warning = if family != server {
        Some(format!(
            "no {} dump tool on PATH: dumping a {} {} server with {} ({}); install {} for a dump tool of the server's own family",
            server.name(),
            server.name(),
            show(server_v),
            tool.path.display(),
            tool.version,
            server.package()
        ))
    } else if matches!((tool_v, server_v), (Some(t), Some(s)) if t < s && server == Flavour::MySql)
    {
        Some(format!(
            "{} ({}) is older than the MySQL {} server; objects the server has and the tool does not know may be missed: install a mysql-client of {} or newer",
            tool.path.display(),
            tool.version,
            show(server_v),
            show(server_v)
        ))
    } else {
        None
    };
    // MySQL 8's mysqldump reads COLUMN_STATISTICS, which MariaDB lacks.
    let extra_args = match (family, server, tool_v) {
        (Flavour::MySql, Flavour::MariaDb, Some((major, _))) if major >= 8 => {
            vec!["--column-statistics=0"]
        }
        _ => Vec::new(),
    };
    Some(Choice {
        tool,
        extra_args,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(path: &str, version: &str) -> Probed {
        Probed {
            path: PathBuf::from(path),
            version: version.into(),
        }
    }

    const MARIADB_DUMP: &str =
        "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)";
    const MYSQLDUMP_8: &str =
        "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)";
    const MYSQLDUMP_57: &str = "mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)";

    #[test]
    fn versions_of_servers_and_tools_of_both_families() {
        for (text, flavour, v) in [
            ("10.11.19-MariaDB-0+deb12u1", Flavour::MariaDb, (10, 11)),
            ("11.4.2-MariaDB", Flavour::MariaDb, (11, 4)),
            ("8.0.36", Flavour::MySql, (8, 0)),
            ("8.4.0-commercial", Flavour::MySql, (8, 4)),
            (MARIADB_DUMP, Flavour::MariaDb, (10, 11)),
            (
                "mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux (x86_64)",
                Flavour::MariaDb,
                (11, 4),
            ),
            (MYSQLDUMP_8, Flavour::MySql, (8, 0)),
            (MYSQLDUMP_57, Flavour::MySql, (5, 7)),
        ] {
            assert_eq!(identify(text), (flavour, Some(v)), "{text}");
        }
    }

    #[test]
    fn short_versions_keep_the_family() {
        assert_eq!(short(MARIADB_DUMP), "10.11.19-MariaDB");
        assert_eq!(short(MYSQLDUMP_8), "8.0.36");
        assert_eq!(short(MYSQLDUMP_57), "5.7.44");
    }

    #[test]
    fn each_server_gets_a_tool_of_its_own_family() {
        let found = vec![
            probed("/opt/mysql/bin/mysqldump", MYSQLDUMP_8),
            probed("/usr/bin/mariadb-dump", MARIADB_DUMP),
        ];
        let c = choose("10.11.19-MariaDB-0+deb12u1", found.clone()).unwrap();
        assert_eq!(c.tool.path, PathBuf::from("/usr/bin/mariadb-dump"));
        assert!(c.warning.is_none() && c.extra_args.is_empty());
        let c = choose("8.0.36", found).unwrap();
        assert_eq!(c.tool.path, PathBuf::from("/opt/mysql/bin/mysqldump"));
        assert!(c.warning.is_none() && c.extra_args.is_empty());
    }

    #[test]
    fn the_other_family_is_a_fallback_with_a_warning_and_what_it_needs() {
        let c = choose(
            "10.11.19-MariaDB",
            vec![probed("/usr/bin/mysqldump", MYSQLDUMP_8)],
        )
        .unwrap();
        assert_eq!(c.extra_args, ["--column-statistics=0"]);
        assert!(c.warning.unwrap().contains("install mariadb-client"));
        let c = choose("8.0.36", vec![probed("/usr/bin/mysqldump", MARIADB_DUMP)]).unwrap();
        assert!(c.extra_args.is_empty());
        assert!(c.warning.unwrap().contains("install mysql-client"));
        assert!(choose("8.0.36", Vec::new()).is_none());
    }

    #[test]
    fn of_equal_tools_the_first_on_path_wins() {
        let c = choose(
            "10.11.19-MariaDB",
            vec![
                probed("/first/mariadb-dump", MARIADB_DUMP),
                probed("/usr/bin/mariadb-dump", MARIADB_DUMP),
            ],
        )
        .unwrap();
        assert_eq!(c.tool.path, PathBuf::from("/first/mariadb-dump"));
    }

    #[test]
    fn the_newest_of_the_family_wins_and_an_older_mysqldump_is_named() {
        let c = choose(
            "8.0.36",
            vec![
                probed("/old/mysqldump", MYSQLDUMP_57),
                probed("/new/mysqldump", MYSQLDUMP_8),
            ],
        )
        .unwrap();
        assert_eq!(c.tool.path, PathBuf::from("/new/mysqldump"));
        let c = choose("8.4.0", vec![probed("/old/mysqldump", MYSQLDUMP_57)]).unwrap();
        assert!(c
            .warning
            .unwrap()
            .contains("older than the MySQL 8.4 server"));
    }
}
