//! Synthetic kernel events: what the ring buffer of a busy Calico node holds.
//!
//! Mostly tc packet events (a TCP packet seen on its pod's `cali*` ingress and
//! the uplink's egress, its ACK on the way back), about 1% drops of a few kinds
//! (netfilter, no route, routing loop) and some ARP (answered, and now and
//! then a pod's ARP for its gateway that nobody answers).

use std::net::{IpAddr, Ipv4Addr};

use tracer_common::{Event, dir, kind, l3, pkt_flags, proto};
use tracer_user::events::{Input, set_ip};
use tracer_user::facts::NodeFacts;

pub const NODE_NETNS: u32 = 4_026_531_840;
pub const ETH0: u32 = 2;
/// ifindex of the first `cali*` interface.
pub const CALI0: u32 = 10;
pub const PODS: u32 = 50;

const NF_HOOK_SLOW: u64 = 0xffff_ffff_8100_0000;
const IP_ROUTE_INPUT: u64 = 0xffff_ffff_8100_1000;
const IP_FORWARD: u64 = 0xffff_ffff_8100_2000;

const R_NETFILTER: u32 = 6;
const R_NOROUTE: u32 = 10;
const R_INHDR: u32 = 11;

/// The facts a node like that would have recorded at start.
pub fn facts() -> NodeFacts {
    let mut f = NodeFacts {
        node: "bench-node".into(),
        kernel: "synthetic".into(),
        netns: NODE_NETNS,
        ..Default::default()
    };
    f.ifnames
        .insert(tracer_user::facts::ifkey(NODE_NETNS, ETH0), "eth0".into());
    for i in 0..PODS {
        f.ifnames.insert(
            tracer_user::facts::ifkey(NODE_NETNS, CALI0 + i),
            format!("cali{:011x}", 0x5eed_0000_u64 + u64::from(i)),
        );
    }
    for (n, name) in [
        (2, "NOT_SPECIFIED"),
        (R_NETFILTER, "NETFILTER_DROP"),
        (R_NOROUTE, "IP_NOROUTE"),
        (R_INHDR, "IP_INHDR"),
    ] {
        f.reasons.insert(n, name.into());
    }
    f.symbols.insert(NF_HOOK_SLOW, "nf_hook_slow".into());
    f.symbols
        .insert(IP_ROUTE_INPUT, "ip_route_input_slow".into());
    f.symbols.insert(IP_FORWARD, "ip_forward".into());
    f.local_addrs.insert("192.168.1.1".parse().unwrap());
    f.local_addrs.insert("10.244.1.1".parse().unwrap());
    f
}

/// How the generated traffic is shaped.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Distinct flows (5-tuples) cycled through at any one time.
    pub flows: u32,
    /// Simulated time between two events.
    pub step_ns: u64,
    /// One packet in `drop_every` is dropped (0: none).
    pub drop_every: u32,
    /// One ARP exchange every `arp_every` packets (0: none).
    pub arp_every: u32,
    /// Flows are replaced by new ones at this rate (new flows per simulated
    /// second; 0: the same flows forever). Dropped packets of new flows come
    /// from new addresses, so every new flow is a new problem to diagnose.
    pub churn_per_s: u64,
}

impl Shape {
    pub fn busy_node() -> Self {
        Shape {
            flows: 10_000,
            step_ns: 1_000,
            drop_every: 100,
            arp_every: 500,
            churn_per_s: 0,
        }
    }
}

/// An endless stream of events of that shape.
pub struct Gen {
    shape: Shape,
    ts: u64,
    packet: u64,
    queue: Vec<Event>,
    ip_id: u16,
}

fn v4(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

impl Gen {
    pub fn new(shape: Shape) -> Self {
        Gen {
            shape,
            ts: 1_000_000_000,
            packet: 0,
            queue: Vec::with_capacity(8),
            ip_id: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.ts
    }

    /// Flow number `n` (among all flows ever): pod, remote address, ports.
    fn flow(&self, n: u64) -> (u32, Ipv4Addr, Ipv4Addr, u16, u16) {
        let pod = (n % u64::from(PODS)) as u32;
        let src = v4(u32::from(Ipv4Addr::new(10, 244, 1, 10)) + pod);
        // Remote pods across the cluster: 10.244.0.0/16 minus our block, then
        // further /16s as the flow number grows (churn keeps making new ones).
        let remote = 0x0af4_0200_u32.wrapping_add((n / u64::from(PODS)) as u32 % 0x00ff_fd00);
        let dst = v4(remote);
        let sport = 32_768 + (n % 28_000) as u16;
        let dport = [80u16, 443, 8080, 5432, 6379][(n % 5) as usize];
        (pod, src, dst, sport, dport)
    }

    fn event(&self, k: u8, direction: u8, ifindex: u32, p: tracer_common::PacketMeta) -> Event {
        Event {
            ts_ns: self.ts,
            kind: k,
            dir: direction,
            ifindex,
            netns: NODE_NETNS,
            skb_len: p.len,
            pkt: p,
            ..Default::default()
        }
    }

    fn tcp(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        id: u16,
        ttl: u8,
        len: u32,
    ) -> tracer_common::PacketMeta {
        let mut p = tracer_common::PacketMeta {
            l3: l3::IPV4,
            proto: proto::TCP,
            ttl,
            flags: pkt_flags::L4 | pkt_flags::DF,
            sport,
            dport,
            ip_id: id,
            tcp_flags: 0x18,
            len,
            ..Default::default()
        };
        set_ip(&mut p.src, IpAddr::V4(src));
        set_ip(&mut p.dst, IpAddr::V4(dst));
        p
    }

    fn arp(op: u16, sender: Ipv4Addr, target: Ipv4Addr) -> tracer_common::PacketMeta {
        let mut p = tracer_common::PacketMeta {
            l3: l3::ARP,
            arp_op: op,
            len: 42,
            ..Default::default()
        };
        set_ip(&mut p.src, IpAddr::V4(sender));
        set_ip(&mut p.dst, IpAddr::V4(target));
        p
    }

    /// The events of the next packet (or ARP exchange).
    fn refill(&mut self) {
        let s = self.shape;
        self.packet += 1;
        let n = self.packet;
        // Which flow: the live window of `flows` flows slides by `churn_per_s`
        // new flows per simulated second.
        let base = if s.churn_per_s == 0 {
            0
        } else {
            self.ts / 1_000_000 * s.churn_per_s / 1000
        };
        let flow = base + (n.wrapping_mul(2_654_435_761) % u64::from(s.flows.max(1)));
        let (pod, src, dst, sport, dport) = self.flow(flow);
        let cali = CALI0 + pod;
        self.ip_id = self.ip_id.wrapping_add(1);
        let id = self.ip_id;
        let gw = Ipv4Addr::new(169, 254, 1, 1);
        if s.arp_every != 0 && n.is_multiple_of(u64::from(s.arp_every)) {
            self.queue
                .push(self.event(kind::TC, dir::INGRESS, cali, Self::arp(1, src, gw)));
            // One in ten goes unanswered.
            if !n.is_multiple_of(10 * u64::from(s.arp_every)) {
                self.queue
                    .push(self.event(kind::TC, dir::EGRESS, cali, Self::arp(2, gw, src)));
            }
            return;
        }
        let out = Self::tcp(src, dst, sport, dport, id, 64, 1400);
        self.queue
            .push(self.event(kind::TC, dir::INGRESS, cali, out));
        if s.drop_every != 0 && n.is_multiple_of(u64::from(s.drop_every)) {
            let (reason, loc) = match (n / u64::from(s.drop_every)) % 3 {
                0 => (R_NETFILTER, NF_HOOK_SLOW),
                1 => (R_NOROUTE, IP_ROUTE_INPUT),
                _ => (R_INHDR, IP_FORWARD),
            };
            let mut d = self.event(
                kind::DROP,
                dir::NONE,
                ETH0,
                Self::tcp(src, dst, sport, dport, id, 63, 1400),
            );
            d.reason = reason;
            d.location = loc;
            self.queue.push(d);
            return;
        }
        self.queue.push(self.event(
            kind::TC,
            dir::EGRESS,
            ETH0,
            Self::tcp(src, dst, sport, dport, id, 63, 1400),
        ));
        // The ACK coming back.
        let ack_id = id.wrapping_add(0x8000);
        self.queue.push(self.event(
            kind::TC,
            dir::INGRESS,
            ETH0,
            Self::tcp(dst, src, dport, sport, ack_id, 63, 52),
        ));
        self.queue.push(self.event(
            kind::TC,
            dir::EGRESS,
            cali,
            Self::tcp(dst, src, dport, sport, ack_id, 62, 52),
        ));
    }

    pub fn next_event(&mut self) -> Event {
        if self.queue.is_empty() {
            self.refill();
            self.queue.reverse();
        }
        let mut ev = self.queue.pop().expect("refilled");
        self.ts += self.shape.step_ns;
        ev.ts_ns = self.ts;
        ev
    }

    pub fn next_input(&mut self) -> Input {
        Input::Event(self.next_event())
    }
}

/// `n` events as the ring buffer would hold them: raw bytes, back to back.
pub fn ring_bytes(shape: Shape, n: usize) -> Vec<u8> {
    let mut g = Gen::new(shape);
    let mut out = Vec::with_capacity(n * tracer_common::EVENT_SIZE);
    for _ in 0..n {
        out.extend_from_slice(tracer_user::events::encode(&g.next_event()));
    }
    out
}
