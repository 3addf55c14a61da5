//! What the TUI knows, built from records only: flows, drop points, diagnoses
//! and the journey of each flow's latest packet. Pure data, no terminal.

use std::collections::{HashMap, VecDeque};

use crate::model::{
    Backend, Benign, Diagnosis, Dir, DropRecord, Flow, Hook, Hop, NetfilterInfo, PacketId,
    PacketRecord, Stage, VerdictRecord,
};
pub use crate::model::{DropPlace, Journey, Step, StepKind};

mod steps;

pub use super::history::{HISTORY_SECS, History};
pub use crate::time::SEC;
/// A flow whose last drop is younger than this sorts first.
pub const RECENT_NS: u64 = 10 * SEC;
/// Two sightings of the same packet id further apart than this are two packets.
const SAME_PACKET_NS: u64 = SEC;
const MAX_FLOWS: usize = 4096;
const MAX_DROP_POINTS: usize = 512;
const MAX_DIAGNOSES: usize = 512;
const MAX_HOPS: usize = 32;
const MAX_EGRESS: usize = 4096;
/// Packet ids remembered per flow, and for how long a drop may come late.
const RECENT_IDS: usize = 16;
const LATE_DROP_NS: u64 = 5 * SEC;

/// A direction of traffic: one row of the flows table.
pub type FlowKey = Flow;

#[derive(Clone, Debug, PartialEq)]
pub struct FlowStats {
    pub key: FlowKey,
    pub packets: u64,
    pub drops: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    pub last_drop_ts: Option<u64>,
    /// The latest packet of this flow.
    pub latest: Journey,
    /// Where the latest packet that was not dropped went.
    pub last_ok: Option<Vec<Hop>>,
    /// Ids of the last packets, so that a drop reported late is not counted
    /// as one more packet.
    recent: VecDeque<(PacketId, u64)>,
    /// Cluster views: the nodes the flow was seen on, in order.
    pub nodes: Vec<String>,
    /// Cluster views: the node its packets never reached (UNDERLAY_*).
    pub lost_before: Option<String>,
    /// Benign drops of this flow (shown on request, never as `✗`), and the
    /// kernel's reason for the last one.
    pub benign: u64,
    pub last_benign: Option<String>,
    /// The nodes' own link-local control traffic (hidden until `m`), told
    /// once from the flow's addresses.
    pub link_local_control: bool,
}

impl FlowStats {
    fn new(key: FlowKey, ts: u64) -> Self {
        FlowStats {
            link_local_control: key.is_link_local_control(),
            key,
            packets: 0,
            drops: 0,
            first_ts: ts,
            last_ts: ts,
            last_drop_ts: None,
            latest: Journey::default(),
            last_ok: None,
            recent: VecDeque::new(),
            nodes: Vec::new(),
            lost_before: None,
            benign: 0,
            last_benign: None,
        }
    }

    /// The node the latest packet never reached, when the underlay lost it.
    pub fn never_reached(&self) -> Option<&str> {
        let n = self.lost_before.as_deref()?;
        let seen_there = self
            .latest
            .hops
            .iter()
            .any(|h| h.node.as_deref() == Some(n));
        (self.latest.drop.is_none() && !seen_there).then_some(n)
    }

    /// `node-a→node-b`: where the flow was seen, in a cluster view.
    pub fn node_path(&self) -> Option<String> {
        (!self.nodes.is_empty()).then(|| self.nodes.join("→"))
    }

    pub fn recently_dropped(&self, now: u64) -> bool {
        self.last_drop_ts
            .is_some_and(|t| now.saturating_sub(t) < RECENT_NS)
    }

    /// The latest packet is now another one; `count` it unless it was seen.
    fn start_packet(&mut self, id: PacketId, ts: u64, count: bool) {
        let prev = std::mem::take(&mut self.latest);
        if prev.drop.is_none() && !prev.hops.is_empty() {
            self.last_ok = Some(prev.hops);
        }
        if count {
            self.packets += 1;
            if self.recent.len() >= RECENT_IDS {
                self.recent.pop_front();
            }
            self.recent.push_back((id.clone(), ts));
        }
        self.latest.id = id;
    }

    /// Seen shortly before `ts`, though not the latest packet any more.
    fn seen_recently(&self, id: &PacketId, ts: u64) -> bool {
        self.recent
            .iter()
            .any(|(i, t)| i == id && ts.saturating_sub(*t) < LATE_DROP_NS)
    }

    fn is_current(&self, id: &PacketId, ts: u64) -> bool {
        self.packets > 0
            && self.latest.drop.is_none()
            && self.latest.id == *id
            && ts.saturating_sub(self.latest.last_ts()) < SAME_PACKET_NS
    }
}

/// One place where packets die.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropPointKey {
    pub stage: Stage,
    pub reason: String,
    pub location: Option<String>,
    pub backend: Option<Backend>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub hook: Option<Hook>,
    /// Benign drops have points of their own, shown on request.
    pub benign: Option<Benign>,
}

impl DropPointKey {
    fn of(d: &DropRecord) -> Self {
        let nf = d.netfilter.as_ref();
        DropPointKey {
            benign: d.benign,
            stage: d.stage,
            reason: d.reason.to_string(),
            location: d.location.clone(),
            backend: nf.and_then(|n| n.backend),
            table: nf.and_then(|n| n.table.clone()),
            chain: nf.and_then(|n| n.chain.clone()),
            hook: nf.and_then(|n| n.hook),
        }
    }

    /// The table of a netfilter drop point, as far as the key says.
    pub fn netfilter(&self) -> Option<NetfilterInfo> {
        (self.backend.is_some() || self.table.is_some() || self.hook.is_some()).then(|| {
            NetfilterInfo {
                backend: self.backend,
                table: self.table.clone(),
                chain: self.chain.clone(),
                hook: self.hook,
                ..Default::default()
            }
        })
    }

    /// `legacy filter FORWARD` for netfilter, else the kernel location.
    pub fn place(&self) -> String {
        (self.stage == Stage::Netfilter)
            .then(|| self.netfilter().and_then(|nf| nf.place()))
            .flatten()
            .or_else(|| self.location.clone())
            .unwrap_or_else(|| "?".into())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DropPoint {
    pub key: DropPointKey,
    pub count: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    pub history: History,
}

/// Everything counted from records; `c` clears it, pause freezes a copy.
///
/// The bounded maps are made at the size that their churn (entries evicted
/// and new ones in their place) never grows: a hash map whose deleted slots
/// run out grows while it holds more than half its capacity, so memory
/// would step up long after every bound was reached. A flow's statistics
/// are boxed so that those spare slots stay small.
#[derive(Clone, Debug)]
pub struct Model {
    pub flows: HashMap<FlowKey, Box<FlowStats>>,
    pub drop_points: HashMap<DropPointKey, DropPoint>,
    pub diagnoses: Vec<Diagnosis>,
    /// Destination address -> interface packets to it leave by (learned).
    pub egress_to: HashMap<std::net::IpAddr, String>,
    /// Record time (CLOCK_MONOTONIC of the traced node).
    pub now_ns: u64,
    pub packets_seen: u64,
    pub drops_seen: u64,
    pub benign_seen: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            flows: HashMap::with_capacity(2 * MAX_FLOWS),
            drop_points: HashMap::with_capacity(2 * MAX_DROP_POINTS),
            diagnoses: Vec::new(),
            egress_to: HashMap::new(),
            now_ns: 0,
            packets_seen: 0,
            drops_seen: 0,
            benign_seen: 0,
        }
    }
}

impl Model {
    pub fn clear(&mut self) {
        let now = self.now_ns;
        *self = Model::default();
        self.now_ns = now;
    }

    fn flow(&mut self, flow: &Flow, ts: u64) -> &mut FlowStats {
        let key = flow.clone();
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            evict(&mut self.flows, MAX_FLOWS / 8, |f| f.last_ts);
        }
        self.flows
            .entry(key.clone())
            .or_insert_with(|| Box::new(FlowStats::new(key, ts)))
    }

    pub fn on_packet(&mut self, p: &PacketRecord, node_netns: Option<u32>) {
        self.now_ns = self.now_ns.max(p.ts_ns);
        self.packets_seen += 1;
        let hop = p.hop();
        if p.dir == Dir::Egress
            && node_netns.is_none_or(|n| n == p.netns)
            && let (Some(dst), Some(ifname)) = (&p.flow.dst, &p.ifname)
            && (self.egress_to.len() < MAX_EGRESS || self.egress_to.contains_key(dst))
        {
            self.egress_to.insert(*dst, ifname.clone());
        }
        self.sighting(&p.flow, p.detail.packet_id(), hop);
    }

    /// A netfilter table's verdict: one more point of that packet's journey.
    pub fn on_verdict(&mut self, v: &VerdictRecord) {
        self.now_ns = self.now_ns.max(v.ts_ns);
        self.sighting(&v.flow, v.detail.packet_id(), v.hop());
    }

    fn sighting(&mut self, flow: &Flow, id: PacketId, hop: Hop) {
        let f = self.flow(flow, hop.ts_ns);
        f.last_ts = f.last_ts.max(hop.ts_ns);
        // The same IPv4 id may pass a point twice (a routing loop); without an
        // id, a second sighting at one point is a new packet.
        let current = f.is_current(&id, hop.ts_ns)
            && (id.ip_id.is_some() || !f.latest.has_point(&hop))
            && f.latest.hops.len() < MAX_HOPS;
        if !current {
            f.start_packet(id, hop.ts_ns, true);
        }
        if let Some(n) = &hop.node
            && !f.nodes.contains(n)
            && f.nodes.len() < 4
        {
            f.nodes.push(n.clone());
        }
        f.latest.hops.push(hop);
    }

    pub fn on_drop(&mut self, d: &DropRecord) {
        self.now_ns = self.now_ns.max(d.ts_ns);
        self.count_at_drop_point(d);
        if d.benign.is_some() {
            // Counted, never the flow's verdict.
            self.benign_seen += 1;
            let f = self.flow(&d.flow, d.ts_ns);
            f.benign += 1;
            f.last_benign = Some(d.reason.to_string());
            return;
        }
        self.drops_seen += 1;
        let id = d.detail.packet_id();
        let f = self.flow(&d.flow, d.ts_ns);
        f.drops += 1;
        f.last_ts = f.last_ts.max(d.ts_ns);
        f.last_drop_ts = Some(f.last_drop_ts.unwrap_or(0).max(d.ts_ns));
        let seen = f.is_current(&id, d.ts_ns);
        if !seen {
            let counted = f.seen_recently(&id, d.ts_ns);
            f.start_packet(id, d.ts_ns, !counted);
        }
        // The drop's own journey is authoritative; keep ours if it has none.
        if !d.journey.is_empty() || !seen {
            f.latest.hops = d.journey.iter().take(MAX_HOPS).cloned().collect();
        }
        f.latest.drop = Some(d.place());
    }

    fn count_at_drop_point(&mut self, d: &DropRecord) {
        let key = DropPointKey::of(d);
        if !self.drop_points.contains_key(&key) && self.drop_points.len() >= MAX_DROP_POINTS {
            evict(&mut self.drop_points, MAX_DROP_POINTS / 8, |p| p.last_ts);
        }
        let dp = self
            .drop_points
            .entry(key.clone())
            .or_insert_with(|| DropPoint {
                key,
                count: 0,
                first_ts: d.ts_ns,
                last_ts: d.ts_ns,
                history: History::default(),
            });
        dp.count += 1;
        dp.last_ts = dp.last_ts.max(d.ts_ns);
        dp.history.add(d.ts_ns);
    }

    pub fn on_diagnosis(&mut self, d: &Diagnosis) {
        self.now_ns = self.now_ns.max(d.last_ts_ns);
        if let Some(u) = &d.underlay {
            for f in self
                .flows
                .values_mut()
                .filter(|f| f.key.src == d.src && f.key.dst == d.dst)
            {
                f.lost_before = Some(u.dst_node.clone());
                // Lost is as bad as dropped: such flows sort first.
                f.last_drop_ts = Some(f.last_drop_ts.unwrap_or(0).max(d.last_ts_ns));
            }
        }
        if let Some(old) = self.diagnoses.iter_mut().find(|o| o.same_problem(d)) {
            *old = d.clone();
            return;
        }
        if self.diagnoses.len() >= MAX_DIAGNOSES
            && let Some(i) = (0..self.diagnoses.len()).min_by_key(|&i| self.diagnoses[i].last_ts_ns)
        {
            self.diagnoses.remove(i);
        }
        self.diagnoses.push(d.clone());
    }
}

/// Removes the `n` entries with the oldest `age`.
///
/// The `n` oldest are found by their ages alone (a selection, not a sort of
/// cloned keys): under a flood of new flows (hundreds of nodes at 1 M
/// events/s) this ran every few hundred packets, and cloning and sorting
/// every key was half of what the view spent taking packets in.
fn evict<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, n: usize, age: impl Fn(&V) -> u64) {
    let n = n.max(1).min(map.len());
    if n == 0 {
        return;
    }
    let mut ages: Vec<u64> = map.values().map(&age).collect();
    let cut = *ages.select_nth_unstable(n - 1).1;
    // Every entry older than the cut goes, and as many at it as make `n`.
    let mut at_cut = n - ages.iter().filter(|a| **a < cut).count();
    map.retain(|_, v| match age(v) {
        a if a < cut => false,
        a if a == cut && at_cut > 0 => {
            at_cut -= 1;
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod evict_tests {
    use std::collections::HashMap;

    #[test]
    fn evict_removes_exactly_the_n_oldest_ties_included() {
        // Ages 0..100 and five more at 10: the 15 oldest are 0..=9 and five
        // of the six at 10.
        let mut m: HashMap<u32, u64> = (0..100).map(|k| (k, u64::from(k))).collect();
        m.extend((100..105).map(|k| (k, 10)));
        super::evict(&mut m, 15, |v| *v);
        assert_eq!(m.len(), 90);
        assert!(m.values().all(|a| *a >= 10));
        assert_eq!(m.values().filter(|a| **a == 10).count(), 1);
        super::evict(&mut m, 1_000, |v| *v);
        assert!(m.is_empty(), "no more than there is");
        super::evict(&mut m, 1, |v| *v);
    }
}
