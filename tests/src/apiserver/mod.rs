//! A stand-in Kubernetes API server for `calitrace cluster --k8s`: plain
//! HTTP on 127.0.0.1, the real paths, query parameters, JSON objects and
//! Status errors the client uses, and exec over WebSocket with the
//! `v5.channel.k8s.io` / `v4.channel.k8s.io` subprotocols. An exec into an
//! agent pod runs the real `calitrace agent` in the lab node's netns, or on
//! a synthetic node ([`ApiServer::synthetic`]) streams that node's share of
//! a synthetic fleet's traffic.

mod discovery;
mod exec;
pub mod kubelet;
pub mod objects;
pub mod rbac;
mod routes;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Which exec subprotocols the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// v5 where offered, else v4 (as current API servers).
    V5,
    /// v4 only (API servers before 1.30).
    V4Only,
}

/// One node of the stand-in cluster.
#[derive(Debug, Clone)]
pub struct FakeNode {
    pub name: String,
    /// The lab netns its agents run in.
    pub netns: String,
    pub ready: bool,
    pub address: String,
}

/// A pod as stored: its object, and for ephemeral ones when it was made.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: Value,
    pub created: Instant,
}

/// What the server knows and how it behaves; tests change it freely.
pub struct State {
    pub nodes: Vec<FakeNode>,
    pub pods: BTreeMap<(String, String), Stored>,
    /// DaemonSets by (namespace, name), as `kubectl apply` left them.
    pub daemonsets: BTreeMap<(String, String), Value>,
    /// (verb, resource) pairs answered with 403 Forbidden.
    pub forbidden: Vec<(String, String)>,
    /// When set, only what these rules allow (everything else: 403).
    pub rbac: Option<Vec<rbac::Rule>>,
    /// Created pods stay Pending this long before they run.
    pub pending_for: Duration,
    /// Created pods never run: their image cannot be pulled.
    pub image_pull_fails: bool,
    /// Nodes where created pods cannot pull their image.
    pub image_pull_fails_on: Vec<String>,
    /// Pod Security admission: the level enforced per namespace (e.g.
    /// `baseline:latest`); a privileged pod created there is refused.
    pub pod_security: BTreeMap<String, String>,
    /// An admission webhook (name, message) that denies every pod created.
    pub webhook_denies: Option<(String, String)>,
    /// Nodes whose kubelet the server cannot dial: exec into their pods
    /// fails as a real API server's does (500, "error dialing backend").
    pub unreachable_kubelets: Vec<String>,
    pub protocols: Protocols,
    /// The calitrace binary that exec runs for `/usr/bin/calitrace`.
    pub calitrace: PathBuf,
    /// Every request: `VERB path?query`.
    pub log: Vec<String>,
    /// Every pod that was created, and every pod that was deleted.
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    /// Every pod created, as the client sent it.
    pub created_pods: Vec<Value>,
    /// The exec subprotocol each exec got.
    pub exec_protocols: Vec<String>,
    /// Where each pod's container keeps its files (a directory per pod).
    pub containers: PathBuf,
    /// The processes exec'd into each pod that still run.
    pub execs: BTreeMap<(String, String), Vec<u32>>,
    /// Bytes clients sent on exec's stdin channel (keep-alives).
    pub stdin_bytes: u64,
    /// Each deleted pod's end as the kubelet carried it out.
    pub terminations: Vec<kubelet::Termination>,
    /// The synthetic nodes' fleet: execs into agent pods on its nodes
    /// stream its traffic instead of running a process.
    pub synthetic: Option<Arc<synthetic::Fleet>>,
    /// How long each request takes before it is answered (a real API
    /// server's latency; exec: the dial to the kubelet).
    pub latency: Duration,
    /// Requests being answered now (an exec until its WebSocket is up),
    /// and the most there were at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
}

impl State {
    pub fn is_forbidden(&self, verb: &str, resource: &str, ns: Option<&str>) -> bool {
        self.forbidden
            .iter()
            .any(|(v, r)| v == verb && r == resource)
            || self
                .rbac
                .as_ref()
                .is_some_and(|rules| !rbac::allows(rules, verb, resource, ns))
    }
}

pub struct ApiServer {
    pub state: Arc<Mutex<State>>,
    pub url: String,
    dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `nodes` (no pods yet) on a free port.
    pub fn start(nodes: Vec<FakeNode>, calitrace: &Path) -> Result<ApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let dir =
            std::env::temp_dir().join(format!("calitrace-apiserver-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let state = Arc::new(Mutex::new(State {
            nodes,
            pods: BTreeMap::new(),
            daemonsets: BTreeMap::new(),
            forbidden: Vec::new(),
            rbac: None,
            pending_for: Duration::from_millis(600),
            image_pull_fails: false,
            image_pull_fails_on: Vec::new(),
            unreachable_kubelets: Vec::new(),
            pod_security: BTreeMap::new(),
            webhook_denies: None,
            protocols: Protocols::V5,
            calitrace: calitrace.to_path_buf(),
            log: Vec::new(),
            created: Vec::new(),
            deleted: Vec::new(),
            created_pods: Vec::new(),
            exec_protocols: Vec::new(),
            containers: dir.join("containers"),
            execs: BTreeMap::new(),
            stdin_bytes: 0,
            terminations: Vec::new(),
            synthetic: None,
            latency: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the stand-in API server's runtime");
            rt.block_on(routes::serve(listener, st, rx));
        });
        let server = ApiServer {
            state,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        };
        std::fs::write(server.kubeconfig(), kubeconfig(&server.url)).context("kubeconfig")?;
        Ok(server)
    }

    /// A cluster of `nodes` synthetic nodes (`node-0`, ...: their headers
    /// and traffic are [`crate::fleet`]'s, at `rate` events/s per node),
    /// each with the DaemonSet's agent pod and its application pods.
    pub fn synthetic(nodes: usize, rate: u64) -> Result<ApiServer> {
        let fake: Vec<FakeNode> = (0..nodes)
            .map(|i| FakeNode {
                name: crate::fleet::name(i),
                netns: "synthetic".into(),
                ready: true,
                address: crate::fleet::node_ip(i).to_string(),
            })
            .collect();
        let api = ApiServer::start(fake.clone(), Path::new("/nonexistent/calitrace"))?;
        let lifecycle = kubelet::manifest_lifecycle();
        let agent = json!({
            "app.kubernetes.io/name": "calitrace",
            "app.kubernetes.io/component": "agent",
        });
        let mut pods = BTreeMap::new();
        for (i, n) in fake.iter().enumerate() {
            let name = format!("calitrace-agent-{}", n.name);
            let mut object =
                objects::pod("calitrace", &name, &n.name, &n.address, agent.clone(), true);
            object["spec"]["containers"][0]["lifecycle"] = lifecycle.clone();
            pods.insert(("calitrace".to_string(), name), object);
            for p in 0..crate::fleet::PODS {
                let name = format!("pod-{i}-{p}");
                let ip = crate::fleet::pod_ip(i, p).to_string();
                let labels = json!({ "app": "bench" });
                let object = objects::pod("bench", &name, &n.name, &ip, labels, false);
                pods.insert(("bench".to_string(), name), object);
            }
        }
        api.with(|s| {
            let created = Instant::now();
            s.pods.extend(
                pods.into_iter()
                    .map(|(k, object)| (k, Stored { object, created })),
            );
            s.synthetic = Some(synthetic::Fleet::start(nodes, rate));
        });
        Ok(api)
    }

    /// A kubeconfig that points at this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a running pod.
    pub fn add_pod(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        ip: &str,
        labels: Value,
        host_network: bool,
    ) {
        let object = objects::pod(ns, name, node, ip, labels, host_network);
        self.with(|s| {
            s.pods.insert(
                (ns.into(), name.into()),
                Stored {
                    object,
                    created: Instant::now(),
                },
            )
        });
    }

    /// The DaemonSet's agent pod on `node`, with the container lifecycle
    /// (the preStop hook) of deploy/agent-daemonset.yaml.
    pub fn add_daemonset_pod(&self, node: &FakeNode) {
        let labels = json!({
            "app.kubernetes.io/name": "calitrace",
            "app.kubernetes.io/component": "agent",
        });
        let name = format!("calitrace-agent-{}", &node.name);
        self.add_pod("calitrace", &name, &node.name, &node.address, labels, true);
        let lifecycle = kubelet::manifest_lifecycle();
        self.with(|s| {
            let pod = s.pods.get_mut(&("calitrace".into(), name)).unwrap();
            pod.object["spec"]["containers"][0]["lifecycle"] = lifecycle;
        });
    }

    /// Deletes a pod as `kubectl delete pod` does (the kubelet then runs
    /// its preStop hook and kills what is left: [`State::terminations`]).
    pub fn delete_pod(&self, ns: &str, name: &str) -> bool {
        kubelet::delete(&self.state, ns, name).is_some()
    }

    /// Waits until the kubelet has ended the pod `ns/name`.
    pub fn wait_terminated(
        &self,
        ns: &str,
        name: &str,
        limit: Duration,
    ) -> Option<kubelet::Termination> {
        let pod = format!("{ns}/{name}");
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(t) = self.with(|s| s.terminations.iter().find(|t| t.pod == pod).cloned()) {
                return Some(t);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Pods that exist now, as `ns/name`.
    pub fn pod_names(&self) -> Vec<String> {
        self.with(|s| s.pods.keys().map(|(ns, n)| format!("{ns}/{n}")).collect())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: standin
    cluster:
      server: {url}
contexts:
  - name: standin
    context:
      cluster: standin
      user: tester
      namespace: default
current-context: standin
users:
  - name: tester
    user:
      token: standin-token
"
    )
}
