//! One node of a cluster view: its pipeline, what its stream said about it,
//! and whether its agent could see what crossed its uplink.

use std::net::IpAddr;

use std::collections::BTreeMap;

use super::stage::NodeStage;
use super::underlay::Witness;
use crate::facts::topology::in_net;
use crate::model::{Encap, Stats};
use crate::recording::format::{End, Header};

/// An agent's (or a file's) state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    /// Started, no stream yet.
    Starting,
    Running,
    /// Ended; why, where it was not a normal end.
    Ended(Option<String>),
}

impl AgentState {
    /// A word for the view.
    pub fn word(&self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Ended(None) => "ended",
            AgentState::Ended(Some(_)) => "failed",
        }
    }
}

/// What a view shows of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub state: AgentState,
    pub events: u64,
    /// Set by a live driver, which knows the wall clock.
    pub events_per_sec: f64,
    pub lost: u64,
    /// Its clock minus the first node's, in nanoseconds.
    pub offset_ns: i64,
    pub traces_uplink: bool,
}

pub struct Node {
    pub name: String,
    /// Its stage, where it runs inside the merge (else on the thread that
    /// reads its stream).
    pub stage: Option<NodeStage>,
    /// Its stream began (its header came).
    pub begun: bool,
    /// Benign drops by reason, once its pipeline finished.
    pub benign: BTreeMap<String, u64>,
    header: Option<Header>,
    pub state: AgentState,
    pub traces_uplink: bool,
    /// (common time, lost so far) each time the count grew.
    pub losses: Vec<(u64, u64)>,
    /// Latest time its stream has reached, on the common clock.
    pub watermark: u64,
    /// Time of its first event, on the common clock.
    pub first_ts: Option<u64>,
    pub events: u64,
    pub end: Option<End>,
    /// The node's routes, parsed once: network, prefix length, the tunnel
    /// they go through.
    routes: Vec<(IpAddr, u8, Encap)>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node {
            name: name.to_string(),
            stage: None,
            begun: false,
            benign: BTreeMap::new(),
            header: None,
            state: AgentState::Starting,
            traces_uplink: false,
            losses: Vec::new(),
            watermark: 0,
            first_ts: None,
            events: 0,
            end: None,
            routes: Vec::new(),
        }
    }

    /// Its stream began; `stage`: where it runs inside the merge.
    pub fn begin(&mut self, header: Header, stage: Option<NodeStage>) {
        let uplinks = &header.facts.topology.uplinks;
        self.traces_uplink = header.interfaces.iter().any(|i| uplinks.contains(i));
        let topology = &header.facts.topology;
        self.routes = topology
            .routes
            .iter()
            .filter_map(|r| {
                let (net, len) = r.net()?;
                let tunnel = topology.tunnels.iter().find(|t| t.name == r.dev);
                let encap = match tunnel.map(|t| t.kind.as_str()) {
                    Some("vxlan") => Encap::Vxlan,
                    Some("ipip") => Encap::Ipip,
                    Some("wireguard") => Encap::Wireguard,
                    _ => Encap::None,
                };
                Some((net, len, encap))
            })
            .collect();
        self.stage = stage;
        self.begun = true;
        self.header = Some(header);
        self.state = AgentState::Running;
    }

    /// How the node's routes carry packets to `dst`: through which tunnel.
    pub fn encap_towards(&self, dst: IpAddr) -> Encap {
        self.routes
            .iter()
            .filter(|(net, len, _)| in_net(dst, *net, *len))
            .max_by_key(|(_, len, _)| *len)
            .map_or(Encap::None, |(_, _, e)| *e)
    }

    /// Whether the node could have seen what crossed its uplink around `ts`.
    pub fn witness(&self, ts: u64) -> Witness {
        const WINDOW: u64 = super::underlay::WINDOW_NS;
        if !self.begun {
            return Witness::AgentNotRunning;
        }
        if !self.traces_uplink {
            return Witness::NotTracingUplink;
        }
        let before = self
            .losses
            .iter()
            .take_while(|(t, _)| *t < ts.saturating_sub(WINDOW))
            .last()
            .map_or(0, |(_, l)| *l);
        let after = self
            .losses
            .iter()
            .take_while(|(t, _)| *t <= ts + 2 * WINDOW)
            .last()
            .map_or(0, |(_, l)| *l);
        if after > before {
            Witness::LostEvents
        } else {
            Witness::Able
        }
    }

    /// The node's statistics at its end, with how its agent ended.
    pub fn stats(&self) -> Stats {
        let end = self.end.clone().unwrap_or_default();
        let h = self.header.as_ref();
        Stats {
            interfaces: end.interfaces,
            node: Some(self.name.clone()),
            events: end.events,
            lost: end.lost.max(self.losses.last().map_or(0, |(_, l)| *l)),
            probes_attached: h.map(|h| h.probes_attached.clone()).unwrap_or_default(),
            probes_unavailable: h.map(|h| h.probes_unavailable.clone()).unwrap_or_default(),
            duration_s: self
                .first_ts
                .map_or(0.0, |f| self.watermark.saturating_sub(f) as f64 / 1e9),
            benign: self.benign.clone(),
            exit: match &self.state {
                AgentState::Ended(Some(why)) => Some(why.clone()),
                AgentState::Starting => Some("no stream from its agent".into()),
                _ => None,
            },
        }
    }

    pub fn view(&self, offset_ns: i64) -> NodeView {
        NodeView {
            name: self.name.clone(),
            state: self.state.clone(),
            events: self.events,
            events_per_sec: 0.0,
            lost: self.losses.last().map_or(0, |(_, l)| *l),
            offset_ns,
            traces_uplink: self.traces_uplink,
        }
    }
}
