//! Which node an address belongs to, and the pod it names, across every
//! node of a cluster view: looked up for each packet, so kept as maps built
//! once per node (a node's topology, addresses and pods come with its
//! stream's header), not searched node by node.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::FastMap as HashMap;
use crate::facts::NodeFacts;
use crate::model::{Flow, PodRef};

/// Where two nodes claim an address, the first node (by its place in the
/// view) wins, as a search in node order would find it.
#[derive(Default)]
pub struct Directory {
    /// Pod addresses (host routes through `cali*`) to their node.
    pods: HashMap<IpAddr, usize>,
    /// The nodes' own addresses to their node.
    locals: HashMap<IpAddr, usize>,
    /// Pod names, with the node that knows them.
    names: HashMap<IpAddr, (usize, PodRef)>,
    /// Pod names from outside the nodes (the API server), for what the
    /// nodes' own facts do not name.
    api: HashMap<IpAddr, PodRef>,
}

fn claim<V>(map: &mut HashMap<IpAddr, V>, ip: IpAddr, node: usize, v: V, owner: fn(&V) -> usize) {
    match map.entry(ip) {
        Entry::Occupied(mut e) if owner(e.get()) > node => {
            e.insert(v);
        }
        Entry::Occupied(_) => {}
        Entry::Vacant(e) => {
            e.insert(v);
        }
    }
}

impl Directory {
    /// Node `n` began its stream with these facts.
    pub fn add(&mut self, n: usize, f: &NodeFacts) {
        for ip in f.topology.pod_addresses() {
            claim(&mut self.pods, ip, n, n, |o| *o);
        }
        for ip in &f.local_addrs {
            claim(&mut self.locals, *ip, n, n, |o| *o);
        }
        for (ip, pod) in &f.pod_names {
            claim(&mut self.names, *ip, n, (n, pod.clone()), |o| o.0);
        }
    }

    /// The node whose pod has this address.
    pub fn pod_node(&self, ip: IpAddr) -> Option<usize> {
        self.pods.get(&ip).copied()
    }

    /// The node that has this address itself.
    pub fn local_node(&self, ip: IpAddr) -> Option<usize> {
        self.locals.get(&ip).copied()
    }

    pub fn add_api_names(&mut self, names: impl IntoIterator<Item = (IpAddr, PodRef)>) {
        self.api.extend(names);
    }

    pub fn has_api_names(&self) -> bool {
        !self.api.is_empty()
    }

    /// The API server's name for an address.
    pub fn api_name(&self, addr: Option<IpAddr>) -> Option<PodRef> {
        self.api.get(&addr?).cloned()
    }

    /// Names a flow's pods that its own node did not know: by the node that
    /// knows them, else by the API server.
    pub fn name_pods(&self, flow: &mut Flow) {
        if self.names.is_empty() && self.api.is_empty() {
            return;
        }
        let name = |a: Option<IpAddr>| {
            let ip = a?;
            self.names
                .get(&ip)
                .map(|(_, p)| p.clone())
                .or_else(|| self.api.get(&ip).cloned())
        };
        if flow.src_pod.is_none() {
            flow.src_pod = name(flow.src);
        }
        if flow.dst_pod.is_none() {
            flow.dst_pod = name(flow.dst);
        }
    }
}
