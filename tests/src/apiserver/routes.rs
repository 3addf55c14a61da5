//! The HTTP side: requests routed to the objects they name, as the real API
//! server's paths and query parameters say.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::objects::{self, forbidden_message, status};
use super::{State, Stored, discovery, exec};

pub type Body = Full<Bytes>;

pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = &mut shutdown => return,
        };
        let st = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, st.clone()));
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
                .ok();
        });
    }
}

pub fn json(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

/// A request's whole body (empty if it cannot be read).
async fn body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-decoding (and `+` as space) of a query value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn new(state: &Arc<Mutex<State>>) -> InFlight {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, Infallible> {
    let _counted = InFlight::new(&state);
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = req.uri().path().to_string();
    let q = query(&req);
    state.lock().unwrap().log.push(format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    ));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let method = req.method().clone();
    let resp = match (method.clone(), parts.as_slice()) {
        (Method::GET, ["api"]) => json(StatusCode::OK, &discovery::core_versions(&host)),
        (Method::GET, ["apis"]) => json(StatusCode::OK, &discovery::groups()),
        (Method::GET, ["api", "v1"]) => found(discovery::resources("v1")),
        (Method::GET, ["apis", group, "v1"]) => found(discovery::resources(&format!("{group}/v1"))),
        (Method::GET, ["api", "v1", "namespaces", ns]) => get_namespace(&state, ns),
        (Method::GET, ["api", "v1", "nodes"]) => list_nodes(&state, &q),
        (Method::GET, ["api", "v1", "nodes", name]) => get_node(&state, name),
        (Method::GET, ["api", "v1", "pods"]) => list_pods(&state, None, &q),
        (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => list_pods(&state, Some(ns), &q),
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => get_pod(&state, ns, name),
        (Method::POST, ["api", "v1", "namespaces", ns, "pods"]) => {
            let ns = ns.to_string();
            let body = body(req).await;
            create_pod(&state, &ns, &body)
        }
        (
            Method::POST,
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ],
        ) => {
            let json_body = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .is_none_or(|t| t.starts_with("application/json"));
            let body = body(req).await;
            access_review(&state, &body, json_body)
        }
        (Method::DELETE, ["api", "v1", "namespaces", ns, "pods", name]) => {
            delete_pod(&state, ns, name)
        }
        (Method::GET, ["apis", "apps", "v1", "namespaces", ns, "daemonsets", name]) => {
            get_daemonset(&state, ns, name)
        }
        (Method::GET | Method::POST, ["api", "v1", "namespaces", ns, "pods", name, "exec"]) => {
            let (ns, name) = (ns.to_string(), name.to_string());
            exec::upgrade(req, state.clone(), &ns, &name, &q)
        }
        _ => no_such_path(),
    };
    Ok(resp)
}

/// 403 when the test forbids `verb` on `resource`.
pub fn refuse(
    state: &Arc<Mutex<State>>,
    verb: &str,
    resource: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> Option<Response<Body>> {
    if !state.lock().unwrap().is_forbidden(verb, resource, ns) {
        return None;
    }
    let kind = resource.split('/').next().unwrap_or(resource);
    let m = forbidden_message(verb, resource, name, ns);
    Some(json(
        StatusCode::FORBIDDEN,
        &status(403, "Forbidden", &m, kind, name),
    ))
}

fn not_found(kind: &str, name: &str) -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            &format!("{kind} \"{name}\" not found"),
            kind,
            Some(name),
        ),
    )
}

fn list_nodes(state: &Arc<Mutex<State>>, q: &[(String, String)]) -> Response<Body> {
    if let Some(r) = refuse(state, "list", "nodes", None, None) {
        return r;
    }
    let s = state.lock().unwrap();
    let items = s
        .nodes
        .iter()
        .map(|n| objects::node(&n.name, n.ready, &n.address))
        .filter(|o| objects::matches(o, param(q, "labelSelector"), param(q, "fieldSelector")))
        .collect();
    json(StatusCode::OK, &objects::list("NodeList", items))
}

fn get_node(state: &Arc<Mutex<State>>, name: &str) -> Response<Body> {
    if let Some(r) = refuse(state, "get", "nodes", Some(name), None) {
        return r;
    }
    let s = state.lock().unwrap();
    match s.nodes.iter().find(|n| n.name == name) {
        Some(n) => json(StatusCode::OK, &objects::node(&n.name, n.ready, &n.address)),
        None => not_found("nodes", name),
    }
}

/// A stored pod as it is now: created ones are Pending for a while, or
/// never pull their image.
/// A namespace exists where pods are, and the cluster's own ones (kubectl
/// asks for it when a pod is not found, to say which is missing).
fn get_namespace(state: &Arc<Mutex<State>>, ns: &str) -> Response<Body> {
    let s = state.lock().unwrap();
    let known = ["default", "kube-system", "calitrace"].contains(&ns)
        || s.pods.keys().any(|(n, _)| n == ns);
    if !known {
        return not_found("namespaces", ns);
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": { "name": ns },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" },
        }),
    )
}

/// The real server's answer to a path it does not serve.
fn no_such_path() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            "",
            None,
        ),
    )
}

/// A discovery document, or the real server's 404.
fn found(doc: Option<Value>) -> Response<Body> {
    match doc {
        Some(d) => json(StatusCode::OK, &d),
        None => no_such_path(),
    }
}

fn current(s: &State, p: &Stored) -> Value {
    let mut o = p.object.clone();
    if o["status"].is_null() {
        let node = o["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        let node_ip = s
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.address.clone())
            .unwrap_or_default();
        let pull_fails = s.image_pull_fails || s.image_pull_fails_on.contains(&node);
        o["status"] = if pull_fails {
            let image = o["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string();
            objects::waiting_status(
                "ImagePullBackOff",
                &format!(
                    "Back-off pulling image \"{image}\": ErrImagePull: failed to resolve reference \"{image}\": not found"
                ),
            )
        } else if p.created.elapsed() < s.pending_for {
            objects::waiting_status("ContainerCreating", "")
        } else {
            objects::running_status(&node_ip)
        };
    }
    o
}

fn list_pods(
    state: &Arc<Mutex<State>>,
    ns: Option<&str>,
    q: &[(String, String)],
) -> Response<Body> {
    if let Some(r) = refuse(state, "list", "pods", None, ns) {
        return r;
    }
    let s = state.lock().unwrap();
    let items = s
        .pods
        .iter()
        .filter(|((pns, _), _)| ns.is_none_or(|n| n == pns))
        // The selectors read metadata and spec, which `current` keeps.
        .filter(|(_, p)| {
            objects::matches(
                &p.object,
                param(q, "labelSelector"),
                param(q, "fieldSelector"),
            )
        })
        .map(|(_, p)| current(&s, p))
        .collect();
    json(StatusCode::OK, &objects::list("PodList", items))
}

fn get_daemonset(state: &Arc<Mutex<State>>, ns: &str, name: &str) -> Response<Body> {
    if let Some(r) = refuse(state, "get", "daemonsets", Some(name), Some(ns)) {
        return r;
    }
    let s = state.lock().unwrap();
    match s.daemonsets.get(&(ns.to_string(), name.to_string())) {
        Some(ds) => json(StatusCode::OK, ds),
        None => not_found("daemonsets", name),
    }
}

fn get_pod(state: &Arc<Mutex<State>>, ns: &str, name: &str) -> Response<Body> {
    if let Some(r) = refuse(state, "get", "pods", Some(name), Some(ns)) {
        return r;
    }
    let s = state.lock().unwrap();
    match s.pods.get(&(ns.to_string(), name.to_string())) {
        Some(p) => json(StatusCode::OK, &current(&s, p)),
        None => not_found("pods", name),
    }
}

/// SelfSubjectAccessReview: would the caller's request be allowed? Every
/// authenticated user may ask (Kubernetes' `system:basic-user`), and the
/// answer is this server's own RBAC decision.
fn access_review(state: &Arc<Mutex<State>>, body: &[u8], json_body: bool) -> Response<Body> {
    if !json_body {
        // kubectl's typed clients send protobuf, which this server does not
        // speak (calitrace's client sends JSON); a real server would.
        return json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &status(
                415,
                "UnsupportedMediaType",
                "the stand-in API server reads JSON bodies only",
                "",
                None,
            ),
        );
    }
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", "not a SelfSubjectAccessReview", "", None),
        );
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let (verb, resource) = (
        attrs["verb"].as_str().unwrap_or(""),
        attrs["resource"].as_str().unwrap_or(""),
    );
    let resource = match attrs["subresource"].as_str() {
        Some(sub) if !sub.is_empty() => format!("{resource}/{sub}"),
        _ => resource.to_string(),
    };
    let allowed = !state
        .lock()
        .unwrap()
        .is_forbidden(verb, &resource, attrs["namespace"].as_str());
    review["status"] = serde_json::json!({ "allowed": allowed });
    json(StatusCode::CREATED, &review)
}

fn create_pod(state: &Arc<Mutex<State>>, ns: &str, body: &[u8]) -> Response<Body> {
    if let Some(r) = refuse(state, "create", "pods", None, Some(ns)) {
        return r;
    }
    let Ok(mut pod) = serde_json::from_slice::<Value>(body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", "not a pod", "pods", None),
        );
    };
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut s = state.lock().unwrap();
    if let Some(refused) = objects::admission(&s, ns, &name, &pod) {
        return refused;
    }
    if s.pods.contains_key(&(ns.to_string(), name.clone())) {
        let m = format!("pods \"{name}\" already exists");
        return json(
            StatusCode::CONFLICT,
            &status(409, "AlreadyExists", &m, "pods", Some(&name)),
        );
    }
    pod["metadata"]["namespace"] = ns.into();
    pod["metadata"]["uid"] = format!("uid-{name}").into();
    pod["status"] = Value::Null;
    s.created.push(format!("{ns}/{name}"));
    s.created_pods.push(pod.clone());
    s.pods.insert(
        (ns.to_string(), name),
        Stored {
            object: pod.clone(),
            created: Instant::now(),
        },
    );
    pod["status"] = objects::waiting_status("ContainerCreating", "");
    json(StatusCode::CREATED, &pod)
}

fn delete_pod(state: &Arc<Mutex<State>>, ns: &str, name: &str) -> Response<Body> {
    if let Some(r) = refuse(state, "delete", "pods", Some(name), Some(ns)) {
        return r;
    }
    match super::kubelet::delete(state, ns, name) {
        Some(p) => {
            let s = state.lock().unwrap();
            let mut o = current(&s, &p);
            o["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z".into();
            json(StatusCode::OK, &o)
        }
        None => not_found("pods", name),
    }
}
