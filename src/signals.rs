//! SIGTERM (Kubernetes stopping the pod) and SIGINT (Ctrl-C) cancel the run:
//! children are killed and uploads aborted by whoever holds the token. A
//! second signal exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn install() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("{name} received: stopping, aborting uploads");
        t.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::error!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}
