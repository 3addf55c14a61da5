//! Pod names from a real container runtime: Debian's containerd (its CRI
//! plugin, runc, the ptp CNI plugin) runs a pod sandbox in a lab node's
//! network namespace, and calitrace, given a host root whose containerd
//! socket is that containerd's, names the pod in the records of traffic to
//! it. (tests/tests/cri.rs covers what a real runtime cannot be made to do:
//! a dead socket, a silent one, host-network pods, the runtime against the
//! kubelet's directories.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calitrace_tests::calitrace::Trace;
use calitrace_tests::{Lab, Mode};
use tracer_user::facts::cri::api::PodSandboxMetadata;
use tracer_user::facts::cri::{POD_SANDBOX_STATUS, connect, unary};

/// The CRI v1 messages to run and remove a sandbox (kubernetes' cri-api,
/// `pkg/apis/runtime/v1/api.proto`, with its field numbers).
mod run {
    use super::PodSandboxMetadata;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
        #[prost(string, tag = "2")]
        pub runtime_handler: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(string, tag = "2")]
        pub hostname: String,
        #[prost(string, tag = "3")]
        pub log_directory: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }

    /// StopPodSandboxRequest and RemovePodSandboxRequest alike.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SandboxId {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
}

const RUN: &str = "/runtime.v1.RuntimeService/RunPodSandbox";
const STOP: &str = "/runtime.v1.RuntimeService/StopPodSandbox";
const REMOVE: &str = "/runtime.v1.RuntimeService/RemovePodSandbox";
const PAUSE: &str = "calitrace.test/pause:1";
const SUBNET: &str = "10.251.0.0/24";
const FIXED_PATHS: [&str; 2] = ["/run/containerd", "/var/lib/cni"];

/// containerd in a lab node's netns, with state, sockets and CNI of its own
/// under `dir`; stopped, its sandbox removed and its files gone on drop.
struct Containerd {
    dir: PathBuf,
    /// What containerd 1.6 and libcni make at fixed host paths (the shims'
    /// sockets, the CNI result cache) that did not exist before: removed.
    made: Vec<&'static str>,
    child: Child,
    sandbox: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl Containerd {
    fn start(netns: &str, dir: &Path) -> Containerd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("host-root/run/containerd")).unwrap();
        let d = dir.display();
        // As PLATFORM.md found it works here: no cgroups, no OOM score, no
        // AppArmor for runc; the native snapshotter (no overlay mounts).
        std::fs::write(
            dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/host-root/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  disable_cgroup = true
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("net.d/10-ptp.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"calitrace-test","plugins":[{{"type":"ptp","ipMasq":false,"ipam":{{"type":"host-local","subnet":"{SUBNET}","dataDir":"{d}/ipam"}}}}]}}"#
            ),
        )
        .unwrap();
        // nsenter, not `ip netns exec`: that remounts /sys, and runc finds
        // no cgroup mount in what it leaves.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["containerd", "--config"])
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd is installed (cargo xtask test installs it)");
        let made = FIXED_PATHS
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        let c = Containerd {
            dir: dir.to_path_buf(),
            made,
            child,
            sandbox: None,
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while !c.socket().exists() {
            assert!(
                Instant::now() < until,
                "containerd did not start: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Where calitrace looks for containerd under `--host-root`.
    fn socket(&self) -> PathBuf {
        self.host_root().join("run/containerd/containerd.sock")
    }

    /// A host root whose containerd is this one (a symlink would not do:
    /// calitrace resolves links inside the host root, as in a container).
    fn host_root(&self) -> PathBuf {
        self.dir.join("host-root")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A pause image (busybox-static sleeping) built with buildah, imported.
    fn import_pause_image(&self) {
        let b = self.dir.join("buildah");
        let buildah = |args: &[&str]| -> String {
            let out = Command::new("buildah")
                .arg("--root")
                .arg(b.join("root"))
                .arg("--runroot")
                .arg(b.join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "buildah {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let ctr = buildah(&["from", "--quiet", "scratch"]);
        buildah(&[
            "copy",
            "--chmod",
            "0755",
            &ctr,
            "/bin/busybox",
            "/bin/busybox",
        ]);
        buildah(&[
            "config",
            "--entrypoint",
            r#"["/bin/busybox","sleep","1000000"]"#,
            &ctr,
        ]);
        buildah(&["commit", "--quiet", "--rm", &ctr, PAUSE]);
        let archive = self.dir.join("pause.tar");
        buildah(&[
            "push",
            "--quiet",
            PAUSE,
            &format!("oci-archive:{}:{PAUSE}", archive.display()),
        ]);
        buildah(&["rmi", "--all", "--force"]);
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a sandbox for pod `ns/name`; its address.
    fn run_sandbox(&mut self, ns: &str, name: &str) -> String {
        let socket = self.socket();
        let logs = self.dir.join("pods").display().to_string();
        let (id, ip) = self.rt.block_on(async {
            let mut grpc = tonic::client::Grpc::new(connect(&socket).await.unwrap());
            let request = run::RunPodSandboxRequest {
                config: Some(run::PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: name.into(),
                        namespace: ns.into(),
                        uid: format!("{name}-uid"),
                        attempt: 0,
                    }),
                    hostname: name.into(),
                    log_directory: logs,
                }),
                runtime_handler: String::new(),
            };
            let ran: run::RunPodSandboxResponse = unary(&mut grpc, RUN, request)
                .await
                .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
            let status: tracer_user::facts::cri::api::PodSandboxStatusResponse = unary(
                &mut grpc,
                POD_SANDBOX_STATUS,
                tracer_user::facts::cri::api::PodSandboxStatusRequest {
                    pod_sandbox_id: ran.pod_sandbox_id.clone(),
                    verbose: false,
                },
            )
            .await
            .unwrap();
            let ip = status
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
            (ran.pod_sandbox_id, ip)
        });
        self.sandbox = Some(id);
        ip
    }

    fn remove_sandbox(&mut self) {
        let Some(id) = self.sandbox.take() else {
            return;
        };
        let socket = self.socket();
        self.rt.block_on(async {
            let Ok(channel) = connect(&socket).await else {
                return;
            };
            let mut grpc = tonic::client::Grpc::new(channel);
            let id = run::SandboxId { pod_sandbox_id: id };
            let _: Result<run::Empty, _> = unary(&mut grpc, STOP, id.clone()).await;
            let _: Result<run::Empty, _> = unary(&mut grpc, REMOVE, id).await;
        });
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_sandbox();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The shims outlive containerd: theirs are those naming its socket.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self.socket())
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
        for p in &self.made {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[test]
fn records_name_the_pod_of_a_sandbox_a_real_containerd_runs() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = lab.node(0).netns.clone();
    let dir = std::env::temp_dir().join(format!("calitrace-containerd-{}", lab.id()));
    let mut containerd = Containerd::start(&node, &dir);
    containerd.import_pause_image();
    let ip = containerd.run_sandbox("shop", "real-0");
    assert!(
        ip.starts_with("10.251.0."),
        "the ptp plugin's address: {ip:?}\n{}",
        containerd.log()
    );

    let root = containerd.host_root();
    let t = Trace::start(
        &node,
        &["--host-root", root.to_str().unwrap(), "-i", "veth*"],
    )
    .unwrap();
    lab.sh(&node, &format!("ping -c 2 -W 1 {ip}")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let to_pod: Vec<_> = f
        .of_type("packet")
        .into_iter()
        .filter(|p| p["dst"] == ip.as_str() && p["proto"] == "icmp")
        .collect();
    assert!(
        !to_pod.is_empty(),
        "pings to the pod were traced\n{}",
        f.dump()
    );
    for p in to_pod {
        assert_eq!(p["dst_pod"]["namespace"], "shop", "{p}\n{}", f.stderr);
        assert_eq!(p["dst_pod"]["name"], "real-0", "{p}");
    }
}
