//! Whether the backup user may see everything a complete dump holds.
//!
//! mariadb-dump and mysqldump leave out what the user may not see and
//! still exit 0: without TRIGGER the triggers are missing, without SELECT
//! on `mysql.proc` (MariaDB) or SHOW_ROUTINE (MySQL 8) the procedures and
//! functions are. Only views (SHOW VIEW) and events (EVENT) fail loudly.
//! So the grants are read before every dump: when the user's direct grants
//! are all it has, a missing one fails the target, naming the GRANT that
//! fixes it; with roles granted (which these views do not expand) it is a
//! warning. `backstop check` shows the same.

use super::flavour::Flavour;
use super::tools::{self, literal, MyConn, MyTools};

/// What a complete dump of one database needs, and what it loses without.
const PER_DATABASE: &[(&str, &str)] = &[
    ("SELECT", "the rows"),
    ("SHOW VIEW", "the views (the dump fails)"),
    ("TRIGGER", "the triggers (left out without an error)"),
    ("EVENT", "the events (the dump fails)"),
];

#[derive(Debug, PartialEq)]
pub struct Missing {
    /// The privileges missing, in GRANT syntax.
    pub grants: Vec<String>,
    /// What the dump would lose, for people.
    pub losses: Vec<&'static str>,
    /// Roles are granted: the grants seen may not be all the user has.
    pub roles_granted: bool,
}

/// The missing privileges, from the user's grants as the server lists them
/// (`GRANTEE`, `TABLE_SCHEMA`/`TABLE_NAME` or `*`, `PRIVILEGE_TYPE`).
pub fn missing(
    flavour: Flavour,
    grants: &[(String, String, String)],
    db: &str,
    roles_granted: bool,
) -> Option<Missing> {
    let has = |privilege: &str, schema: &str, table: &str| {
        grants.iter().any(|(s, t, p)| {
            (p == privilege || p == "ALL PRIVILEGES")
                && (s == "*" || s == schema)
                && (t == "*" || t == table)
        })
    };
    let mut out = Missing {
        grants: Vec::new(),
        losses: Vec::new(),
        roles_granted,
    };
    let mut on_db = Vec::new();
    for (privilege, loss) in PER_DATABASE {
        if !has(privilege, db, "*") {
            on_db.push(*privilege);
            out.losses.push(loss);
        }
    }
    if !on_db.is_empty() {
        out.grants.push(format!(
            "{} ON `{}`.*",
            on_db.join(", "),
            db.replace('`', "``")
        ));
    }
    let routines = match flavour {
        Flavour::MariaDb => has("SELECT", "mysql", "proc") || has("SHOW CREATE ROUTINE", db, "*"),
        Flavour::MySql => has("SELECT", "*", "*") || has("SHOW_ROUTINE", "*", "*"),
    };
    if !routines {
        out.grants.push(match flavour {
            Flavour::MariaDb => "SELECT ON `mysql`.`proc`".to_string(),
            Flavour::MySql => "SHOW_ROUTINE ON *.*".to_string(),
        });
        out.losses
            .push("the procedures and functions (left out without an error)");
    }
    (!out.grants.is_empty()).then_some(out)
}

impl Missing {
    pub fn describe(&self, user: &str, db: &str) -> String {
        let grants: Vec<String> = self
            .grants
            .iter()
            .map(|g| format!("GRANT {g} TO '{user}'@'%';"))
            .collect();
        format!(
            "user {user} lacks privileges a complete dump of {db} needs, so it would lose {}: {}{}",
            self.losses.join(", "),
            grants.join(" "),
            match self.roles_granted {
                true => " (roles are granted to it, which may hold these: check SHOW GRANTS)",
                false => "",
            }
        )
    }
}

/// Read the user's grants and judge them for `db`. Err: a query failed (an
/// old server without these views): the caller warns and goes on.
pub fn check(
    tools: &MyTools,
    conn: &MyConn,
    flavour: Flavour,
    db: &str,
) -> anyhow::Result<Option<Missing>> {
    // information_schema names the grantee as 'user'@'host'.
    let grantee = "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')";
    // A database-level grant names a LIKE pattern (`shop\_%`, or the name
    // with its `_` escaped): the database matches it, not equals it.
    let sql = format!(
        "SELECT '*', '*', PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {grantee} \
         UNION ALL SELECT {db}, '*', PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {grantee} AND {db} LIKE TABLE_SCHEMA \
         UNION ALL SELECT 'mysql', '*', PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {grantee} AND 'mysql' LIKE TABLE_SCHEMA \
         UNION ALL SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = {grantee} AND TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'proc';",
        db = literal(db)
    );
    let rows = tools::query(tools, conn, &sql)?;
    let grants: Vec<(String, String, String)> = rows
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
        })
        .collect();
    let roles = tools::query(
        tools,
        conn,
        "SELECT COUNT(*) FROM information_schema.APPLICABLE_ROLES;",
    )
    .map(|n| n.trim() != "0")
    // No such view (MySQL before 8.0.19): roles cannot be ruled out.
    .unwrap_or(true);
    Ok(missing(flavour, &grants, db, roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str, t: &str, p: &str) -> (String, String, String) {
        (s.into(), t.into(), p.into())
    }

    #[test]
    fn select_alone_loses_triggers_and_routines_silently() {
        let m = missing(Flavour::MariaDb, &[g("shop", "*", "SELECT")], "shop", false).unwrap();
        assert_eq!(
            m.grants,
            vec![
                "SHOW VIEW, TRIGGER, EVENT ON `shop`.*",
                "SELECT ON `mysql`.`proc`"
            ]
        );
        let text = m.describe("backup", "shop");
        assert!(
            text.contains("the triggers (left out without an error)"),
            "{text}"
        );
        assert!(
            text.contains("GRANT SELECT ON `mysql`.`proc` TO 'backup'@'%';"),
            "{text}"
        );
    }

    #[test]
    fn global_grants_cover_every_database() {
        let all: Vec<_> = ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"]
            .iter()
            .map(|p| g("*", "*", p))
            .collect();
        assert_eq!(missing(Flavour::MySql, &all, "shop", false), None);
        assert_eq!(
            missing(Flavour::MariaDb, &all, "shop", false),
            None,
            "global SELECT reads mysql.proc too"
        );
    }

    #[test]
    fn the_documented_grants_suffice() {
        let mut grants: Vec<_> = ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"]
            .iter()
            .map(|p| g("shop", "*", p))
            .collect();
        grants.push(g("mysql", "proc", "SELECT"));
        assert_eq!(missing(Flavour::MariaDb, &grants, "shop", false), None);
        let m = missing(Flavour::MySql, &grants, "shop", true).unwrap();
        assert_eq!(m.grants, vec!["SHOW_ROUTINE ON *.*"]);
        assert!(m.describe("backup", "shop").contains("roles are granted"));
    }
}
