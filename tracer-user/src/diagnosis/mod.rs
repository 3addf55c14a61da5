//! Turning drops and unanswered ARP into diagnoses: one per distinct problem,
//! re-emitted with updated counts at most once per interval.
//!
//! Each diagnosis code has one function that reads a drop (and the node's
//! facts) and says which problem it is and what to do: [`netfilter`]
//! (NETFILTER_DROP, POLICY_DROP, IPTABLES_BACKEND_MISMATCH), [`routing`]
//! (NO_ROUTE, ROUTING_LOOP, RP_FILTER), [`neighbor`] (NEIGHBOR_UNREACHABLE,
//! PROXY_ARP_DISABLED and NO_ROUTE for a pod's gateway), [`packet`]
//! (MTU_EXCEEDED, OTHER).

pub mod attribution;
mod calico_ebpf;
pub mod classify;
mod neighbor;
mod netfilter;
pub mod ownership;
mod packet;
mod problem;
mod routing;
#[cfg(test)]
mod tests;
mod underlay;
mod wireguard;

use std::collections::HashMap;
use std::net::IpAddr;

use crate::correlation::arp::Unanswered;
use crate::facts::Environment;
use crate::model::{Check, CheckId, Code, Diagnosis, DropRecord, Owner, Record, Stage};

pub use neighbor::CALICO_GATEWAY;
use problem::{Finding, Problem};
pub use underlay::Loss;

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
    states: HashMap<Problem, State>,
    update_interval_ns: u64,
    /// The doctor's checks that failed at the start, to cite.
    checks: Vec<Check>,
}

impl Diagnoser {
    pub fn new(update_interval_ns: u64) -> Self {
        Self {
            states: HashMap::new(),
            update_interval_ns,
            checks: Vec::new(),
        }
    }

    /// The doctor's checks to cite: those that failed.
    pub fn cite_checks(&mut self, checks: &[Check]) {
        self.checks = checks.iter().filter(|c| c.failed()).cloned().collect();
    }

    /// The problems a drop shows, each counted once more.
    pub fn on_drop(&mut self, d: &DropRecord, env: &mut Environment, out: &mut Vec<Record>) {
        for f in findings(d, env) {
            self.note(f, d.ts_ns, 1, out);
        }
    }

    /// ARP requests from a pod for its gateway got no answer on `ifname`.
    pub fn on_unanswered_arp(
        &mut self,
        u: &Unanswered,
        ifname: &str,
        env: &mut Environment,
        out: &mut Vec<Record>,
    ) {
        let f = neighbor::gateway_unanswered(ifname, IpAddr::V4(u.target), env);
        self.note(f, u.last_ts, u.requests, out);
    }

    /// WireGuard refused `r.count` packets on a device.
    pub fn on_wireguard_refused(
        &mut self,
        r: &crate::model::WireguardRefusal,
        ts: u64,
        out: &mut Vec<Record>,
    ) {
        let f = wireguard::wireguard_refused(r);
        self.note(f, ts, r.count, out);
    }

    /// Packets of a pod flow lost between two nodes (cluster views).
    pub fn on_underlay_loss(&mut self, loss: &Loss, ts: u64, out: &mut Vec<Record>) {
        let f = underlay::underlay_loss(loss);
        // The path's sizes change what the problem is: keep the latest.
        if let Some(s) = self.states.get_mut(&f.problem) {
            s.diag.underlay = f.diagnosis.underlay.clone();
            s.diag.summary = f.diagnosis.summary.clone();
            s.diag.hint = f.diagnosis.hint.clone();
        }
        self.note(f, ts, 1, out);
    }

    /// Counts `count` more occurrences of a problem; a new problem is
    /// reported at once, citing the doctor's check that explains it.
    fn note(&mut self, mut f: Finding, ts: u64, count: u64, out: &mut Vec<Record>) {
        if !self.checks.is_empty() {
            cite(&mut f.diagnosis, &self.checks);
        }
        if let Some(s) = self.states.get_mut(&f.problem) {
            s.diag.count += count;
            s.diag.last_ts_ns = ts;
            s.dirty = true;
            return;
        }
        if self.states.len() >= MAX_PROBLEMS {
            self.evict(out);
        }
        let mut diag = f.diagnosis;
        diag.count = count;
        diag.first_ts_ns = ts;
        diag.last_ts_ns = ts;
        out.push(Record::Diagnosis(diag.clone()));
        self.states.insert(
            f.problem,
            State {
                diag,
                dirty: false,
                last_emit: ts,
            },
        );
    }

    /// Forgets the eighth of the problems updated longest ago; those with an
    /// update not yet reported report it first.
    fn evict(&mut self, out: &mut Vec<Record>) {
        let mut ages: Vec<(u64, u64, &Problem)> = self
            .states
            .iter()
            .map(|(k, s)| (s.diag.last_ts_ns, s.diag.first_ts_ns, k))
            .collect();
        ages.sort_unstable_by_key(|(last, first, _)| (*last, *first));
        let old: Vec<Problem> = ages
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
}

/// Names the failed check that explains a diagnosis, in it and in its hint
/// (the first of [`CheckId::explaining`] that failed); a check that implicates some owners' rules (`dataplane`'s split) only for a
/// drop in their tables.
fn cite(d: &mut Diagnosis, checks: &[Check]) {
    let explains = CheckId::explaining(d.code);
    // A policy drop is in Calico's chains even where the table's owner is unknown.
    let owner = d
        .refusal
        .owner
        .or((d.code == Code::PolicyDrop).then_some(Owner::Calico));
    let found = explains
        .iter()
        .find_map(|id| checks.iter().find(|c| c.id == *id && c.concerns(owner)));
    if let Some(c) = found {
        d.check = Some(c.id);
        d.hint = format!(
            "{} (`calitrace doctor` check {} fails: {})",
            d.hint,
            c.id.as_str(),
            c.summary
        );
    }
}

/// The problems one drop shows, by the stage it died in.
fn findings(d: &DropRecord, env: &mut Environment) -> Vec<Finding> {
    match d.stage {
        Stage::Netfilter => {
            let nf = d.netfilter.clone().unwrap_or_default();
            let mut found = vec![netfilter::table_drop(d, &nf)];
            found.extend(netfilter::backend_mismatch(d, &nf, env));
            found
        }
        Stage::RpFilter => vec![routing::rp_filter(d, env)],
        Stage::Ttl => vec![routing::routing_loop(d, env)],
        Stage::Routing => vec![routing::no_route(d)],
        Stage::Neighbor => vec![neighbor::neighbor_unreachable(d, env)],
        Stage::Mtu => vec![packet::mtu_exceeded(d)],
        Stage::Tc | Stage::Socket | Stage::Other | Stage::Underlay => match &d.calico_ebpf {
            Some(e) => vec![calico_ebpf::ebpf_drop(d, e)],
            None => vec![packet::other(d)],
        },
    }
}
