//! Applying a stored `pg_dumpall --globals-only` to a cluster.
//!
//! Fed to psql as it is, that script fails on any real cluster: it starts
//! with `CREATE ROLE postgres;`, which exists everywhere. So the script is
//! planned against the destination: missing roles are created with their
//! attributes, settings and memberships; roles that exist are left exactly
//! as they are (and listed); a tablespace whose directory the destination
//! server lacks is skipped with a warning. pg_dumpall writes each statement
//! on one line, which is what makes this planning safe.

use crate::sql::split_ident;
use std::collections::HashSet;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct GlobalsPlan {
    /// Role statements, run in one transaction.
    pub roles_sql: Vec<String>,
    /// Tablespace statements (CREATE TABLESPACE cannot run in a transaction).
    pub tablespaces_sql: Vec<String>,
    pub created_roles: Vec<String>,
    pub existing_roles: Vec<String>,
    pub created_tablespaces: Vec<String>,
    /// (tablespace, why it was skipped)
    pub skipped_tablespaces: Vec<(String, String)>,
}

/// What the destination says about a tablespace the dump creates.
pub enum TablespaceCheck {
    Create,
    Exists,
    Skip(String),
}

/// Plan `script` against a destination that has `existing` roles; `check`
/// is asked about each tablespace (name, location).
pub fn plan(
    script: &str,
    existing: &HashSet<String>,
    mut check: impl FnMut(&str, &str) -> TablespaceCheck,
) -> GlobalsPlan {
    let mut p = GlobalsPlan::default();
    let mut skip_tablespaces: HashSet<String> = HashSet::new();
    for line in script.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("--") || l.starts_with('\\') {
            continue; // comments; psql meta-commands (\restrict) are ours to run or not
        }
        if l.starts_with("SET ") {
            p.roles_sql.push(l.to_string());
            continue;
        }
        if let Some(rest) = l.strip_prefix("CREATE ROLE ") {
            let name = split_ident(rest).0;
            if existing.contains(&name) {
                p.existing_roles.push(name);
            } else {
                p.created_roles.push(name);
                p.roles_sql.push(l.to_string());
            }
            continue;
        }
        if let Some(rest) = l
            .strip_prefix("ALTER ROLE ")
            .or_else(|| l.strip_prefix("COMMENT ON ROLE "))
            .or_else(|| l.strip_prefix("SECURITY LABEL FOR "))
        {
            let name = split_ident(rest).0;
            if !existing.contains(&name) {
                p.roles_sql.push(l.to_string());
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("CREATE TABLESPACE ") {
            let (name, after) = split_ident(rest);
            let location = after
                .split_once("LOCATION '")
                .map(|(_, loc)| loc.trim_end_matches("';").replace("''", "'"))
                .unwrap_or_default();
            match check(&name, &location) {
                TablespaceCheck::Create => {
                    p.created_tablespaces.push(name);
                    p.tablespaces_sql.push(l.to_string());
                }
                TablespaceCheck::Exists => {
                    skip_tablespaces.insert(name);
                }
                TablespaceCheck::Skip(why) => {
                    skip_tablespaces.insert(name.clone());
                    p.skipped_tablespaces.push((name, why));
                }
            }
            continue;
        }
        if let Some(rest) = l
            .strip_prefix("ALTER TABLESPACE ")
            .or_else(|| l.strip_prefix("COMMENT ON TABLESPACE "))
        {
            if !skip_tablespaces.contains(&split_ident(rest).0) {
                p.tablespaces_sql.push(l.to_string());
            }
            continue;
        }
        if l.starts_with("GRANT ") || l.starts_with("REVOKE ") {
            if let Some((_, on)) = l.split_once(" ON TABLESPACE ") {
                if !skip_tablespaces.contains(&split_ident(on).0) {
                    p.tablespaces_sql.push(l.to_string());
                }
                continue;
            }
            // A membership: only roles this restore creates gain one.
            let member = l
                .split_once(" TO ")
                .or_else(|| l.split_once(" FROM "))
                .map(|(_, m)| split_ident(m).0)
                .unwrap_or_default();
            if !existing.contains(&member) {
                p.roles_sql.push(l.to_string());
            }
            continue;
        }
        // Anything else pg_dumpall writes belongs with the roles.
        p.roles_sql.push(l.to_string());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBALS: &str = "--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict abc\n\nSET default_transaction_read_only = off;\n\n\
CREATE ROLE \"Ann O'Neil\";\n\
ALTER ROLE \"Ann O'Neil\" WITH NOSUPERUSER CREATEDB LOGIN CONNECTION LIMIT 3 PASSWORD 'SCRAM-SHA-256$x';\n\
CREATE ROLE grp;\nALTER ROLE grp WITH NOLOGIN;\n\
CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER LOGIN;\n\
ALTER ROLE \"Ann O'Neil\" SET work_mem TO '5MB';\n\
ALTER ROLE postgres SET work_mem TO '1GB';\n\
GRANT grp TO \"Ann O'Neil\" WITH INHERIT TRUE GRANTED BY postgres;\n\
GRANT grp TO postgres;\n\
CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';\n\
GRANT ALL ON TABLESPACE fast TO grp;\n\
CREATE TABLESPACE old OWNER postgres LOCATION '/srv/old';\n\
\\unrestrict abc\n--\n-- PostgreSQL database cluster dump complete\n--\n";

    #[test]
    fn existing_roles_stay_untouched_and_missing_tablespaces_are_skipped() {
        let existing: HashSet<String> = ["postgres".to_string()].into();
        let p = plan(GLOBALS, &existing, |name, location| match name {
            "fast" => TablespaceCheck::Skip(format!("{location} does not exist")),
            _ => TablespaceCheck::Create,
        });
        assert_eq!(p.created_roles, vec!["Ann O'Neil", "grp"]);
        assert_eq!(p.existing_roles, vec!["postgres"]);
        assert_eq!(
            p.roles_sql,
            vec![
                "SET default_transaction_read_only = off;",
                "CREATE ROLE \"Ann O'Neil\";",
                "ALTER ROLE \"Ann O'Neil\" WITH NOSUPERUSER CREATEDB LOGIN CONNECTION LIMIT 3 PASSWORD 'SCRAM-SHA-256$x';",
                "CREATE ROLE grp;",
                "ALTER ROLE grp WITH NOLOGIN;",
                "ALTER ROLE \"Ann O'Neil\" SET work_mem TO '5MB';",
                "GRANT grp TO \"Ann O'Neil\" WITH INHERIT TRUE GRANTED BY postgres;",
            ]
        );
        assert_eq!(
            p.tablespaces_sql,
            vec!["CREATE TABLESPACE old OWNER postgres LOCATION '/srv/old';"]
        );
        assert_eq!(
            p.skipped_tablespaces,
            vec![("fast".to_string(), "/mnt/fast does not exist".to_string())]
        );
    }
}
