//! A fake Box API for tests, following developer.box.com: single-use
//! refresh tokens (a reused one gets 400 invalid_grant), expiring access
//! tokens (401), folders with marker paging and 409 item_name_in_use, direct
//! upload (attributes before file), upload sessions (exact part_size,
//! Content-Range, Digest, 416/412, commit answering 202 + Retry-After the
//! first time), delete, download through a 302, and injected 429/500.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{Response, StatusCode};
use base64::Engine;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret-9d1e";
pub const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Clone)]
struct Item {
    kind: &'static str,
    name: String,
    parent: String,
    content: Vec<u8>,
}

struct UploadSession {
    folder: String,
    name: String,
    size: usize,
    parts: BTreeMap<usize, Vec<u8>>,
    commit_tries: u32,
}

#[derive(Default)]
pub struct Stats {
    pub refreshes: u32,
    pub ccg_grants: u32,
    pub invalid_grants: u32,
    pub direct_uploads: u32,
    pub sessions: u32,
    pub parts: u32,
    pub commit_202s: u32,
    pub aborted_sessions: u32,
    pub unauthorized: u32,
    pub injected: u32,
}

pub struct BoxState {
    pub base: String,
    items: HashMap<String, Item>,
    next_id: u64,
    /// access token → expiry (unix seconds)
    access: HashMap<String, i64>,
    refresh: HashSet<String>,
    codes: HashSet<String>,
    sessions: HashMap<String, UploadSession>,
    /// Lifetime of access tokens handed out, in seconds.
    pub access_ttl: i64,
    /// Fail the next N requests whose path contains the string.
    pub inject: Vec<(String, StatusCode, u32)>,
    pub stats: Stats,
}

pub struct FakeBox {
    pub url: String,
    pub state: Arc<Mutex<BoxState>>,
}

impl FakeBox {
    pub async fn start() -> FakeBox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut items = HashMap::new();
        items.insert(
            "0".to_string(),
            Item {
                kind: "folder",
                name: "All Files".into(),
                parent: String::new(),
                content: vec![],
            },
        );
        let state = Arc::new(Mutex::new(BoxState {
            base: url.clone(),
            items,
            next_id: 1000,
            access: HashMap::new(),
            refresh: HashSet::new(),
            codes: HashSet::new(),
            sessions: HashMap::new(),
            access_ttl: 3600,
            inject: Vec::new(),
            stats: Stats::default(),
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeBox { url, state }
    }

    /// A refresh token as a person's login would leave it.
    pub fn issue_refresh_token(&self) -> String {
        let token = format!("refresh-{}", fastrand::u64(..));
        self.state.lock().unwrap().refresh.insert(token.clone());
        token
    }

    /// An authorization code, as Box hands the browser after consent.
    pub fn issue_code(&self) -> String {
        let code = format!("code-{}", fastrand::u64(..));
        self.state.lock().unwrap().codes.insert(code.clone());
        code
    }

    pub fn refresh_token_is_valid(&self, token: &str) -> bool {
        self.state.lock().unwrap().refresh.contains(token)
    }

    pub fn valid_refresh_tokens(&self) -> usize {
        self.state.lock().unwrap().refresh.len()
    }

    pub fn expire_access_tokens(&self) {
        self.state.lock().unwrap().access.clear();
    }

    pub fn inject(&self, path_contains: &str, status: StatusCode, times: u32) {
        self.state
            .lock()
            .unwrap()
            .inject
            .push((path_contains.to_string(), status, times));
    }

    /// Paths of every file, "folder/sub/name".
    pub fn files(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut out: Vec<String> = s
            .items
            .iter()
            .filter(|(_, i)| i.kind == "file")
            .map(|(id, _)| s.path_of(id))
            .collect();
        out.sort();
        out
    }

    pub fn open_sessions(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }

    pub fn stat<T>(&self, f: impl FnOnce(&Stats) -> T) -> T {
        f(&self.state.lock().unwrap().stats)
    }

    pub fn config_toml(&self, folder: &str, auth: &str, spool: &std::path::Path) -> String {
        format!(
            "[storage]\ntype = \"box\"\nfolder = \"{folder}\"\nspool_dir = \"{spool}\"\napi_url = \"{url}/2.0\"\nupload_url = \"{url}/api/2.0\"\ntoken_url = \"{url}/oauth2/token\"\nauthorize_url = \"{url}/authorize\"\n\n[storage.auth]\n{auth}\n",
            spool = spool.display(),
            url = self.url
        )
    }
}

impl BoxState {
    fn path_of(&self, id: &str) -> String {
        let mut parts = vec![];
        let mut cur = id.to_string();
        while cur != "0" {
            let item = &self.items[&cur];
            parts.push(item.name.clone());
            cur = item.parent.clone();
        }
        parts.reverse();
        parts.join("/")
    }

    fn child(&self, parent: &str, name: &str) -> Option<String> {
        self.items
            .iter()
            .find(|(_, i)| i.parent == parent && i.name == name)
            .map(|(id, _)| id.clone())
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn file_json(&self, id: &str) -> serde_json::Value {
        let i = &self.items[id];
        serde_json::json!({"type": i.kind, "id": id, "name": i.name, "size": i.content.len(), "modified_at": "2026-11-28T10:00:00-08:00"})
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({"type": "error", "status": status.as_u16(), "code": code, "message": code}),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn handle(State(state): State<Arc<Mutex<BoxState>>>, req: Request) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let headers = req.headers().clone();
    {
        let mut s = state.lock().unwrap();
        if let Some(rule) = s
            .inject
            .iter_mut()
            .find(|(p, _, n)| *n > 0 && path.contains(p.as_str()))
        {
            rule.2 -= 1;
            let status = rule.1;
            s.stats.injected += 1;
            let mut r = error(
                status,
                if status == StatusCode::TOO_MANY_REQUESTS {
                    "rate_limit_exceeded"
                } else {
                    "internal_server_error"
                },
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
    }
    if path == "/oauth2/token" {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        return token(&state, &form);
    }
    if let Some(id) = path.strip_prefix("/download/") {
        let s = state.lock().unwrap();
        return match s.items.get(id) {
            Some(i) => Response::builder()
                .status(200)
                .body(Body::from(i.content.clone()))
                .unwrap(),
            None => error(StatusCode::NOT_FOUND, "not_found"),
        };
    }
    // Everything else needs a valid access token.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    {
        let mut s = state.lock().unwrap();
        if s.access.get(bearer).is_none_or(|exp| *exp <= now()) {
            s.stats.unauthorized += 1;
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized");
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"Service\", error=\"invalid_token\""
                    .parse()
                    .unwrap(),
            );
            return r;
        }
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["2.0", "folders", id, "items"]) => list(&state, id, &query),
        ("POST", ["2.0", "folders"]) => {
            let v: serde_json::Value = serde_json::from_slice(
                &axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap(),
            )
            .unwrap();
            let (name, parent) = (
                v["name"].as_str().unwrap().to_string(),
                v["parent"]["id"].as_str().unwrap().to_string(),
            );
            let mut s = state.lock().unwrap();
            if !s.items.contains_key(&parent) {
                return error(StatusCode::NOT_FOUND, "not_found");
            }
            if s.child(&parent, &name).is_some() {
                return error(StatusCode::CONFLICT, "item_name_in_use");
            }
            let id = s.new_id();
            s.items.insert(
                id.clone(),
                Item {
                    kind: "folder",
                    name,
                    parent,
                    content: vec![],
                },
            );
            json(StatusCode::CREATED, s.file_json(&id))
        }
        ("DELETE", ["2.0", "files", id]) => {
            let mut s = state.lock().unwrap();
            match s.items.get(*id) {
                Some(i) if i.kind == "file" => {
                    s.items.remove(*id);
                    Response::builder().status(204).body(Body::empty()).unwrap()
                }
                _ => error(StatusCode::NOT_FOUND, "not_found"),
            }
        }
        ("GET", ["2.0", "files", id, "content"]) => {
            let s = state.lock().unwrap();
            if !s.items.contains_key(*id) {
                return error(StatusCode::NOT_FOUND, "not_found");
            }
            Response::builder()
                .status(302)
                .header("location", format!("{}/download/{id}", s.base))
                .body(Body::empty())
                .unwrap()
        }
        ("POST", ["api", "2.0", "files", "content"]) => {
            let md5 = headers
                .get("content-md5")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let mut mp = Multipart::from_request(req, &()).await.unwrap();
            let mut attributes: Option<serde_json::Value> = None;
            let mut data: Option<Vec<u8>> = None;
            while let Some(field) = mp.next_field().await.unwrap() {
                match field.name() {
                    Some("attributes") => {
                        attributes =
                            Some(serde_json::from_str(&field.text().await.unwrap()).unwrap())
                    }
                    Some("file") => {
                        if attributes.is_none() {
                            return error(StatusCode::BAD_REQUEST, "metadata_after_file_contents");
                        }
                        data = Some(field.bytes().await.unwrap().to_vec());
                    }
                    _ => {}
                }
            }
            let (Some(attr), Some(data)) = (attributes, data) else {
                return error(StatusCode::BAD_REQUEST, "bad_request");
            };
            if let Some(m) = md5 {
                if m != hex::encode(Sha1::digest(&data)) {
                    return error(StatusCode::BAD_REQUEST, "bad_digest");
                }
            }
            let (name, parent) = (
                attr["name"].as_str().unwrap().to_string(),
                attr["parent"]["id"].as_str().unwrap().to_string(),
            );
            let mut s = state.lock().unwrap();
            if s.child(&parent, &name).is_some() {
                return error(StatusCode::CONFLICT, "item_name_in_use");
            }
            s.stats.direct_uploads += 1;
            let id = s.new_id();
            s.items.insert(
                id.clone(),
                Item {
                    kind: "file",
                    name,
                    parent,
                    content: data,
                },
            );
            json(
                StatusCode::CREATED,
                serde_json::json!({"total_count": 1, "entries": [s.file_json(&id)]}),
            )
        }
        ("POST", ["api", "2.0", "files", "upload_sessions"]) => {
            let v: serde_json::Value = serde_json::from_slice(
                &axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap(),
            )
            .unwrap();
            let size = v["file_size"].as_u64().unwrap() as usize;
            let (name, folder) = (
                v["file_name"].as_str().unwrap().to_string(),
                v["folder_id"].as_str().unwrap().to_string(),
            );
            let mut s = state.lock().unwrap();
            if size < 20_000_000 {
                return error(StatusCode::BAD_REQUEST, "file_size_too_small");
            }
            if s.child(&folder, &name).is_some() {
                return error(StatusCode::CONFLICT, "item_name_in_use");
            }
            s.stats.sessions += 1;
            let id = format!("S{}", s.new_id());
            s.sessions.insert(
                id.clone(),
                UploadSession {
                    folder,
                    name,
                    size,
                    parts: BTreeMap::new(),
                    commit_tries: 0,
                },
            );
            let ep = format!("{}/api/2.0/files/upload_sessions/{id}", s.base);
            json(
                StatusCode::CREATED,
                serde_json::json!({
                    "id": id, "type": "upload_session", "part_size": PART_SIZE, "total_parts": size.div_ceil(PART_SIZE),
                    "num_parts_processed": 0,
                    "session_endpoints": {"upload_part": ep, "commit": format!("{ep}/commit"), "abort": ep,
                        "list_parts": format!("{ep}/parts"), "status": ep, "log_event": format!("{ep}/log")}
                }),
            )
        }
        ("PUT", ["api", "2.0", "files", "upload_sessions", id]) => {
            let body = axum::body::to_bytes(req.into_body(), 64 << 20)
                .await
                .unwrap()
                .to_vec();
            let range = headers
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let digest = headers
                .get("digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut s = state.lock().unwrap();
            let Some(session) = s.sessions.get_mut(*id) else {
                return error(StatusCode::NOT_FOUND, "not_found");
            };
            let parsed = range.strip_prefix("bytes ").and_then(|r| {
                let (span, total) = r.split_once('/')?;
                let (a, b) = span.split_once('-')?;
                Some((
                    a.parse::<usize>().ok()?,
                    b.parse::<usize>().ok()?,
                    total.parse::<usize>().ok()?,
                ))
            });
            let Some((a, b, total)) = parsed else {
                return error(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");
            };
            let last = b + 1 == session.size;
            if total != session.size
                || a % PART_SIZE != 0
                || b < a
                || body.len() != b - a + 1
                || (!last && body.len() != PART_SIZE)
                || b >= session.size
            {
                return error(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");
            }
            let sha = Sha1::digest(&body);
            if digest
                != format!(
                    "sha={}",
                    base64::engine::general_purpose::STANDARD.encode(sha)
                )
            {
                return error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
            }
            session.parts.insert(a, body.clone());
            s.stats.parts += 1;
            json(
                StatusCode::OK,
                serde_json::json!({"part": {"part_id": format!("{:08X}", a / PART_SIZE), "offset": a, "size": body.len(),
                    "sha1": hex::encode(sha)}}),
            )
        }
        ("DELETE", ["api", "2.0", "files", "upload_sessions", id]) => {
            let mut s = state.lock().unwrap();
            if s.sessions.remove(*id).is_none() {
                return error(StatusCode::NOT_FOUND, "not_found");
            }
            s.stats.aborted_sessions += 1;
            Response::builder().status(204).body(Body::empty()).unwrap()
        }
        ("POST", ["api", "2.0", "files", "upload_sessions", id, "commit"]) => {
            let digest = headers
                .get("digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body: serde_json::Value = serde_json::from_slice(
                &axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap(),
            )
            .unwrap();
            let mut s = state.lock().unwrap();
            let Some(session) = s.sessions.get_mut(*id) else {
                return error(StatusCode::NOT_FOUND, "not_found");
            };
            session.commit_tries += 1;
            if session.commit_tries == 1 {
                s.stats.commit_202s += 1;
                return Response::builder()
                    .status(202)
                    .header("retry-after", "1")
                    .body(Body::empty())
                    .unwrap();
            }
            let listed = body["parts"].as_array().map(|p| p.len()).unwrap_or(0);
            let data: Vec<u8> = session.parts.values().flatten().copied().collect();
            if listed != session.parts.len() || data.len() != session.size {
                return error(StatusCode::BAD_REQUEST, "bad_request");
            }
            if digest
                != format!(
                    "sha={}",
                    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&data))
                )
            {
                return error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
            }
            let session = s.sessions.remove(*id).unwrap();
            if s.child(&session.folder, &session.name).is_some() {
                return error(StatusCode::CONFLICT, "item_name_in_use");
            }
            let fid = s.new_id();
            s.items.insert(
                fid.clone(),
                Item {
                    kind: "file",
                    name: session.name,
                    parent: session.folder,
                    content: data,
                },
            );
            json(
                StatusCode::CREATED,
                serde_json::json!({"entries": [s.file_json(&fid)]}),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

fn token(state: &Arc<Mutex<BoxState>>, form: &HashMap<String, String>) -> Response<Body> {
    let mut s = state.lock().unwrap();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_client", "error_description": "The client credentials are invalid"}),
        );
    }
    let ttl = s.access_ttl;
    let access = format!("access-{}", fastrand::u64(..));
    match get("grant_type") {
        "refresh_token" => {
            // Single use: the old one is revoked by this refresh.
            if !s.refresh.remove(get("refresh_token")) {
                s.stats.invalid_grants += 1;
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}),
                );
            }
            s.stats.refreshes += 1;
            let refresh = format!("refresh-{}", fastrand::u64(..));
            s.refresh.insert(refresh.clone());
            s.access.insert(access.clone(), now() + ttl);
            json(
                StatusCode::OK,
                serde_json::json!({"access_token": access, "expires_in": ttl, "token_type": "bearer", "refresh_token": refresh, "restricted_to": []}),
            )
        }
        "authorization_code" => {
            if get("redirect_uri").is_empty() || !s.codes.remove(get("code")) {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid_grant", "error_description": "Auth code doesn't exist or is invalid for the client"}),
                );
            }
            let refresh = format!("refresh-{}", fastrand::u64(..));
            s.refresh.insert(refresh.clone());
            s.access.insert(access.clone(), now() + ttl);
            json(
                StatusCode::OK,
                serde_json::json!({"access_token": access, "expires_in": ttl, "token_type": "bearer", "refresh_token": refresh}),
            )
        }
        "client_credentials" => {
            if get("box_subject_type") != "enterprise" && get("box_subject_type") != "user" {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid_request", "error_description": "box_subject_type"}),
                );
            }
            s.stats.ccg_grants += 1;
            s.access.insert(access.clone(), now() + ttl);
            json(
                StatusCode::OK,
                serde_json::json!({"access_token": access, "expires_in": ttl, "token_type": "bearer", "restricted_to": []}),
            )
        }
        _ => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "unsupported_grant_type"}),
        ),
    }
}

fn list(
    state: &Arc<Mutex<BoxState>>,
    folder: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let s = state.lock().unwrap();
    if s.items.get(folder).is_none_or(|i| i.kind != "folder") {
        return error(StatusCode::NOT_FOUND, "not_found");
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(1000);
    let start: usize = query
        .get("marker")
        .and_then(|m| m.strip_prefix("m").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let mut ids: Vec<&String> = s
        .items
        .iter()
        .filter(|(_, i)| i.parent == folder)
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    let page: Vec<serde_json::Value> = ids
        .iter()
        .skip(start)
        .take(limit)
        .map(|id| s.file_json(id))
        .collect();
    let next = if start + limit < ids.len() {
        serde_json::json!(format!("m{}", start + limit))
    } else {
        serde_json::Value::Null
    };
    json(
        StatusCode::OK,
        serde_json::json!({"entries": page, "limit": limit, "next_marker": next}),
    )
}
