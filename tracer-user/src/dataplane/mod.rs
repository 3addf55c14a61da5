//! Dataplanes that decide outside netfilter, read from their own state on
//! the node: one folder per dataplane, listed in [`Dataplane`].

pub mod calico_ebpf;
pub mod wireguard;

/// The dataplanes calitrace reads, and where their state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    /// Calico's eBPF dataplane: Felix's pinned maps (`calico_ebpf/`).
    CalicoEbpf,
    /// WireGuard between nodes: its generic netlink family (`wireguard/`).
    WireGuard,
}

impl Dataplane {
    pub const ALL: [Dataplane; 2] = [Dataplane::CalicoEbpf, Dataplane::WireGuard];

    /// What calitrace reads of it, as `calitrace probes` says.
    pub fn reads(self) -> &'static str {
        match self {
            Dataplane::CalicoEbpf => {
                "Calico eBPF: Felix's drop counters and policy rule counters (pinned maps, read at a drop)"
            }
            Dataplane::WireGuard => {
                "WireGuard: its devices' receive errors (each second while tracing) and peers (at a drop), by generic netlink"
            }
        }
    }
}
