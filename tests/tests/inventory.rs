//! The netfilter inventory against the real kernel: rules made with
//! iptables-legacy, ip6tables-legacy, iptables-nft and nft inside bare
//! namespaces of an empty lab ([`Lab::empty`]), read back with
//! `Inventory::read()`. Needs root.

use std::process::{Command, Stdio};

use calitrace_tests::Lab;
use tracer_user::netfilter::{
    Backend, CalicoPlacement, CounterKey, Counters, Family, Hook, Inventory, Verdict,
    iptables_binary_backend,
};

/// Runs a shell script (stopping at the first failing command) inside a namespace of
/// `lab`; panics with its output on failure.
fn sh(lab: &Lab, netns: &str, script: &str) -> String {
    lab.sh(netns, &format!("set -e\n{script}"))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `Inventory::read()` from inside `netns`.
fn inventory(netns: &str) -> Inventory {
    Lab::in_netns(netns, Inventory::read).expect("entering the netns")
}

/// A lab with one bare namespace.
fn one_netns(tag: &str) -> (Lab, String) {
    let mut lab = Lab::empty();
    let ns = lab.add_netns(tag).expect("netns");
    (lab, ns)
}

/// A client namespace whose packets to 198.51.100.0/24 are forwarded by the
/// router namespace (out of a veth pair of its own), so they cross FORWARD there.
/// Returns the lab, the router and the client.
fn forwarding_pair() -> (Lab, String, String) {
    let mut lab = Lab::empty();
    let router = lab.add_netns("router").expect("router netns");
    let client = lab.add_netns("client").expect("client netns");
    lab.add_veth(&router, "v0", &client, "v0").expect("veth");
    sh(
        &lab,
        &client,
        "ip addr add 192.0.2.2/24 dev v0; ip link set v0 up; ip route add default via 192.0.2.1",
    );
    sh(
        &lab,
        &router,
        "ip addr add 192.0.2.1/24 dev v0; ip link set v0 up; \
         ip link add v1 type veth peer name v2; ip addr add 198.51.100.1/24 dev v1; \
         ip link set v1 up; ip link set v2 up; sysctl -qw net.ipv4.ip_forward=1",
    );
    (lab, router, client)
}

/// Pings through the router; nothing answers, so the exit status is ignored.
fn send_forwarded(lab: &Lab, client: &str, packets: u32) {
    sh(
        lab,
        client,
        &format!("ping -c {packets} -i 0.2 -W 1 198.51.100.9 >/dev/null || true"),
    );
}

#[test]
fn legacy_rules_policy_and_moving_counters() {
    let (lab, router, client) = forwarding_pair();
    sh(
        &lab,
        &router,
        "iptables-legacy -N cali-from-wl-dispatch
         iptables-legacy -A cali-from-wl-dispatch -m comment --comment 'Unknown interface' -j DROP
         iptables-legacy -A FORWARD -i cali+ -j cali-from-wl-dispatch
         iptables-legacy -A FORWARD -o eth0 -g cali-from-wl-dispatch
         iptables-legacy -P FORWARD DROP",
    );
    let inv = inventory(&router);
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    let fwd = inv
        .find_chain(Backend::Legacy, Family::Ipv4, "filter", "FORWARD")
        .expect("legacy FORWARD");
    assert_eq!(fwd.hook, Some(Hook::Forward));
    assert_eq!(fwd.priority, Some(0));
    assert_eq!(fwd.policy, Some(Verdict::Drop));
    assert_eq!(fwd.policy_counters, Some(Counters::default()));
    assert_eq!(fwd.rules.len(), 2);
    assert_eq!(fwd.rules[0].id, "1");
    assert_eq!(
        fwd.rules[0].verdict,
        Some(Verdict::Jump("cali-from-wl-dispatch".into()))
    );
    assert_eq!(fwd.rules[0].text, "-i cali+ -j cali-from-wl-dispatch");
    assert_eq!(
        fwd.rules[1].verdict,
        Some(Verdict::Goto("cali-from-wl-dispatch".into()))
    );

    let dispatch = inv
        .find_chain(
            Backend::Legacy,
            Family::Ipv4,
            "filter",
            "cali-from-wl-dispatch",
        )
        .expect("user chain");
    assert_eq!((dispatch.hook, &dispatch.policy), (None, &None));
    assert_eq!(dispatch.rules.len(), 1, "{dispatch:?}");
    let r = &dispatch.rules[0];
    assert_eq!(r.id, "1");
    assert_eq!(r.comment.as_deref(), Some("Unknown interface"));
    assert_eq!(r.verdict, Some(Verdict::Drop));
    assert_eq!(r.counters, Some(Counters::default()));
    assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Legacy));

    // Reading asked only for the table iptables-legacy made: none was created.
    let names = sh(
        &lab,
        &router,
        "cat /proc/net/ip_tables_names; cat /proc/net/ip6_tables_names",
    );
    assert_eq!(names.split_whitespace().collect::<Vec<_>>(), ["filter"]);
    assert!(inv.tables.iter().all(|t| t.backend == Backend::Legacy));

    send_forwarded(&lab, &client, 3);
    let after = inventory(&router);
    let policy = CounterKey {
        backend: Backend::Legacy,
        family: Family::Ipv4,
        table: "filter".into(),
        chain: "FORWARD".into(),
        rule: None,
    };
    let before: Vec<_> = inv.counters();
    let now: Vec<_> = after.counters();
    let get = |c: &[(CounterKey, Counters)]| c.iter().find(|(k, _)| *k == policy).map(|(_, v)| *v);
    let moved = get(&now).unwrap().since(&get(&before).unwrap());
    assert_eq!(moved.packets, 3, "three pings die by the FORWARD policy");
    assert_eq!(moved.bytes, 3 * 84);
    assert_eq!(now.len(), before.len());

    // Recorded and replayed: the inventory survives a JSON round trip.
    let json = serde_json::to_string(&after).unwrap();
    assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), after);
}

#[test]
fn legacy_ipv6_rules() {
    let (lab, ns) = one_netns("v6");
    sh(
        &lab,
        &ns,
        "ip6tables-legacy -N cali-fw-x
         ip6tables-legacy -A cali-fw-x -s fd00::/8 -p tcp -m comment --comment v6 -j REJECT
         ip6tables-legacy -A cali-fw-x -j MARK --set-mark 0x10
         ip6tables-legacy -A INPUT -i eth0 -j cali-fw-x
         ip6tables-legacy -A INPUT -j RETURN",
    );
    let inv = inventory(&ns);
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    assert!(
        inv.find_table(Backend::Legacy, Family::Ipv4, "filter")
            .is_none(),
        "no IPv4 table was touched"
    );
    let input = inv
        .find_chain(Backend::Legacy, Family::Ipv6, "filter", "INPUT")
        .expect("ip6 INPUT");
    assert_eq!(
        (input.hook, input.policy.clone()),
        (Some(Hook::Input), Some(Verdict::Accept))
    );
    assert_eq!(
        input.rules[0].verdict,
        Some(Verdict::Jump("cali-fw-x".into()))
    );
    assert_eq!(input.rules[0].text, "-i eth0 -j cali-fw-x");
    assert_eq!(input.rules[1].verdict, Some(Verdict::Return));
    let x = inv
        .find_chain(Backend::Legacy, Family::Ipv6, "filter", "cali-fw-x")
        .expect("ip6 user chain");
    assert_eq!(x.rules.len(), 2);
    assert_eq!(x.rules[0].verdict, Some(Verdict::Reject));
    assert_eq!(x.rules[0].comment.as_deref(), Some("v6"));
    assert_eq!(
        x.rules[0].text,
        "-s fd00::/8 -p tcp -m comment --comment \"v6\" -j REJECT --reject-with icmp6-port-unreachable"
    );
    assert_eq!(x.rules[1].verdict, None, "MARK lets packets go on");
    assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Legacy));
}

#[test]
fn iptables_nft_rules_live_in_nf_tables() {
    let (lab, router, client) = forwarding_pair();
    sh(
        &lab,
        &router,
        "iptables-nft -N cali-from-wl-dispatch
         iptables-nft -A cali-from-wl-dispatch -m comment --comment 'Unknown interface' -j DROP
         iptables-nft -A FORWARD -s 192.0.2.0/24 -j cali-from-wl-dispatch
         iptables-nft -P FORWARD DROP",
    );
    let inv = inventory(&router);
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    assert!(inv.tables.iter().all(|t| t.backend == Backend::Nft));
    let fwd = inv
        .find_chain(Backend::Nft, Family::Ipv4, "filter", "FORWARD")
        .expect("iptables-nft FORWARD");
    assert_eq!(fwd.hook, Some(Hook::Forward));
    assert_eq!(fwd.priority, Some(0));
    assert_eq!(fwd.policy, Some(Verdict::Drop));
    assert_eq!(fwd.rules.len(), 1);
    let jump = &fwd.rules[0];
    assert_eq!(
        jump.verdict,
        Some(Verdict::Jump("cali-from-wl-dispatch".into()))
    );
    assert!(jump.text.contains("ip saddr 192.0.2.0/24"), "{}", jump.text);
    assert!(
        jump.id.parse::<u64>().is_ok(),
        "nft ids are handles: {}",
        jump.id
    );

    let dispatch = inv
        .find_chain(
            Backend::Nft,
            Family::Ipv4,
            "filter",
            "cali-from-wl-dispatch",
        )
        .expect("iptables-nft user chain");
    let r = &dispatch.rules[0];
    assert_eq!(r.comment.as_deref(), Some("Unknown interface"));
    assert_eq!(r.verdict, Some(Verdict::Drop));
    assert_eq!(r.counters, Some(Counters::default()));
    assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Nft));

    send_forwarded(&lab, &client, 2);
    let after = inventory(&router);
    let r = &after
        .find_chain(
            Backend::Nft,
            Family::Ipv4,
            "filter",
            "cali-from-wl-dispatch",
        )
        .unwrap()
        .rules[0];
    assert_eq!(
        r.counters.map(|c| c.packets),
        Some(2),
        "the DROP rule counted"
    );
}

#[test]
fn native_nft_table() {
    let (lab, router, client) = forwarding_pair();
    sh(
        &lab,
        &router,
        "nft -f - <<'EOF'
table inet cttest {
    chain fwdchain {
        type filter hook forward priority -5; policy drop;
        ip saddr 10.0.0.0/8 counter drop comment \"x\"
        ip saddr 192.0.2.0/24 counter jump other
    }
    chain other {
        return
    }
}
EOF",
    );
    let inv = inventory(&router);
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    let c = inv
        .find_chain(Backend::Nft, Family::Inet, "cttest", "fwdchain")
        .expect("native chain");
    assert_eq!(c.hook, Some(Hook::Forward));
    assert_eq!(c.priority, Some(-5));
    assert_eq!(c.policy, Some(Verdict::Drop));
    assert_eq!(c.policy_counters, None);
    assert_eq!(c.rules.len(), 2);
    let r = &c.rules[0];
    assert_eq!(r.comment.as_deref(), Some("x"));
    assert_eq!(r.verdict, Some(Verdict::Drop));
    assert_eq!(r.counters, Some(Counters::default()));
    assert!(
        r.text.contains("ip saddr 10.0.0.0/8 counter drop"),
        "{}",
        r.text
    );
    assert_eq!(c.rules[1].verdict, Some(Verdict::Jump("other".into())));
    let other = inv
        .find_chain(Backend::Nft, Family::Inet, "cttest", "other")
        .unwrap();
    assert_eq!(
        (other.hook, other.rules[0].verdict.clone()),
        (None, Some(Verdict::Return))
    );
    assert_eq!(inv.calico_chains(), None);

    send_forwarded(&lab, &client, 2);
    let after = inventory(&router);
    let c = after
        .find_chain(Backend::Nft, Family::Inet, "cttest", "fwdchain")
        .unwrap();
    assert_eq!(c.rules[0].counters, Some(Counters::default()));
    assert_eq!(c.rules[1].counters.map(|c| c.packets), Some(2));
}

#[test]
fn calico_chains_in_both_backends() {
    let (lab, ns) = one_netns("both");
    let empty = inventory(&ns);
    assert_eq!(
        empty,
        Inventory::default(),
        "a fresh namespace has no tables"
    );
    assert_eq!(empty.calico_chains(), None);
    sh(
        &lab,
        &ns,
        "iptables-legacy -N cali-FORWARD
         iptables-nft -t mangle -N cali-PREROUTING
         iptables-nft -t mangle -A PREROUTING -j cali-PREROUTING",
    );
    let inv = inventory(&ns);
    assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Both));
    let legacy = inv
        .find_chain(Backend::Legacy, Family::Ipv4, "filter", "cali-FORWARD")
        .unwrap();
    assert!(legacy.rules.is_empty());
    assert!(
        inv.find_chain(Backend::Nft, Family::Ipv4, "mangle", "cali-PREROUTING")
            .is_some()
    );
    let pre = inv
        .find_chain(Backend::Nft, Family::Ipv4, "mangle", "PREROUTING")
        .unwrap();
    assert_eq!(
        (pre.hook, pre.priority),
        (Some(Hook::Prerouting), Some(-150))
    );
    assert_eq!(
        pre.rules[0].verdict,
        Some(Verdict::Jump("cali-PREROUTING".into()))
    );
}

#[test]
fn iptables_binary_backend_follows_the_links() {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v iptables)\""])
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{out:?}");
    let target = String::from_utf8_lossy(&out.stdout);
    let name = target
        .trim()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let expected = if name.contains("nft") {
        Some(Backend::Nft)
    } else if name.contains("legacy") {
        Some(Backend::Legacy)
    } else {
        None
    };
    assert_eq!(iptables_binary_backend(), expected, "iptables is {target}");
}
