//! Synthetic agent streams of a cluster: pods on every node talking to pods
//! on other nodes, each packet seen leaving its pod's `cali*` and the node's
//! uplink, then arriving on the receiver's uplink and `cali*`; 1% dropped by
//! the receiver's netfilter. Each node's events become the compressed
//! recording stream its agent would send (a tick every 100 ms, a flush
//! every 200 ms at 100k events/s).

use std::net::{IpAddr, Ipv4Addr};

use tracer_common::{Event, PacketMeta, dir, kind, l3, pkt_flags, proto};
use tracer_user::events::{Input, set_ip};
use tracer_user::facts::topology::RouteEntry;
use tracer_user::facts::{NodeFacts, ifkey};
use tracer_user::model::PodRef;
use tracer_user::recording::format::{End, Header};
use tracer_user::recording::writer::Recorder;

use crate::synth::{self, CALI0, ETH0, NODE_NETNS};

pub const PODS: u32 = 20;
/// Each agent's rate: what the stream's bytes per second are given at.
pub const RATE: u64 = 100_000;
const NF_HOOK_SLOW: u64 = 0xffff_ffff_8100_0000;

pub fn pod_ip(node: usize, pod: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        64 + (node / 256) as u8,
        (node % 256) as u8,
        10 + pod as u8,
    )
}

pub fn node_ip(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, (node / 250) as u8, (node % 250) as u8 + 1)
}

pub fn name(node: usize) -> String {
    format!("node-{node}")
}

/// What node `i`'s agent knows at its start.
pub fn header(i: usize) -> Header {
    let mut f: NodeFacts = synth::facts();
    f.node = name(i);
    f.ifnames.clear();
    f.ifnames.insert(ifkey(NODE_NETNS, ETH0), "eth0".into());
    f.local_addrs.clear();
    f.local_addrs.insert(IpAddr::V4(node_ip(i)));
    f.topology.uplinks = vec!["eth0".into()];
    let mut interfaces = vec!["eth0".to_string()];
    for p in 0..PODS {
        let iface = format!("cali{:011x}", (i as u64) << 16 | u64::from(p));
        f.ifnames
            .insert(ifkey(NODE_NETNS, CALI0 + p), iface.clone());
        f.topology.routes.push(RouteEntry {
            dst: format!("{}/32", pod_ip(i, p)),
            dev: iface.clone(),
            via: None,
        });
        f.pod_names.insert(
            IpAddr::V4(pod_ip(i, p)),
            PodRef {
                namespace: "bench".into(),
                name: format!("pod-{i}-{p}"),
            },
        );
        interfaces.push(iface);
    }
    Header {
        calitrace_version: "bench".into(),
        kernel: "synthetic".into(),
        node: name(i),
        start_realtime_ns: 1_000_000_000,
        start_monotonic_ns: 1_000_000_000,
        event_size: tracer_common::EVENT_SIZE as u32,
        filter: String::new(),
        interfaces,
        probes_attached: vec![],
        probes_unavailable: vec![],
        facts: f,
    }
}

/// A small, fast, repeatable random source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, id: u16, ttl: u8) -> PacketMeta {
    let mut p = PacketMeta {
        l3: l3::IPV4,
        proto: proto::TCP,
        ttl,
        flags: pkt_flags::L4 | pkt_flags::DF,
        sport,
        dport: 8080,
        ip_id: id,
        tcp_flags: 0x18,
        len: 1400,
        ..Default::default()
    };
    set_ip(&mut p.src, IpAddr::V4(src));
    set_ip(&mut p.dst, IpAddr::V4(dst));
    p
}

fn event(ts: u64, k: u8, d: u8, ifindex: u32, pkt: PacketMeta) -> Event {
    Event {
        ts_ns: ts,
        kind: k,
        dir: d,
        ifindex,
        netns: NODE_NETNS,
        skb_len: pkt.len,
        pkt,
        ..Default::default()
    }
}

/// Every node's events, in time order per node: about `per_node` each, at
/// `RATE` events/s per node (random gaps), from flows of random pod pairs.
pub fn events(nodes: usize, per_node: usize, seed: u64) -> Vec<Vec<Event>> {
    // The gaps `cluster` has been measured with (their mean: a packet
    // every `nodes / (4 RATE)` s).
    let gap = 1_000_000_000 * nodes as u64 / (RATE * 4);
    let mut traffic = Traffic::with_gap(nodes, gap, seed);
    let mut out: Vec<Vec<Event>> = vec![Vec::with_capacity(per_node + 8); nodes];
    // Four events per packet across the fleet.
    for _ in 0..per_node * nodes / 4 {
        traffic.packet(&mut out);
    }
    for evs in &mut out {
        evs.sort_by_key(|e| e.ts_ns);
    }
    out
}

/// The fleet's traffic as it happens: packets between random pods of
/// random nodes at `rate` events/s per node, on one clock (nanoseconds from
/// 2 s), taken a stretch of time at a time ([`Traffic::until`]).
pub struct Traffic {
    rng: Rng,
    ids: Vec<u16>,
    /// The last packet's time.
    pub t: u64,
    /// Mean time between two packets of the fleet.
    gap: u64,
    n: u64,
    /// Events of packets already made that lie past the last stretch.
    pending: Vec<Vec<Event>>,
}

impl Traffic {
    pub fn new(nodes: usize, rate: u64, seed: u64) -> Traffic {
        // Four events a packet: the fleet's `nodes * rate` events/s.
        let gap = 4_000_000_000 / (rate * nodes as u64).max(1);
        Traffic::with_gap(nodes, gap.max(1), seed)
    }

    /// Packets `gap` ns apart on average.
    fn with_gap(nodes: usize, gap: u64, seed: u64) -> Traffic {
        Traffic {
            rng: Rng(seed | 1),
            ids: vec![0; nodes],
            t: 2_000_000_000,
            gap,
            n: 0,
            pending: vec![Vec::new(); nodes],
        }
    }

    /// One packet: its four events (or three and a drop) on its sender's
    /// and its receiver's node.
    fn packet(&mut self, out: &mut [Vec<Event>]) {
        let nodes = self.ids.len();
        let rng = &mut self.rng;
        self.t += 1 + rng.below(2 * self.gap);
        let t = self.t;
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        let (pa, pb) = (rng.below(PODS.into()) as u32, rng.below(PODS.into()) as u32);
        self.ids[a] = self.ids[a].wrapping_add(1 + rng.below(3) as u16);
        let sport = 32_768 + rng.below(2_000) as u16;
        let (src, dst) = (pod_ip(a, pa), pod_ip(b, pb));
        let id = self.ids[a];
        let p = |ttl| packet(src, dst, sport, id, ttl);
        let jitter = rng.below(20_000);
        out[a].push(event(t, kind::TC, dir::INGRESS, CALI0 + pa, p(64)));
        out[a].push(event(t + 3_000, kind::TC, dir::EGRESS, ETH0, p(63)));
        let at = t + 50_000 + jitter;
        out[b].push(event(at, kind::TC, dir::INGRESS, ETH0, p(63)));
        if self.n % 100 == 99 {
            let mut d = event(at + 4_000, kind::DROP, dir::NONE, ETH0, p(63));
            d.reason = 6;
            d.location = NF_HOOK_SLOW;
            out[b].push(d);
        } else {
            out[b].push(event(at + 4_000, kind::TC, dir::EGRESS, CALI0 + pb, p(62)));
        }
        self.n += 1;
    }

    /// Each node's events before `end_ns`, in time order (those of its
    /// packets that lie later come with the next stretch).
    pub fn until(&mut self, end_ns: u64) -> Vec<Vec<Event>> {
        let mut all = std::mem::take(&mut self.pending);
        while self.t < end_ns {
            self.packet(&mut all);
        }
        let mut out = Vec::with_capacity(all.len());
        for mut evs in all {
            evs.sort_by_key(|e| e.ts_ns);
            let later = evs.partition_point(|e| e.ts_ns < end_ns);
            self.pending.push(evs.split_off(later));
            out.push(evs);
        }
        out
    }

    /// Lets time pass without traffic (nobody is looking).
    pub fn skip_to(&mut self, ns: u64) {
        self.t = self.t.max(ns);
        for p in &mut self.pending {
            p.clear();
        }
    }
}

/// A writer whose bytes stay readable (an agent's stdout).
#[derive(Clone, Default)]
pub struct Shared(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Node `i`'s events as its agent streams them: compressed, a tick every
/// 100 ms of its time and a flush every 200 ms.
pub fn stream(i: usize, evs: &[Event]) -> anyhow::Result<Vec<u8>> {
    let out = Shared::default();
    let mut rec = Recorder::stream(
        Box::new(out.clone()),
        &header(i),
        std::time::Duration::from_secs(3600),
    )?;
    let (mut next_tick, mut next_flush) = (0, 0);
    for e in evs {
        if e.ts_ns >= next_tick {
            rec.record(&[], &Input::Tick(e.ts_ns))?;
            next_tick = e.ts_ns + 100_000_000;
        }
        if e.ts_ns >= next_flush {
            rec.flush()?;
            next_flush = e.ts_ns + 200_000_000;
        }
        rec.record(&[], &Input::Event(*e))?;
    }
    rec.finish(&End::default())?;
    let bytes = out.0.lock().unwrap().clone();
    Ok(bytes)
}
