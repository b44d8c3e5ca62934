//! The one HTTP client setup every backend and notifier shares: rustls with
//! a single crypto provider (ring), installed once per process, so no two
//! TLS stacks or providers end up in the binary.

use std::sync::Once;
use std::time::Duration;

pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How long a request may wait with nothing received before it counts as
/// stalled (and its caller retries it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client with sane timeouts; the idle timeout bounds a stalled transfer
/// without bounding a long healthy one.
pub fn client() -> anyhow::Result<reqwest::Client> {
    client_with_idle_timeout(IDLE_TIMEOUT)
}

/// [`client`] with its own idle timeout (a storage's `idle_timeout`).
pub fn client_with_idle_timeout(idle: Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(idle)
        .user_agent(concat!("backstop/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("building HTTP client: {e}"))
}

/// A request's error with its causes (DNS, TLS, connect, timeout: what
/// "error sending request" alone hides) and without its URL, which may
/// carry a signature.
pub fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    /// Regression: Box network errors said only `error sending request`.
    #[tokio::test]
    async fn a_failed_request_names_its_cause_and_not_its_url() {
        super::install_crypto_provider();
        let client = super::client().unwrap();
        // Nothing listens on port 1 of loopback.
        let err = client
            .get("http://127.0.0.1:1/secret-path?sig=abc")
            .send()
            .await
            .unwrap_err();
        let text = super::cause(err);
        assert!(text.contains("error sending request"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
        assert!(!text.contains("sig=abc"), "{text}");
    }
}
