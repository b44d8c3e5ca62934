//! Retrying one request with exponential backoff and full jitter.
//!
//! Backends call this per request (a part upload, a list page), because only
//! the backend knows which bytes a retry must resend; the policy and the
//! timing live here, once.

use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(20),
        }
    }
}

/// What one try came to.
pub enum Attempt<T, E> {
    Done(T),
    /// Worth another try; the server may say how long to wait.
    Transient(E, Option<Duration>),
    Permanent(E),
}

impl RetryPolicy {
    /// The wait before try number `n + 1` (n ≥ 1): random in
    /// [0, min(max, base·2ⁿ⁻¹)], or what the server asked for.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max * 3);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }

    pub async fn run<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match op().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Permanent(e) => return Err(e),
                Attempt::Transient(e, after) => {
                    if n >= self.attempts {
                        return Err(e);
                    }
                    let wait = self.delay(n, after);
                    tracing::warn!(
                        attempt = n,
                        wait_ms = wait.as_millis() as u64,
                        "{what}: {e}; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// What an HTTP answer means for the caller, decided once for every client
/// here (S3, Box, webhooks and pings): callers add only what is theirs
/// (S3's `SlowDown` code, Box's 401 refresh and 409/202 answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpClass {
    Success,
    /// 404: the key or object is not there.
    NotFound,
    /// 412: a conditional write found the key taken.
    Exists,
    /// 429 or 5xx: try again, after what the server asked for if it did.
    Transient(Option<Duration>),
    /// Anything else: trying again will not help.
    Permanent,
}

pub fn classify(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> HttpClass {
    use reqwest::StatusCode;
    if status.is_success() {
        HttpClass::Success
    } else if status == StatusCode::NOT_FOUND {
        HttpClass::NotFound
    } else if status == StatusCode::PRECONDITION_FAILED {
        HttpClass::Exists
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        HttpClass::Transient(retry_after(headers))
    } else {
        HttpClass::Permanent
    }
}

/// Parse a `Retry-After` header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Why a failed backup is not worth another try, when it is not: what a
/// database server or storage said that only a person can change (a wrong
/// password, an unknown role or database, a missing permission, a bucket
/// that does not exist). Decided here once, from the messages every engine
/// and storage pass on; refused connections, resets, timeouts and 5xx
/// answers match nothing here and are retried.
pub fn permanent_cause(text: &str) -> Option<&'static str> {
    const PERMANENT: &[(&str, &str)] = &[
        // PostgreSQL (libpq, server)
        ("password authentication failed", "authentication failed"),
        ("no password supplied", "authentication failed"),
        (
            "no pg_hba.conf entry",
            "the server refuses this client (pg_hba.conf)",
        ),
        (
            "pg_hba.conf rejects",
            "the server refuses this client (pg_hba.conf)",
        ),
        // Connecting as an unknown role or to an unknown database (FATAL
        // at connect), not a relation dropped while pg_dump ran (an ERROR
        // that the next try does not meet).
        ("FATAL:  role \"", "the role does not exist"),
        ("FATAL:  database \"", "the database does not exist"),
        ("` does not exist on ", "the database does not exist"),
        ("permission denied", "a permission is missing"),
        ("must be superuser", "a permission is missing"),
        (
            "server version mismatch",
            "the dump tool does not fit the server",
        ),
        // MariaDB/MySQL
        ("Access denied for user", "authentication failed"),
        ("Unknown database", "the database does not exist"),
        ("command denied to user", "a permission is missing"),
        ("privilege(s) for this operation", "a permission is missing"),
        (
            "lacks privileges a complete dump",
            "a permission is missing",
        ),
        // SQLite and local storage
        (
            "unable to open database file",
            "the database file cannot be opened",
        ),
        ("Permission denied (os error 13)", "a permission is missing"),
        // S3-compatible storage
        ("InvalidAccessKeyId", "the storage refuses the credentials"),
        (
            "SignatureDoesNotMatch",
            "the storage refuses the credentials",
        ),
        ("AccessDenied", "the storage denies access"),
        ("NoSuchBucket", "the bucket does not exist"),
        ("403 Forbidden", "the storage denies access"),
        ("401 Unauthorized", "the storage refuses the credentials"),
    ];
    PERMANENT
        .iter()
        .find(|(pattern, _)| text.contains(pattern))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn http_answers_are_classified_once_for_every_client() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let none = HeaderMap::new();
        let mut after = HeaderMap::new();
        after.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let c =
            |code: u16, h: &HeaderMap| classify(reqwest::StatusCode::from_u16(code).unwrap(), h);
        assert_eq!(c(200, &none), HttpClass::Success);
        assert_eq!(c(204, &none), HttpClass::Success);
        assert_eq!(c(404, &none), HttpClass::NotFound);
        assert_eq!(c(412, &none), HttpClass::Exists);
        assert_eq!(
            c(429, &after),
            HttpClass::Transient(Some(Duration::from_secs(7)))
        );
        assert_eq!(c(503, &none), HttpClass::Transient(None));
        assert_eq!(c(400, &none), HttpClass::Permanent);
        assert_eq!(c(403, &none), HttpClass::Permanent);
    }

    #[test]
    fn permanent_failures_are_told_from_ones_that_can_heal() {
        for permanent in [
            "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"app\"",
            "FATAL:  role \"nobody\" does not exist",
            "FATAL:  database \"shopp\" does not exist",
            "ERROR:  permission denied for table secrets",
            "mariadb-dump: Got error: 1045: \"Access denied for user 'app'@'localhost' (using password: YES)\"",
            "mariadb-dump: Got error: 1049: \"Unknown database 'shopp'\"",
            "S3 PUT k: 403 Forbidden: <Code>AccessDenied</Code>",
            "S3 LIST: <Code>NoSuchBucket</Code>",
        ] {
            assert!(permanent_cause(permanent).is_some(), "{permanent}");
        }
        for transient in [
            "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused",
            "FATAL:  the database system is starting up",
            "Can't connect to server on '127.0.0.1' (111)",
            "S3 PUT k: 503 Service Unavailable",
            "error sending request: operation timed out",
            "connection reset by peer",
            "pg_dump: error: query failed: ERROR:  relation \"public.t\" does not exist",
        ] {
            assert_eq!(permanent_cause(transient), None, "{transient}");
        }
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            assert!(p.delay(1, None) <= Duration::from_millis(100));
            assert!(p.delay(3, None) <= Duration::from_millis(400));
            assert!(p.delay(30, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success_permanent_ones_are_not() {
        let p = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let tries = AtomicU32::new(0);
        let r: Result<u32, String> = p
            .run("op", || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Attempt::Transient("503".to_string(), None),
                    n => Attempt::Done(n),
                }
            })
            .await;
        assert_eq!(r, Ok(2));
        let tries = AtomicU32::new(0);
        let r: Result<(), String> = p
            .run("op", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Attempt::Permanent("403".to_string())
            })
            .await;
        assert_eq!(r, Err("403".into()));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        let tries = AtomicU32::new(0);
        let r: Result<(), String> = p
            .run("op", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Attempt::Transient("500".to_string(), None)
            })
            .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 4, "bounded number of tries");
    }
}
