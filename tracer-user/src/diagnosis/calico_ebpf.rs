//! POLICY_DROP and CALICO_EBPF_DROP from drops of Calico's eBPF programs,
//! named by the counters of Felix's that moved with them.

use super::problem::{Finding, Problem, of_flow, pair, pair_text};
use crate::model::{
    CalicoEbpfDrop, Code, Diagnosis, DropRecord, Owner, Refusal, RuleVerdict, Stage,
};

pub fn ebpf_drop(d: &DropRecord, e: &CalicoEbpfDrop) -> Finding {
    let iface = d.ifname.as_deref().unwrap_or("?");
    let policy = e.reason == "DROPPED_BY_POLICY";
    let code = if policy {
        Code::PolicyDrop
    } else {
        Code::CalicoEbpfDrop
    };
    let (summary, hint) = if policy {
        policy_words(d, e, iface)
    } else {
        (
            format!(
                "{}: Calico's eBPF program on {iface} dropped it: {} ({}, {})",
                pair_text(d),
                e.description,
                e.reason,
                e.map
            ),
            reason_hint(&e.reason).to_string(),
        )
    };
    Finding {
        problem: Problem::CalicoEbpf {
            reason: e.reason.clone(),
            ifname: d.ifname.clone(),
            rule_id: e.rule_id.clone(),
            flow: pair(d),
        },
        diagnosis: Diagnosis {
            ifname: d.ifname.clone(),
            rule: e.rule.clone(),
            refusal: Refusal {
                owner: Some(Owner::Calico),
                verdict: Some(RuleVerdict::Drop),
                policy: e.policy.clone(),
                ..Default::default()
            },
            ..of_flow(d, code, Stage::Tc, summary, hint)
        },
    }
}

fn policy_words(d: &DropRecord, e: &CalicoEbpfDrop, iface: &str) -> (String, String) {
    let whose = match &e.policy {
        Some(p) => format!(" by {}", p.label()),
        None => String::new(),
    };
    let rule = match (&e.rule, &e.note) {
        (Some(r), _) => format!(", rule {r}"),
        (None, Some(n)) => format!(" ({n})"),
        _ => String::new(),
    };
    (
        format!(
            "{}: dropped by Calico policy in its eBPF program on {iface}{whose}{rule}",
            pair_text(d)
        ),
        format!(
            "the policy denies this flow: check it with `calicoctl get networkpolicy,globalnetworkpolicy -A` and `calico-node -bpf policy dump {iface} all`; allow the flow or fix the pods' labels"
        ),
    )
}

/// What to check for each of Felix's drop reasons that cross-node traffic meets.
fn reason_hint(reason: &str) -> &'static str {
    match reason {
        "UNAUTH_SOURCE" => {
            "the packet came from a source Calico does not know as one of its hosts (IPIP, or VXLAN with Calico's VNI, from an address outside the cluster's nodes) or through a tunnel it may not use: check that the sending node is a Calico node with its address in `calicoctl get nodes -o wide`"
        }
        "RT_UNKNOWN" => {
            "Calico's eBPF route map has no route for the destination: check `calico-node -bpf routes dump` on this node for the remote pod block and the node's own addresses"
        }
        "BLACK_HOLE" => {
            "the destination hits a blackhole route (e.g. a service address not in use, ServiceLoopPrevention): check `ip route show type blackhole` and Felix's ServiceLoopPrevention"
        }
        "ENCAP_FAIL" | "DECAP_FAIL" | "NO_HOST_IP" => {
            "Calico's eBPF programs could not encapsulate or decapsulate the packet: check the tunnel devices (vxlan.calico), the node's host IP in Felix and the MTU"
        }
        "CT_CREATE_FAILED" | "SOURCE_COLLISION_FAILED" => {
            "Calico's eBPF conntrack could not take the flow: the conntrack map may be full (`calico-node -bpf conntrack dump`, Felix's BPFMapSizeConntrack)"
        }
        "FRAG_UNSUPPORTED" | "FRAG_WAIT" | "FRAG_REORDER" => {
            "a fragmented packet: Calico's eBPF dataplane reassembles only what it can; lower the pods' MTU so that nothing is fragmented between the nodes"
        }
        "MAGLEV_NO_BACKEND" => {
            "the service has no ready endpoints: check `kubectl get endpointslices` for it"
        }
        "SHORT" | "CSUM_FAIL" | "IP_OPTIONS" | "IP_MALFORMED" => {
            "a malformed packet (short, bad checksum, IP options): check the sender and any offload that rewrites packets on the way"
        }
        _ => "see Felix's counters with `calico-node -bpf counters dump`",
    }
}
