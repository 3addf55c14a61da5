//! Turning drops and unanswered ARP into diagnoses: one per distinct problem,
//! re-emitted with updated counts at most once per interval.

pub mod attribution;
pub mod classify;

use std::collections::HashMap;
use std::net::IpAddr;

use crate::correlation::arp::Unanswered;
use crate::events::facts::{Environment, RouteFact};
use crate::events::records::{Diagnosis, DropRecord, NetfilterInfo, Record, Stage};
use crate::netfilter::{Backend, CalicoPlacement};

/// Calico's link-local gateway address every pod routes through.
pub const CALICO_GATEWAY: &str = "169.254.1.1";

/// Distinct problems kept at most. Each is a key and a diagnosis (about a
/// kilobyte); with flows coming and going, every dropping pair of addresses
/// is a new problem, so without a bound the table grows for as long as
/// calitrace runs. Beyond it, the problems updated longest ago are forgotten
/// (an eighth at a time); one that comes back is reported as new.
pub const MAX_PROBLEMS: usize = 4096;

struct State {
    diag: Diagnosis,
    dirty: bool,
    last_emit: u64,
}

pub struct Diagnoser {
    states: HashMap<String, State>,
    update_interval_ns: u64,
}

impl Diagnoser {
    pub fn new(update_interval_ns: u64) -> Self {
        Self {
            states: HashMap::new(),
            update_interval_ns,
        }
    }

    /// Counts one more occurrence of the problem `key`; a new problem is
    /// reported at once.
    fn note(
        &mut self,
        key: String,
        ts: u64,
        count: u64,
        make: impl FnOnce() -> Diagnosis,
        out: &mut Vec<Record>,
    ) {
        match self.states.get_mut(&key) {
            Some(s) => {
                s.diag.count += count;
                s.diag.last_ts_ns = ts;
                s.dirty = true;
            }
            None => {
                if self.states.len() >= MAX_PROBLEMS {
                    self.evict(out);
                }
                let mut diag = make();
                diag.count = count;
                diag.first_ts_ns = ts;
                diag.last_ts_ns = ts;
                out.push(Record::Diagnosis(diag.clone()));
                self.states.insert(
                    key,
                    State {
                        diag,
                        dirty: false,
                        last_emit: ts,
                    },
                );
            }
        }
    }

    /// Forgets the eighth of the problems updated longest ago; those with an
    /// update not yet reported report it first.
    fn evict(&mut self, out: &mut Vec<Record>) {
        let mut ages: Vec<(u64, u64, &String)> = self
            .states
            .iter()
            .map(|(k, s)| (s.diag.last_ts_ns, s.diag.first_ts_ns, k))
            .collect();
        ages.sort_unstable();
        let old: Vec<String> = ages
            .into_iter()
            .take(MAX_PROBLEMS / 8)
            .map(|(_, _, k)| k.clone())
            .collect();
        for k in old {
            if let Some(s) = self.states.remove(&k)
                && s.dirty
            {
                out.push(Record::Diagnosis(s.diag));
            }
        }
    }

    /// Re-emits problems whose count changed, no more often than the interval
    /// (all of them when `force`).
    pub fn flush(&mut self, now: u64, force: bool, out: &mut Vec<Record>) {
        let mut due: Vec<&mut State> = self
            .states
            .values_mut()
            .filter(|s| {
                s.dirty && (force || now.saturating_sub(s.last_emit) >= self.update_interval_ns)
            })
            .collect();
        due.sort_by_key(|s| s.diag.first_ts_ns);
        for s in due {
            s.dirty = false;
            s.last_emit = now;
            out.push(Record::Diagnosis(s.diag.clone()));
        }
    }

    pub fn current(&self) -> Vec<&Diagnosis> {
        let mut v: Vec<_> = self.states.values().map(|s| &s.diag).collect();
        v.sort_by_key(|d| d.first_ts_ns);
        v
    }

    pub fn on_drop(&mut self, d: &DropRecord, env: &mut Environment, out: &mut Vec<Record>) {
        let src = d.flow.src.clone();
        let dst = d.flow.dst.clone();
        let pair = format!(
            "{} > {}",
            src.as_deref().unwrap_or("?"),
            dst.as_deref().unwrap_or("?")
        );
        let flow = |code, stage, summary: String, hint: String| Diagnosis {
            code,
            stage: Some(stage),
            summary,
            hint,
            src: src.clone(),
            dst: dst.clone(),
            ..Default::default()
        };
        let dst_ip: Option<IpAddr> = dst.as_deref().and_then(|s| s.parse().ok());
        match d.stage {
            Stage::Netfilter => {
                let nf = d.netfilter.clone().unwrap_or_default();
                self.netfilter_drop(d, &nf, &pair, env, out);
                if let Some(m) = mismatch(&nf, env) {
                    let key = format!(
                        "IPTABLES_BACKEND_MISMATCH|{:?}|{:?}|{:?}|{}",
                        nf.backend, nf.table, nf.chain, m.calico
                    );
                    self.note(
                        key,
                        d.ts_ns,
                        1,
                        || Diagnosis {
                            backend: nf.backend.clone(),
                            table: nf.table.clone(),
                            chain: nf.chain.clone(),
                            hook: nf.hook.clone(),
                            rule: nf.rule.clone(),
                            calico_backend: Some(m.calico.clone()),
                            attribution: Some(nf.attribution),
                            ..flow(
                                "IPTABLES_BACKEND_MISMATCH",
                                Stage::Netfilter,
                                m.summary.clone(),
                                m.hint.clone(),
                            )
                        },
                        out,
                    );
                }
            }
            Stage::RpFilter => {
                let ifname = d.ifname.clone().unwrap_or_else(|| "?".into());
                let back = src
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .map(|ip| env.route(ip));
                let setting = env
                    .iface_sysctl("ipv4", "conf", &ifname, "rp_filter")
                    .unwrap_or_else(|| "?".into());
                let all = env
                    .iface_sysctl("ipv4", "conf", "all", "rp_filter")
                    .unwrap_or_else(|| "?".into());
                let why = match back {
                    Some(RouteFact::Via(out_if)) if out_if != ifname => {
                        format!(
                            ": the route back to {} leaves by {out_if}",
                            src.as_deref().unwrap_or("?")
                        )
                    }
                    Some(RouteFact::None) => format!(
                        ": there is no route back to {}",
                        src.as_deref().unwrap_or("?")
                    ),
                    _ => String::new(),
                };
                self.note(format!("RP_FILTER|{ifname}|{pair}"), d.ts_ns, 1, || Diagnosis {
                    ifname: Some(ifname.clone()),
                    ..flow(
                        "RP_FILTER",
                        Stage::RpFilter,
                        format!("reverse path filter dropped {pair} arriving on {ifname}{why}"),
                        format!(
                            "rp_filter is {setting} on {ifname} and {all} for all (the higher applies): fix the route back to the source, or set loose mode with `sysctl -w net.ipv4.conf.{ifname}.rp_filter=2`"
                        ),
                    )
                }, out);
            }
            Stage::Ttl => {
                let route = dst_ip.map(|ip| env.route(ip));
                // Interfaces only: netfilter points share the journey.
                let ifaces = d.journey.iter().filter(|h| h.dir != "netfilter").count();
                let seen = if d.journey.len() >= crate::correlation::MAX_HOPS {
                    format!("at least {ifaces}")
                } else {
                    ifaces.to_string()
                };
                let via = match &route {
                    Some(RouteFact::Via(i)) => format!("; this node routes it out of {i}"),
                    _ => String::new(),
                };
                let target = dst.clone().unwrap_or_else(|| "?".into());
                self.note(format!("ROUTING_LOOP|{pair}"), d.ts_ns, 1, || flow(
                    "ROUTING_LOOP",
                    Stage::Ttl,
                    format!(
                        "{pair} ran out of TTL while being forwarded (seen {seen} times here){via}: a routing loop"
                    ),
                    format!(
                        "check `ip route get {target}` on this node and on the next hop: a node that lacks the pod's /32 route (or its block route) sends the packet back along its default route"
                    ),
                ), out);
            }
            Stage::Routing => {
                let target = dst.clone().unwrap_or_else(|| "?".into());
                self.note(format!("NO_ROUTE|{target}"), d.ts_ns, 1, || flow(
                    "NO_ROUTE",
                    Stage::Routing,
                    format!("no route to {target} on this node ({})", d.reason),
                    format!("check `ip route get {target}`; for pod traffic the route to the remote node's IPAM block comes from BGP (BIRD) or the VXLAN/IPIP routes Felix programs"),
                ), out);
            }
            Stage::Neighbor => {
                let ifname = d.ifname.clone();
                let host_iface = d
                    .pod
                    .as_ref()
                    .and_then(|_| env.facts.pods.get(&d.netns))
                    .map(|p| p.host_iface.clone());
                if let Some(cali) = host_iface {
                    // Inside a pod the only neighbour is Calico's gateway.
                    self.gateway_unanswered(&cali, CALICO_GATEWAY, d.ts_ns, 1, env, out);
                    return;
                }
                let target = dst.clone().unwrap_or_else(|| "?".into());
                let dev = ifname.clone().unwrap_or_else(|| "?".into());
                self.note(format!("NEIGHBOR_UNREACHABLE|{dev}|{target}"), d.ts_ns, 1, || Diagnosis {
                    ifname: ifname.clone(),
                    ..flow(
                        "NEIGHBOR_UNREACHABLE",
                        Stage::Neighbor,
                        format!("{pair}: the next hop on {dev} did not answer ARP/ND"),
                        format!("check `ip neigh show dev {dev}` and `ip route get {target}`: is the next-hop node up and on this link?"),
                    )
                }, out);
            }
            Stage::Mtu => {
                self.note(format!("MTU_EXCEEDED|{pair}"), d.ts_ns, 1, || flow(
                    "MTU_EXCEEDED",
                    Stage::Mtu,
                    format!("{pair}: packet of {} bytes too big for the path (DF set)", d.detail.len),
                    "check the MTU of the pod interface, cali*, and the tunnel (vxlan.calico needs 50 bytes less than the uplink, tunl0 20); Calico's veth MTU setting must fit the encapsulation".into(),
                ), out);
            }
            Stage::Tc | Stage::Socket | Stage::Other => {
                let reason = d.reason.clone();
                let loc = d.location.clone().unwrap_or_else(|| "?".into());
                self.note(format!("OTHER|{reason}|{loc}|{pair}"), d.ts_ns, 1, || flow(
                    "OTHER",
                    d.stage,
                    format!("{pair} dropped: {reason} in {loc}"),
                    format!("the kernel's drop reason is {reason}; see where {loc} frees packets for this reason"),
                ), out);
            }
        }
    }

    /// NETFILTER_DROP, or POLICY_DROP when the chain is one of Calico's policy
    /// or dispatch chains.
    fn netfilter_drop(
        &mut self,
        d: &DropRecord,
        nf: &NetfilterInfo,
        pair: &str,
        _env: &mut Environment,
        out: &mut Vec<Record>,
    ) {
        let place = describe_netfilter(nf);
        let policy = nf
            .chain
            .as_deref()
            .is_some_and(attribution::is_calico_policy_chain);
        let code = if policy {
            "POLICY_DROP"
        } else {
            "NETFILTER_DROP"
        };
        let key = format!(
            "{code}|{:?}|{:?}|{:?}|{:?}|{:?}|{pair}",
            nf.backend, nf.table, nf.chain, nf.hook, nf.rule
        );
        let list = match nf.backend.as_deref() {
            Some("nft") => "nft -a list ruleset",
            Some("legacy") => "iptables-legacy-save -c",
            _ => "iptables-legacy-save -c; nft -a list ruleset",
        };
        let (summary, hint) = if policy {
            let chain = nf.chain.as_deref().unwrap_or("?");
            let why = nf
                .comment
                .as_deref()
                .map(|c| format!(" (\"{c}\")"))
                .unwrap_or_default();
            (
                format!("{pair} dropped by Calico policy: {place}{why}"),
                if nf.comment.as_deref() == Some("Unknown interface") {
                    format!(
                        "{chain} has no entry for this workload interface: Felix has not programmed it (is calico-node healthy on this node, and the pod's cali interface known to it?)"
                    )
                } else {
                    format!(
                        "a NetworkPolicy or GlobalNetworkPolicy denies this traffic ({chain}); check the policies that select the pods involved (`calicoctl get networkpolicy,globalnetworkpolicy -A -o wide`)"
                    )
                },
            )
        } else {
            let what = match (&nf.rule, nf.chain.as_deref(), nf.hook.as_deref()) {
                (Some(r), Some(c), _) if r == "policy DROP" => {
                    format!("the DROP policy of chain {c}")
                }
                (Some(_), Some(c), _) => format!("the rule in chain {c}"),
                (None, _, Some(h)) => format!("a DROP rule or a DROP policy in {h}"),
                _ => "a DROP rule or policy".into(),
            };
            (
                format!("{pair} dropped by netfilter: {place}"),
                format!("look at {what} with `{list}`; Calico's own rules live in cali-* chains"),
            )
        };
        self.note(
            key,
            d.ts_ns,
            1,
            || Diagnosis {
                code,
                stage: Some(Stage::Netfilter),
                summary,
                hint,
                src: d.flow.src.clone(),
                dst: d.flow.dst.clone(),
                backend: nf.backend.clone(),
                table: nf.table.clone(),
                chain: nf.chain.clone(),
                hook: nf.hook.clone(),
                rule: nf.rule.clone(),
                attribution: Some(nf.attribution),
                ..Default::default()
            },
            out,
        );
    }

    /// ARP requests from a pod for its gateway got no answer on `ifname`.
    pub fn on_unanswered_arp(
        &mut self,
        u: &Unanswered,
        ifname: &str,
        env: &mut Environment,
        out: &mut Vec<Record>,
    ) {
        self.gateway_unanswered(
            ifname,
            &u.target.to_string(),
            u.last_ts,
            u.requests,
            env,
            out,
        );
    }

    fn gateway_unanswered(
        &mut self,
        ifname: &str,
        target: &str,
        ts: u64,
        count: u64,
        env: &mut Environment,
        out: &mut Vec<Record>,
    ) {
        let proxy_arp = env.iface_sysctl("ipv4", "conf", ifname, "proxy_arp");
        let route = target
            .parse()
            .map(|ip| env.route(ip))
            .unwrap_or(RouteFact::Unknown);
        let base = |code, stage, summary: String, hint: String| Diagnosis {
            code,
            stage: Some(stage),
            summary,
            hint,
            ifname: Some(ifname.to_string()),
            target: Some(target.to_string()),
            ..Default::default()
        };
        let (code, diag) = if proxy_arp.as_deref() == Some("0") {
            (
                "PROXY_ARP_DISABLED",
                base(
                    "PROXY_ARP_DISABLED",
                    Stage::Neighbor,
                    format!("pod's ARP for {target} unanswered: proxy_arp is 0 on {ifname}"),
                    format!(
                        "`sysctl -w net.ipv4.conf.{ifname}.proxy_arp=1` (Felix sets it on every cali* interface: is calico-node running?)"
                    ),
                ),
            )
        } else if route == RouteFact::None {
            (
                "NO_ROUTE",
                base(
                    "NO_ROUTE",
                    Stage::Routing,
                    format!(
                        "pod's ARP for {target} on {ifname} unanswered: this node has no route to {target}, and proxy ARP only answers for addresses the node can route"
                    ),
                    format!(
                        "`ip route get {target}` fails: give the node a default route (or any route covering {target}) out of another interface"
                    ),
                ),
            )
        } else {
            (
                "PROXY_ARP_DISABLED",
                base(
                    "PROXY_ARP_DISABLED",
                    Stage::Neighbor,
                    format!(
                        "pod's ARP for {target} unanswered on {ifname} although proxy_arp is {}",
                        proxy_arp.as_deref().unwrap_or("unknown")
                    ),
                    format!(
                        "check `sysctl net.ipv4.conf.{ifname}.proxy_arp net.ipv4.neigh.{ifname}.proxy_delay net.ipv4.conf.{ifname}.arp_ignore` and tc/ebtables rules on {ifname}"
                    ),
                ),
            )
        };
        self.note(format!("{code}|{ifname}|{target}"), ts, count, || diag, out);
    }
}

fn backend_name(b: &str) -> &'static str {
    if b == "nft" { "nft" } else { "iptables-legacy" }
}

/// "nft table ip filter, chain FORWARD, hook FORWARD, rule handle 4: ..."
fn describe_netfilter(nf: &NetfilterInfo) -> String {
    let mut parts = Vec::new();
    match (nf.backend.as_deref(), nf.table.as_deref()) {
        (Some(b), Some(t)) => {
            let family = nf
                .family
                .as_deref()
                .map(|f| format!("{f} "))
                .unwrap_or_default();
            parts.push(format!("{} table {family}{t}", backend_name(b)))
        }
        (Some(b), None) => parts.push(format!(
            "{} (table not known)",
            if b == "nft" {
                "nf_tables"
            } else {
                "iptables-legacy"
            }
        )),
        (None, _) => parts.push("backend not known".into()),
    }
    if let Some(c) = &nf.chain {
        parts.push(format!("chain {c}"));
    }
    if let Some(h) = &nf.hook {
        parts.push(format!("hook {h}"));
    }
    if let Some(r) = &nf.rule {
        parts.push(format!("rule {r}"));
    }
    parts.join(", ")
}

struct Mismatch {
    calico: String,
    summary: String,
    hint: String,
}

/// The drop came from one backend while Calico's chains live in the other
/// (or in both): Calico's ACCEPTs do not apply where the packet died.
fn mismatch(nf: &NetfilterInfo, env: &Environment) -> Option<Mismatch> {
    let dropper = nf.backend.as_deref()?;
    let calico = env.facts.netfilter.as_ref()?.calico_chains()?;
    let calico = match calico {
        CalicoPlacement::Legacy if dropper == "nft" => "legacy",
        CalicoPlacement::Nft if dropper == "legacy" => "nft",
        CalicoPlacement::Both => "both",
        _ => return None,
    };
    let binary = env.facts.iptables_binary;
    let node = match binary {
        Some(Backend::Nft) => "nft",
        Some(Backend::Legacy) => "legacy",
        None => "unknown",
    };
    let setting = match binary {
        Some(Backend::Nft) => "FELIX_IPTABLESBACKEND=NFT",
        Some(Backend::Legacy) => "FELIX_IPTABLESBACKEND=Legacy",
        None => "FELIX_IPTABLESBACKEND to the backend the node uses",
    };
    let place = describe_netfilter(nf);
    let summary = if calico == "both" {
        format!(
            "dropped by {place}, while Calico's cali-* chains exist in both iptables backends: one set is stale and both apply"
        )
    } else {
        format!(
            "dropped by {place}, while Calico wrote its accept rules with iptables-{calico}: both backends apply, an ACCEPT in one is not final"
        )
    };
    let hint = format!(
        "this node's iptables is {node} (`iptables -V`, `ls -l /usr/sbin/iptables`): set {setting} on calico-node so Felix programs the backend the node uses{}",
        if calico == "both" {
            ", then remove the stale cali-* chains from the other backend"
        } else {
            ""
        }
    );
    Some(Mismatch {
        calico: calico.into(),
        summary,
        hint,
    })
}
