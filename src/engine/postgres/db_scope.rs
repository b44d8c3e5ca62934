//! A plain SQL dump loads into the restore's own database and no other.
//!
//! `pg_dump -C` writes `CREATE DATABASE shop …;` and `\connect shop`, then
//! the database's own statements (`ALTER DATABASE shop SET …`, `COMMENT ON
//! DATABASE shop …`, `GRANT … ON DATABASE shop …`). Run as they are, they
//! would write the live `shop` instead of the database being restored. So,
//! at statement starts, the creation, `DROP DATABASE` and the one
//! `\connect` after it are left out, and the statements about the file's
//! own database are pointed at the restore's database. Whatever would still
//! reach another database (a second `\connect`, as `pg_dumpall` writes; a
//! statement about another database; any other psql meta-command, which
//! could run a shell command) stops the restore before it reaches psql.

use crate::sql::ident;

/// What becomes of one statement's first line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    Rewrite(String),
    /// Refused: the restore stops, naming the statement.
    Refuse(String),
}

/// Which database the file says it is, and where its statements go.
#[derive(Debug, Clone)]
pub struct DbScope {
    /// The database being loaded (the restore's working name).
    into: String,
    /// The database the file created (`CREATE DATABASE`), once seen.
    file_db: Option<String>,
    connected: bool,
}

impl DbScope {
    pub fn new(into: &str) -> DbScope {
        DbScope {
            into: into.to_string(),
            file_db: None,
            connected: false,
        }
    }

    /// The first line of a statement (pg_dump starts each on a new line).
    pub fn judge(&mut self, line: &str) -> Verdict {
        let l = line.trim_end();
        if let Some(meta) = l.strip_prefix('\\') {
            return self.meta(meta, l);
        }
        if let Some(rest) = l.strip_prefix("CREATE DATABASE ") {
            return match (&self.file_db, parse_ident(rest)) {
                (None, Some((name, _))) if !self.connected => {
                    tracing::info!(
                        database = %name,
                        "the dump file creates database {name}: its CREATE DATABASE and \\connect are left out, it loads into the restore's database"
                    );
                    self.file_db = Some(name);
                    Verdict::Drop
                }
                _ => refuse(l, "it creates a second database"),
            };
        }
        if l.starts_with("DROP DATABASE ") {
            return Verdict::Drop;
        }
        if l.starts_with("UPDATE pg_catalog.pg_database ") {
            return refuse(l, "it changes the cluster's database catalog");
        }
        let about = ["ALTER DATABASE ", "COMMENT ON DATABASE "]
            .iter()
            .find_map(|p| l.strip_prefix(p).map(|rest| (l.len() - rest.len(), rest)))
            .or_else(|| {
                let grant = l.starts_with("GRANT ")
                    || l.starts_with("REVOKE ")
                    || l.starts_with("SECURITY LABEL ");
                let at = l.find(" ON DATABASE ").filter(|_| grant)? + " ON DATABASE ".len();
                Some((at, &l[at..]))
            });
        let Some((at, rest)) = about else {
            return Verdict::Pass;
        };
        match parse_ident(rest) {
            Some((name, len)) if Some(&name) == self.file_db.as_ref() => Verdict::Rewrite(format!(
                "{}{}{}",
                &line[..at],
                ident(&self.into),
                &line[at + len..]
            )),
            _ => refuse(l, "it is about another database than the one restored"),
        }
    }

    fn meta(&mut self, meta: &str, line: &str) -> Verdict {
        let command = meta.split_whitespace().next().unwrap_or("");
        let arg = meta[command.len()..].trim();
        match command {
            "restrict" | "unrestrict" => Verdict::Pass,
            // pg_dump connects to the database it created, and again after
            // setting its properties (to make them take effect).
            "connect" | "c"
                if self.file_db.is_some() && connect_target(arg) == self.file_db =>
            {
                self.connected = true;
                Verdict::Drop
            }
            "connect" | "c" => refuse(
                line,
                "it connects to another database (a pg_dumpall file holds several: restore each from its own pg_dump)",
            ),
            _ => refuse(line, "a restore runs no psql meta-command"),
        }
    }
}

/// The database a `\connect` names, as pg_dump writes it: a plain name, or
/// `-reuse-previous=on "dbname='…'"` for a name that needs quoting.
fn connect_target(arg: &str) -> Option<String> {
    let Some(quoted) = arg.strip_prefix("-reuse-previous=on ") else {
        return Some(arg.to_string()).filter(|a| !a.is_empty() && !a.contains(' '));
    };
    let conninfo = quoted
        .strip_prefix('"')?
        .strip_suffix('"')?
        .replace("\"\"", "\"");
    let value = conninfo.strip_prefix("dbname='")?.strip_suffix('\'')?;
    let mut name = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        name.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(name)
}

fn refuse(line: &str, why: &str) -> Verdict {
    let shown: String = line.chars().take(120).collect();
    Verdict::Refuse(format!(
        "the dump file's statement `{shown}` was refused: {why}; nothing of it was run"
    ))
}

/// An identifier at the start of `s` as pg_dump prints it: the name and
/// how many bytes it took.
fn parse_ident(s: &str) -> Option<(String, usize)> {
    let (name, rest) = crate::sql::split_ident(s);
    (!name.is_empty()).then(|| (name, s.len() - rest.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_create_connect_and_database_statements_point_at_the_restore() {
        let mut s = DbScope::new("work_1");
        assert_eq!(s.judge("\\restrict abc"), Verdict::Pass);
        assert_eq!(s.judge("DROP DATABASE shop;"), Verdict::Drop);
        assert_eq!(
            s.judge("CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8';"),
            Verdict::Drop
        );
        assert_eq!(
            s.judge("ALTER DATABASE shop OWNER TO alice;"),
            Verdict::Rewrite("ALTER DATABASE \"work_1\" OWNER TO alice;".into())
        );
        assert_eq!(s.judge("\\connect shop"), Verdict::Drop);
        assert_eq!(
            s.judge("ALTER DATABASE shop SET work_mem TO '7MB';"),
            Verdict::Rewrite("ALTER DATABASE \"work_1\" SET work_mem TO '7MB';".into())
        );
        assert_eq!(
            s.judge("\\connect shop"),
            Verdict::Drop,
            "again, after its settings"
        );
        assert_eq!(
            s.judge("COMMENT ON DATABASE shop IS 'the shop';"),
            Verdict::Rewrite("COMMENT ON DATABASE \"work_1\" IS 'the shop';".into())
        );
        assert_eq!(
            s.judge("GRANT CONNECT ON DATABASE shop TO bob;"),
            Verdict::Rewrite("GRANT CONNECT ON DATABASE \"work_1\" TO bob;".into())
        );
        assert_eq!(s.judge("CREATE TABLE t (a int);"), Verdict::Pass);
        // pg_dumpall goes on to the next database: refused.
        assert!(matches!(s.judge("\\connect other"), Verdict::Refuse(_)));
        assert!(matches!(
            s.judge("ALTER DATABASE other SET x = 1;"),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn quoted_names_and_statements_without_a_create_are_judged() {
        let mut s = DbScope::new("w");
        // No CREATE DATABASE: the file names no database of its own.
        assert!(matches!(s.judge("\\connect shop"), Verdict::Refuse(_)));
        assert!(matches!(
            s.judge("ALTER DATABASE shop SET x = 1;"),
            Verdict::Refuse(_)
        ));
        assert!(matches!(s.judge("\\! rm -rf /"), Verdict::Refuse(_)));
        let mut s = DbScope::new("w");
        assert_eq!(s.judge("CREATE DATABASE \"Sh\"\"op\" WITH;"), Verdict::Drop);
        assert_eq!(
            s.judge("ALTER DATABASE \"Sh\"\"op\" SET search_path TO a;"),
            Verdict::Rewrite("ALTER DATABASE \"w\" SET search_path TO a;".into())
        );
        assert_eq!(
            s.judge("\\connect -reuse-previous=on \"dbname='Sh\"\"op'\""),
            Verdict::Drop
        );
        let Verdict::Refuse(why) = s.judge("CREATE DATABASE again;") else {
            panic!("a second database is refused")
        };
        assert!(why.contains("CREATE DATABASE again"), "{why}");
    }
}
