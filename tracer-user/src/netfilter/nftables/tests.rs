//! Rules, chains and tables as nft 1.0 and iptables-nft 1.8.9 dump them,
//! built attribute by attribute.

use super::assemble;
use super::message::*;
use super::value::{Kind, format_value, prefix_text};
use crate::kernel::netlink::push_attr;
use crate::netfilter::fuzz::corrupted;
use crate::netfilter::inventory::{Backend, Counters, Family, Hook, Verdict};

fn nested(ty: u16, f: impl FnOnce(&mut Vec<u8>)) -> (u16, Vec<u8>) {
    let mut b = Vec::new();
    f(&mut b);
    (ty | 0x8000, b)
}

fn msg(family: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = vec![family, 0, 0, 0];
    for (ty, d) in attrs {
        push_attr(&mut m, *ty, d);
    }
    m
}

fn s(v: &str) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    b.push(0);
    b
}

fn u32be(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn expr(name: &str, data: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut e = Vec::new();
    push_attr(&mut e, NFTA_EXPR_NAME, &s(name));
    let mut d = Vec::new();
    for (ty, v) in data {
        push_attr(&mut d, *ty, v);
    }
    push_attr(&mut e, NFTA_EXPR_DATA | 0x8000, &d);
    e
}

fn data_value(v: &[u8]) -> Vec<u8> {
    nested(0, |b| push_attr(b, NFTA_DATA_VALUE, v)).1
}

fn verdict(code: i32, chain: Option<&str>) -> Vec<u8> {
    let mut v = Vec::new();
    push_attr(&mut v, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(c) = chain {
        push_attr(&mut v, NFTA_VERDICT_CHAIN, &s(c));
    }
    let mut d = Vec::new();
    push_attr(&mut d, NFTA_DATA_VERDICT | 0x8000, &v);
    d
}

fn rule(
    family: u8,
    table: &str,
    chain: &str,
    handle: u64,
    exprs: &[Vec<u8>],
    udata: Option<&[u8]>,
) -> Vec<u8> {
    let mut list = Vec::new();
    for e in exprs {
        push_attr(&mut list, NFTA_LIST_ELEM | 0x8000, e);
    }
    let mut a = vec![
        (NFTA_RULE_TABLE, s(table)),
        (NFTA_RULE_CHAIN, s(chain)),
        (NFTA_RULE_HANDLE, handle.to_be_bytes().to_vec()),
        (NFTA_RULE_EXPRESSIONS | 0x8000, list),
    ];
    if let Some(u) = udata {
        a.push((NFTA_RULE_USERDATA, u.to_vec()));
    }
    msg(family, &a)
}

fn counter_expr(p: u64, b: u64) -> Vec<u8> {
    expr(
        "counter",
        &[(1, b.to_be_bytes().to_vec()), (2, p.to_be_bytes().to_vec())],
    )
}

/// `ip saddr 10.0.0.0/8 counter drop comment "x"` as nft 1.0 emits it.
fn native_rule() -> Vec<u8> {
    let exprs = [
        expr(
            "payload",
            &[(1, u32be(1)), (2, u32be(1)), (3, u32be(12)), (4, u32be(4))],
        ),
        expr(
            "bitwise",
            &[
                (1, u32be(1)),
                (2, u32be(1)),
                (3, u32be(4)),
                (4, data_value(&[255, 0, 0, 0])),
                (5, data_value(&[0; 4])),
            ],
        ),
        expr(
            "cmp",
            &[
                (1, u32be(1)),
                (2, u32be(0)),
                (3, data_value(&[10, 0, 0, 0])),
            ],
        ),
        counter_expr(3, 180),
        expr("immediate", &[(1, u32be(0)), (2, verdict(0, None))]),
    ];
    let udata = [NFTNL_UDATA_RULE_COMMENT, 2, b'x', 0];
    rule(1, "cttest", "fwdchain", 12, &exprs, Some(&udata))
}

#[test]
fn decodes_a_native_rule() {
    let (family, table, chain, r) = parse_rule(&native_rule()).unwrap();
    assert_eq!(
        (family, table.as_str(), chain.as_str()),
        (Family::Inet, "cttest", "fwdchain")
    );
    assert_eq!(r.id, "12");
    assert_eq!(r.verdict, Some(Verdict::Drop));
    assert_eq!(r.comment.as_deref(), Some("x"));
    assert_eq!(
        r.counters,
        Some(Counters {
            packets: 3,
            bytes: 180
        })
    );
    assert_eq!(r.text, "ip saddr 10.0.0.0/8 counter drop comment \"x\"");
}

/// `iptables-nft -A FORWARD -i cali+ -s 10.0.0.0/8 -p tcp --dport 80
/// -m comment --comment "Unknown interface" -j cali-x` as 1.8.9 stores it.
#[test]
fn decodes_an_iptables_nft_rule() {
    let mut comment = vec![0u8; 256];
    comment[..17].copy_from_slice(b"Unknown interface");
    let exprs = [
        expr("meta", &[(2, u32be(6)), (1, u32be(1))]),
        expr(
            "cmp",
            &[(1, u32be(1)), (2, u32be(0)), (3, data_value(b"cali"))],
        ),
        expr("meta", &[(2, u32be(16)), (1, u32be(1))]),
        expr(
            "cmp",
            &[(1, u32be(1)), (2, u32be(0)), (3, data_value(&[6]))],
        ),
        expr(
            "payload",
            &[(1, u32be(1)), (2, u32be(1)), (3, u32be(12)), (4, u32be(1))],
        ),
        expr(
            "cmp",
            &[(1, u32be(1)), (2, u32be(0)), (3, data_value(&[10]))],
        ),
        expr(
            "payload",
            &[(1, u32be(1)), (2, u32be(2)), (3, u32be(2)), (4, u32be(2))],
        ),
        expr(
            "cmp",
            &[
                (1, u32be(1)),
                (2, u32be(0)),
                (3, data_value(&80u16.to_be_bytes())),
            ],
        ),
        expr("match", &[(1, s("comment")), (2, u32be(0)), (3, comment)]),
        counter_expr(0, 0),
        expr(
            "immediate",
            &[(1, u32be(0)), (2, verdict(-3, Some("cali-x")))],
        ),
    ];
    let (family, _, _, r) = parse_rule(&rule(2, "filter", "FORWARD", 4, &exprs, None)).unwrap();
    assert_eq!(family, Family::Ipv4);
    assert_eq!(r.comment.as_deref(), Some("Unknown interface"));
    assert_eq!(r.verdict, Some(Verdict::Jump("cali-x".into())));
    assert_eq!(
        r.text,
        "iifname \"cali*\" ip saddr 10.0.0.0/8 tcp dport 80 counter jump cali-x comment \"Unknown interface\"",
        "nft leaves out the meta l4proto test that tcp dport implies"
    );
}

#[test]
fn xt_targets_and_vmaps() {
    let exprs = [
        counter_expr(1, 2),
        expr(
            "target",
            &[(1, s("REJECT")), (2, u32be(0)), (3, vec![0; 8])],
        ),
    ];
    let (_, _, _, r) = parse_rule(&rule(10, "filter", "INPUT", 5, &exprs, None)).unwrap();
    assert_eq!(r.verdict, Some(Verdict::Reject));
    // An IPv6 table's REJECT with `with` 0: ICMPv6 no route, as nft lists it.
    assert_eq!(r.text, "counter reject with icmpv6 type no-route");
    assert_eq!(r.reject_with.as_deref(), Some("icmpv6 no-route"));
    let exprs = [
        expr("ct", &[(2, u32be(0)), (1, u32be(1))]),
        expr(
            "bitwise",
            &[
                (1, u32be(1)),
                (2, u32be(1)),
                (3, u32be(4)),
                (4, data_value(&6u32.to_ne_bytes())),
                (5, data_value(&[0; 4])),
            ],
        ),
        expr(
            "cmp",
            &[(1, u32be(1)), (2, u32be(1)), (3, data_value(&[0; 4]))],
        ),
        expr("meta", &[(2, u32be(6)), (1, u32be(1))]),
        expr("lookup", &[(1, s("__map0")), (2, u32be(1)), (3, u32be(0))]),
    ];
    let (_, _, _, r) = parse_rule(&rule(1, "calico", "x", 6, &exprs, None)).unwrap();
    assert_eq!(r.text, "ct state established,related iifname vmap @__map0");
    assert_eq!(r.verdict, Some(Verdict::Other("vmap @__map0".into())));
    assert_eq!(r.counters, None);
}

fn chain_msg(
    family: u8,
    table: &str,
    name: &str,
    hook: Option<(u32, i32)>,
    policy: Option<u32>,
    counters: bool,
) -> Vec<u8> {
    let mut a = vec![
        (NFTA_CHAIN_TABLE, s(table)),
        (2, 7u64.to_be_bytes().to_vec()),
        (NFTA_CHAIN_NAME, s(name)),
    ];
    if let Some((num, prio)) = hook {
        a.push(nested(NFTA_CHAIN_HOOK, |b| {
            push_attr(b, NFTA_HOOK_HOOKNUM, &num.to_be_bytes());
            push_attr(b, NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
        }));
    }
    if let Some(p) = policy {
        a.push((NFTA_CHAIN_POLICY, u32be(p)));
    }
    a.push((7, s("filter")));
    if counters {
        a.push(nested(NFTA_CHAIN_COUNTERS, |b| {
            push_attr(b, NFTA_COUNTER_BYTES, &100u64.to_be_bytes());
            push_attr(b, NFTA_COUNTER_PACKETS, &2u64.to_be_bytes());
        }));
    }
    msg(family, &a)
}

#[test]
fn assembles_tables_chains_and_rules() {
    let tables = [
        msg(1, &[(NFTA_TABLE_NAME, s("cttest"))]),
        msg(2, &[(NFTA_TABLE_NAME, s("filter"))]),
    ];
    let chains = [
        chain_msg(1, "cttest", "fwdchain", Some((2, -5)), Some(0), false),
        chain_msg(2, "filter", "FORWARD", Some((2, 0)), Some(1), true),
        chain_msg(2, "filter", "cali-x", None, None, false),
        chain_msg(5, "nosuchtable", "y", None, None, false),
    ];
    let rules = [native_rule(), rule(2, "filter", "nochain", 1, &[], None)];
    let t = assemble(&tables, &chains, &rules);
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].backend, t[0].family, t[0].name.as_str()),
        (Backend::Nft, Family::Inet, "cttest")
    );
    let c = &t[0].chains[0];
    assert_eq!(
        (c.hook, c.priority, c.policy.clone()),
        (Some(Hook::Forward), Some(-5), Some(Verdict::Drop))
    );
    assert_eq!(c.policy_counters, None);
    assert_eq!(c.rules.len(), 1);
    let fwd = &t[1].chains[0];
    assert_eq!(fwd.policy, Some(Verdict::Accept));
    assert_eq!(
        fwd.policy_counters,
        Some(Counters {
            packets: 2,
            bytes: 100
        })
    );
    assert_eq!(t[1].chains[1].hook, None);
    assert!(t[1].chains.iter().all(|c| c.rules.is_empty()));
}

#[test]
fn netdev_hooks() {
    assert_eq!(hook_of(Family::Netdev, 0), Some(Hook::Ingress));
    assert_eq!(hook_of(Family::Netdev, 1), Some(Hook::Egress));
    assert_eq!(hook_of(Family::Inet, 5), Some(Hook::Ingress));
    assert_eq!(hook_of(Family::Arp, 1), Some(Hook::Output));
}

#[test]
fn truncated_and_garbage_messages_do_not_panic() {
    let good = [
        native_rule(),
        chain_msg(2, "filter", "FORWARD", Some((2, 0)), Some(1), true),
    ];
    for m in &good {
        for len in 0..m.len() {
            let _ = parse_rule(&m[..len]);
            let _ = parse_chain(&m[..len]);
            let _ = parse_table(&m[..len]);
        }
    }
    for m in corrupted(&good[0], 0x9e37_79b9, 3000, 3) {
        let _ = parse_rule(&m);
        let _ = parse_chain(&m);
    }
    assert_eq!(udata_comment(&[0, 200, b'x']), None);
    assert_eq!(
        udata_comment(&[5, 1, b'x', 0, 2, b'h', 0]),
        Some("h".into())
    );
}

#[test]
fn value_formatting() {
    assert_eq!(format_value(Kind::Iface, b"eth0\0\0\0\0"), "\"eth0\"");
    assert_eq!(prefix_text(Kind::Ipv6, &[0xfd, 0], None), "fd00::/16");
    assert_eq!(prefix_text(Kind::Ipv4, &[1, 2, 3, 4], None), "1.2.3.4");
    assert_eq!(format_value(Kind::Number, &0x10u32.to_ne_bytes()), "0x10");
    assert_eq!(format_value(Kind::Bytes, &[8, 0]), "0x0800");
}

fn cmp_expr(op: u32, value: &[u8]) -> Vec<u8> {
    expr(
        "cmp",
        &[(1, u32be(1)), (2, u32be(op)), (3, data_value(value))],
    )
}

fn load(base: u32, offset: u32, len: u32) -> Vec<u8> {
    expr(
        "payload",
        &[
            (1, u32be(1)),
            (2, u32be(base)),
            (3, u32be(offset)),
            (4, u32be(len)),
        ],
    )
}

fn text_of(family: u8, exprs: &[Vec<u8>]) -> String {
    parse_rule(&rule(family, "t", "c", 1, exprs, None))
        .unwrap()
        .3
        .text
}

/// `meta nfproto ipv4 ip saddr ... meta l4proto tcp tcp dport >= 1 <= 1024`
/// in an inet table: nft leaves the protocol tests out and writes a range.
#[test]
fn implied_protocol_tests_are_left_out_and_ranges_joined() {
    let port = |p: u16| p.to_be_bytes().to_vec();
    let exprs = [
        expr("meta", &[(2, u32be(15)), (1, u32be(1))]),
        cmp_expr(0, &[2]),
        load(1, 12, 4),
        cmp_expr(0, &[10, 0, 0, 1]),
        expr("meta", &[(2, u32be(16)), (1, u32be(1))]),
        cmp_expr(0, &[6]),
        load(2, 2, 2),
        cmp_expr(5, &port(1)),
        cmp_expr(3, &port(1024)),
        load(2, 0, 2),
        expr(
            "range",
            &[
                (1, u32be(1)),
                (2, u32be(1)),
                (3, data_value(&port(1000))),
                (4, data_value(&port(2000))),
            ],
        ),
    ];
    assert_eq!(
        text_of(1, &exprs),
        "ip saddr 10.0.0.1 tcp dport 1-1024 tcp sport != 1000-2000"
    );
    // Without a header load after it, the test stays: `meta l4proto tcp accept`.
    let alone = [
        expr("meta", &[(2, u32be(16)), (1, u32be(1))]),
        cmp_expr(0, &[6]),
    ];
    assert_eq!(text_of(1, &alone), "meta l4proto tcp");
}

/// `iptables-nft -m conntrack --ctstate RELATED,ESTABLISHED -j MARK
/// --set-xmark 0x10000/0x10000` and `-m mark --mark 0x0/0x20000`.
#[test]
fn xt_conntrack_and_mark_as_nft_translates_them() {
    let mut ct = vec![0u8; 160];
    ct[146..148].copy_from_slice(&1u16.to_ne_bytes());
    ct[150..152].copy_from_slice(&0b110u16.to_ne_bytes());
    let mut mark = 0x10000u32.to_ne_bytes().to_vec();
    mark.extend_from_slice(&0x10000u32.to_ne_bytes());
    let exprs = [
        expr("match", &[(1, s("conntrack")), (2, u32be(3)), (3, ct)]),
        counter_expr(0, 0),
        expr("target", &[(1, s("MARK")), (2, u32be(2)), (3, mark)]),
    ];
    assert_eq!(
        text_of(2, &exprs),
        "ct state related,established counter meta mark set mark or 0x10000"
    );
    let exprs = [
        expr("meta", &[(2, u32be(3)), (1, u32be(1))]),
        expr(
            "bitwise",
            &[
                (1, u32be(1)),
                (2, u32be(1)),
                (3, u32be(4)),
                (4, data_value(&0x20000u32.to_ne_bytes())),
                (5, data_value(&[0; 4])),
            ],
        ),
        cmp_expr(0, &[0; 4]),
        expr("immediate", &[(1, u32be(0)), (2, verdict(0, None))]),
    ];
    assert_eq!(
        text_of(2, &exprs),
        "meta mark & 0x00020000 == 0x00000000 drop"
    );
}

/// Felix's ARP suppression rule in `table arp calico-arp`: `oifname
/// "cali1" arp operation reply arp saddr ip 10.244.2.10 counter drop`, as
/// nft 1.0 emits it (the ARP header's fields as raw network-header loads).
#[test]
fn an_arp_rule_reads_as_nft_lists_it() {
    let cmp = |v: &[u8]| expr("cmp", &[(1, u32be(1)), (2, u32be(0)), (3, data_value(v))]);
    let load = |off: u32, len: u32| {
        expr(
            "payload",
            &[
                (1, u32be(1)),
                (2, u32be(1)),
                (3, u32be(off)),
                (4, u32be(len)),
            ],
        )
    };
    let mut ifname = b"cali1".to_vec();
    ifname.resize(16, 0);
    let exprs = [
        expr("meta", &[(1, u32be(1)), (2, u32be(7))]),
        cmp(&ifname),
        load(6, 2),
        cmp(&[0, 2]),
        load(14, 4),
        cmp(&[10, 244, 2, 10]),
        load(18, 6),
        cmp(&[0xee; 6]),
        counter_expr(1, 28),
        expr("immediate", &[(1, u32be(0)), (2, verdict(0, None))]),
    ];
    let bytes = rule(3, "calico-arp", "filter-cali-arp-cali1", 7, &exprs, None);
    let (family, table, _, r) = parse_rule(&bytes).unwrap();
    assert_eq!((family, table.as_str()), (Family::Arp, "calico-arp"));
    assert_eq!(
        r.text,
        "oifname \"cali1\" arp operation reply arp saddr ip 10.244.2.10 \
         arp daddr ether ee:ee:ee:ee:ee:ee counter drop"
    );
}
