//! Packets on their way: tc sightings (and the ARP they carry), netfilter
//! table verdicts and link points become points of a packet's journey. An
//! encapsulated packet is its inner packet, so that the journey of a pod's
//! packet goes on across the uplink; its sighting carries the outer headers.

use std::net::Ipv4Addr;

use tracer_common::{Event, NfEvent, OuterMeta, l3};

use super::Pipeline;
use crate::correlation::{HookPoint, PacketKey, Sighting};
use crate::events::names;
use crate::model::{
    ArpOp, Attribution, Backend, Dir, DropRecord, Hop, LinkPoint, NetfilterInfo, NfVerdict,
    PacketRecord, Record, VerdictRecord,
};

impl Pipeline {
    /// A packet's flow, its pods named.
    pub(super) fn named_flow(&self, p: &tracer_common::PacketMeta) -> crate::model::Flow {
        let mut flow = names::flow(p);
        self.env.facts.name_pods(&mut flow);
        flow
    }

    /// A sighting as a journey hop, with its interface's name.
    pub(super) fn hop(&self, s: &Sighting) -> Hop {
        let (mut netfilter, verdict) = match s.verdict.as_deref() {
            Some((nf, v)) => (Some(nf.clone()), Some(*v)),
            None => (None, None),
        };
        let (mut point, mut priority) = (None, None);
        if let Some(p) = s.point {
            netfilter = Some(NetfilterInfo {
                hook: p.hook,
                attribution: Attribution::Exact,
                family: Some(p.family),
                ..Default::default()
            });
            point = Some(p.point);
            // An "after" link sits one above the table it follows.
            priority = (p.point == LinkPoint::After).then(|| p.priority.saturating_sub(1));
        }
        Hop {
            node: None,
            ts_ns: s.ts_ns,
            netns: s.netns,
            ifname: self.ifname(s.netns, s.ifindex),
            dir: s.dir,
            ttl: s.ttl,
            netfilter,
            verdict,
            point,
            priority,
            outer: s.outer.as_deref().cloned(),
        }
    }

    /// A packet seen by tc; `outer`: the headers it was encapsulated in
    /// (`ev.pkt` is then the inner packet).
    pub(super) fn on_tc(&mut self, ev: &Event, outer: Option<&OuterMeta>, out: &mut Vec<Record>) {
        self.counts.packets += 1;
        let p = &ev.pkt;
        let dir = names::tc_dir(ev.dir);
        if p.l3 == l3::ARP && outer.is_none() {
            self.watch_arp(ev, dir);
        }
        let outer = outer.map(names::outer);
        if let Some(key) = PacketKey::of(p) {
            let hop = Sighting {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifindex: ev.ifindex,
                dir,
                ttl: Some(p.ttl),
                verdict: None,
                point: None,
                outer: outer.clone().map(Box::new),
            };
            self.journeys.observe(key, hop);
        }
        if self.opts.packets {
            out.push(Record::Packet(PacketRecord {
                node: None,
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifname: self.ifname(ev.netns, ev.ifindex),
                dir,
                flow: self.named_flow(p),
                detail: names::detail(p),
                outer,
            }));
        }
    }

    /// A pod's ARP request arriving on its cali* interface waits for the
    /// node's (proxy) reply going back out of it.
    fn watch_arp(&mut self, ev: &Event, dir: Dir) {
        let p = &ev.pkt;
        let v4 = |a: &[u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        let is_cali = ev.ifindex != 0
            && self
                .env
                .facts
                .ifname(ev.netns, ev.ifindex)
                .is_some_and(|n| n.starts_with("cali"));
        match (names::arp_op(p.arp_op), dir) {
            (ArpOp::Request, Dir::Ingress) if is_cali => {
                self.arp
                    .request(ev.ts_ns, ev.ifindex, v4(&p.src), v4(&p.dst))
            }
            (ArpOp::Reply, Dir::Egress) => self.arp.reply(ev.ifindex, v4(&p.src)),
            _ => {}
        }
    }

    pub(super) fn on_verdict(&mut self, nf: &NfEvent, out: &mut Vec<Record>) {
        let info = names::walk_netfilter(nf);
        let verdict = names::walk_verdict(nf);
        if let Some(key) = PacketKey::of(&nf.ev.pkt) {
            let sighting = Sighting {
                ts_ns: nf.ev.ts_ns,
                netns: nf.ev.netns,
                ifindex: 0,
                dir: Dir::Netfilter,
                ttl: Some(nf.ev.pkt.ttl),
                verdict: Some(Box::new((info.clone(), verdict))),
                point: None,
                outer: None,
            };
            self.pair_with_freed_drop(key, &sighting, info.backend);
            self.journeys.observe(key, sighting);
        }
        if self.opts.verdicts {
            out.push(Record::Verdict(VerdictRecord {
                node: None,
                ts_ns: nf.ev.ts_ns,
                netns: nf.ev.netns,
                flow: self.named_flow(&nf.ev.pkt),
                verdict,
                netfilter: info,
                detail: names::detail(&nf.ev.pkt),
            }));
        }
    }

    /// nf_tables frees a packet it drops itself on newer kernels and returns
    /// NF_STOLEN: the walk's verdict comes after the drop, which waits in
    /// `pending_nf` for the counters. The walk names that drop exactly.
    fn pair_with_freed_drop(&mut self, key: PacketKey, walk: &Sighting, backend: Option<Backend>) {
        let Some((_, verdict)) = walk.verdict.as_deref() else {
            return;
        };
        let frees = *verdict == NfVerdict::Drop
            || (*verdict == NfVerdict::Stolen && backend == Some(Backend::Nft));
        let ts = walk.ts_ns;
        let freed_before = |d: &DropRecord, k: &Option<PacketKey>| {
            *k == Some(key)
                && d.ts_ns <= ts
                && d.netfilter
                    .as_ref()
                    .is_some_and(|n| n.attribution != Attribution::Exact)
        };
        if !frees
            || !self
                .pending_nf
                .iter()
                .any(|p| freed_before(&p.record, &p.key))
        {
            return;
        }
        let hop = self.hop(walk);
        for p in self
            .pending_nf
            .iter_mut()
            .filter(|p| freed_before(&p.record, &p.key))
        {
            p.record.netfilter = hop.netfilter.clone();
            p.record.journey.push(hop.clone());
        }
    }

    /// A packet passing a netfilter link point: one more point of its
    /// journey, no record of its own.
    pub(super) fn on_hook(&mut self, nf: &NfEvent) {
        if let Some(key) = PacketKey::of(&nf.ev.pkt) {
            let point = HookPoint {
                family: names::link_family(nf.pf),
                hook: crate::model::Hook::of_family(nf.pf, nf.hook),
                point: names::link_point(nf.point),
                priority: nf.priority,
            };
            self.journeys.observe(
                key,
                Sighting {
                    ts_ns: nf.ev.ts_ns,
                    netns: nf.ev.netns,
                    ifindex: 0,
                    dir: Dir::Netfilter,
                    ttl: Some(nf.ev.pkt.ttl),
                    verdict: None,
                    point: Some(point),
                    outer: None,
                },
            );
        }
    }
}
