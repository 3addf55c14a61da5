//! The hook of a netfilter drop that no link point saw (the points are
//! linked on demand, after the first such drop): a guess from addresses,
//! corrected by the counters where a base chain of another hook moved; and
//! the count of such drops that makes the points linked.

use super::*;
use crate::facts::Fact;
use crate::netfilter::{Backend, Chain, Counters, Family, Inventory, Rule, Table, Verdict};

/// A legacy raw table whose PREROUTING chain has an ICMP DROP rule that has
/// counted `n` packets.
fn raw_prerouting_drop(n: u64) -> Inventory {
    Inventory {
        tables: vec![Table {
            backend: Backend::Legacy,
            family: Family::Ipv4,
            name: "raw".into(),
            chains: vec![Chain {
                name: "PREROUTING".into(),
                hook: Some(crate::netfilter::Hook::Prerouting),
                priority: Some(-300),
                policy: Some(Verdict::Accept),
                policy_counters: Some(Counters::default()),
                rules: vec![Rule {
                    id: "1".into(),
                    text: "-p icmp -j DROP".into(),
                    verdict: Some(Verdict::Drop),
                    comment: None,
                    counters: Some(Counters {
                        packets: n,
                        bytes: 0,
                    }),
                    reject_with: None,
                }],
            }],
        }],
        errors: vec![],
        traces: vec![],
    }
}

#[test]
fn counters_of_another_hook_correct_a_guess_from_addresses() {
    let mut f = facts();
    f.netfilter = Some(raw_prerouting_drop(0));
    let mut p = pipeline(f);
    // To the node's own address: addresses alone say INPUT.
    let pkt = icmp("10.244.2.1", "192.168.1.2", 3, 63);
    let mut out = Vec::new();
    p.process(&drop(0, 5, NF_HOOK_SLOW, pkt), &mut out);
    assert_eq!(p.nf_drops_inferred, 0, "counted as it goes out");
    p.env.apply(&Fact::Netfilter {
        inventory: Box::new(raw_prerouting_drop(1)),
    });
    p.process(&Input::Tick(300 * MS), &mut out);
    let d = drops(&out);
    assert_eq!(d.len(), 1);
    let nf = d[0].netfilter.as_ref().unwrap();
    assert_eq!(
        (nf.hook, nf.table.as_deref(), nf.chain.as_deref()),
        (Some(Hook::Prerouting), Some("raw"), Some("PREROUTING")),
        "{nf:?}"
    );
    assert_eq!(nf.attribution, Attribution::Inferred);
    assert_eq!(p.nf_drops_inferred, 1, "such a drop asks for the links");
}

#[test]
fn a_guess_stays_where_no_counter_names_a_base_chain() {
    let mut f = facts();
    f.netfilter = Some(raw_prerouting_drop(0));
    let mut p = pipeline(f);
    let pkt = icmp("10.244.2.1", "192.168.1.2", 4, 63);
    let mut out = Vec::new();
    p.process(&drop(0, 5, NF_HOOK_SLOW, pkt), &mut out);
    // Nothing moved.
    p.env.apply(&Fact::Netfilter {
        inventory: Box::new(raw_prerouting_drop(0)),
    });
    p.process(&Input::Tick(300 * MS), &mut out);
    let d = drops(&out);
    assert_eq!(d[0].netfilter.as_ref().unwrap().hook, Some(Hook::Input));
}
