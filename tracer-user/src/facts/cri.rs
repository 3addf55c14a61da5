//! Pods as people name them, from the container runtime's CRI socket
//! (containerd's or CRI-O's): the pod sandboxes it runs, with their
//! namespaces, names and addresses.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::model::PodRef;

/// The runtimes' sockets, relative to the host root: containerd, CRI-O.
pub const SOCKETS: [&str; 2] = ["run/containerd/containerd.sock", "var/run/crio/crio.sock"];

/// gRPC paths of the two calls made, in CRI v1's `runtime.v1.RuntimeService`.
pub const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";
pub const POD_SANDBOX_STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";

/// The few CRI v1 messages needed (kubernetes' `cri-api`,
/// `pkg/apis/runtime/v1/api.proto`), with its field numbers; fields not
/// declared here are skipped when decoding.
pub mod api {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub filter: Option<PodSandboxFilter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxFilter {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub state: Option<PodSandboxStateValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStateValue {
        #[prost(enumeration = "PodSandboxState", tag = "1")]
        pub state: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodSandboxResponse {
        #[prost(message, repeated, tag = "1")]
        pub items: Vec<PodSandbox>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandbox {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(enumeration = "PodSandboxState", tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<PodSandboxStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(enumeration = "PodSandboxState", tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
        #[prost(message, optional, tag = "5")]
        pub network: Option<PodSandboxNetworkStatus>,
        #[prost(message, optional, tag = "6")]
        pub linux: Option<LinuxPodSandboxStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxNetworkStatus {
        #[prost(string, tag = "1")]
        pub ip: String,
        #[prost(message, repeated, tag = "2")]
        pub additional_ips: Vec<PodIp>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodIp {
        #[prost(string, tag = "1")]
        pub ip: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxStatus {
        #[prost(message, optional, tag = "1")]
        pub namespaces: Option<Namespace>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Namespace {
        #[prost(message, optional, tag = "2")]
        pub options: Option<NamespaceOption>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(enumeration = "NamespaceMode", tag = "1")]
        pub network: i32,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum PodSandboxState {
        SandboxReady = 0,
        SandboxNotready = 1,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum NamespaceMode {
        Pod = 0,
        Container = 1,
        Node = 2,
        Target = 3,
    }
}

/// Every address of a ready sandbox that has its own network namespace,
/// with its pod. Pods on the node's network share the node's addresses and
/// name none; where two sandboxes claim an address, the newer one has it.
pub fn pod_ips(statuses: &[api::PodSandboxStatus]) -> BTreeMap<IpAddr, PodRef> {
    let mut ready: Vec<&api::PodSandboxStatus> = statuses
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .filter(|s| !on_node_network(s))
        .collect();
    ready.sort_by_key(|s| s.created_at);
    let mut out = BTreeMap::new();
    for s in ready {
        let (Some(meta), Some(net)) = (&s.metadata, &s.network) else {
            continue;
        };
        if meta.namespace.is_empty() || meta.name.is_empty() {
            continue;
        }
        let pod = PodRef {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        };
        let addrs = std::iter::once(&net.ip).chain(net.additional_ips.iter().map(|a| &a.ip));
        for ip in addrs.filter_map(|a| a.parse::<IpAddr>().ok()) {
            out.insert(ip, pod.clone());
        }
    }
    out
}

fn on_node_network(s: &api::PodSandboxStatus) -> bool {
    let mode = s
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network);
    mode == Some(api::NamespaceMode::Node as i32)
}

/// The pods of every runtime socket under `host_root` that answers within
/// `timeout` (all sockets together), by address; the first socket's name
/// wins for an address both know. `None` when no socket answered: a missing
/// socket is skipped silently, one that is there but fails gets a line on
/// stderr.
pub fn from_cri(host_root: &Path, timeout: Duration) -> Option<BTreeMap<IpAddr, PodRef>> {
    let deadline = Instant::now() + timeout;
    let sockets: Vec<PathBuf> = SOCKETS
        .iter()
        .map(|s| under_root(host_root, s))
        .filter(|p| p.exists())
        .collect();
    if sockets.is_empty() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut found: Option<BTreeMap<IpAddr, PodRef>> = None;
    for socket in sockets {
        let asked = async { tokio::time::timeout_at(deadline.into(), sandboxes(&socket)).await };
        match rt.block_on(asked) {
            Ok(Ok(statuses)) => {
                let all = found.get_or_insert_with(BTreeMap::new);
                for (ip, pod) in pod_ips(&statuses) {
                    all.entry(ip).or_insert(pod);
                }
            }
            Ok(Err(e)) => eprintln!(
                "calitrace: container runtime at {}: {e}; pods named without it",
                socket.display()
            ),
            Err(_) => eprintln!(
                "calitrace: container runtime at {}: no answer within {} ms; pods named without it",
                socket.display(),
                timeout.as_millis()
            ),
        }
    }
    // Whatever the runtime left unanswered is abandoned, not waited for.
    rt.shutdown_background();
    found
}

/// `rel` under `root`, where a symlink on the way to an absolute path (many
/// hosts have `/var/run -> /run`) means the host's path, not this container's.
fn under_root(root: &Path, rel: &str) -> PathBuf {
    let mut path = root.to_path_buf();
    let mut rest: VecDeque<OsString> = Path::new(rel).iter().map(OsStr::to_os_string).collect();
    let mut hops = 0;
    while let Some(part) = rest.pop_front() {
        let next = path.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) if target.is_absolute() && hops < 16 => {
                hops += 1;
                path = root.to_path_buf();
                let parts = target.components().filter(|c| *c != Component::RootDir);
                for p in parts.rev() {
                    rest.push_front(p.as_os_str().to_os_string());
                }
            }
            _ => path = next,
        }
    }
    path
}

pub type BoxError = Box<dyn Error + Send + Sync>;

/// The status of every ready pod sandbox of the runtime at `socket`.
async fn sandboxes(socket: &Path) -> Result<Vec<api::PodSandboxStatus>, BoxError> {
    let mut grpc = Grpc::new(connect(socket).await?);
    let ready = api::ListPodSandboxRequest {
        filter: Some(api::PodSandboxFilter {
            state: Some(api::PodSandboxStateValue {
                state: api::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }),
    };
    let listed: api::ListPodSandboxResponse = unary(&mut grpc, LIST_POD_SANDBOX, ready).await?;
    let mut calls = tokio::task::JoinSet::new();
    for sandbox in listed.items {
        let mut grpc = grpc.clone();
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.id,
            verbose: false,
        };
        calls.spawn(async move {
            unary::<_, api::PodSandboxStatusResponse>(&mut grpc, POD_SANDBOX_STATUS, request).await
        });
    }
    let mut out = Vec::new();
    while let Some(answer) = calls.join_next().await {
        // A sandbox removed since it was listed has no status: skipped.
        if let Ok(Ok(api::PodSandboxStatusResponse {
            status: Some(status),
        })) = answer
        {
            out.push(status);
        }
    }
    Ok(out)
}

/// An HTTP/2 channel over the unix socket at `socket`; the URI is a
/// placeholder that only names the authority gRPC sends.
pub async fn connect(socket: &Path) -> Result<Channel, BoxError> {
    let socket = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(socket).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| source_of(&e))?;
    Ok(channel)
}

/// The innermost cause of a transport error ("connection refused"), which
/// says more than tonic's own "transport error".
fn source_of(e: &(dyn Error + 'static)) -> BoxError {
    let mut inner = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner.to_string().into()
}

pub async fn unary<Req, Res>(
    grpc: &mut Grpc<Channel>,
    path: &'static str,
    request: Req,
) -> Result<Res, BoxError>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await.map_err(|e| source_of(&e))?;
    let codec = tonic_prost::ProstCodec::<Req, Res>::default();
    let path = PathAndQuery::from_static(path);
    let answer = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    Ok(answer.into_inner())
}

#[cfg(test)]
mod tests {
    use super::api::*;
    use super::*;

    fn sandbox(
        ns: &str,
        name: &str,
        ip: &str,
        extra: &[&str],
        created_at: i64,
    ) -> PodSandboxStatus {
        PodSandboxStatus {
            id: format!("{ns}-{name}"),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            }),
            state: PodSandboxState::SandboxReady as i32,
            created_at,
            network: Some(PodSandboxNetworkStatus {
                ip: ip.into(),
                additional_ips: extra
                    .iter()
                    .map(|ip| PodIp { ip: ip.to_string() })
                    .collect(),
            }),
            linux: None,
        }
    }

    fn pod(ns: &str, name: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_address_of_a_sandbox_names_its_pod() {
        let got = pod_ips(&[
            sandbox("shop", "frontend-7d9f", "10.65.0.2", &["fd00::2"], 1),
            sandbox("shop", "redis-0", "10.65.0.3", &[], 1),
        ]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[&ip("10.65.0.2")], pod("shop", "frontend-7d9f"));
        assert_eq!(got[&ip("fd00::2")], pod("shop", "frontend-7d9f"));
        assert_eq!(got[&ip("10.65.0.3")], pod("shop", "redis-0"));
    }

    #[test]
    fn not_ready_host_network_and_nameless_sandboxes_name_nothing() {
        let mut stopped = sandbox("shop", "old", "10.65.0.9", &[], 1);
        stopped.state = PodSandboxState::SandboxNotready as i32;
        let mut host = sandbox("kube-system", "calico-node-x", "192.168.1.5", &[], 1);
        host.linux = Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                }),
            }),
        });
        let mut nameless = sandbox("", "x", "10.65.0.8", &[], 1);
        nameless.metadata.as_mut().unwrap().namespace.clear();
        let mut no_net = sandbox("shop", "pending", "", &[], 1);
        no_net.network = None;
        let garbage = sandbox("shop", "odd", "not-an-ip", &[""], 1);
        assert!(pod_ips(&[stopped, host, nameless, no_net, garbage]).is_empty());
    }

    #[test]
    fn the_newer_sandbox_has_a_reused_address() {
        let newer = sandbox("shop", "cart-1", "10.65.0.4", &[], 200);
        let older = sandbox("shop", "cart-0", "10.65.0.4", &[], 100);
        assert_eq!(
            pod_ips(&[newer, older])[&ip("10.65.0.4")],
            pod("shop", "cart-1")
        );
    }

    #[test]
    fn messages_have_cri_v1_field_numbers() {
        use prost::Message;
        // PodSandboxStatusResponse{status{id "a", metadata{name "n",
        // namespace "s"}, network{ip "10.0.0.1", additional_ips[{ip "fd::1"}]}}},
        // encoded by hand from api.proto's numbers.
        let metadata = [0x0a, 1, b'n', 0x1a, 1, b's'];
        let addr = b"10.0.0.1";
        let extra = [0x0a, 5, b'f', b'd', b':', b':', b'1'];
        let mut network = vec![0x0a, addr.len() as u8];
        network.extend_from_slice(addr);
        network.extend_from_slice(&[0x12, extra.len() as u8]);
        network.extend_from_slice(&extra);
        let mut status = vec![0x0a, 1, b'a', 0x12, metadata.len() as u8];
        status.extend_from_slice(&metadata);
        status.extend_from_slice(&[0x2a, network.len() as u8]);
        status.extend_from_slice(&network);
        let mut response = vec![0x0a, status.len() as u8];
        response.extend_from_slice(&status);
        let decoded = PodSandboxStatusResponse::decode(&response[..]).unwrap();
        let s = decoded.status.unwrap();
        assert_eq!(s.id, "a");
        assert_eq!(s.metadata.as_ref().unwrap().namespace, "s");
        assert_eq!(
            pod_ips(std::slice::from_ref(&s))[&ip("fd::1")],
            pod("s", "n")
        );
        assert_eq!(s.encode_to_vec(), status, "encodes back the same");
    }

    #[test]
    fn absolute_symlinks_under_the_root_stay_under_it() {
        let root = std::env::temp_dir().join(format!("calitrace-cri-link-{}", std::process::id()));
        std::fs::create_dir_all(root.join("run/crio")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        assert_eq!(
            under_root(&root, SOCKETS[1]),
            root.join("run/crio/crio.sock")
        );
        assert_eq!(
            under_root(&root, SOCKETS[0]),
            root.join(SOCKETS[0]),
            "no links on the way"
        );
        std::os::unix::fs::symlink("/loop", root.join("loop")).unwrap();
        assert_eq!(
            under_root(&root, "loop/x"),
            root.join("loop/x"),
            "a loop ends"
        );
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn no_socket_is_no_answer_at_once() {
        let root = std::env::temp_dir().join(format!("calitrace-cri-none-{}", std::process::id()));
        let started = Instant::now();
        assert_eq!(from_cri(&root, Duration::from_secs(5)), None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_dead_socket_is_no_answer_without_waiting() {
        let root = std::env::temp_dir().join(format!("calitrace-cri-dead-{}", std::process::id()));
        let path = root.join(SOCKETS[0]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let started = Instant::now();
        assert_eq!(from_cri(&root, Duration::from_secs(5)), None);
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_silent_socket_is_given_up_after_the_timeout() {
        let root = std::env::temp_dir().join(format!("calitrace-cri-mute-{}", std::process::id()));
        let path = root.join(SOCKETS[1]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Bound and listening, never accepting: connections wait in the backlog.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        assert_eq!(from_cri(&root, Duration::from_millis(300)), None);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
