//! Netfilter attribution, asserted against what `calitrace probes` says this
//! kernel allows: where its `netfilter attribution:` line says exact (fexit or
//! kprobes on nft_do_chain / ipt_do_table), a drop must be attributed `exact`
//! with the right backend, table, chain and hook; where it says inferred, the
//! backend comes from where the packet was freed (6.8+) or from the rule
//! counters of both backends, which must still name the same table, chain and
//! rule. Also the mismatch and Calico policy diagnoses.

use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::{Backend, Lab, Mode, Pod, kernel};
use serde_json::Value;

struct Run {
    lab: Lab,
    a: Pod,
    b: Pod,
}

fn lab() -> Run {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    Run { lab, a, b }
}

impl Run {
    /// Traces on `node` while pod A pings pod B; `reachable` says what the
    /// ping must do.
    fn trace(&self, node: usize, reachable: bool) -> Finished {
        let t = Trace::start(&self.lab.node(node).netns, &["--drops-only"]).unwrap();
        assert_eq!(
            self.lab.ping(&self.a, &self.b.ip, 3),
            reachable,
            "ping outcome"
        );
        std::thread::sleep(Duration::from_millis(600));
        let f = t.stop().unwrap();
        assert!(f.status.success(), "{}", f.dump());
        f
    }

    fn drop(&self, f: &Finished) -> Value {
        let drops = f.drops();
        let flow = Finished::between(&drops, &self.a.ip, &self.b.ip);
        assert!(!flow.is_empty(), "no drop for the flow\n{}", f.dump());
        flow[flow.len() - 1].clone()
    }
}

fn assert_nf(d: &Value, backend: &str, table: &str, chain: &str) {
    let nf = &d["netfilter"];
    assert_eq!(d["stage"], "netfilter", "{d}");
    assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
    // Before 5.17 the kernel gives no reason: calitrace names it from where
    // the packet was freed, and says so.
    assert_eq!(
        d["reason_from_location"].as_bool().unwrap_or(false),
        !kernel::has_drop_reasons(),
        "{d}"
    );
    assert_eq!(nf["backend"], backend, "{d}");
    assert_eq!(nf["table"], table, "{d}");
    assert_eq!(nf["chain"], chain, "{d}");
    assert_eq!(nf["hook"], "FORWARD", "{d}");
    let probes = calitrace::attribution();
    assert_eq!(
        nf["attribution"],
        probes.expected_for(backend),
        "`calitrace probes` says: netfilter attribution: {}\n{d}",
        probes.line
    );
}

#[test]
fn legacy_rule_drop() {
    let r = lab();
    r.lab
        .iptables(
            1,
            Backend::Legacy,
            &["-A", "FORWARD", "-s", &r.a.ip, "-j", "ACCEPT", "-p", "tcp"],
        )
        .unwrap();
    r.lab
        .iptables(
            1,
            Backend::Legacy,
            &["-A", "FORWARD", "-s", &r.a.ip, "-j", "DROP"],
        )
        .unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "legacy", "filter", "FORWARD");
    assert_eq!(
        d["location"], "nf_hook_slow",
        "x_tables drops end there: {d}"
    );
    assert!(
        d["netfilter"]["rule"].as_str().unwrap().starts_with("#2: "),
        "the second rule: {d}"
    );
    let n = f.diagnosis("NETFILTER_DROP");
    assert_eq!(
        (n["backend"].as_str(), n["chain"].as_str()),
        (Some("legacy"), Some("FORWARD"))
    );
    assert!(n["rule"].as_str().unwrap().contains("DROP"), "{n}");
}

#[test]
fn legacy_policy_drop() {
    let r = lab();
    r.lab
        .iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "legacy", "filter", "FORWARD");
    assert_eq!(d["netfilter"]["rule"], "policy DROP");
    assert!(
        f.diagnosis("NETFILTER_DROP")["hint"]
            .as_str()
            .unwrap()
            .contains("DROP policy of chain FORWARD")
    );
}

#[test]
fn iptables_nft_rule_drop() {
    let r = lab();
    r.lab
        .iptables(
            1,
            Backend::Nft,
            &[
                "-A",
                "FORWARD",
                "-s",
                &r.a.ip,
                "-m",
                "comment",
                "--comment",
                "block pod a",
                "-j",
                "DROP",
            ],
        )
        .unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "nft", "filter", "FORWARD");
    let rule = d["netfilter"]["rule"].as_str().unwrap();
    assert!(rule.starts_with("handle "), "{d}");
    assert_eq!(d["netfilter"]["comment"], "block pod a");
    assert_eq!(d["location"], kernel::nft_drop_location(), "{d}");
}

#[test]
fn iptables_nft_policy_drop() {
    let r = lab();
    r.lab
        .iptables(1, Backend::Nft, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "nft", "filter", "FORWARD");
    assert_eq!(d["netfilter"]["rule"], "policy DROP");
}

#[test]
fn native_nft_chain_at_its_own_priority() {
    let r = lab();
    r.lab
        .nft(1, &format!("table inet cttest {{ chain fwdchain {{ type filter hook forward priority -5; policy accept; ip saddr {} counter drop comment \"native\"\n }}\n }}", r.a.ip))
        .unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "nft", "cttest", "fwdchain");
    assert_eq!(d["netfilter"]["family"], "inet");
    assert!(
        d["netfilter"]["rule"]
            .as_str()
            .unwrap()
            .starts_with("handle "),
        "{d}"
    );
    assert_eq!(d["netfilter"]["comment"], "native");
    assert!(
        f.diagnosis("NETFILTER_DROP")["summary"]
            .as_str()
            .unwrap()
            .contains("nft table inet cttest")
    );

    // A policy drop there has no counter; the chain still is the answer.
    let r = lab();
    r.lab.nft(1, "table inet cttest { chain fwdchain { type filter hook forward priority -5; policy drop\n }\n }").unwrap();
    let f = r.trace(1, false);
    let d = r.drop(&f);
    assert_nf(&d, "nft", "cttest", "fwdchain");
    assert_eq!(d["netfilter"]["rule"], "policy DROP");
}

/// Calico-style chains in `calico` that accept the pod traffic.
fn calico_chains(r: &Run, node: usize, calico: Backend) {
    r.lab
        .iptables(node, calico, &["-N", "cali-FORWARD"])
        .unwrap();
    r.lab
        .iptables(
            node,
            calico,
            &[
                "-A",
                "cali-FORWARD",
                "-m",
                "comment",
                "--comment",
                "cali:accept-pods",
                "-s",
                "10.244.0.0/16",
                "-j",
                "ACCEPT",
            ],
        )
        .unwrap();
    r.lab
        .iptables(node, calico, &["-A", "FORWARD", "-j", "cali-FORWARD"])
        .unwrap();
}

#[test]
fn calico_in_legacy_nft_drops() {
    let r = lab();
    calico_chains(&r, 1, Backend::Legacy);
    r.lab
        .iptables(1, Backend::Nft, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = r.trace(1, false);
    assert_nf(&r.drop(&f), "nft", "filter", "FORWARD");
    let m = f.diagnosis("IPTABLES_BACKEND_MISMATCH");
    assert_eq!(m["backend"], "nft", "the dropper: {m}");
    assert_eq!(m["calico_backend"], "legacy", "{m}");
    let hint = m["hint"].as_str().unwrap();
    assert!(
        hint.contains("FELIX_IPTABLESBACKEND")
            && hint.contains("iptables -V")
            && hint.contains("ls -l /usr/sbin/iptables"),
        "{hint}"
    );
}

#[test]
fn calico_in_nft_legacy_drops() {
    let r = lab();
    calico_chains(&r, 1, Backend::Nft);
    r.lab
        .iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = r.trace(1, false);
    assert_nf(&r.drop(&f), "legacy", "filter", "FORWARD");
    let m = f.diagnosis("IPTABLES_BACKEND_MISMATCH");
    assert_eq!(
        (m["backend"].as_str(), m["calico_backend"].as_str()),
        (Some("legacy"), Some("nft")),
        "{m}"
    );
}

#[test]
fn calico_dispatch_chain_drop_is_a_policy_drop() {
    let r = lab();
    let ipt = |args: &[&str]| r.lab.iptables(0, Backend::Legacy, args).unwrap();
    ipt(&["-N", "cali-from-wl-dispatch"]);
    ipt(&[
        "-A",
        "cali-from-wl-dispatch",
        "-m",
        "comment",
        "--comment",
        "Unknown interface",
        "-j",
        "DROP",
    ]);
    ipt(&[
        "-A",
        "FORWARD",
        "-i",
        "cali+",
        "-j",
        "cali-from-wl-dispatch",
    ]);
    let f = r.trace(0, false);
    let d = r.drop(&f);
    assert_eq!(d["netfilter"]["chain"], "cali-from-wl-dispatch", "{d}");
    assert_eq!(d["netfilter"]["comment"], "Unknown interface");
    let p = f.diagnosis("POLICY_DROP");
    assert_eq!(p["chain"], "cali-from-wl-dispatch");
    assert!(
        p["summary"].as_str().unwrap().contains("Unknown interface"),
        "{p}"
    );
    assert!(
        p["rule"].as_str().unwrap().contains("Unknown interface"),
        "{p}"
    );
    assert!(
        f.diagnoses().iter().all(|d| d["code"] != "NETFILTER_DROP"),
        "named as a policy drop only\n{}",
        f.dump()
    );
}

#[test]
fn healthy_traffic_with_rules_in_both_backends() {
    let r = lab();
    calico_chains(&r, 1, Backend::Legacy);
    r.lab
        .iptables(
            1,
            Backend::Nft,
            &["-A", "FORWARD", "-s", "10.244.0.0/16", "-j", "ACCEPT"],
        )
        .unwrap();
    r.lab
        .iptables(
            1,
            Backend::Nft,
            &["-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "DROP"],
        )
        .unwrap();
    r.lab.nft(1, "table inet cttest { chain fwdchain { type filter hook forward priority -5; policy accept; tcp dport 9 counter drop\n }\n }").unwrap();
    let f = r.trace(1, true);
    let drops = f.drops();
    assert!(
        Finished::between(&drops, &r.a.ip, &r.b.ip).is_empty(),
        "{}",
        f.dump()
    );
    assert!(f.diagnoses().is_empty(), "{}", f.dump());
}
