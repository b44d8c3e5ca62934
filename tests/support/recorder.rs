//! A local HTTP server that records every request (webhooks, pings,
//! Pushgateway) and answers as told: a status code, or never.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct Recorder {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone)]
struct Behaviour {
    status: u16,
    hang: bool,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    /// Answers every request with `status`; with `hang`, never answers.
    pub async fn start(status: u16, hang: bool) -> Recorder {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Behaviour {
            status,
            hang,
            log: Arc::clone(&log),
        };
        let app = axum::Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder {
            url: format!("http://{addr}"),
            requests: log,
        }
    }

    pub fn take(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn record(State(b): State<Behaviour>, req: Request) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap();
    b.log.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if b.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(b.status).unwrap())
        .body(Body::from("ok"))
        .unwrap()
}
