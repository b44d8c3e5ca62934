//! postgres:// URLs, for `restore --into`, `verify --scratch` and `init`.

use super::tools::PgConn;
use crate::engine::url::percent_decode;
use crate::error::usage;
use crate::secret::Secret;

/// Parse postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]; errors never
/// echo the URL, which may hold a password.
pub fn parse_pg_url(text: &str) -> anyhow::Result<PgConn> {
    let url =
        url::Url::parse(text).map_err(|e| usage(format!("not a valid postgres:// URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(usage(
            "the URL must start with postgres:// or postgresql://",
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| usage("the postgres:// URL names no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| usage("invalid percent-encoding in the postgres:// URL"))
    };
    let database = decode(url.path().trim_start_matches('/'))?;
    if database.is_empty() || database.contains('/') {
        return Err(usage("the postgres:// URL must end with /DATABASE"));
    }
    let user = if url.username().is_empty() {
        std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into())
    } else {
        decode(url.username())?
    };
    let password = match url.password() {
        Some(p) => Some(Secret::new(decode(p)?)),
        None => std::env::var("PGPASSWORD").ok().map(Secret::new),
    };
    let mut sslmode = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => sslmode = Some(v.into_owned()),
            other => {
                return Err(usage(format!(
                    "the postgres:// URL has a parameter backstop does not know: `{other}` (only sslmode)"
                )))
            }
        }
    }
    Ok(PgConn {
        host,
        port: url.port().unwrap_or(5432),
        user,
        password,
        database,
        sslmode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restore_urls() {
        let c =
            parse_pg_url("postgres://app:p%40ss@db.example:6543/my%20db?sslmode=require").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(c.database, "my db");
        assert_eq!(c.password.unwrap().expose(), "p@ss");
        assert_eq!(c.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn bad_urls_are_usage_errors_without_the_password() {
        for bad in [
            "ftp://u:hunter2@h/db",
            "postgres://u:hunter2@h/",
            "postgres://u:hunter2@h/db?x=1",
        ] {
            let err = parse_pg_url(bad).unwrap_err();
            assert_eq!(
                crate::error::exit_kind_of(&err),
                crate::error::ExitKind::Usage,
                "{bad}"
            );
            assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
        }
    }
}
