//! A fake Kubernetes API server for the Secret token store: Secret GET, PUT
//! and PATCH (merge patch) with `resourceVersion` and 409 Conflict as the API
//! conventions document, and SelfSubjectAccessReview.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct KubeState {
    /// (namespace, name) → (resourceVersion, data as base64 strings)
    pub secrets: HashMap<(String, String), (u64, serde_json::Map<String, serde_json::Value>)>,
    pub allow_update: bool,
    pub conflicts: u32,
    pub puts: u32,
    next_rv: u64,
}

pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let state = Arc::new(Mutex::new(KubeState {
            secrets: HashMap::new(),
            allow_update: true,
            conflicts: 0,
            puts: 0,
            next_rv: 100,
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeKube { url, state }
    }

    pub fn put_secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        use base64::Engine;
        let mut s = self.state.lock().unwrap();
        s.next_rv += 1;
        let mut data = serde_json::Map::new();
        data.insert(
            key.into(),
            base64::engine::general_purpose::STANDARD
                .encode(value)
                .into(),
        );
        let rv = s.next_rv;
        s.secrets.insert((ns.into(), name.into()), (rv, data));
    }

    pub fn secret_value(&self, ns: &str, name: &str, key: &str) -> String {
        use base64::Engine;
        let s = self.state.lock().unwrap();
        let b64 = s.secrets[&(ns.to_string(), name.to_string())].1[key]
            .as_str()
            .unwrap()
            .to_string();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    /// A kubeconfig file that points at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n    token: fake-sa-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n",
                self.url
            ),
        )
        .unwrap();
        p
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    json(
        code,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn secret_json(
    ns: &str,
    name: &str,
    rv: u64,
    data: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({"kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string()},
        "type": "Opaque", "data": data})
}

async fn handle(State(state): State<Arc<Mutex<KubeState>>>, req: Request) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut s = state.lock().unwrap();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]) => {
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["status"] = serde_json::json!({"allowed": s.allow_update});
            json(StatusCode::CREATED, v)
        }
        (m, ["api", "v1", "namespaces", ns, "secrets", name]) => {
            let key = (ns.to_string(), name.to_string());
            let Some((rv, data)) = s.secrets.get(&key).cloned() else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("secrets \"{name}\" not found"),
                );
            };
            match m {
                "GET" => json(StatusCode::OK, secret_json(ns, name, rv, &data)),
                "PUT" => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    if v["metadata"]["resourceVersion"].as_str() != Some(&rv.to_string()) {
                        s.conflicts += 1;
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!("Operation cannot be fulfilled on secrets \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                        );
                    }
                    s.puts += 1;
                    s.next_rv += 1;
                    let new_rv = s.next_rv;
                    let data = v["data"].as_object().cloned().unwrap_or_default();
                    s.secrets.insert(key, (new_rv, data.clone()));
                    json(StatusCode::OK, secret_json(ns, name, new_rv, &data))
                }
                "PATCH" => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    if let Some(want) = v["metadata"]["resourceVersion"].as_str() {
                        if want != rv.to_string() {
                            s.conflicts += 1;
                            return status(
                                StatusCode::CONFLICT,
                                "Conflict",
                                "the object has been modified".into(),
                            );
                        }
                    }
                    let mut data = data;
                    if let Some(patch) = v["data"].as_object() {
                        for (k, val) in patch {
                            if val.is_null() {
                                data.remove(k);
                            } else {
                                data.insert(k.clone(), val.clone());
                            }
                        }
                    }
                    s.next_rv += 1;
                    let new_rv = s.next_rv;
                    s.secrets.insert(key, (new_rv, data.clone()));
                    json(StatusCode::OK, secret_json(ns, name, new_rv, &data))
                }
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", m.into()),
            }
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", path),
    }
}
