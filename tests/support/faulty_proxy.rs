//! An HTTP proxy on loopback that forwards to a real server but, for the
//! first N matching requests, either answers with an injected error the way
//! an overloaded S3 does (503 SlowDown) without forwarding, or forwards the
//! request and then loses the server's answer (the server acted; the client
//! sees a 500), to prove retries resend the same bytes and that a retry of
//! our own completed write is recognised.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response, StatusCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub struct FaultyProxy {
    pub url: String,
    pub state: Arc<ProxyState>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 SlowDown; the server never sees the request.
    Reject,
    /// Forward, let the server act, then answer 500 instead of its reply.
    LoseResponse,
    /// Close the connection without an answer; the server never sees it.
    ResetBefore,
    /// Forward, let the server act, then close the connection unanswered.
    ResetAfter,
    /// Forward after a pause (a slow network).
    Delay(std::time::Duration),
    /// Forward without the `If-None-Match` header (a server or proxy that
    /// ignores conditional writes).
    DropIfNoneMatch,
}

pub struct ProxyState {
    upstream: String,
    /// Only requests whose "METHOD path?query" contains this (every part of
    /// it, when it is written `a && b`) are failed.
    pub match_query: String,
    pub fault: Fault,
    pub failures_left: AtomicU32,
    pub failed: AtomicU32,
    pub forwarded: AtomicU32,
    client: reqwest::Client,
}

impl FaultyProxy {
    pub async fn start(upstream: &str, match_query: &str, failures: u32) -> FaultyProxy {
        Self::start_with(upstream, match_query, failures, Fault::Reject).await
    }

    pub async fn start_with(
        upstream: &str,
        match_query: &str,
        failures: u32,
        fault: Fault,
    ) -> FaultyProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            match_query: match_query.to_string(),
            fault,
            failures_left: AtomicU32::new(failures),
            failed: AtomicU32::new(0),
            forwarded: AtomicU32::new(0),
            client: {
                backstop::http::install_crypto_provider();
                reqwest::Client::new()
            },
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FaultyProxy {
            url: format!("http://{addr}"),
            state,
        }
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response<Body> {
    let line = format!(
        "{} {}?{}",
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or("")
    );
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 256 << 20).await.unwrap();
    let inject = state
        .match_query
        .split(" && ")
        .all(|part| line.contains(part))
        && state
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if inject && state.fault == Fault::ResetBefore {
        state.failed.fetch_add(1, Ordering::SeqCst);
        reset_connection();
    }
    if let (true, Fault::Delay(pause)) = (inject, state.fault) {
        state.failed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(pause).await;
    }
    if inject && state.fault == Fault::Reject {
        state.failed.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/xml")
            .body(Body::from(
                "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            ))
            .unwrap();
    }
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = state
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", state.upstream),
        )
        .body(body);
    for (name, value) in &parts.headers {
        if inject && state.fault == Fault::DropIfNoneMatch && name == "if-none-match" {
            state.failed.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        // Host stays as the client signed it.
        if name != "content-length" && name != "transfer-encoding" {
            upstream = upstream.header(name, value);
        }
    }
    let resp = upstream.send().await.unwrap();
    if inject && state.fault == Fault::ResetAfter {
        let _ = resp.bytes().await;
        state.failed.fetch_add(1, Ordering::SeqCst);
        reset_connection();
    }
    if inject && state.fault == Fault::LoseResponse {
        // The server acted; its answer never reaches the client.
        let _ = resp.bytes().await;
        state.failed.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("content-type", "application/xml")
            .body(Body::from(
                "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
            ))
            .unwrap();
    }
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name != "transfer-encoding" && name != "content-length" {
            out = out.header(name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
    }
    out.body(Body::from(resp.bytes().await.unwrap())).unwrap()
}

/// End this connection without an answer: the handler's task unwinds and
/// hyper drops the connection, so the client sees it closed mid-request.
fn reset_connection() -> ! {
    std::panic::resume_unwind(Box::new("faulty proxy: connection reset"))
}
