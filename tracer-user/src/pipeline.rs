//! Kernel events in, records out: naming, per-packet journeys, diagnoses.
//! Live tracing and replay feed the same pipeline.

use std::net::{IpAddr, Ipv4Addr};

use tracer_common::{Event, NfEvent, backend, dir, filter::FilterProg, kind, l3, nf_point};

use crate::correlation::{Dir, HookPoint, Journeys, PacketKey, Sighting, arp::ArpWatch};
use crate::diagnosis::{Diagnoser, attribution, classify};
use crate::events::facts::Environment;
use crate::events::records::{
    Detail, DropRecord, Flow, Hop, NetfilterInfo, PacketRecord, Record, Stage, VerdictRecord,
};
use crate::events::{Input, dst_ip, kernel_name, src_ip};
use crate::netfilter::Inventory;

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Options {
    /// Emit a `packet` record for every tc observation.
    pub packets: bool,
    /// Emit a `verdict` record for every netfilter verdict.
    pub verdicts: bool,
    /// Applied in userspace (replay; live filtering happens in the kernel).
    pub filter: Option<FilterProg>,
    /// How long an ARP request may wait for its reply.
    pub arp_window_ns: u64,
    /// Minimum time between two updates of the same diagnosis.
    pub diagnosis_interval_ns: u64,
    pub max_journeys: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            packets: true,
            verdicts: false,
            filter: None,
            arp_window_ns: 1000 * MS,
            diagnosis_interval_ns: 1000 * MS,
            max_journeys: 16_384,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub packets: u64,
    pub drops: u64,
}

pub struct Pipeline {
    pub env: Environment,
    opts: Options,
    journeys: Journeys,
    arp: ArpWatch,
    pub diagnoser: Diagnoser,
    now: u64,
    last_housekeeping: u64,
    pub counts: Counts,
    /// Netfilter drops waiting for the next counter reading.
    /// Netfilter drops waiting for the counters (and for the verdict of a
    /// table walk that freed the packet itself), with their packet's key.
    pending_nf: Vec<(DropRecord, Option<PacketKey>)>,
    /// The counter reading the next one is compared with, and the one before.
    nf_baseline: Option<Inventory>,
    nf_previous: Option<Inventory>,
}

/// How long a netfilter drop may wait for the rule counters to be read.
const NF_ATTRIBUTION_DELAY_NS: u64 = 200 * MS;

impl Pipeline {
    pub fn new(env: Environment, opts: Options) -> Self {
        let nf_baseline = env.facts.netfilter.clone();
        Self {
            pending_nf: Vec::new(),
            nf_baseline,
            nf_previous: None,
            env,
            journeys: Journeys::new(opts.max_journeys, 2000 * MS),
            arp: ArpWatch::new(opts.arp_window_ns),
            diagnoser: Diagnoser::new(opts.diagnosis_interval_ns),
            opts,
            now: 0,
            last_housekeeping: 0,
            counts: Counts::default(),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn set_filter(&mut self, filter: Option<FilterProg>) {
        self.opts.filter = filter;
    }

    pub fn process(&mut self, input: &Input, out: &mut Vec<Record>) {
        match input {
            Input::Event(ev) => {
                self.now = self.now.max(ev.ts_ns);
                if self
                    .opts
                    .filter
                    .as_ref()
                    .is_none_or(|f| tracer_common::filter::matches(f, &ev.pkt))
                {
                    self.counts.events += 1;
                    match ev.kind {
                        kind::TC => self.on_tc(ev, out),
                        kind::DROP => self.on_drop(ev, out),
                        _ => {}
                    }
                }
            }
            Input::Verdict(nf) => {
                self.now = self.now.max(nf.ev.ts_ns);
                if self
                    .opts
                    .filter
                    .as_ref()
                    .is_none_or(|f| tracer_common::filter::matches(f, &nf.ev.pkt))
                {
                    self.counts.events += 1;
                    if nf.ev.kind == kind::HOOK {
                        self.on_hook(nf);
                    } else {
                        self.on_verdict(nf, out);
                    }
                }
            }
            Input::Tick(t) => self.now = self.now.max(*t),
        }
        if self.now.saturating_sub(self.last_housekeeping) >= 100 * MS {
            self.housekeeping(out);
        }
    }

    /// End of input: report everything still pending.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        self.housekeeping(out);
        self.attribute_pending(out);
        self.diagnoser.flush(self.now, true, out);
    }

    fn housekeeping(&mut self, out: &mut Vec<Record>) {
        self.last_housekeeping = self.now;
        if self
            .pending_nf
            .first()
            .is_some_and(|(d, _)| self.now.saturating_sub(d.ts_ns) >= NF_ATTRIBUTION_DELAY_NS)
        {
            self.attribute_pending(out);
        }
        for u in self.arp.expired(self.now) {
            let ifname = self
                .ifname(self.env.facts.netns, u.ifindex)
                .unwrap_or_else(|| format!("if{}", u.ifindex));
            self.diagnoser
                .on_unanswered_arp(&u, &ifname, &mut self.env, out);
        }
        self.journeys.expire(self.now);
        self.diagnoser.flush(self.now, false, out);
    }

    /// A sighting as a journey hop, with its interface's name.
    fn hop(&self, s: &Sighting) -> Hop {
        let (mut netfilter, verdict) = match s.verdict.as_deref() {
            Some((nf, v)) => (Some(nf.clone()), Some(v.clone())),
            None => (None, None),
        };
        let (mut point, mut priority) = (None, None);
        if let Some(p) = s.point {
            netfilter = Some(NetfilterInfo {
                hook: hook_name(p.pf, p.hook).map(str::to_string),
                attribution: "exact",
                family: Some(if p.pf == 10 { "ip6" } else { "ip" }.into()),
                ..Default::default()
            });
            point = Some(match p.point {
                nf_point::ENTRY => "entry",
                nf_point::EXIT => "exit",
                _ => "after",
            });
            // An "after" link sits one above the table it follows.
            priority = (p.point == nf_point::AFTER).then(|| p.priority.saturating_sub(1));
        }
        Hop {
            ts_ns: s.ts_ns,
            netns: s.netns,
            ifname: self.ifname(s.netns, s.ifindex),
            dir: s.dir.as_str(),
            ttl: s.ttl,
            netfilter,
            verdict,
            point,
            priority,
        }
    }

    fn ifname(&self, netns: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        self.env.facts.ifname(netns, ifindex).map(str::to_string)
    }

    fn on_tc(&mut self, ev: &Event, out: &mut Vec<Record>) {
        self.counts.packets += 1;
        let p = &ev.pkt;
        let direction = if ev.dir == dir::INGRESS {
            Dir::Ingress
        } else {
            Dir::Egress
        };
        if p.l3 == l3::ARP {
            let (s, t) = (
                Ipv4Addr::new(p.src[0], p.src[1], p.src[2], p.src[3]),
                Ipv4Addr::new(p.dst[0], p.dst[1], p.dst[2], p.dst[3]),
            );
            let is_cali = ev.ifindex != 0
                && self
                    .env
                    .facts
                    .ifname(ev.netns, ev.ifindex)
                    .is_some_and(|n| n.starts_with("cali"));
            match (p.arp_op, ev.dir) {
                (1, dir::INGRESS) if is_cali => self.arp.request(ev.ts_ns, ev.ifindex, s, t),
                (2, dir::EGRESS) => self.arp.reply(ev.ifindex, s),
                _ => {}
            }
        }
        if let Some(key) = PacketKey::of(p) {
            let hop = Sighting {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifindex: ev.ifindex,
                dir: direction,
                ttl: Some(p.ttl),
                verdict: None,
                point: None,
            };
            self.journeys.observe(key, hop);
        }
        if self.opts.packets {
            out.push(Record::Packet(PacketRecord {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifname: self.ifname(ev.netns, ev.ifindex),
                dir: direction.as_str(),
                flow: Flow::of(p),
                detail: Detail::of(p),
            }));
        }
    }

    fn on_verdict(&mut self, nf: &NfEvent, out: &mut Vec<Record>) {
        let info = NetfilterInfo {
            backend: Some(
                if nf.backend == backend::NFT {
                    "nft"
                } else {
                    "legacy"
                }
                .to_string(),
            ),
            table: Some(kernel_name(&nf.table)).filter(|t| !t.is_empty()),
            chain: Some(kernel_name(&nf.chain)).filter(|c| !c.is_empty()),
            hook: hook_name(nf.pf, nf.hook).map(str::to_string),
            rule: None,
            attribution: "exact",
            ..Default::default()
        };
        // Exact means the walk itself named its table; where the kernel's BTF
        // lacks the layout (no module BTF before 5.11), the counters will.
        let info = NetfilterInfo {
            attribution: if info.table.is_some() {
                "exact"
            } else {
                "inferred"
            },
            ..info
        };
        let verdict = verdict_name(nf.ev.reason);
        if let Some(key) = PacketKey::of(&nf.ev.pkt) {
            let sighting = Sighting {
                ts_ns: nf.ev.ts_ns,
                netns: nf.ev.netns,
                ifindex: 0,
                dir: Dir::Netfilter,
                ttl: Some(nf.ev.pkt.ttl),
                verdict: Some(Box::new((info.clone(), verdict.clone()))),
                point: None,
            };
            // nf_tables frees a packet it drops itself on newer kernels and
            // returns NF_STOLEN: the walk's verdict comes after the drop,
            // which waits in `pending_nf` for the counters.
            let ts = nf.ev.ts_ns;
            let freed_before = |d: &DropRecord, k: &Option<PacketKey>| {
                *k == Some(key)
                    && d.ts_ns <= ts
                    && d.netfilter
                        .as_ref()
                        .is_some_and(|n| n.attribution != "exact")
            };
            if (verdict == "DROP" || (verdict == "STOLEN" && nf.backend == backend::NFT))
                && self.pending_nf.iter().any(|(d, k)| freed_before(d, k))
            {
                let hop = self.hop(&sighting);
                for (d, _) in self
                    .pending_nf
                    .iter_mut()
                    .filter(|(d, k)| freed_before(d, k))
                {
                    d.netfilter = hop.netfilter.clone();
                    d.journey.push(hop.clone());
                }
            }
            self.journeys.observe(key, sighting);
        }
        if self.opts.verdicts {
            out.push(Record::Verdict(VerdictRecord {
                ts_ns: nf.ev.ts_ns,
                netns: nf.ev.netns,
                flow: Flow::of(&nf.ev.pkt),
                verdict,
                netfilter: info,
                detail: Detail::of(&nf.ev.pkt),
            }));
        }
    }

    /// A packet passing a netfilter link point: one more point of its
    /// journey, no record of its own.
    fn on_hook(&mut self, nf: &NfEvent) {
        if let Some(key) = PacketKey::of(&nf.ev.pkt) {
            self.journeys.observe(
                key,
                Sighting {
                    ts_ns: nf.ev.ts_ns,
                    netns: nf.ev.netns,
                    ifindex: 0,
                    dir: Dir::Netfilter,
                    ttl: Some(nf.ev.pkt.ttl),
                    verdict: None,
                    point: Some(HookPoint {
                        pf: nf.pf,
                        hook: nf.hook,
                        point: nf.point,
                        priority: nf.priority,
                    }),
                },
            );
        }
    }

    fn on_drop(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let location = self.env.symbol(ev.location);
        if classify::is_not_a_drop(location.as_deref()) {
            return;
        }
        self.counts.drops += 1;
        let (reason, stage, reason_from_location) = self.reason_and_stage(ev, location.as_deref());
        let key = PacketKey::of(&ev.pkt);
        let journey = key
            .map(|k| {
                self.journeys
                    .get(&k)
                    .iter()
                    .map(|s| self.hop(s))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        // The exact probes saw a table drop this very packet: that is where.
        let exact = journey
            .iter()
            .rev()
            .find(|h| h.verdict.as_deref() == Some("DROP"))
            .and_then(|h| h.netfilter.clone());
        let netfilter = (stage == Stage::Netfilter).then(|| {
            exact.unwrap_or_else(|| NetfilterInfo {
                backend: classify::netfilter_backend(location.as_deref(), &self.env.facts.kernel)
                    .map(str::to_string),
                table: None,
                chain: None,
                // Where the links saw it last beats a guess from addresses.
                hook: hook_from_points(&journey, ev.netns)
                    .or_else(|| self.infer_hook(ev, &journey)),
                rule: None,
                attribution: "inferred",
                ..Default::default()
            })
        });
        let pod = self.env.facts.pods.get(&ev.netns).map(|p| p.name.clone());
        let record = DropRecord {
            ts_ns: ev.ts_ns,
            netns: ev.netns,
            ifname: self.ifname(ev.netns, ev.ifindex),
            flow: Flow::of(&ev.pkt),
            reason,
            reason_from_location,
            location,
            stage,
            netfilter,
            detail: Detail::of(&ev.pkt),
            pod,
            journey,
        };
        // A netfilter drop in this node's namespace waits for the rule
        // counters to say which rule it was (the inventory is this netns').
        if record.stage == Stage::Netfilter
            && ev.netns == self.env.facts.netns
            && self.nf_baseline.is_some()
        {
            self.pending_nf.push((record, key));
            return;
        }
        self.emit_drop(record, out);
    }

    /// The drop's reason name and stage, and whether the name comes from the
    /// location because the kernel gives no reasons (before 5.17).
    fn reason_and_stage(&mut self, ev: &Event, location: Option<&str>) -> (String, Stage, bool) {
        if !self.env.facts.reasons.is_empty() {
            let reason = self.env.facts.reason_name(ev.reason);
            let stage = classify::stage(&reason, location);
            return (reason, stage, false);
        }
        let base = location.map(classify::base_symbol);
        // Reverse path filtering is the one refusal of `ip_rcv_finish_core`
        // that a packet with a route back meets; it counts only where it is on
        // (the sysctls are this namespace's).
        let rp_filter = (base == Some("ip_rcv_finish_core") && ev.netns == self.env.facts.netns)
            .then(|| self.ifname(ev.netns, ev.ifindex))
            .flatten()
            .map(|ifname| {
                let on = |v: Option<String>| {
                    v.and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0) > 0
                };
                on(self.env.iface_sysctl("ipv4", "conf", &ifname, "rp_filter"))
                    || on(self.env.iface_sysctl("ipv4", "conf", "all", "rp_filter"))
            });
        let ttl = matches!(ev.pkt.l3, l3::IPV4 | l3::IPV6).then_some(ev.pkt.ttl);
        match classify::reason_from_location(location, ttl, rp_filter) {
            Some((reason, stage)) => (reason.to_string(), stage, true),
            None => (classify::UNKNOWN_REASON.to_string(), Stage::Other, true),
        }
    }

    fn emit_drop(&mut self, record: DropRecord, out: &mut Vec<Record>) {
        // The drop goes out before the diagnosis it may give rise to.
        let mut diagnoses = Vec::new();
        self.diagnoser
            .on_drop(&record, &mut self.env, &mut diagnoses);
        out.push(Record::Drop(record));
        out.append(&mut diagnoses);
    }

    /// Reads the counters once for all waiting netfilter drops and names the
    /// table, chain and rule of each where the counters tell.
    fn attribute_pending(&mut self, out: &mut Vec<Record>) {
        if self.pending_nf.is_empty() {
            return;
        }
        let after = self.env.netfilter();
        for (mut d, _) in std::mem::take(&mut self.pending_nf) {
            if let (Some(after), Some(nf)) = (&after, d.netfilter.as_mut()) {
                // A drop whose counter moved just before the last reading (its
                // event arrived after it) shows against the reading before.
                let src = d.flow.src.as_deref();
                let named = self
                    .nf_baseline
                    .as_ref()
                    .is_some_and(|b| attribution::complete(nf, b, after, src));
                if !named && let Some(previous) = &self.nf_previous {
                    attribution::complete(nf, previous, after, src);
                }
            }
            self.emit_drop(d, out);
        }
        if after.is_some() {
            self.nf_previous = std::mem::replace(&mut self.nf_baseline, after);
        }
    }
}

/// The hook a packet died in, from the netfilter link points of its journey
/// in `netns`: the last hook it entered and did not leave. `None` when the
/// links did not see it there, or it had left the last hook it entered.
pub fn hook_from_points(journey: &[Hop], netns: u32) -> Option<String> {
    let last = journey
        .iter()
        .rev()
        .find(|h| h.point.is_some() && h.netns == netns)?;
    if last.point == Some("exit") {
        return None;
    }
    last.netfilter.as_ref()?.hook.clone()
}

/// The iptables name of a netfilter hook of a family (NFPROTO_*).
pub fn hook_name(pf: u8, hook: u8) -> Option<&'static str> {
    const INET: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    match pf {
        // inet, ipv4, ipv6, bridge
        1 | 2 | 10 | 7 => INET
            .get(hook as usize)
            .copied()
            .or((hook == 5).then_some("INGRESS")),
        3 => ["INPUT", "OUTPUT", "FORWARD"].get(hook as usize).copied(),
        5 => ["INGRESS", "EGRESS"].get(hook as usize).copied(),
        _ => None,
    }
}

/// NF_* verdict names.
pub fn verdict_name(v: u32) -> String {
    match v & 0xff {
        0 => "DROP".into(),
        1 => "ACCEPT".into(),
        2 => "STOLEN".into(),
        3 => "QUEUE".into(),
        4 => "REPEAT".into(),
        5 => "STOP".into(),
        n => format!("VERDICT_{n}"),
    }
}

impl Pipeline {
    /// Netfilter hook of a drop in this node's namespace, from addresses:
    /// to a local address is INPUT, from one is OUTPUT, otherwise FORWARD.
    fn infer_hook(&self, ev: &Event, journey: &[Hop]) -> Option<String> {
        if ev.netns != self.env.facts.netns {
            return None;
        }
        let local =
            |ip: Option<IpAddr>| ip.is_some_and(|a| self.env.facts.local_addrs.contains(&a));
        let hook = if local(dst_ip(&ev.pkt)) {
            "INPUT"
        } else if local(src_ip(&ev.pkt)) && journey.iter().all(|h| h.dir != "ingress") {
            "OUTPUT"
        } else {
            "FORWARD"
        };
        Some(hook.into())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tracer_common::{Event, NfEvent, backend, dir, kind, l3, pkt_flags, proto};

    use super::*;
    use crate::events::facts::{NodeFacts, RouteFact, ifkey};
    use crate::events::set_ip;

    const NODE: u32 = 100;
    const ETH0: u32 = 2;
    const CALI: u32 = 5;
    const NF_HOOK_SLOW: u64 = 0xffff_0000;
    const IP_FORWARD: u64 = 0xffff_1000;

    fn facts() -> NodeFacts {
        let mut f = NodeFacts {
            netns: NODE,
            kernel: "6.12.0".into(),
            ..Default::default()
        };
        f.ifnames.insert(ifkey(NODE, ETH0), "eth0".into());
        f.ifnames.insert(ifkey(NODE, CALI), "cali1234".into());
        f.reasons.insert(2, "NOT_SPECIFIED".into());
        f.reasons.insert(5, "NETFILTER_DROP".into());
        f.reasons.insert(6, "IP_INHDR".into());
        f.symbols.insert(NF_HOOK_SLOW, "nf_hook_slow".into());
        f.symbols.insert(IP_FORWARD, "ip_forward".into());
        f.local_addrs.insert("192.168.1.2".parse().unwrap());
        f
    }

    fn pipeline(f: NodeFacts) -> Pipeline {
        Pipeline::new(Environment::replay(f), Options::default())
    }

    fn icmp(src: &str, dst: &str, id: u16, ttl: u8) -> tracer_common::PacketMeta {
        let mut p = tracer_common::PacketMeta {
            l3: l3::IPV4,
            proto: proto::ICMP,
            ttl,
            ip_id: id,
            icmp_type: 8,
            flags: pkt_flags::L4,
            ..Default::default()
        };
        set_ip(&mut p.src, src.parse::<IpAddr>().unwrap());
        set_ip(&mut p.dst, dst.parse::<IpAddr>().unwrap());
        p
    }

    fn tc(ts: u64, ifindex: u32, direction: u8, pkt: tracer_common::PacketMeta) -> Input {
        Input::Event(Event {
            ts_ns: ts,
            kind: kind::TC,
            dir: direction,
            ifindex,
            netns: NODE,
            pkt,
            ..Default::default()
        })
    }

    fn drop(ts: u64, reason: u32, location: u64, pkt: tracer_common::PacketMeta) -> Input {
        Input::Event(Event {
            ts_ns: ts,
            kind: kind::DROP,
            reason,
            location,
            ifindex: ETH0,
            netns: NODE,
            pkt,
            ..Default::default()
        })
    }

    fn arp(ts: u64, ifindex: u32, op: u16, direction: u8, sender: &str, target: &str) -> Input {
        let mut p = tracer_common::PacketMeta {
            l3: l3::ARP,
            arp_op: op,
            ..Default::default()
        };
        set_ip(&mut p.src, sender.parse::<IpAddr>().unwrap());
        set_ip(&mut p.dst, target.parse::<IpAddr>().unwrap());
        tc(ts, ifindex, direction, p)
    }

    fn run(p: &mut Pipeline, inputs: &[Input]) -> Vec<Record> {
        let mut out = Vec::new();
        for i in inputs {
            p.process(i, &mut out);
        }
        p.finish(&mut out);
        out
    }

    fn diagnoses(out: &[Record]) -> Vec<&crate::events::records::Diagnosis> {
        out.iter()
            .filter_map(|r| {
                if let Record::Diagnosis(d) = r {
                    Some(d)
                } else {
                    None
                }
            })
            .collect()
    }

    fn drops(out: &[Record]) -> Vec<&DropRecord> {
        out.iter()
            .filter_map(|r| {
                if let Record::Drop(d) = r {
                    Some(d)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn forward_drop_by_legacy_is_inferred_with_journey_and_one_diagnosis() {
        let mut p = pipeline(facts());
        let pkt = icmp("10.244.1.10", "10.244.2.10", 7, 63);
        let out = run(
            &mut p,
            &[
                tc(1_000, ETH0, dir::INGRESS, pkt),
                drop(
                    2_000,
                    5,
                    NF_HOOK_SLOW,
                    icmp("10.244.1.10", "10.244.2.10", 7, 62),
                ),
            ],
        );
        let d = drops(&out);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].reason.as_str(), d[0].stage),
            ("NETFILTER_DROP", Stage::Netfilter)
        );
        let nf = d[0].netfilter.as_ref().unwrap();
        assert_eq!(
            (nf.backend.as_deref(), nf.hook.as_deref(), nf.attribution),
            (Some("legacy"), Some("FORWARD"), "inferred")
        );
        assert_eq!(d[0].journey.len(), 1, "the tc sighting of the same packet");
        let diags = diagnoses(&out);
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].code, diags[0].count), ("NETFILTER_DROP", 1));
        assert!(
            matches!(out.iter().position(|r| matches!(r, Record::Drop(_))), Some(i) if matches!(out[i + 1], Record::Diagnosis(_))),
            "drop, then its diagnosis"
        );
    }

    #[test]
    fn without_drop_reasons_the_location_tells_reason_stage_and_not_the_backend() {
        // 5.10: no reasons, nf_tables and x_tables drops both end in nf_hook_slow.
        let mut f = facts();
        f.reasons.clear();
        f.kernel = "5.10.0-32-cloud-amd64".into();
        const RCV_FINISH: u64 = 0xffff_2000;
        const MYSTERY: u64 = 0xffff_3000;
        f.symbols
            .insert(RCV_FINISH, "ip_rcv_finish_core.constprop.0".into());
        f.symbols.insert(MYSTERY, "some_function".into());
        let rp = crate::kernel::system::iface_sysctl_key("ipv4", "conf", "eth0", "rp_filter");
        f.sysctls.insert(rp, "1".into());
        let mut p = pipeline(f);
        let out = run(
            &mut p,
            &[
                drop(
                    1_000,
                    0,
                    NF_HOOK_SLOW,
                    icmp("10.244.1.10", "10.244.2.10", 1, 62),
                ),
                drop(
                    2_000,
                    0,
                    IP_FORWARD,
                    icmp("10.244.1.10", "10.244.2.10", 2, 1),
                ),
                drop(
                    3_000,
                    0,
                    RCV_FINISH,
                    icmp("10.244.1.10", "10.244.2.10", 3, 63),
                ),
                drop(4_000, 0, MYSTERY, icmp("10.244.1.10", "10.244.2.10", 4, 63)),
            ],
        );
        let d = drops(&out);
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.reason.as_str(), d.stage, d.reason_from_location))
            .collect();
        assert_eq!(
            got,
            [
                ("NETFILTER_DROP", Stage::Netfilter, true),
                ("IP_INHDR", Stage::Ttl, true),
                ("IP_RPFILTER", Stage::RpFilter, true),
                ("NOT_SPECIFIED", Stage::Other, true),
            ]
        );
        let nf = d[0].netfilter.as_ref().unwrap();
        assert_eq!(
            (nf.backend.as_deref(), nf.hook.as_deref(), nf.attribution),
            (None, Some("FORWARD"), "inferred"),
            "nf_hook_slow does not tell the backend before 6.8"
        );
        let codes: Vec<_> = diagnoses(&out).iter().map(|d| d.code).collect();
        assert!(
            codes.contains(&"RP_FILTER") && codes.contains(&"ROUTING_LOOP"),
            "{codes:?}"
        );
        assert!(
            out.iter().all(|r| !format!("{r:?}").contains("REASON_")),
            "no made-up reason names"
        );
    }

    /// A table walk's verdict (exact probes) on `pkt` in the node's netns.
    fn walk_verdict(
        ts: u64,
        which: u8,
        hook: u8,
        verdict: u32,
        table_chain: (&str, &str),
        pkt: tracer_common::PacketMeta,
    ) -> NfEvent {
        let mut nf = NfEvent {
            hook,
            pf: 2,
            backend: which,
            ..Default::default()
        };
        nf.ev = Event {
            ts_ns: ts,
            kind: kind::VERDICT,
            reason: verdict,
            netns: NODE,
            pkt,
            ..Default::default()
        };
        let (table, chain) = table_chain;
        nf.table[..table.len()].copy_from_slice(table.as_bytes());
        nf.chain[..chain.len()].copy_from_slice(chain.as_bytes());
        nf
    }

    #[test]
    fn an_exact_verdict_names_table_and_chain() {
        let mut p = pipeline(facts());
        let pkt = icmp("10.244.1.10", "10.244.2.10", 9, 63);
        let nf = walk_verdict(1_500, backend::NFT, 2, 0, ("filter", "FORWARD"), pkt);
        let out = run(&mut p, &[Input::Verdict(nf), drop(2_000, 5, 0xdead, pkt)]);
        let nfi = drops(&out)[0].netfilter.clone().unwrap();
        assert_eq!(nfi.attribution, "exact");
        assert_eq!(
            (
                nfi.backend.as_deref(),
                nfi.table.as_deref(),
                nfi.chain.as_deref(),
                nfi.hook.as_deref()
            ),
            (
                Some("nft"),
                Some("filter"),
                Some("FORWARD"),
                Some("FORWARD")
            )
        );
    }

    #[test]
    fn verdict_lines_only_when_asked() {
        let pkt = icmp("10.0.0.1", "10.0.0.2", 1, 64);
        let nf = walk_verdict(1, backend::LEGACY, 1, 1, ("filter", ""), pkt);
        let out = run(&mut pipeline(facts()), &[Input::Verdict(nf)]);
        assert!(out.is_empty());
        let mut p = Pipeline::new(
            Environment::replay(facts()),
            Options {
                verdicts: true,
                ..Options::default()
            },
        );
        let out = run(&mut p, &[Input::Verdict(nf)]);
        assert!(
            matches!(&out[0], Record::Verdict(v) if v.verdict == "ACCEPT" && v.netfilter.hook.as_deref() == Some("INPUT"))
        );
    }

    #[test]
    fn ttl_running_out_in_forward_is_a_routing_loop() {
        let mut f = facts();
        f.routes
            .insert("10.244.2.10".into(), RouteFact::Via("eth0".into()));
        let mut p = pipeline(f);
        let mut inputs = Vec::new();
        for (i, ttl) in [5u8, 3, 1].iter().enumerate() {
            inputs.push(tc(
                i as u64 * 10,
                ETH0,
                dir::INGRESS,
                icmp("10.244.1.10", "10.244.2.10", 3, *ttl),
            ));
        }
        inputs.push(drop(
            100,
            6,
            IP_FORWARD,
            icmp("10.244.1.10", "10.244.2.10", 3, 1),
        ));
        let out = run(&mut p, &inputs);
        let d = diagnoses(&out);
        assert_eq!(d[0].code, "ROUTING_LOOP");
        assert!(
            d[0].summary.contains("seen 3 times") && d[0].summary.contains("out of eth0"),
            "{}",
            d[0].summary
        );
    }

    #[test]
    fn unanswered_gateway_arp_with_proxy_arp_off() {
        let mut f = facts();
        f.sysctls
            .insert("net.ipv4.conf.cali1234.proxy_arp".into(), "0".into());
        let mut p = pipeline(f);
        let out = run(
            &mut p,
            &[
                arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
                arp(
                    500_000_000,
                    CALI,
                    1,
                    dir::INGRESS,
                    "10.244.1.10",
                    "169.254.1.1",
                ),
                Input::Tick(1_200_000_000),
            ],
        );
        let d = diagnoses(&out);
        assert_eq!(d.len(), 1, "{out:?}");
        assert_eq!(
            (d[0].code, d[0].ifname.as_deref(), d[0].target.as_deref()),
            ("PROXY_ARP_DISABLED", Some("cali1234"), Some("169.254.1.1"))
        );
        assert_eq!(d[0].count, 2);
        assert!(d[0].hint.contains("net.ipv4.conf.cali1234.proxy_arp=1"));
    }

    #[test]
    fn unanswered_gateway_arp_without_a_route_is_no_route() {
        let mut f = facts();
        f.sysctls
            .insert("net.ipv4.conf.cali1234.proxy_arp".into(), "1".into());
        f.routes.insert("169.254.1.1".into(), RouteFact::None);
        let out = run(
            &mut pipeline(f),
            &[
                arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
                Input::Tick(2_000_000_000),
            ],
        );
        assert_eq!(diagnoses(&out)[0].code, "NO_ROUTE");
    }

    #[test]
    fn answered_arp_is_healthy() {
        let out = run(
            &mut pipeline(facts()),
            &[
                arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
                arp(10, CALI, 2, dir::EGRESS, "169.254.1.1", "10.244.1.10"),
                Input::Tick(5_000_000_000),
            ],
        );
        assert!(diagnoses(&out).is_empty());
        assert_eq!(out.len(), 2, "just the two packets");
    }

    #[test]
    fn diagnosis_updates_are_rate_limited_and_flushed_at_the_end() {
        let mut p = pipeline(facts());
        let mut out = Vec::new();
        for i in 0..10u64 {
            p.process(
                &drop(
                    i * 10_000_000,
                    5,
                    NF_HOOK_SLOW,
                    icmp("10.0.0.1", "10.0.0.2", i as u16, 60),
                ),
                &mut out,
            );
        }
        assert_eq!(diagnoses(&out).len(), 1, "updates wait for the interval");
        p.process(&Input::Tick(1_500_000_000), &mut out);
        let d = diagnoses(&out);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].count, 10);
        p.finish(&mut out);
        assert_eq!(diagnoses(&out).len(), 2, "nothing new to flush");
    }

    #[test]
    fn distinct_problems_are_bounded() {
        use crate::diagnosis::MAX_PROBLEMS;
        let mut p = pipeline(facts());
        let mut out = Vec::new();
        let n = MAX_PROBLEMS as u32 + 1000;
        for i in 0..n {
            let dst = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            p.process(
                &drop(
                    u64::from(i) * 1000,
                    5,
                    NF_HOOK_SLOW,
                    icmp("10.244.1.10", &dst, 1, 60),
                ),
                &mut out,
            );
        }
        let held = p.diagnoser.current();
        assert!(held.len() <= MAX_PROBLEMS, "{} problems held", held.len());
        assert_eq!(
            held.last().and_then(|d| d.dst.clone()),
            Some(std::net::Ipv4Addr::from(0x0a00_0000 + n - 1).to_string()),
            "the newest problem is kept"
        );
        assert_eq!(
            diagnoses(&out).len(),
            n as usize,
            "each new problem reported once"
        );
    }

    #[test]
    fn route_lookup_frees_are_not_drops() {
        let mut f = facts();
        f.symbols.insert(0x42, "inet_rtm_getroute".into());
        let out = run(
            &mut pipeline(f),
            &[drop(1, 2, 0x42, icmp("0.0.0.0", "169.254.1.1", 0, 0))],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn replay_filter_applies_in_userspace() {
        let f = crate::filter::Filter::parse("host 10.0.0.9")
            .unwrap()
            .compile()
            .unwrap();
        let mut p = Pipeline::new(
            Environment::replay(facts()),
            Options {
                filter: Some(f),
                ..Options::default()
            },
        );
        let out = run(
            &mut p,
            &[
                tc(1, ETH0, dir::INGRESS, icmp("10.0.0.1", "10.0.0.2", 1, 64)),
                tc(2, ETH0, dir::INGRESS, icmp("10.0.0.9", "10.0.0.2", 1, 64)),
            ],
        );
        assert_eq!(out.len(), 1);
    }

    fn link_point(
        ts: u64,
        hook: u8,
        point: u8,
        priority: i32,
        pkt: tracer_common::PacketMeta,
    ) -> Input {
        let mut nf = NfEvent {
            hook,
            pf: 2,
            point,
            priority,
            ..Default::default()
        };
        nf.ev = Event {
            ts_ns: ts,
            kind: kind::HOOK,
            netns: NODE,
            pkt,
            ..Default::default()
        };
        Input::Verdict(nf)
    }

    fn point_hop(netns: u32, hook: &str, point: &'static str) -> Hop {
        Hop {
            ts_ns: 0,
            netns,
            ifname: None,
            dir: "netfilter",
            ttl: None,
            netfilter: Some(NetfilterInfo {
                hook: Some(hook.into()),
                attribution: "exact",
                ..Default::default()
            }),
            verdict: None,
            point: Some(point),
            priority: None,
        }
    }

    #[test]
    fn the_hook_is_the_last_one_entered_and_not_left() {
        let tc_hop = |netns| Hop {
            ts_ns: 0,
            netns,
            ifname: Some("eth0".into()),
            dir: "ingress",
            ttl: None,
            netfilter: None,
            verdict: None,
            point: None,
            priority: None,
        };
        let j = [
            tc_hop(NODE),
            point_hop(NODE, "PREROUTING", "entry"),
            point_hop(NODE, "PREROUTING", "exit"),
            point_hop(NODE, "INPUT", "entry"),
        ];
        assert_eq!(hook_from_points(&j, NODE).as_deref(), Some("INPUT"));
        assert_eq!(
            hook_from_points(&j[..3], NODE),
            None,
            "it left PREROUTING: the links do not know where it died"
        );
        let mut after = j.to_vec();
        after.push(point_hop(NODE, "INPUT", "after"));
        assert_eq!(hook_from_points(&after, NODE).as_deref(), Some("INPUT"));
        assert_eq!(hook_from_points(&j, 9), None, "points of another netns");
        assert_eq!(hook_from_points(&[tc_hop(NODE)], NODE), None);
        // A second pass (a loop): only the latest points count.
        let mut again = j[..3].to_vec();
        again.extend([
            point_hop(NODE, "FORWARD", "entry"),
            point_hop(NODE, "FORWARD", "exit"),
            point_hop(NODE, "PREROUTING", "entry"),
        ]);
        assert_eq!(
            hook_from_points(&again, NODE).as_deref(),
            Some("PREROUTING")
        );
    }

    #[test]
    fn link_points_name_the_hook_of_an_inferred_drop() {
        use tracer_common::nf_point::{AFTER, ENTRY, EXIT};
        // To the node's own address: addresses alone would say INPUT, but
        // the packet never left PREROUTING (a raw table drop).
        let pkt = icmp("192.168.1.1", "192.168.1.2", 11, 64);
        let out = run(
            &mut pipeline(facts()),
            &[
                tc(1_000, ETH0, dir::INGRESS, pkt),
                link_point(1_100, 0, ENTRY, i32::MIN + 1, pkt),
                drop(1_200, 5, NF_HOOK_SLOW, pkt),
            ],
        );
        let d = drops(&out)[0];
        let nf = d.netfilter.as_ref().unwrap();
        assert_eq!(
            (nf.hook.as_deref(), nf.attribution),
            (Some("PREROUTING"), "inferred")
        );
        let hop = &d.journey[1];
        assert_eq!(
            (hop.dir, hop.point, hop.verdict.as_deref()),
            ("netfilter", Some("entry"), None)
        );
        assert_eq!(hop.point_label().as_deref(), Some("PREROUTING entry"));
        assert_eq!(
            hop.netfilter.as_ref().unwrap().family.as_deref(),
            Some("ip")
        );

        // Into INPUT and past the table at -5, with the packet's own hops.
        let pkt = icmp("192.168.1.1", "192.168.1.2", 12, 64);
        let out = run(
            &mut pipeline(facts()),
            &[
                link_point(1_000, 0, ENTRY, i32::MIN + 1, pkt),
                link_point(1_010, 0, EXIT, i32::MAX - 1, pkt),
                link_point(1_020, 1, ENTRY, i32::MIN + 1, pkt),
                link_point(1_030, 1, AFTER, -4, pkt),
                drop(1_200, 5, NF_HOOK_SLOW, pkt),
            ],
        );
        let d = drops(&out)[0];
        assert_eq!(d.netfilter.as_ref().unwrap().hook.as_deref(), Some("INPUT"));
        let labels: Vec<String> = d.journey.iter().filter_map(Hop::point_label).collect();
        assert_eq!(
            labels,
            [
                "PREROUTING entry",
                "PREROUTING exit",
                "INPUT entry",
                "INPUT after priority -5"
            ]
        );
        let json = serde_json::to_value(&d.journey[3]).unwrap();
        assert_eq!(
            (
                &json["point"],
                &json["priority"],
                &json["netfilter"]["hook"]
            ),
            (&"after".into(), &(-5).into(), &"INPUT".into())
        );
        assert!(
            json.get("verdict").is_none(),
            "a link point is not a verdict"
        );
        assert!(
            diagnoses(&out).iter().all(|x| x.code != "ROUTING_LOOP"),
            "{out:?}"
        );
    }

    #[test]
    fn link_points_make_no_records_and_no_verdicts() {
        let pkt = icmp("10.0.0.1", "10.0.0.2", 1, 64);
        let mut p = Pipeline::new(
            Environment::replay(facts()),
            Options {
                verdicts: true,
                ..Options::default()
            },
        );
        let out = run(
            &mut p,
            &[link_point(
                1,
                2,
                tracer_common::nf_point::ENTRY,
                i32::MIN + 1,
                pkt,
            )],
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_loop_is_counted_in_interfaces_not_netfilter_points() {
        use tracer_common::nf_point::{ENTRY, EXIT};
        let mut f = facts();
        f.routes
            .insert("10.244.2.10".into(), RouteFact::Via("eth0".into()));
        let mut p = pipeline(f);
        let mut inputs = Vec::new();
        for (i, ttl) in [5u8, 3].iter().enumerate() {
            let pkt = icmp("10.244.1.10", "10.244.2.10", 3, *ttl);
            let t = i as u64 * 10;
            inputs.push(tc(t, ETH0, dir::INGRESS, pkt));
            inputs.push(link_point(t + 1, 0, ENTRY, i32::MIN + 1, pkt));
            inputs.push(link_point(t + 2, 0, EXIT, i32::MAX - 1, pkt));
            inputs.push(tc(t + 3, ETH0, dir::EGRESS, pkt));
        }
        inputs.push(drop(
            100,
            6,
            IP_FORWARD,
            icmp("10.244.1.10", "10.244.2.10", 3, 1),
        ));
        let out = run(&mut p, &inputs);
        let d = diagnoses(&out);
        assert_eq!(d[0].code, "ROUTING_LOOP");
        assert!(d[0].summary.contains("seen 4 times"), "{}", d[0].summary);
    }

    /// A legacy filter table whose FORWARD policy (DROP) has counted `n` packets.
    fn forward_policy(n: u64) -> crate::netfilter::Inventory {
        use crate::netfilter::{Backend, Chain, Counters, Family, Hook, Inventory, Table, Verdict};
        Inventory {
            tables: vec![Table {
                backend: Backend::Legacy,
                family: Family::Ipv4,
                name: "filter".into(),
                chains: vec![Chain {
                    name: "FORWARD".into(),
                    hook: Some(Hook::Forward),
                    priority: Some(0),
                    policy: Some(Verdict::Drop),
                    policy_counters: Some(Counters {
                        packets: n,
                        bytes: 0,
                    }),
                    rules: vec![],
                }],
            }],
            errors: vec![],
        }
    }

    #[test]
    fn a_drop_counted_before_the_last_reading_is_still_attributed() {
        use crate::events::facts::Fact;
        let mut f = facts();
        f.netfilter = Some(forward_policy(0));
        let mut p = pipeline(f);
        let pkt = |id| icmp("10.244.1.10", "10.244.2.10", id, 62);
        let reading = |n| Fact::Netfilter {
            inventory: Box::new(forward_policy(n)),
        };
        let mut out = Vec::new();
        p.process(&drop(0, 5, NF_HOOK_SLOW, pkt(1)), &mut out);
        // The second packet is counted before this reading, its event comes after.
        p.env.apply(&reading(2));
        p.process(&Input::Tick(300 * MS), &mut out);
        p.process(&drop(310 * MS, 5, NF_HOOK_SLOW, pkt(2)), &mut out);
        p.env.apply(&reading(2));
        p.process(&Input::Tick(700 * MS), &mut out);
        let d = drops(&out);
        assert_eq!(d.len(), 2);
        for drop in d {
            let nf = drop.netfilter.as_ref().unwrap();
            assert_eq!(
                (nf.chain.as_deref(), nf.rule.as_deref()),
                (Some("FORWARD"), Some("policy DROP")),
                "{drop:?}"
            );
        }
    }

    #[test]
    fn an_nft_walk_that_freed_the_packet_itself_names_the_drop_exactly() {
        // Newer kernels: nft_do_chain frees the packet (kfree_skb inside it)
        // and returns NF_STOLEN, so the walk's verdict comes after the drop.
        const NFT_DO_CHAIN: u64 = 0xffff_2000;
        let mut f = facts();
        f.symbols.insert(NFT_DO_CHAIN, "nft_do_chain".into());
        f.netfilter = Some(forward_policy(0));
        let mut p = pipeline(f);
        let pkt = icmp("10.244.1.10", "10.244.2.10", 7, 62);
        let walk = |ts, verdict| {
            Input::Verdict(walk_verdict(
                ts,
                backend::NFT,
                2,
                verdict,
                ("mine", "fwd"),
                pkt,
            ))
        };
        let mut out = Vec::new();
        // An earlier walk of another table accepted it: not the dropper.
        p.process(&walk(900, 1), &mut out);
        p.process(&drop(1_000, 5, NFT_DO_CHAIN, pkt), &mut out);
        p.process(&walk(1_100, 2), &mut out);
        p.process(&Input::Tick(500 * MS), &mut out);
        let d = drops(&out);
        assert_eq!(d.len(), 1);
        let nf = d[0].netfilter.as_ref().unwrap();
        assert_eq!(nf.attribution, "exact", "{nf:?}");
        assert_eq!(
            (
                nf.backend.as_deref(),
                nf.table.as_deref(),
                nf.chain.as_deref(),
                nf.hook.as_deref()
            ),
            (Some("nft"), Some("mine"), Some("fwd"), Some("FORWARD"))
        );
        assert_eq!(
            d[0].journey.last().and_then(|h| h.verdict.as_deref()),
            Some("STOLEN")
        );
    }
}
