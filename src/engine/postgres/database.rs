//! The properties of a PostgreSQL database that live outside what pg_dump
//! writes for it: encoding, locale and provider, owner, ACL, settings
//! (database-wide and per role), comment, connection limit, tablespace.
//!
//! They are read at backup time into the manifest, and a restore creates its
//! database with them, so `restore --create` brings back the database as it
//! was — a SQL_ASCII or LATIN1 database is not silently turned into UTF8, and
//! `REVOKE CONNECT … FROM PUBLIC` is not silently lost. pg_dump's plain
//! output has none of this; its custom archive has some of it, but
//! `pg_restore --create` can only use the original name.

use super::tools::PgConn;
use crate::sql::{ident, literal};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSetting {
    /// None for `ALTER DATABASE … SET`, a role for `ALTER ROLE … IN DATABASE`.
    pub role: Option<String>,
    /// `name=value` as pg_db_role_setting stores them.
    pub config: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgDatabaseProps {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `libc`, `icu` or `builtin` (PostgreSQL 15+; None before).
    pub locale_provider: Option<String>,
    /// The ICU or builtin locale, when the provider uses one.
    pub locale: Option<String>,
    pub icu_rules: Option<String>,
    pub owner: String,
    /// `datacl` items (`grantee=privs/grantor`); None is the default ACL.
    pub acl: Option<Vec<String>>,
    pub connection_limit: i64,
    pub tablespace: String,
    pub comment: Option<String>,
    pub settings: Vec<RoleSetting>,
}

/// One query that works on every supported server: `row_to_json` of the
/// pg_database row carries whichever locale columns this version has.
const CAPTURE_SQL: &str = "SELECT json_build_object(
  'row', row_to_json(d),
  'owner', pg_get_userbyid(d.datdba),
  'encoding', pg_encoding_to_char(d.encoding),
  'tablespace', (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace),
  'comment', shobj_description(d.oid, 'pg_database'),
  'settings', (SELECT coalesce(json_agg(json_build_object(
        'role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
        'config', s.setconfig)), '[]')
      FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
) FROM pg_database d WHERE d.datname = current_database();";

/// Read the properties of the database `conn` points at.
pub fn capture(conn: &PgConn, psql: &Path) -> anyhow::Result<PgDatabaseProps> {
    let out = conn.query(psql, CAPTURE_SQL)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| anyhow::anyhow!("unexpected database properties from the server: {e}"))?;
    let row = &v["row"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let provider = match row["datlocprovider"].as_str() {
        Some("c") => Some("libc".to_string()),
        Some("i") => Some("icu".to_string()),
        Some("b") => Some("builtin".to_string()),
        _ => None,
    };
    Ok(PgDatabaseProps {
        encoding: text(&v["encoding"]).unwrap_or_else(|| "UTF8".into()),
        collate: text(&row["datcollate"]).unwrap_or_default(),
        ctype: text(&row["datctype"]).unwrap_or_default(),
        locale: text(&row["datlocale"]).or_else(|| text(&row["daticulocale"])),
        locale_provider: provider,
        icu_rules: text(&row["daticurules"]),
        owner: text(&v["owner"]).unwrap_or_default(),
        acl: row["datacl"].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        }),
        connection_limit: row["datconnlimit"].as_i64().unwrap_or(-1),
        tablespace: text(&v["tablespace"]).unwrap_or_else(|| "pg_default".into()),
        comment: text(&v["comment"]),
        settings: serde_json::from_value(v["settings"].clone()).unwrap_or_default(),
    })
}

pub use crate::restore::Fidelity;

impl PgDatabaseProps {
    /// Roles the restore needs on the destination.
    pub fn roles(&self, f: Fidelity) -> Vec<String> {
        let mut roles = Vec::new();
        if !f.no_owner {
            roles.push(self.owner.clone());
            roles.extend(self.settings.iter().filter_map(|s| s.role.clone()));
        }
        if !f.no_acl {
            for item in self.acl.iter().flatten() {
                if let Some(grantee) = parse_acl_item(item).map(|a| a.grantee) {
                    roles.extend(grantee);
                }
            }
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// `CREATE DATABASE` for a new database `name` with these properties.
    pub fn create_sql(&self, name: &str, f: Fidelity) -> String {
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {}",
            ident(name),
            literal(&self.encoding)
        );
        if f.server_locale {
            // A non-UTF8 encoding needs a matching locale; C always fits.
            if !self.encoding.eq_ignore_ascii_case("UTF8") {
                sql.push_str(" LOCALE 'C'");
            }
        } else {
            match self.locale_provider.as_deref() {
                Some(p @ ("icu" | "builtin")) => {
                    sql.push_str(&format!(" LOCALE_PROVIDER {p}"));
                    if let Some(l) = &self.locale {
                        let key = if p == "icu" {
                            "ICU_LOCALE"
                        } else {
                            "BUILTIN_LOCALE"
                        };
                        sql.push_str(&format!(" {key} {}", literal(l)));
                    }
                    if let Some(r) = &self.icu_rules {
                        sql.push_str(&format!(" ICU_RULES {}", literal(r)));
                    }
                }
                Some("libc") => sql.push_str(" LOCALE_PROVIDER libc"),
                _ => {}
            }
            sql.push_str(&format!(
                " LC_COLLATE {} LC_CTYPE {}",
                literal(&self.collate),
                literal(&self.ctype)
            ));
        }
        if !f.no_owner {
            sql.push_str(&format!(" OWNER {}", ident(&self.owner)));
        }
        if !f.no_tablespaces && self.tablespace != "pg_default" {
            sql.push_str(&format!(" TABLESPACE {}", ident(&self.tablespace)));
        }
        sql.push_str(&format!(" CONNECTION LIMIT {};", self.connection_limit));
        sql
    }

    /// What differs when the destination cannot create the database as
    /// the source had it, in words.
    pub fn describe_locale(&self) -> String {
        let mut s = format!(
            "encoding {}, LC_COLLATE {}, LC_CTYPE {}",
            self.encoding, self.collate, self.ctype
        );
        if let Some(p) = &self.locale_provider {
            s.push_str(&format!(", provider {p}"));
        }
        if let Some(l) = &self.locale {
            s.push_str(&format!(", locale {l}"));
        }
        s
    }

    /// Statements that give the restored database `name` the source's
    /// settings, comment and privileges; run after the data is in (a
    /// setting such as `default_transaction_read_only` would stop it).
    pub fn finish_sql(&self, name: &str, f: Fidelity) -> Vec<String> {
        let db = ident(name);
        let mut out = Vec::new();
        for s in &self.settings {
            if s.role.is_some() && f.no_owner {
                continue;
            }
            for item in &s.config {
                let Some((key, value)) = item.split_once('=') else {
                    continue;
                };
                let value = setting_value(key, value);
                out.push(match &s.role {
                    None => format!("ALTER DATABASE {db} SET {} TO {value};", ident(key)),
                    Some(r) => format!(
                        "ALTER ROLE {} IN DATABASE {db} SET {} TO {value};",
                        ident(r),
                        ident(key)
                    ),
                });
            }
        }
        if let Some(c) = &self.comment {
            out.push(format!("COMMENT ON DATABASE {db} IS {};", literal(c)));
        }
        if let (Some(acl), false) = (&self.acl, f.no_acl) {
            out.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC;"));
            if !f.no_owner {
                out.push(format!(
                    "REVOKE ALL ON DATABASE {db} FROM {};",
                    ident(&self.owner)
                ));
            }
            for item in acl.iter().filter_map(|i| parse_acl_item(i)) {
                let to = item.grantee.as_deref().map_or("PUBLIC".to_string(), ident);
                if f.no_owner && item.grantee.as_deref() == Some(self.owner.as_str()) {
                    continue;
                }
                if !item.privileges.is_empty() {
                    out.push(format!(
                        "GRANT {} ON DATABASE {db} TO {to};",
                        item.privileges.join(", ")
                    ));
                }
                if !item.grantable.is_empty() {
                    out.push(format!(
                        "GRANT {} ON DATABASE {db} TO {to} WITH GRANT OPTION;",
                        item.grantable.join(", ")
                    ));
                }
            }
        }
        out
    }
}

/// A setting's value as SQL. List settings (search_path and friends) are
/// stored as a list of identifiers and become a list of literals.
fn setting_value(key: &str, value: &str) -> String {
    const LISTS: [&str; 5] = [
        "search_path",
        "temp_tablespaces",
        "local_preload_libraries",
        "session_preload_libraries",
        "shared_preload_libraries",
    ];
    if !LISTS.contains(&key.to_ascii_lowercase().as_str()) {
        return literal(value);
    }
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() && !quoted => {}
            c => cur.push(c),
        }
    }
    items.push(cur);
    items
        .iter()
        .map(|i| literal(i))
        .collect::<Vec<_>>()
        .join(", ")
}

struct AclItem {
    /// None for PUBLIC.
    grantee: Option<String>,
    privileges: Vec<&'static str>,
    grantable: Vec<&'static str>,
}

/// `alice=CTc*/postgres` → grantee and privileges. Database privileges are
/// C (CREATE), T (TEMPORARY), c (CONNECT); `*` marks a grant option.
fn parse_acl_item(item: &str) -> Option<AclItem> {
    let (grantee, rest) = item.split_once('=')?;
    let privs = rest.split_once('/').map_or(rest, |(p, _)| p);
    let grantee = grantee.trim_matches('"').replace("\"\"", "\"");
    let mut item = AclItem {
        grantee: (!grantee.is_empty()).then_some(grantee),
        privileges: Vec::new(),
        grantable: Vec::new(),
    };
    let mut chars = privs.chars().peekable();
    while let Some(c) = chars.next() {
        let name = match c {
            'C' => "CREATE",
            'T' => "TEMPORARY",
            'c' => "CONNECT",
            _ => continue,
        };
        if chars.peek() == Some(&'*') {
            chars.next();
            item.grantable.push(name);
        } else {
            item.privileges.push(name);
        }
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> PgDatabaseProps {
        PgDatabaseProps {
            encoding: "LATIN1".into(),
            collate: "C".into(),
            ctype: "C".into(),
            locale_provider: Some("libc".into()),
            locale: None,
            icu_rules: None,
            owner: "app owner".into(),
            acl: Some(vec![
                "\"app owner\"=CTc/\"app owner\"".into(),
                "reader=c*/\"app owner\"".into(),
            ]),
            connection_limit: 7,
            tablespace: "pg_default".into(),
            comment: Some("it's prod".into()),
            settings: vec![
                RoleSetting {
                    role: None,
                    config: vec![
                        "search_path=app, \"My Schema\", public".into(),
                        "work_mem=8MB".into(),
                    ],
                },
                RoleSetting {
                    role: Some("reader".into()),
                    config: vec!["statement_timeout=5s".into()],
                },
            ],
        }
    }

    #[test]
    fn create_keeps_encoding_locale_owner_and_limit() {
        let sql = props().create_sql("new", Fidelity::default());
        assert_eq!(
            sql,
            "CREATE DATABASE \"new\" TEMPLATE template0 ENCODING 'LATIN1' LOCALE_PROVIDER libc \
             LC_COLLATE 'C' LC_CTYPE 'C' OWNER \"app owner\" CONNECTION LIMIT 7;"
        );
        let relaxed = props().create_sql(
            "new",
            Fidelity {
                no_owner: true,
                server_locale: true,
                ..Fidelity::default()
            },
        );
        assert_eq!(
            relaxed,
            "CREATE DATABASE \"new\" TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C' CONNECTION LIMIT 7;"
        );
    }

    #[test]
    fn finish_restores_settings_comment_and_acl() {
        let sql = props().finish_sql("new", Fidelity::default());
        assert_eq!(
            sql,
            vec![
                "ALTER DATABASE \"new\" SET \"search_path\" TO 'app', 'My Schema', 'public';",
                "ALTER DATABASE \"new\" SET \"work_mem\" TO '8MB';",
                "ALTER ROLE \"reader\" IN DATABASE \"new\" SET \"statement_timeout\" TO '5s';",
                "COMMENT ON DATABASE \"new\" IS 'it''s prod';",
                "REVOKE ALL ON DATABASE \"new\" FROM PUBLIC;",
                "REVOKE ALL ON DATABASE \"new\" FROM \"app owner\";",
                "GRANT CREATE, TEMPORARY, CONNECT ON DATABASE \"new\" TO \"app owner\";",
                "GRANT CONNECT ON DATABASE \"new\" TO \"reader\" WITH GRANT OPTION;",
            ]
        );
        assert_eq!(
            props().roles(Fidelity::default()),
            vec!["app owner", "reader"]
        );
        let bare = Fidelity {
            no_owner: true,
            no_acl: true,
            ..Fidelity::default()
        };
        assert!(props().roles(bare).is_empty());
        assert!(!props()
            .finish_sql("new", bare)
            .iter()
            .any(|s| s.contains("GRANT") || s.contains("ROLE")));
    }
}
