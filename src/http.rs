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
