//! Pods named by the container runtime: a stand-in runtime that speaks CRI
//! v1 gRPC (`ListPodSandbox`, `PodSandboxStatus`) on containerd's socket
//! under a fake `--host-root`, and the real calitrace asking it.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use calitrace_tests::calitrace::{Finished, Trace};
use calitrace_tests::{Lab, Mode, Pod};
use tonic::body::Body;
use tracer_user::facts::cri::api::*;
use tracer_user::facts::cri::{LIST_POD_SANDBOX, POD_SANDBOX_STATUS, SOCKETS};
use tracer_user::facts::pods::calico_veth_name;

/// A container runtime that runs `sandboxes` and answers the two CRI calls.
#[derive(Clone)]
struct StandIn {
    sandboxes: Arc<Vec<PodSandboxStatus>>,
}

impl StandIn {
    fn list(&self, req: ListPodSandboxRequest) -> ListPodSandboxResponse {
        let wanted = req.filter.and_then(|f| f.state).map(|s| s.state);
        let items = self
            .sandboxes
            .iter()
            .filter(|s| wanted.is_none_or(|w| w == s.state))
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
            })
            .collect();
        ListPodSandboxResponse { items }
    }

    fn status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, tonic::Status> {
        let found = self.sandboxes.iter().find(|s| s.id == req.pod_sandbox_id);
        let status = found
            .cloned()
            .ok_or_else(|| tonic::Status::not_found("no such sandbox"))?;
        Ok(PodSandboxStatusResponse {
            status: Some(status),
        })
    }
}

/// One gRPC method of the stand-in, as tonic's server calls it.
struct Method<F>(F);

impl<F, Req, Res> tower::Service<tonic::Request<Req>> for Method<F>
where
    F: FnMut(Req) -> Result<Res, tonic::Status>,
{
    type Response = tonic::Response<Res>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        std::future::ready((self.0)(req.into_inner()).map(tonic::Response::new))
    }
}

impl tower::Service<http::Request<Body>> for StandIn {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let answer = match req.uri().path() {
                LIST_POD_SANDBOX => {
                    let codec = tonic_prost::ProstCodec::<
                        ListPodSandboxResponse,
                        ListPodSandboxRequest,
                    >::default();
                    let method = Method(|r| Ok(me.list(r)));
                    tonic::server::Grpc::new(codec).unary(method, req).await
                }
                POD_SANDBOX_STATUS => {
                    let codec = tonic_prost::ProstCodec::<
                        PodSandboxStatusResponse,
                        PodSandboxStatusRequest,
                    >::default();
                    let method = Method(|r| me.status(r));
                    tonic::server::Grpc::new(codec).unary(method, req).await
                }
                _ => tonic::Status::unimplemented("not in this stand-in").into_http(),
            };
            Ok(answer)
        })
    }
}

/// Serves `sandboxes` on containerd's socket under `root` from a thread of
/// this test, until the test ends.
fn serve(root: &Path, sandboxes: Vec<PodSandboxStatus>) -> PathBuf {
    let socket = root.join(SOCKETS[0]);
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    std::fs::remove_file(&socket).ok();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stand_in = StandIn {
        sandboxes: Arc::new(sandboxes),
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tonic::transport::Server::builder()
                .serve_with_incoming(stand_in, incoming)
                .await
                .unwrap();
        });
    });
    socket
}

fn ready_sandbox(id: &str, ns: &str, name: &str, ip: &str) -> PodSandboxStatus {
    PodSandboxStatus {
        id: id.into(),
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: ns.into(),
            uid: format!("{id}-uid"),
            attempt: 0,
        }),
        state: PodSandboxState::SandboxReady as i32,
        created_at: 1_700_000_000_000_000_000,
        network: Some(PodSandboxNetworkStatus {
            ip: ip.into(),
            additional_ips: vec![],
        }),
        linux: None,
    }
}

/// A host root of the test's own, removed when dropped (a failing test too).
struct FakeRoot(PathBuf);

impl std::ops::Deref for FakeRoot {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn fake_root(lab: &Lab, what: &str) -> FakeRoot {
    let root = std::env::temp_dir().join(format!("calitrace-cri-{what}-{}", lab.id()));
    std::fs::create_dir_all(&root).unwrap();
    FakeRoot(root)
}

/// Pings from `a` to `b` while calitrace traces node 0 with `--host-root
/// root`; the packets from `a` and the stderr of calitrace.
fn trace_ping(lab: &Lab, root: &Path, a: &Pod, b: &Pod) -> (Finished, Duration) {
    let t = Trace::start(&lab.node(0).netns, &["--host-root", root.to_str().unwrap()]).unwrap();
    let ready_after = t.ready_after;
    assert!(lab.ping(a, &b.ip, 2), "ping works");
    std::thread::sleep(Duration::from_millis(500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    (f, ready_after)
}

fn src_pods(f: &Finished, a: &Pod, b: &Pod) -> Vec<(String, String)> {
    let packets = f.of_type("packet");
    let out: Vec<_> = Finished::between(&packets, &a.ip, &b.ip)
        .into_iter()
        .filter(|p| p["src"] == a.ip.as_str())
        .collect();
    assert!(!out.is_empty(), "{}", f.dump());
    out.iter()
        .map(|p| {
            let name = |k: &str| p["src_pod"][k].as_str().unwrap_or("-").to_string();
            (name("namespace"), name("name"))
        })
        .collect()
}

#[test]
fn records_name_the_pods_the_container_runtime_runs() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let root = fake_root(&lab, "names");
    let mut host_network = ready_sandbox("s3", "kube-system", "calico-node-x", &b.ip);
    host_network.linux = Some(LinuxPodSandboxStatus {
        namespaces: Some(Namespace {
            options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
            }),
        }),
    });
    serve(
        &root,
        vec![
            ready_sandbox("s1", "shop", "frontend-7d9f", &a.ip),
            ready_sandbox("s2", "shop", "cart-0", "10.99.0.7"),
            host_network,
        ],
    );
    let (f, _) = trace_ping(&lab, &root, &a, &b);
    for pod in src_pods(&f, &a, &b) {
        assert_eq!(pod, ("shop".into(), "frontend-7d9f".into()), "{}", f.dump());
    }
    let packets = f.of_type("packet");
    for p in Finished::between(&packets, &a.ip, &b.ip) {
        let b_side = if p["src"] == b.ip.as_str() {
            "src_pod"
        } else {
            "dst_pod"
        };
        assert!(
            p[b_side].is_null(),
            "a host-network sandbox names nothing: {p}"
        );
    }
}

#[test]
fn the_runtime_wins_over_the_kubelets_directories() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let root = fake_root(&lab, "wins");
    // The kubelet's directories name `a` shop/frontend-7d9f through its veth...
    let veth = calico_veth_name("cali", "shop", "frontend-7d9f");
    lab.sh(
        &lab.node(0).netns,
        &format!(
            "ip link set {old} down && ip link set {old} name {veth} && ip link set {veth} up && \
             ip route replace {ip}/32 dev {veth} && \
             sysctl -qw net.ipv4.conf.{veth}.proxy_arp=1 net.ipv4.neigh.{veth}.proxy_delay=0",
            old = a.cali,
            ip = a.ip
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/log/pods/shop_frontend-7d9f_6b1c-uid")).unwrap();
    // ...and the runtime, asked first, says otherwise.
    serve(
        &root,
        vec![ready_sandbox("s1", "checkout", "frontend-v2", &a.ip)],
    );
    let (f, _) = trace_ping(&lab, &root, &a, &b);
    for pod in src_pods(&f, &a, &b) {
        assert_eq!(
            pod,
            ("checkout".into(), "frontend-v2".into()),
            "{}",
            f.dump()
        );
    }
}

#[test]
fn a_dead_or_silent_runtime_socket_neither_hangs_nor_fails() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let root = fake_root(&lab, "dead");
    // containerd's socket file is left by a runtime that is gone...
    let dead = root.join(SOCKETS[0]);
    std::fs::create_dir_all(dead.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    // ...and CRI-O's accepts connections that nobody answers.
    let silent = root.join(SOCKETS[1]);
    std::fs::create_dir_all(silent.parent().unwrap()).unwrap();
    let _listening = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let empty = fake_root(&lab, "empty");
    let (_, baseline) = trace_ping(&lab, &empty, &a, &b);
    let (f, ready_after) = trace_ping(&lab, &root, &a, &b);
    for pod in src_pods(&f, &a, &b) {
        assert_eq!(pod, ("-".into(), "-".into()), "no names: {}", f.dump());
    }
    assert!(
        f.stderr.contains("no answer within 1000 ms") && f.stderr.contains("crio.sock"),
        "one line for the silent socket: {}",
        f.stderr
    );
    assert!(
        f.stderr.contains("containerd.sock") && f.stderr.contains("refused"),
        "one line for the dead socket: {}",
        f.stderr
    );
    // The silent socket costs its 1 s timeout, not a hang (the margin allows for
    // a machine busy with other builds, where the start itself can double).
    assert!(
        ready_after < baseline * 2 + Duration::from_secs(3),
        "tracing on after {ready_after:?}, {baseline:?} without runtime sockets"
    );
}
