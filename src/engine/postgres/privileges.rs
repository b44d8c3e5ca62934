//! Whether the backup role may read everything pg_dump will ask for, so
//! that `backstop check` names a missing privilege (and the GRANT that
//! gives it) before a nightly backup fails on it. pg_dump itself fails
//! loudly on the first table it may not read; this finds all of them at
//! once, through role membership as the server sees it.

use super::tools::PgConn;
use std::path::Path;

/// User schemas, tables, sequences and views the role cannot read (up to
/// 20), and whether it is a superuser. Tables of extensions are left out:
/// pg_dump does not dump their rows.
const SQL: &str = "\
SELECT 'super', rolsuper::text FROM pg_roles WHERE rolname = current_user
UNION ALL
SELECT * FROM (
  SELECT 'schema', quote_ident(n.nspname) FROM pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    AND NOT has_schema_privilege(n.oid, 'USAGE')
  UNION ALL
  SELECT 'relation', quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'm', 'S', 'v', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    AND NOT has_table_privilege(c.oid, 'SELECT')
  LIMIT 20) missing;";

/// Ok: what the role may read; Err: what it may not, and the fix.
pub fn check(
    conn: &PgConn,
    psql: &Path,
    globals: bool,
    role_passwords: bool,
) -> anyhow::Result<String> {
    let out = conn.query(psql, SQL)?;
    judge(&conn.user, &conn.database, globals, role_passwords, &out)
}

fn judge(
    user: &str,
    database: &str,
    globals: bool,
    role_passwords: bool,
    rows: &str,
) -> anyhow::Result<String> {
    let mut superuser = false;
    let (mut schemas, mut relations) = (Vec::new(), Vec::new());
    for line in rows.lines() {
        match line.split_once('|') {
            Some(("super", v)) => superuser = v == "true",
            Some(("schema", name)) => schemas.push(name.to_string()),
            Some(("relation", name)) => relations.push(name.to_string()),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    if !schemas.is_empty() {
        problems.push(format!("USAGE on schema {}", schemas.join(", ")));
    }
    if !relations.is_empty() {
        problems.push(format!(
            "SELECT on {}{}",
            relations.join(", "),
            if relations.len() == 20 { ", …" } else { "" }
        ));
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "role {user} may not read everything in {database} (pg_dump would fail): it lacks {}. \
             Fix: GRANT pg_read_all_data TO {user}; (PostgreSQL 14+), or grant those privileges",
            problems.join("; ")
        );
    }
    if globals && role_passwords && !superuser {
        anyhow::bail!(
            "role {user} is not a superuser, and globals = true dumps the roles' passwords, which only a \
             superuser may read (pg_authid): set role_passwords = false in the target to dump the roles \
             without their passwords, or back up as a superuser"
        );
    }
    Ok(match superuser {
        true => format!("role {user} is a superuser"),
        false => format!("role {user} may read every schema, table and sequence of {database}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_unreadable_relation_and_the_grant() {
        let e = judge(
            "backup",
            "shop",
            false,
            true,
            "super|false\nschema|private\nrelation|public.orders\nrelation|public.orders_id_seq\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("USAGE on schema private"), "{e}");
        assert!(
            e.contains("SELECT on public.orders, public.orders_id_seq"),
            "{e}"
        );
        assert!(e.contains("GRANT pg_read_all_data TO backup;"), "{e}");
    }

    #[test]
    fn globals_with_passwords_need_a_superuser() {
        let e = judge("backup", "shop", true, true, "super|false\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("role_passwords = false"), "{e}");
        assert!(judge("backup", "shop", true, false, "super|false\n").is_ok());
        assert!(judge("postgres", "shop", true, true, "super|true\n").is_ok());
    }
}
