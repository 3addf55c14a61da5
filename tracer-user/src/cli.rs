//! The command line (see the README for the contract).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "calitrace",
    version,
    about = "Where exactly does cross-node Pod traffic die on this Calico node, and why?",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace live on this node (the default command).
    Trace(TraceArgs),
    /// Show a recording with the same views; needs no root.
    Replay(ReplayArgs),
    /// Show which kernel mechanisms and probes this kernel allows, and why not.
    Probes,
    /// Trace like `trace` and write the recording stream to stdout, for
    /// `calitrace cluster`; stops on SIGTERM/SIGINT/SIGHUP, when stdin (a
    /// pipe) closes, when a client that sent keep-alives stops sending them,
    /// on a broken stdout, after --duration or --max-lifetime.
    Agent(AgentArgs),
    /// One live view of several nodes: starts `sh -c "COMMAND agent ARGS"`
    /// for each --node NAME=COMMAND, or reaches the agents through the
    /// Kubernetes API server with --k8s, and merges their streams.
    Cluster(ClusterArgs),
    /// Check this node's Calico datapath configuration (no eBPF): exit 0 when
    /// no check fails, 1 when one does.
    Doctor(DoctorArgs),
    /// Print the doctor's checks once (text, for `kubectl logs`), then wait
    /// for SIGTERM, SIGINT or SIGHUP and exit 0: what the agent DaemonSet's
    /// pods run; tracing happens in `kubectl exec ... calitrace agent`.
    Standby(StandbyArgs),
    /// Remove what killed calitraces left on this node: tc filters of
    /// their programs that no process holds, nftables trace tables of
    /// calitraces that are gone. Running calitraces keep theirs.
    Cleanup(CleanupArgs),
    /// Whether this node can be traced, as one JSON line (version, kernel,
    /// privileges and BTF, Calico dataplane, the doctor's failed checks):
    /// exit 0 when tracing can start. What `cluster --k8s --status` runs
    /// on each node, and the DaemonSet's readiness probe.
    Status(StatusArgs),
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where the host's root is mounted (in a container, e.g. /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Stop after SECS seconds whatever the client does (an agent whose
    /// client vanished without a word ends anyway); with --duration, that
    /// is the bound instead.
    #[arg(long, value_name = "SECS", default_value_t = AGENT_LIFETIME_S)]
    pub max_lifetime: f64,
    /// Once the client has sent a keep-alive (any byte on stdin), stop when
    /// none comes for SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, hide = true)]
    pub keepalive_timeout: f64,
}

/// An agent's default --max-lifetime: 4 hours, as the ephemeral agent pods'
/// `activeDeadlineSeconds` without --duration.
pub const AGENT_LIFETIME_S: f64 = 4.0 * 3600.0;

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// Where the host's root is mounted (in a container, e.g. /host): which
    /// programs the host's processes hold is read from its /proc.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// First SIGTERM the agents running here (registered in
    /// /run/calitrace) and wait for them to detach and exit: the
    /// DaemonSet's preStop hook.
    #[arg(long)]
    pub stop_agents: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StandbyArgs {
    /// Where the host's root is mounted (the DaemonSet mounts host paths
    /// under /host): the doctor reads host files and /proc under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

/// How doctor writes its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DoctorOutput {
    /// A table, one check per row with its evidence and hint.
    Text,
    /// One `{"type":"check", ...}` object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// text (a table) or json (one object per check and line).
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: DoctorOutput,
    /// Where the host's root is mounted, when calitrace runs in a container
    /// (e.g. /host): every host file and /proc path is read under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Tui,
    Text,
    Json,
    /// pcapng of the recorded packets (replay only).
    Pcap,
}

#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// View: tui (default on a terminal), text (default otherwise), json lines,
    /// or pcap (replay only: pcapng on stdout).
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// Report only drops and diagnoses, not every packet seen by tc.
    #[arg(long)]
    pub drops_only: bool,
    /// Also report benign drops: frees that are no fault of pod traffic
    /// (IPv6 link-local and multicast housekeeping, the queues of closing
    /// sockets, ...), marked `benign` and never diagnosed. Without it they
    /// are only counted (`stats`), and the TUI shows them on `b`.
    #[arg(long)]
    pub all_drops: bool,
    /// Also report `verdict` lines: every netfilter table's verdict on every
    /// packet, accepts too (needs the exact probes: fexit or kprobes).
    #[arg(long)]
    pub verdicts: bool,
    /// tcpdump-like filter: host/src host/dst host A, net CIDR, [src|dst] port N,
    /// tcp, udp, icmp, arp, joined with and/or/not and parentheses. Options
    /// may come after it; words after `--` are all filter, even `-x`.
    // Not `trailing_var_arg`: it made every word after the filter's first,
    // `--output json` included, part of the filter.
    #[arg(value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Also record everything to FILE (replay it with `calitrace replay FILE`).
    #[arg(short, long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub probes: ProbeOptions,
    /// Where the host's root is mounted (in a container, e.g. /host): host
    /// files calitrace reads, such as the kubelet's pod logs, are under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

/// How and where the programs trace (a cluster passes these on to its agents).
#[derive(Debug, Clone, Args)]
pub struct ProbeOptions {
    /// Interfaces for the tc programs (glob, repeatable). Default: cali*, tunl0,
    /// vxlan.calico, vxlan-v6.calico, wireguard.cali and the default route's uplink.
    #[arg(short, long = "iface", value_name = "GLOB")]
    pub iface: Vec<String>,
    /// Report drops from every network namespace, not only this node's and its pods'.
    #[arg(long)]
    pub all_netns: bool,
    /// How tc programs attach: tcx (kernel 6.6+; links die with the process,
    /// even SIGKILL, but each attach and detach waits for an RCU grace period:
    /// seconds for hundreds of interfaces), netlink (clsact qdisc and filters:
    /// ten times faster, but a SIGKILL leaves them behind), or auto (tcx where
    /// the kernel has it).
    #[arg(long, value_enum, value_name = "HOW", default_value = "auto")]
    pub tc_attach: crate::probes::loader::TcAttach,
    /// Exact netfilter probes: auto (fexit where the kernel allows it, else
    /// kprobes), fexit, kprobe, or off (attribution inferred from counters).
    #[arg(long, value_enum, value_name = "HOW", default_value = "auto")]
    pub nf_probes: crate::probes::exact::Mode,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub ring_mib: u32,
    /// Where Calico's eBPF dataplane pins its maps: Felix's counters there
    /// name the drops of its programs.
    #[arg(long, value_name = "DIR", default_value = crate::dataplane::calico_ebpf::MAPS_DIR)]
    pub calico_bpf_maps: PathBuf,
    /// Where Felix writes its policy debug files (the rules of a policy drop).
    #[arg(long, value_name = "DIR", default_value = crate::dataplane::calico_ebpf::POLICY_DIR)]
    pub calico_bpf_policy: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// A node and how to start calitrace there: NAME=COMMAND (repeatable),
    /// e.g. node-a='ssh root@node-a calitrace'. Runs `sh -c "COMMAND agent ARGS"`.
    #[arg(long = "node", value_name = "NAME=COMMAND", conflicts_with = "k8s")]
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Also record the merged session to FILE (replay it with `calitrace replay FILE`).
    #[arg(short, long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub agents: ProbeOptions,
    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A file written by `calitrace trace -w FILE` or `calitrace cluster -w
    /// FILE`; several single-node recordings are merged into one cluster view
    /// (`calitrace replay A B [FILTER]`).
    pub file: PathBuf,
    /// Replay at N times the recorded speed (default: as fast as possible).
    #[arg(long, value_name = "N")]
    pub speed: Option<f64>,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// `cluster --k8s`: the agents through the Kubernetes API server.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Reach the agents through the Kubernetes API server: exec into the
    /// calitrace DaemonSet's pod on each node, or into an ephemeral agent pod.
    #[arg(long)]
    pub k8s: bool,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then
    /// the pod's service account when run in a cluster).
    #[arg(long, value_name = "FILE", requires = "k8s")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME", requires = "k8s")]
    pub context: Option<String>,
    /// Trace the nodes of these pods and, unless a FILTER is given, only
    /// their addresses.
    #[arg(
        long,
        value_name = "NS/NAME,...",
        value_delimiter = ',',
        requires = "k8s"
    )]
    pub pods: Vec<String>,
    /// Trace these nodes.
    #[arg(
        long = "nodes",
        value_name = "NODE,...",
        value_delimiter = ',',
        requires = "k8s"
    )]
    pub node_names: Vec<String>,
    /// Trace every node (those not Ready are left out, with a warning).
    #[arg(long, requires = "k8s")]
    pub all_nodes: bool,
    /// Where the agents live: the DaemonSet's namespace, and where
    /// ephemeral agent pods are made.
    #[arg(long, value_name = "NS", default_value = "calitrace", requires = "k8s")]
    pub namespace: String,
    /// The image of ephemeral agent pods (default: the DaemonSet's, where it
    /// exists, else calitrace:<version>).
    #[arg(long, value_name = "IMAGE", requires = "k8s")]
    pub image: Option<String>,
    /// Always start ephemeral agent pods, even where the DaemonSet runs.
    #[arg(long, requires = "k8s")]
    pub ephemeral: bool,
    /// Delete every ephemeral agent pod (left by a client that was killed),
    /// remove what killed agents left on the nodes, print what was removed,
    /// and exit.
    #[arg(long, requires = "k8s")]
    pub cleanup: bool,
    /// Show, per node (--nodes, else every node), whether an agent is ready,
    /// its version, kernel and dataplane and the doctor's failed checks,
    /// and whether you may make each API call `cluster --k8s` makes; exit 0
    /// only when all is ready. Also `kubectl calitrace status`.
    #[arg(long, requires = "k8s", conflicts_with = "cleanup")]
    pub status: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_takes_a_host_root() {
        let cli = Cli::try_parse_from(["calitrace", "standby", "--host-root", "/host"]).unwrap();
        match cli.command {
            Some(Command::Standby(a)) => assert_eq!(a.host_root, PathBuf::from("/host")),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["calitrace", "standby"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Standby(a)) if a.host_root == std::path::Path::new("/"))
        );
        assert!(Cli::try_parse_from(["calitrace", "standby", "host", "10.0.0.1"]).is_err());
    }

    fn parse(words: &[&str]) -> Command {
        let cli = Cli::try_parse_from(std::iter::once("calitrace").chain(words.iter().copied()))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
        cli.command.expect("a subcommand")
    }

    fn replay(words: &[&str]) -> ReplayArgs {
        match parse(words) {
            Command::Replay(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn trace(words: &[&str]) -> TraceArgs {
        match parse(words) {
            Command::Trace(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_after_two_replay_files_are_options() {
        let a = replay(&["replay", "a.rec", "b.rec", "--output", "json"]);
        assert_eq!(a.file, PathBuf::from("a.rec"));
        assert_eq!(a.view.filter, ["b.rec"]);
        assert_eq!(a.view.output, Some(Output::Json));
    }

    #[test]
    fn options_between_a_replay_file_and_its_filter_are_options() {
        let a = replay(&["replay", "a.rec", "--output", "json", "host", "1.2.3.4"]);
        assert_eq!(a.file, PathBuf::from("a.rec"));
        assert_eq!(a.view.filter, ["host", "1.2.3.4"]);
        assert_eq!(a.view.output, Some(Output::Json));
        let a = replay(&["replay", "a.rec", "host", "1.2.3.4", "--speed", "2"]);
        assert_eq!(a.view.filter, ["host", "1.2.3.4"]);
        assert_eq!(a.speed, Some(2.0));
    }

    #[test]
    fn options_after_a_trace_filter_are_options() {
        let a = trace(&["trace", "host", "1.2.3.4", "-o", "json"]);
        assert_eq!(a.view.filter, ["host", "1.2.3.4"]);
        assert_eq!(a.view.output, Some(Output::Json));
        // The default command too.
        let cli = Cli::try_parse_from(["calitrace", "host", "1.2.3.4", "--drops-only"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.trace.view.filter, ["host", "1.2.3.4"]);
        assert!(cli.trace.view.drops_only);
    }

    #[test]
    fn a_double_dash_ends_the_options() {
        let a = trace(&["trace", "--", "host", "1.2.3.4"]);
        assert_eq!(a.view.filter, ["host", "1.2.3.4"]);
        assert_eq!(a.view.output, None);
        let a = trace(&["trace", "-o", "text", "--", "-x", "--output", "json"]);
        assert_eq!(a.view.filter, ["-x", "--output", "json"]);
        assert_eq!(a.view.output, Some(Output::Text));
        // Without `--` such a word is an unknown option, not a filter.
        assert!(Cli::try_parse_from(["calitrace", "trace", "host", "-x"]).is_err());
    }

    #[test]
    fn agent_and_cluster_take_options_after_the_filter() {
        match parse(&["agent", "icmp", "--duration", "3", "--", "-y"]) {
            Command::Agent(a) => {
                assert_eq!(a.trace.view.filter, ["icmp", "-y"]);
                assert_eq!(a.trace.duration, Some(3.0));
                assert_eq!(a.max_lifetime, AGENT_LIFETIME_S);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "cluster", "--node", "a=sh", "icmp", "-o", "text", "--node", "b=sh",
        ]) {
            Command::Cluster(c) => {
                assert_eq!(c.view.filter, ["icmp"]);
                assert_eq!(c.nodes, ["a=sh", "b=sh"]);
                assert_eq!(c.view.output, Some(Output::Text));
            }
            other => panic!("{other:?}"),
        }
    }
}
