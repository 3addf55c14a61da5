//! Packets on their way: tc sightings (and the ARP they carry), netfilter
//! table verdicts and link points become points of a packet's journey. An
//! encapsulated packet is its inner packet, so that the journey of a pod's
//! packet goes on across the uplink; its sighting carries the outer headers.

use std::net::Ipv4Addr;

use tracer_common::{Event, NfEvent, OuterMeta, l3};

use super::Pipeline;
use crate::correlation::PacketKey;
use crate::events::names;
use crate::model::{
    ArpOp, At, Attribution, Backend, Dir, DropRecord, Hop, LinkAt, NfVerdict, PacketRecord, Point,
    Record, VerdictRecord,
};

impl Pipeline {
    /// A packet's flow, its pods named.
    pub(super) fn named_flow(&self, p: &tracer_common::PacketMeta) -> crate::model::Flow {
        self.name_pods(names::flow(p))
    }

    pub(super) fn name_pods(&self, mut flow: crate::model::Flow) -> crate::model::Flow {
        self.env.facts.name_pods(&mut flow);
        flow
    }

    /// A journey point as a hop, with its interface's name.
    pub(super) fn hop(&self, p: &Point) -> Hop {
        p.hop(None, |netns, ifindex| self.ifname(netns, ifindex))
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
            let hop = Point {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ttl: Some(p.ttl),
                at: At::Iface {
                    iface: ev.ifindex,
                    dir,
                    outer: outer.clone().map(Box::new),
                },
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
            let sighting = Point {
                ts_ns: nf.ev.ts_ns,
                netns: nf.ev.netns,
                ttl: Some(nf.ev.pkt.ttl),
                at: At::Verdict(Box::new((info.clone(), verdict))),
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
    fn pair_with_freed_drop(&mut self, key: PacketKey, walk: &Point, backend: Option<Backend>) {
        let Some((_, verdict)) = walk.verdict() else {
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
            let point = LinkAt {
                family: names::link_family(nf.pf),
                hook: crate::model::Hook::of_family(nf.pf, nf.hook),
                point: names::link_point(nf.point),
                priority: nf.priority,
            };
            self.journeys.observe(
                key,
                Point {
                    ts_ns: nf.ev.ts_ns,
                    netns: nf.ev.netns,
                    ttl: Some(nf.ev.pkt.ttl),
                    at: At::Link(point),
                },
            );
        }
    }
}
