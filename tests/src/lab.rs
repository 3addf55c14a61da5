//! A Calico-like two-node lab built only from network namespaces that it creates itself.
//!
//! Topology (everything lives in namespaces named `ctlab-<pid>-<n>-...`; nothing is ever
//! created in, or changed in, the host's own network namespace):
//!
//! ```text
//!  pod a0 (10.244.1.10/32)                                  pod b0 (10.244.2.10/32)
//!    eth0                                                     eth0
//!     |  veth                                                  |  veth
//!   cali<11 hex>                                            cali<11 hex>
//!  node A  (10.244.1.0/26)                                  node B  (10.244.2.0/26)
//!    eth0 192.168.K.1/24 -- veth -- port-a  [br0]  port-b -- veth -- eth0 192.168.K.2/24
//!    [vxlan.calico 10.244.1.1]        fabric (no addresses)   [vxlan.calico 10.244.2.1]
//!    [tunl0 10.244.1.1]  (Mode::Ipip only)                    [tunl0 10.244.2.1]
//! ```
//!
//! * Netns names: node A `ctlab-<pid>-<n>-node-a`, node B `ctlab-<pid>-<n>-node-b`,
//!   pod i on node A `ctlab-<pid>-<n>-pod-a<i>` (node B: `...-pod-b<i>`), where `<pid>` is
//!   the creating process and `<n>` a per-process counter; the fabric between them is
//!   `ctlab-<pid>-<n>-fabric`. Extra namespaces made with
//!   [`Lab::add_netns`] are `ctlab-<pid>-<n>-x-<suffix>`.
//! * Pods: `eth0` with a /32, `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1`.
//!   Node side: `cali` + 11 hex chars (Calico's own format, 15 chars), MAC
//!   `ee:ee:ee:ee:ee:ee`, `proxy_arp=1`, `proxy_delay=0`, `rp_filter=0`, and a
//!   `<pod ip>/32 dev cali... scope link` route.
//! * Nodes: `ip_forward=1`, `rp_filter=0` (all, default and every lab interface), a default
//!   route via the other node's underlay address (so proxy ARP answers for 169.254.1.1).
//! * [`Mode::Direct`]: `10.244.<other>.0/26 via <other underlay ip>`.
//! * [`Mode::Vxlan`]: `vxlan.calico` (VNI 4096, UDP 4789, nolearning, MTU 1450), tunnel
//!   address 10.244.1.1/32 (A) / 10.244.2.1/32 (B), route
//!   `10.244.<other>.0/26 via 10.244.<other>.1 dev vxlan.calico onlink`, a permanent
//!   neighbour entry and an fdb entry for the other node. Pod and cali MTU is 1450 then.
//! * [`Mode::Ipip`]: the `ipip` module's `tunl0` (MTU 1480) with the tunnel address, route
//!   `10.244.<other>.0/26 via <other underlay ip> dev tunl0 onlink`, as Calico's IPIP mode
//!   does it. Pod and cali MTU is 1480 then. Needs the `ipip` module (not in every
//!   kernel: see `kernel::IPIP`).
//! * Fabric (the "cloud network"): bridge `br0` with ports `port-a` and `port-b` (the
//!   peers of the nodes' `eth0`, MTU 1500), no STP, no addresses, no calitrace. Tests
//!   break it with [`Lab::fabric_drop`] and [`Lab::fabric_mtu`].
//! * IPv6 is disabled in every lab namespace so that no IPv6 chatter (DAD, router
//!   solicitations, MLD) shows up in traces; [`Lab::with_ipv6`] leaves it on in the
//!   nodes and pods, as on a real node.
//!
//! Dropping a [`Lab`] deletes all of its namespaces (and with them every interface, route
//! and firewall rule in them), also when a test panics.

mod build;
mod churn;
mod commands;
mod fabric;
mod probe;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result, anyhow, bail};

use commands::{check_netns_name, check_output, ip, ip_json, netns_exec, nft_script, veth};
pub use commands::{cleanup_stale, spawn_in_netns};
pub use fabric::{FABRIC_BRIDGE, FABRIC_PORTS, FabricDrop};

/// Prefix of every network namespace a lab creates (`ctlab-<pid>-<n>-...`).
pub const PREFIX: &str = "ctlab-";
/// Directory where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Name of the VXLAN device in [`Mode::Vxlan`] (as Calico names it).
pub const VXLAN_DEV: &str = "vxlan.calico";
/// VXLAN network identifier Calico uses.
pub const VXLAN_VNI: u32 = 4096;
/// UDP destination port of the VXLAN tunnel.
pub const VXLAN_PORT: u16 = 4789;
/// MTU of `vxlan.calico` (and of the pod veths in [`Mode::Vxlan`]).
pub const VXLAN_MTU: u32 = 1450;
/// The `ipip` module's fallback device, which Calico's IPIP mode routes through.
pub const IPIP_DEV: &str = "tunl0";
/// MTU of `tunl0` (and of the pod veths in [`Mode::Ipip`]).
pub const IPIP_MTU: u32 = 1480;
/// MTU of the underlay link between the nodes.
pub const UNDERLAY_MTU: u32 = 1500;
/// Link-local gateway address every pod routes through (answered by proxy ARP).
pub const GATEWAY_IP: &str = "169.254.1.1";
/// MAC address Calico gives every host-side `cali*` interface.
pub const CALI_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// Name of the underlay interface in each node namespace.
pub const UNDERLAY_IF: &str = "eth0";
/// Name of the interface inside each pod namespace.
pub const POD_IF: &str = "eth0";
/// Largest number of pods per node (pod addresses 10.244.x.10 ..= 10.244.x.62 in a /26).
pub const MAX_PODS_PER_NODE: usize = 53;

/// The sysctls that turn IPv6 off in a lab namespace.
const NO_IPV6: [(&str, &str); 2] = [
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
];

static LAB_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Serialises `ip netns add` inside this process, so that the first one sets up the
/// /run/netns mount alone instead of several racing to bind-mount it.
static NETNS_ADD_LOCK: Mutex<()> = Mutex::new(());
static CLEANUP_ONCE: Once = Once::new();

/// How the nodes carry pod traffic between each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Plain routing over the underlay (Calico "no encapsulation" / BGP mode).
    Direct,
    /// Calico VXLAN overlay through `vxlan.calico`.
    Vxlan,
    /// Calico IPIP overlay through `tunl0`.
    Ipip,
}

/// Which iptables binary [`Lab::iptables`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-legacy` (x_tables).
    Legacy,
    /// `iptables-nft` (nf_tables with the iptables compatibility layer).
    Nft,
}

impl Backend {
    /// The program name of this backend.
    pub fn program(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }
}

/// One node (a "host" of the cluster) of the lab.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name of the node's network namespace.
    pub netns: String,
    /// Name of the underlay interface (always `eth0`).
    pub underlay_if: String,
    /// Underlay IPv4 address of the node, without prefix length.
    pub underlay_ip: String,
    /// Pod CIDR of the node (`10.244.1.0/26` for A, `10.244.2.0/26` for B).
    pub pod_cidr: String,
    /// Address of `vxlan.calico` in [`Mode::Vxlan`], of `tunl0` in [`Mode::Ipip`]
    /// (`10.244.1.1` / `10.244.2.1`).
    pub tunnel_ip: Option<String>,
    /// MAC address of `vxlan.calico` in [`Mode::Vxlan`].
    pub vxlan_mac: Option<String>,
}

/// One pod (workload) of the lab.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Name of the pod's network namespace.
    pub netns: String,
    /// IPv4 address of the pod (a /32 on its `eth0`), without prefix length.
    pub ip: String,
    /// Name of the host-side veth in the node namespace (`cali` + 11 hex chars).
    pub cali: String,
    /// Index of the node the pod runs on (0 = A, 1 = B).
    pub node: usize,
    /// Index of the pod on its node.
    pub index: usize,
}

/// Packet and byte counters of one interface (from `ip -s -j link show`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Received packets.
    pub rx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Received packets dropped by the device.
    pub rx_dropped: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Transmit drops counted by the device.
    pub tx_dropped: u64,
}

/// A two-node Calico-like lab; dropping it deletes every namespace it created.
#[derive(Debug)]
pub struct Lab {
    id: String,
    mode: Mode,
    nodes: Vec<Node>,
    pods: Vec<Vec<Pod>>,
    /// The fabric namespace between the nodes (none in [`Lab::empty`]).
    fabric: Option<String>,
    /// Whether the nodes and pods keep IPv6 on ([`Lab::with_ipv6`]).
    ipv6: bool,
    /// Every namespace this lab created, in creation order.
    created: Vec<String>,
}

impl Lab {
    /// Builds a lab in `mode` with one pod per node.
    pub fn new(mode: Mode) -> Result<Lab> {
        Self::with_pods(mode, 1)
    }

    /// Builds a lab in `mode` with `pods_per_node` pods on each node (at most 53).
    pub fn with_pods(mode: Mode, pods_per_node: usize) -> Result<Lab> {
        Self::build_new(mode, pods_per_node, false)
    }

    /// Builds a lab in `mode` with one pod per node and IPv6 left on in the nodes and
    /// pods (not in the fabric), as on a real node: link-local addresses, duplicate
    /// address detection, router solicitations and MLD reports come and go by
    /// themselves. IPv4 is as in [`Lab::new`].
    pub fn with_ipv6(mode: Mode) -> Result<Lab> {
        Self::build_new(mode, 1, true)
    }

    fn build_new(mode: Mode, pods_per_node: usize, ipv6: bool) -> Result<Lab> {
        if pods_per_node > MAX_PODS_PER_NODE {
            bail!(
                "at most {MAX_PODS_PER_NODE} pods per node fit in a /26, asked for {pods_per_node}"
            );
        }
        let (mut lab, n) = Lab::unbuilt(mode);
        lab.ipv6 = ipv6;
        // Per-lab underlay subnet; labs are isolated anyway, this only helps telling
        // them apart in traces.
        let k = ((u64::from(std::process::id()))
            .wrapping_mul(37)
            .wrapping_add(n)
            % 254)
            + 1;
        // From here on `?` drops `lab`, which deletes whatever was created so far.
        lab.build(k, pods_per_node).with_context(|| {
            format!(
                "building lab {} ({mode:?}, {pods_per_node} pods/node)",
                lab.id
            )
        })?;
        Ok(lab)
    }

    /// A lab without nodes or pods, for tests that make their own namespaces with
    /// [`Lab::add_netns`] (and join them with [`Lab::add_veth`]); [`Lab::node`] and
    /// [`Lab::pod`] panic on it.
    pub fn empty() -> Lab {
        Lab::unbuilt(Mode::Direct).0
    }

    /// A lab with a fresh id and nothing created yet; also its number in this process.
    fn unbuilt(mode: Mode) -> (Lab, u64) {
        CLEANUP_ONCE.call_once(|| {
            cleanup_stale();
        });
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            id: format!("{PREFIX}{}-{n}", std::process::id()),
            mode,
            nodes: Vec::new(),
            pods: Vec::new(),
            fabric: None,
            ipv6: false,
            created: Vec::new(),
        };
        (lab, n)
    }

    /// Creates a named netns and records it for deletion.
    fn create_netns(&mut self, name: &str) -> Result<()> {
        check_netns_name(name)?;
        {
            let _guard = NETNS_ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            // A namespace with our pid and counter can only be a leftover of a dead
            // process that had the same pid: remove it.
            if Path::new(NETNS_DIR).join(name).exists() {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
            let out = Command::new("ip")
                .args(["netns", "add", name])
                .stdin(Stdio::null())
                .output()
                .context("running `ip netns add`")?;
            check_output(&format!("ip netns add {name}"), &out)?;
        }
        self.created.push(name.to_string());
        Ok(())
    }

    /// Sets several sysctls in one `sysctl` run (internal; no ownership check needed).
    fn sysctls(&self, netns: &str, kv: &[(&str, &str)]) -> Result<()> {
        let mut args: Vec<String> = vec!["sysctl".into(), "-qw".into()];
        args.extend(kv.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = netns_exec(netns, &args)?;
        check_output(&format!("in {netns}: {}", args.join(" ")), &out)
    }

    /// Unique identifier of this lab, also the prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The mode this lab was built in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Node `i` (0 = A, 1 = B); panics if out of range.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Both nodes, A first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Pod `i` on node `node`; panics if out of range.
    pub fn pod(&self, node: usize, i: usize) -> &Pod {
        &self.pods[node][i]
    }

    /// All pods, node A's first.
    pub fn pods(&self) -> Vec<&Pod> {
        self.pods.iter().flatten().collect()
    }

    /// Names of every namespace this lab created, in creation order.
    pub fn netns_names(&self) -> &[String] {
        &self.created
    }

    /// Creates an extra empty namespace `<lab id>-x-<suffix>` (lo up, IPv6 off) that the
    /// lab owns and deletes on drop; returns its name.
    pub fn add_netns(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}-x-{suffix}", self.id);
        self.create_netns(&name)?;
        self.sysctls(&name, &NO_IPV6)?;
        ip(&name, "link set lo up")?;
        Ok(name)
    }

    /// A veth pair between two namespaces of this lab: `name` in `netns`, `peer_name`
    /// in `peer_netns` (created right there, never in the host's namespace), down.
    pub fn add_veth(
        &self,
        netns: &str,
        name: &str,
        peer_netns: &str,
        peer_name: &str,
    ) -> Result<()> {
        self.check_owned(netns)?;
        self.check_owned(peer_netns)?;
        veth(netns, name, peer_netns, peer_name)
    }

    fn check_owned(&self, netns: &str) -> Result<()> {
        if self.created.iter().any(|n| n == netns) {
            Ok(())
        } else {
            bail!("netns {netns:?} does not belong to lab {}", self.id)
        }
    }

    /// Runs `ip netns exec NETNS args...` and returns its output, also on a non-zero exit.
    /// Only namespaces of this lab are accepted.
    pub fn run(&self, netns: &str, args: &[&str]) -> Result<Output> {
        self.check_owned(netns)?;
        netns_exec(netns, args)
    }

    /// Runs `ip netns exec NETNS sh -c SCRIPT`; returns stdout, or an error with stderr on a
    /// non-zero exit.
    pub fn sh(&self, netns: &str, script: &str) -> Result<String> {
        let out = self.run(netns, &["sh", "-c", script])?;
        check_output(&format!("in {netns}: sh -c {script:?}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `iptables-legacy -w args...` or `iptables-nft -w args...` inside node `node`.
    pub fn iptables(&self, node: usize, backend: Backend, args: &[&str]) -> Result<()> {
        self.iptables_output(node, backend, args).map(|_| ())
    }

    /// Like [`Lab::iptables`], returning stdout (e.g. for `-S` or `-L -v -n -x`).
    pub fn iptables_output(&self, node: usize, backend: Backend, args: &[&str]) -> Result<String> {
        let netns = &self.node(node).netns;
        let mut full = vec![backend.program(), "-w"];
        full.extend_from_slice(args);
        let out = self.run(netns, &full)?;
        check_output(&format!("in {netns}: {}", full.join(" ")), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads `script` with `nft -f -` inside node `node`.
    pub fn nft(&self, node: usize, script: &str) -> Result<()> {
        nft_script(&self.node(node).netns, script)
    }

    /// Sets one sysctl in a namespace of this lab (`sysctl -qw key=value`). For interface
    /// names that contain dots (`vxlan.calico`) write the key with slashes
    /// (`net/ipv4/conf/vxlan.calico/rp_filter`).
    pub fn sysctl(&self, netns: &str, key: &str, value: &str) -> Result<()> {
        self.check_owned(netns)?;
        self.sysctls(netns, &[(key, value)])
    }

    /// Runs `f` on a new thread that has `setns()`'d into the named netns and returns its
    /// result; a panic in `f` is propagated. Inside `f` read `/proc/thread-self/net/...`, not
    /// `/proc/net/...` (which shows the main thread's netns).
    pub fn in_netns<T: Send + 'static>(
        netns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        match spawn_in_netns(netns, f)?.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Counters of interface `dev` in a namespace of this lab.
    pub fn link_stats(&self, netns: &str, dev: &str) -> Result<LinkStats> {
        self.check_owned(netns)?;
        let v = ip_json(netns, &["-s", "link", "show", "dev", dev])?;
        let s = &v[0]["stats64"];
        let get = |dir: &str, what: &str| -> Result<u64> {
            s[dir][what]
                .as_u64()
                .ok_or_else(|| anyhow!("no stats64.{dir}.{what} for {dev} in {netns}"))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_bytes: get("rx", "bytes")?,
            rx_dropped: get("rx", "dropped")?,
            tx_packets: get("tx", "packets")?,
            tx_bytes: get("tx", "bytes")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    /// Interface index of `dev` inside a namespace of this lab.
    pub fn ifindex(&self, netns: &str, dev: &str) -> Result<u32> {
        self.check_owned(netns)?;
        let v = ip_json(netns, &["link", "show", "dev", dev])?;
        v[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| anyhow!("no ifindex for {dev} in {netns}"))
    }

    /// Inode number of the named netns (what the kernel calls `net->ns.inum`).
    pub fn netns_inode(netns: &str) -> Result<u64> {
        check_netns_name(netns)?;
        let path = Path::new(NETNS_DIR).join(netns);
        Ok(std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .ino())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            let res = Command::new("ip")
                .args(["netns", "del", name])
                .stdin(Stdio::null())
                .output();
            let ok = matches!(&res, Ok(o) if o.status.success());
            if !ok && Path::new(NETNS_DIR).join(name).exists() {
                eprintln!("calitrace lab: could not delete netns {name}: {res:?}");
            }
        }
    }
}
