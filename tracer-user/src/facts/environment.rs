//! The environment that answers look-ups: live, from the kernel, queuing
//! every new or changed answer as a [`Fact`] for the recording; on replay,
//! from the recorded facts alone.

use std::net::IpAddr;

use super::{Fact, NodeFacts, PodInfo, RouteFact};
use crate::dataplane::calico_ebpf::CalicoEbpf;
use crate::kernel::{kallsyms::Kallsyms, netlink, system};
use crate::model::{CalicoEbpfDrop, WireguardRefusal};
use crate::netfilter::Inventory;
use crate::netfilter::trace::NfTracer;

/// The kernel side of lookups; absent on replay.
pub struct Live {
    kallsyms: Kallsyms,
    /// nftables' trace of the flows whose drops are being attributed.
    nftrace: Option<NfTracer>,
    /// Felix's counters, where Calico's eBPF dataplane runs.
    calico_ebpf: Option<CalicoEbpf>,
    /// WireGuard devices' `rx_frame_errors` as last read, and when to read next.
    wireguard_errors: std::collections::BTreeMap<String, u64>,
    wireguard_next_ns: u64,
}

/// Answers lookups from facts, asking the kernel first when live.
pub struct Environment {
    pub facts: NodeFacts,
    live: Option<Live>,
    updates: Vec<Fact>,
    /// Why nftables' trace could not be extended, the first time.
    pub trace_error: Option<String>,
}

impl Environment {
    pub fn replay(facts: NodeFacts) -> Self {
        Self {
            facts,
            live: None,
            updates: Vec::new(),
            trace_error: None,
        }
    }

    pub fn live(facts: NodeFacts, kallsyms: Kallsyms) -> Self {
        Self {
            facts,
            live: Some(Live {
                kallsyms,
                nftrace: None,
                calico_ebpf: None,
                wireguard_errors: Default::default(),
                wireguard_next_ns: 0,
            }),
            updates: Vec::new(),
            trace_error: None,
        }
    }

    /// Live: nftables' trace names the rule of each drop of a flow that
    /// [`Environment::trace_flow`] asked for.
    pub fn with_nftrace(mut self, tracer: NfTracer) -> Self {
        if let Some(live) = self.live.as_mut() {
            live.nftrace = Some(tracer);
        }
        self
    }

    /// Live: Calico's eBPF counters explain tc drops.
    pub fn with_calico_ebpf(mut self, reader: CalicoEbpf) -> Self {
        if let Some(live) = self.live.as_mut() {
            live.calico_ebpf = Some(reader);
        }
        self
    }

    /// Why Calico's eBPF programs dropped the packet freed at `ts_ns` by tc
    /// on `ifindex` (see [`CalicoEbpf::explain`]); recorded for replay.
    pub fn calico_ebpf_drop(
        &mut self,
        ts_ns: u64,
        ifindex: u32,
        hook: Option<u32>,
        cpu: u16,
        iface: Option<&str>,
        ipv6: bool,
    ) -> Option<Box<CalicoEbpfDrop>> {
        let Some(live) = self.live.as_mut() else {
            return match self.facts.calico_ebpf.take() {
                Some((ts, i, drop)) if ts == ts_ns && i == ifindex => Some(drop),
                other => {
                    self.facts.calico_ebpf = other;
                    None
                }
            };
        };
        let drop = Box::new(
            live.calico_ebpf
                .as_mut()?
                .explain(ifindex, hook, cpu, iface, ipv6)?,
        );
        self.learn(Fact::CalicoEbpf {
            ts_ns,
            ifindex,
            drop: drop.clone(),
        });
        Some(drop)
    }

    /// Packets WireGuard refused since the last reading (live: read once a
    /// second, the first reading being the baseline); recorded for replay.
    pub fn wireguard_refusals(&mut self, now_ns: u64) -> Vec<WireguardRefusal> {
        let Some(live) = self.live.as_mut() else {
            return std::mem::take(&mut self.facts.wireguard_refused);
        };
        if now_ns < live.wireguard_next_ns {
            return Vec::new();
        }
        live.wireguard_next_ns = now_ns + 1_000_000_000;
        let mut found = Vec::new();
        for dev in ["wireguard.cali", "wg-v6.cali"] {
            let path = format!("/sys/class/net/{dev}/statistics/rx_frame_errors");
            let Some(errors) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            let before = live.wireguard_errors.insert(dev.to_string(), errors);
            if let Some(b) = before
                && errors > b
            {
                found.push(WireguardRefusal {
                    ifname: dev.to_string(),
                    count: errors - b,
                    peers: wireguard_peers(dev),
                });
            }
        }
        for refusal in &found {
            self.learn(Fact::WireguardRefused {
                ts_ns: now_ns,
                refusal: refusal.clone(),
            });
        }
        self.facts.wireguard_refused.clear();
        found
    }

    /// Traces the packets from `src` to `dst` through every nf_tables table
    /// from now on (live, where the trace is open). An error is kept for
    /// the end of the session and not repeated.
    pub fn trace_flow(&mut self, src: IpAddr, dst: IpAddr) {
        let Some(t) = self.live.as_mut().and_then(|l| l.nftrace.as_mut()) else {
            return;
        };
        if let Err(e) = t.watch(src, dst)
            && self.trace_error.is_none()
        {
            eprintln!(
                "calitrace: nftables trace: cannot trace {src} > {dst}: {e} (netfilter drops keep the counters' attribution)"
            );
            self.trace_error = Some(e.to_string());
        }
    }

    /// Removes the trace table once no flow has needed it for a while.
    pub fn expire_trace(&mut self) {
        if let Some(t) = self.live.as_mut().and_then(|l| l.nftrace.as_mut()) {
            t.expire(std::time::Instant::now());
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    fn learn(&mut self, f: Fact) {
        self.facts.apply(&f);
        if self.live.is_some() {
            self.updates.push(f);
        }
    }

    /// An interface that appeared (or was renamed) while tracing.
    pub fn learn_interface(&mut self, netns: u32, ifindex: u32, name: &str) {
        if self.facts.ifname(netns, ifindex) != Some(name) {
            self.learn(Fact::IfName {
                netns,
                ifindex,
                name: name.to_string(),
            });
        }
    }

    /// A pod's namespace found while tracing, and its interfaces.
    pub fn learn_pod(&mut self, netns: u32, pod: PodInfo, links: &[(u32, String)]) {
        for (ifindex, name) in links {
            self.learn_interface(netns, *ifindex, name);
        }
        if self.facts.pods.get(&netns) != Some(&pod) {
            self.learn(Fact::Pod { netns, pod });
        }
    }

    /// The kernel's count of lost events, recorded when it grows.
    pub fn note_lost(&mut self, ts_ns: u64, lost: u64) {
        if lost > self.facts.lost {
            self.learn(Fact::Lost { ts_ns, lost });
        }
    }

    /// Applies a recorded fact (replay).
    pub fn apply(&mut self, f: &Fact) {
        self.facts.apply(f);
    }

    /// Facts learnt since the last call, in the order they were learnt.
    pub fn take_updates(&mut self) -> Vec<Fact> {
        std::mem::take(&mut self.updates)
    }

    pub fn symbol(&mut self, addr: u64) -> Option<String> {
        if let Some(s) = self.facts.symbols.get(&addr) {
            return Some(s.clone());
        }
        let name = self.live.as_ref()?.kallsyms.name(addr)?.to_string();
        self.learn(Fact::Symbol {
            addr,
            name: name.clone(),
        });
        Some(name)
    }

    /// A per-interface sysctl such as `net.ipv4.conf.<iface>.proxy_arp`.
    pub fn iface_sysctl(
        &mut self,
        family: &str,
        section: &str,
        ifname: &str,
        setting: &str,
    ) -> Option<String> {
        let key = system::iface_sysctl_key(family, section, ifname, setting);
        if self.live.is_none() {
            return self.facts.sysctls.get(&key).cloned();
        }
        let value = system::read_iface_sysctl(family, section, ifname, setting);
        if self.facts.sysctls.get(&key) != value.as_ref() {
            self.learn(Fact::Sysctl {
                key,
                value: value.clone(),
            });
        }
        value
    }

    /// A fresh reading of the netfilter rules and counters (live), or the
    /// reading recorded at this point (replay).
    pub fn netfilter(&mut self) -> Option<Inventory> {
        if let Some(live) = self.live.as_mut() {
            let mut inv = Inventory::read();
            if let Some(t) = live.nftrace.as_mut() {
                inv.traces = t.drain();
            }
            self.learn(Fact::Netfilter {
                inventory: Box::new(inv.clone()),
            });
            return Some(inv);
        }
        self.facts.netfilter.clone()
    }

    pub fn route(&mut self, dst: IpAddr) -> RouteFact {
        if self.live.is_some() {
            let route = match netlink::route_get(dst) {
                Ok(netlink::Route::Via(idx)) => RouteFact::Via(
                    self.facts
                        .ifname(self.facts.netns, idx)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("if{idx}")),
                ),
                Ok(netlink::Route::Local) => RouteFact::Local,
                Ok(netlink::Route::None) => RouteFact::None,
                Err(_) => RouteFact::Unknown,
            };
            if self.facts.routes.get(&dst) != Some(&route) {
                self.learn(Fact::Route {
                    dst,
                    route: route.clone(),
                });
            }
            return route;
        }
        self.facts
            .routes
            .get(&dst)
            .cloned()
            .unwrap_or(RouteFact::Unknown)
    }
}

/// `endpoint: allowed IPs` of each peer of WireGuard device `dev`.
fn wireguard_peers(dev: &str) -> Option<String> {
    let d = crate::dataplane::wireguard::device(dev).ok()?;
    let peers: Vec<String> = d
        .peers
        .iter()
        .map(|p| {
            let at = p
                .endpoint
                .map_or_else(|| "no endpoint".into(), |e| e.to_string());
            let allowed: Vec<String> = p
                .allowed_ips
                .iter()
                .map(|(a, m)| format!("{a}/{m}"))
                .collect();
            format!("{at} allows {}", allowed.join(", "))
        })
        .collect();
    Some(peers.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_answers_from_recorded_facts_only() {
        let mut env = Environment::replay(NodeFacts::default());
        assert_eq!(env.symbol(0x1234), None);
        env.apply(&Fact::Symbol {
            addr: 0x1234,
            name: "nf_hook_slow".into(),
        });
        env.apply(&Fact::Sysctl {
            key: "net.ipv4.conf.cali1.proxy_arp".into(),
            value: Some("0".into()),
        });
        assert_eq!(
            env.iface_sysctl("ipv4", "conf", "cali1", "proxy_arp")
                .as_deref(),
            Some("0")
        );
        env.apply(&Fact::Route {
            dst: "10.0.0.1".parse().unwrap(),
            route: RouteFact::None,
        });
        assert_eq!(env.symbol(0x1234).as_deref(), Some("nf_hook_slow"));
        assert_eq!(env.route("10.0.0.1".parse().unwrap()), RouteFact::None);
        assert_eq!(env.route("10.0.0.2".parse().unwrap()), RouteFact::Unknown);
        assert!(
            env.take_updates().is_empty(),
            "replay never produces new facts"
        );
    }

    #[test]
    fn interfaces_and_pods_that_appear_are_recorded_once() {
        let mut env = Environment::live(NodeFacts::default(), Kallsyms::default());
        let pod = PodInfo {
            name: "ns1".into(),
            host_iface: "cali1".into(),
        };
        for _ in 0..2 {
            env.learn_interface(7, 12, "cali1");
            env.learn_pod(99, pod.clone(), &[(2, "eth0".into())]);
        }
        let updates = env.take_updates();
        assert_eq!(updates.len(), 3, "{updates:?}");
        let mut replayed = Environment::replay(NodeFacts::default());
        for f in &updates {
            replayed.apply(f);
        }
        assert_eq!(replayed.facts.ifname(7, 12), Some("cali1"));
        assert_eq!(replayed.facts.ifname(99, 2), Some("eth0"));
        assert_eq!(replayed.facts.netns_label(99), "pod ns1");
        env.learn_interface(7, 12, "cali2");
        assert_eq!(env.take_updates().len(), 1, "a rename is new");
    }

    #[test]
    fn live_lookups_are_queued_once() {
        let ks = Kallsyms::parse("ffffffff81a00400 T nf_hook_slow\n".as_bytes());
        let mut env = Environment::live(NodeFacts::default(), ks);
        assert_eq!(
            env.symbol(0xffffffff81a00410).as_deref(),
            Some("nf_hook_slow")
        );
        assert_eq!(
            env.symbol(0xffffffff81a00410).as_deref(),
            Some("nf_hook_slow")
        );
        let updates = env.take_updates();
        assert_eq!(updates.len(), 1);
        let mut replayed = NodeFacts::default();
        replayed.apply(&updates[0]);
        assert_eq!(replayed.symbols, env.facts.symbols);
    }

    #[test]
    fn a_recorded_wireguard_refusal_is_replayed_once() {
        let mut env = Environment::replay(NodeFacts::default());
        let refusal = WireguardRefusal {
            ifname: "wireguard.cali".into(),
            count: 3,
            peers: Some("192.168.1.2:51820 allows 10.244.2.0/26".into()),
        };
        env.apply(&Fact::WireguardRefused {
            ts_ns: 5,
            refusal: refusal.clone(),
        });
        assert_eq!(env.wireguard_refusals(10), vec![refusal]);
        assert!(env.wireguard_refusals(20).is_empty());
    }
}
