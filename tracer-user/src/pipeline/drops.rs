//! Drops: the reason and stage, where in netfilter, the journey that led
//! there; netfilter drops wait for the rule counters to name the rule.

use std::net::IpAddr;

use tracer_common::{Event, PacketMeta, l3};

use super::{PendingDrop, Pipeline};
use crate::correlation::PacketKey;
use crate::diagnosis::{attribution, classify, ownership};
use crate::events::{dst_ip, names, src_ip};
use crate::model::{
    Attribution, Backend, Dir, DropReason, DropRecord, Family, Hook, Hop, LinkPoint, NetfilterInfo,
    ReasonKind, Record, Stage,
};
use crate::netfilter::Inventory;
use crate::netfilter::trace::TracedDrop;

impl Pipeline {
    pub(super) fn on_drop(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let location = self.env.symbol(ev.location);
        if classify::is_not_a_drop(location.as_deref()) {
            return;
        }
        self.counts.drops += 1;
        let (reason, stage, reason_from_location) = self.reason_and_stage(ev, location.as_deref());
        let in_pod = self.env.facts.pods.contains_key(&ev.netns);
        let headers = names::headers(&ev.pkt);
        let benign = classify::benign(&reason, location.as_deref(), stage, &headers, in_pod);
        if benign.is_some() {
            self.count_benign(reason.as_str());
        }
        let key = PacketKey::of(&ev.pkt);
        let family = packet_family(&ev.pkt);
        let journey: Vec<Hop> = key
            .map(|k| self.journeys.get(&k).iter().map(|s| self.hop(s)).collect())
            .unwrap_or_default();
        let netfilter = (stage == Stage::Netfilter)
            .then(|| self.netfilter_of_drop(ev, location.as_deref(), &journey));
        let calico_ebpf = if stage == Stage::Tc {
            self.calico_ebpf_of_drop(ev, &reason, reason_from_location)
        } else {
            None
        };
        let record = DropRecord {
            node: None,
            ts_ns: ev.ts_ns,
            netns: ev.netns,
            ifname: self.ifname(ev.netns, ev.ifindex),
            flow: self.name_pods(headers.flow),
            reason,
            reason_from_location,
            location,
            stage,
            netfilter,
            detail: headers.detail,
            pod: self.env.facts.pods.get(&ev.netns).map(|p| p.name.clone()),
            journey,
            benign,
            calico_ebpf,
        };
        // A netfilter drop in this node's namespace waits for the rule
        // counters to say which rule it was (the inventory is this netns').
        if record.stage == Stage::Netfilter && ev.netns == self.env.facts.netns {
            self.trace_next(&record, key);
        }
        if record.stage == Stage::Netfilter
            && ev.netns == self.env.facts.netns
            && self.nf_baseline.is_some()
        {
            self.pending_nf.push(PendingDrop {
                record,
                key,
                family,
            });
            return;
        }
        let mut record = record;
        if let Some(nf) = record.netfilter.as_mut() {
            ownership::complete(nf, self.nf_baseline.as_ref(), family);
        }
        self.emit_drop(record, out);
    }

    /// Where in netfilter a packet died: the table walk that dropped it
    /// (exact probes), else what the location and the links tell.
    fn netfilter_of_drop(
        &self,
        ev: &Event,
        location: Option<&str>,
        journey: &[Hop],
    ) -> NetfilterInfo {
        if let Some(exact) = journey
            .iter()
            .rev()
            .find(|h| h.is_drop_verdict())
            .and_then(|h| h.netfilter.clone())
        {
            return exact;
        }
        NetfilterInfo {
            backend: classify::netfilter_backend(location, &self.env.facts.kernel),
            // Where the links saw it last beats a guess from addresses.
            hook: hook_from_points(journey, ev.netns).or_else(|| self.infer_hook(ev, journey)),
            attribution: Attribution::Inferred,
            ..Default::default()
        }
    }

    /// Why Calico's eBPF program dropped a packet tc freed, where Felix's
    /// counters say: the kernel's reason names the hook (before 5.17 it is
    /// guessed from the location and both hooks are asked).
    fn calico_ebpf_of_drop(
        &mut self,
        ev: &Event,
        reason: &DropReason,
        reason_from_location: bool,
    ) -> Option<Box<crate::model::CalicoEbpfDrop>> {
        let hook = match reason.kind {
            _ if reason_from_location => None,
            ReasonKind::TcIngress => Some(0),
            ReasonKind::TcEgress => Some(1),
            _ => None,
        };
        let iface = self.ifname(ev.netns, ev.ifindex);
        let ipv6 = ev.pkt.l3 == l3::IPV6;
        self.env
            .calico_ebpf_drop(ev.ts_ns, ev.ifindex, hook, ev.cpu, iface.as_deref(), ipv6)
    }

    /// The drop's reason name and stage, and whether the name comes from the
    /// location because the kernel gives no reasons (before 5.17).
    fn reason_and_stage(
        &mut self,
        ev: &Event,
        location: Option<&str>,
    ) -> (DropReason, Stage, bool) {
        if !self.env.facts.reasons.is_empty() {
            let reason = DropReason::kernel(ev.reason, self.env.facts.reason_name(ev.reason));
            let stage = classify::stage(&reason, location);
            return (reason, stage, false);
        }
        let rp_filter = self.rp_filter_on(ev, location);
        let ttl = matches!(ev.pkt.l3, l3::IPV4 | l3::IPV6).then_some(ev.pkt.ttl);
        match classify::reason_from_location(location, ttl, rp_filter) {
            Some((reason, stage)) => (DropReason::named(reason), stage, true),
            None => (
                DropReason::named(classify::UNKNOWN_REASON),
                Stage::Other,
                true,
            ),
        }
    }

    /// Reverse path filtering is the one refusal of `ip_rcv_finish_core`
    /// that a packet with a route back meets; it counts only where it is on
    /// (the sysctls are this namespace's). `None`: not that location.
    fn rp_filter_on(&mut self, ev: &Event, location: Option<&str>) -> Option<bool> {
        let base = location.map(classify::base_symbol);
        if base != Some("ip_rcv_finish_core") || ev.netns != self.env.facts.netns {
            return None;
        }
        let ifname = self.ifname(ev.netns, ev.ifindex)?;
        let mut on = |name: &str| {
            self.env
                .iface_sysctl("ipv4", "conf", name, "rp_filter")
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(0)
                > 0
        };
        Some(on(&ifname) || on("all"))
    }

    fn count_benign(&mut self, reason: &str) {
        *self.benign.entry(reason.to_string()).or_default() += 1;
    }

    pub(super) fn emit_drop(&mut self, mut record: DropRecord, out: &mut Vec<Record>) {
        if record.benign.is_none() {
            record.benign = record.netfilter.as_ref().and_then(classify::benign_refusal);
            if record.benign.is_some() {
                self.count_benign(record.reason.as_str());
            }
        }
        // Counted as it goes out: a table walk's verdict may come after the
        // drop event (nft_do_chain freeing the packet itself) and make it exact.
        if record
            .netfilter
            .as_ref()
            .is_some_and(|nf| nf.attribution == Attribution::Inferred)
            && record.netns == self.env.facts.netns
        {
            self.nf_drops_inferred += 1;
        }
        // The drop goes out before the diagnosis it may give rise to; a
        // benign one gives none.
        let mut diagnoses = Vec::new();
        if record.benign.is_none() {
            self.diagnoser
                .on_drop(&record, &mut self.env, &mut diagnoses);
        }
        out.push(Record::Drop(record));
        out.append(&mut diagnoses);
    }

    /// Reads the counters once for all waiting netfilter drops and names the
    /// table, chain and rule of each where the counters tell.
    pub(super) fn attribute_pending(&mut self, out: &mut Vec<Record>) {
        if self.pending_nf.is_empty() {
            return;
        }
        let after = self.env.netfilter();
        for PendingDrop {
            record: mut d,
            key,
            family,
        } in std::mem::take(&mut self.pending_nf)
        {
            // nftables' trace names table, chain and rule itself; otherwise
            // the counters name what a table walk (or nothing) left open.
            let traced = key.and_then(|k| self.traced(after.as_ref(), k));
            let by_trace = traced.is_some() && after.is_some();
            if let (Some(t), Some(inv)) = (traced, after.as_ref()) {
                d.netfilter = Some(ownership::from_trace(t, inv));
            }
            let guessed = d
                .netfilter
                .as_ref()
                .is_some_and(|nf| hook_guessed(nf, &d.journey, d.netns));
            if let (Some(after), Some(nf), false) = (&after, d.netfilter.as_mut(), by_trace) {
                let named = self.complete_from_counters(nf, after, family);
                if !named && guessed {
                    // The hook was a guess from addresses (no link point saw
                    // the packet): the counters of any hook may name the
                    // chain, and a base chain its hook (a raw PREROUTING rule
                    // for a packet to this node is not INPUT).
                    let guess = nf.hook.take();
                    self.complete_from_counters(nf, after, family);
                    if nf.hook.is_none() {
                        nf.hook = guess;
                    }
                }
            }
            if let Some(nf) = d.netfilter.as_mut() {
                ownership::complete(nf, after.as_ref(), family);
            }
            self.emit_drop(d, out);
        }
        if after.is_some() {
            self.nf_previous = std::mem::replace(&mut self.nf_baseline, after);
        }
    }

    /// Has nftables trace the next packets of a drop's flow through every
    /// nf_tables table, where the drop may be nf_tables' and no table walk
    /// named its rule (a walk names the base chain it entered, not the chain
    /// a jump led to; live only).
    fn trace_next(&mut self, d: &DropRecord, key: Option<PacketKey>) {
        let inexact = d.netfilter.as_ref().is_some_and(|nf| {
            nf.backend != Some(Backend::Legacy)
                && (nf.attribution == Attribution::Inferred || nf.rule.is_none())
        });
        if let Some(k) = key.filter(|_| inexact) {
            let (src, dst) = k.addrs();
            self.env.trace_flow(src, dst);
        }
    }

    /// nftables' trace of the packet `key`, in the reading after its drop or
    /// the one before (its trace may have been read with an earlier drop).
    fn traced<'a>(
        &'a self,
        after: Option<&'a Inventory>,
        key: PacketKey,
    ) -> Option<&'a TracedDrop> {
        [after, self.nf_baseline.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|inv| inv.traces.iter().rev())
            .find(|t| PacketKey::of_traced(&t.packet) == key)
    }

    /// Names a netfilter drop's table, chain and rule from the counters
    /// moving between the baseline and `after`; a drop whose counter moved
    /// just before the last reading (its event arrived after it) shows
    /// against the reading before.
    fn complete_from_counters(
        &self,
        nf: &mut NetfilterInfo,
        after: &crate::netfilter::Inventory,
        family: Family,
    ) -> bool {
        let named = self
            .nf_baseline
            .as_ref()
            .is_some_and(|b| attribution::complete(nf, b, after, family));
        named
            || self
                .nf_previous
                .as_ref()
                .is_some_and(|p| attribution::complete(nf, p, after, family))
    }

    /// Netfilter hook of a drop in this node's namespace, from addresses:
    /// to a local address is INPUT, from one is OUTPUT, otherwise FORWARD.
    fn infer_hook(&self, ev: &Event, journey: &[Hop]) -> Option<Hook> {
        // ARP's hooks are its own (in, out); the counters name the chain.
        if ev.netns != self.env.facts.netns || ev.pkt.l3 == l3::ARP {
            return None;
        }
        let local =
            |ip: Option<IpAddr>| ip.is_some_and(|a| self.env.facts.local_addrs.contains(&a));
        Some(if local(dst_ip(&ev.pkt)) {
            Hook::Input
        } else if local(src_ip(&ev.pkt)) && journey.iter().all(|h| h.dir != Dir::Ingress) {
            Hook::Output
        } else {
            Hook::Forward
        })
    }
}

/// The hook a packet died in, from the netfilter link points of its journey
/// in `netns`: the last hook it entered and did not leave. `None` when the
/// links did not see it there, or it had left the last hook it entered.
pub fn hook_from_points(journey: &[Hop], netns: u32) -> Option<Hook> {
    let last = journey
        .iter()
        .rev()
        .find(|h| h.point.is_some() && h.netns == netns)?;
    if last.point == Some(LinkPoint::Exit) {
        return None;
    }
    last.hook()
}

/// Whether the hook of an inferred netfilter drop is a guess from addresses:
/// neither a table walk nor a netfilter link point saw where it died.
fn hook_guessed(nf: &NetfilterInfo, journey: &[Hop], netns: u32) -> bool {
    nf.attribution == Attribution::Inferred && hook_from_points(journey, netns).is_none()
}

/// The family of the tables a packet meets (an `inet` table serves both IP
/// families); also a bare `reject`'s default reply.
fn packet_family(pkt: &PacketMeta) -> Family {
    match pkt.l3 {
        l3::IPV6 => Family::Ipv6,
        l3::ARP => Family::Arp,
        _ => Family::Ipv4,
    }
}
