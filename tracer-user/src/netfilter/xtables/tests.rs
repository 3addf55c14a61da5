//! Tables built the way libiptc lays them out, decoded back.

use super::entry::{IPV4, IPV6, Layout, XT_HEAD};
use super::rule::{addr_text, match_args};
use super::socket::{GETINFO_SIZE, TableInfo, parse_info};
use super::table::{parse_table, table_priority};
use super::verdict::{XT_RETURN, builtin_verdict, target_verdict};
use crate::netfilter::fuzz::corrupted;
use crate::netfilter::inventory::{Backend, Counters, Family, Hook, Table, Verdict};

/// Builds x_tables blobs the way libiptc lays them out.
struct Builder {
    layout: &'static Layout,
    blob: Vec<u8>,
}

#[derive(Default)]
struct EntrySpec<'a> {
    src: Option<(&'a [u8], &'a [u8])>,
    iniface: Option<(&'a str, bool)>,
    proto: u16,
    goto: bool,
    matches: Vec<(&'a str, Vec<u8>)>,
    target: &'a str,
    target_data: Vec<u8>,
    counters: (u64, u64),
}

fn xt_head(size: usize, name: &str) -> Vec<u8> {
    let mut h = vec![0u8; XT_HEAD];
    h[..2].copy_from_slice(&(size as u16).to_ne_bytes());
    h[2..2 + name.len()].copy_from_slice(name.as_bytes());
    h
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Builder {
    fn new(v6: bool) -> Self {
        Builder {
            layout: if v6 { &IPV6 } else { &IPV4 },
            blob: vec![],
        }
    }

    /// Appends an entry; returns its offset.
    fn entry(&mut self, s: EntrySpec) -> usize {
        let l = self.layout;
        let mut e = vec![0u8; l.entry_size];
        if let Some((addr, mask)) = s.src {
            e[..addr.len()].copy_from_slice(addr);
            e[2 * l.addr_len..2 * l.addr_len + mask.len()].copy_from_slice(mask);
        }
        if let Some((name, wildcard)) = s.iniface {
            e[l.iniface..l.iniface + name.len()].copy_from_slice(name.as_bytes());
            // Like iptables: "cali+" is stored with the "+", masked up to it.
            let n = if wildcard {
                name.len() - 1
            } else {
                name.len() + 1
            };
            e[l.iniface + 32..l.iniface + 32 + n].fill(0xff);
        }
        e[l.proto..l.proto + 2].copy_from_slice(&s.proto.to_ne_bytes());
        if s.goto {
            e[l.flags] = l.goto_flag;
        }
        e[l.counters..l.counters + 8].copy_from_slice(&s.counters.0.to_ne_bytes());
        e[l.counters + 8..l.counters + 16].copy_from_slice(&s.counters.1.to_ne_bytes());
        for (name, data) in &s.matches {
            let size = align8(XT_HEAD + data.len());
            let mut m = xt_head(size, name);
            m.extend_from_slice(data);
            m.resize(size, 0);
            e.extend(m);
        }
        let target_offset = e.len();
        let tsize = align8(XT_HEAD + s.target_data.len());
        let mut t = xt_head(tsize, s.target);
        t.extend_from_slice(&s.target_data);
        t.resize(tsize, 0);
        e.extend(t);
        let next = e.len();
        e[l.target_offset..l.target_offset + 2]
            .copy_from_slice(&(target_offset as u16).to_ne_bytes());
        e[l.target_offset + 2..l.target_offset + 4].copy_from_slice(&(next as u16).to_ne_bytes());
        let off = self.blob.len();
        self.blob.extend(e);
        off
    }

    fn standard(&mut self, verdict: i32, counters: (u64, u64)) -> usize {
        self.entry(EntrySpec {
            target_data: verdict.to_ne_bytes().to_vec(),
            counters,
            ..Default::default()
        })
    }

    fn error(&mut self, name: &str) -> usize {
        let mut data = vec![0u8; 30];
        data[..name.len()].copy_from_slice(name.as_bytes());
        self.entry(EntrySpec {
            target: "ERROR",
            target_data: data,
            ..Default::default()
        })
    }

    /// The offset the next entry will have.
    fn here(&self) -> usize {
        self.blob.len()
    }
}

const DROP: i32 = -1;
const ACCEPT: i32 = -2;

fn comment(text: &str) -> (&'static str, Vec<u8>) {
    let mut c = vec![0u8; 256];
    c[..text.len()].copy_from_slice(text.as_bytes());
    ("comment", c)
}

/// filter table: INPUT (ACCEPT), FORWARD (policy DROP, 3 rules), OUTPUT, and
/// user chain cali-from-wl-dispatch with one commented DROP rule.
fn filter_table(v6: bool) -> (TableInfo, Vec<u8>) {
    let mut b = Builder::new(v6);
    let mut info = TableInfo {
        valid_hooks: 0b1110,
        ..Default::default()
    };
    info.hook_entry[1] = b.standard(ACCEPT, (1, 2)) as u32;
    info.underflow[1] = info.hook_entry[1];
    // FORWARD: the jump's target offset is only known later: patch it.
    info.hook_entry[2] = b.here() as u32;
    let addr: &[u8] = if v6 { &[0xfd; 8] } else { &[10, 0, 0, 0] };
    let mask: &[u8] = if v6 { &[0xff; 8] } else { &[255, 0, 0, 0] };
    let jump = b.entry(EntrySpec {
        src: Some((addr, mask)),
        iniface: Some(("cali+", true)),
        proto: 6,
        target_data: 0i32.to_ne_bytes().to_vec(),
        counters: (5, 500),
        ..Default::default()
    });
    b.entry(EntrySpec {
        iniface: Some(("eth0", false)),
        target_data: 0i32.to_ne_bytes().to_vec(),
        ..Default::default()
    });
    // Its verdict is the offset of the next entry: a rule without -j.
    let ft_next = b.here() as i32;
    let t = b.blob.len() - 8;
    b.blob[t..t + 4].copy_from_slice(&ft_next.to_ne_bytes());
    b.entry(EntrySpec {
        target: "REJECT",
        target_data: vec![0; 4],
        ..Default::default()
    });
    b.entry(EntrySpec {
        target: "LOG",
        target_data: vec![0; 40],
        ..Default::default()
    });
    info.underflow[2] = b.standard(DROP, (7, 700)) as u32;
    info.hook_entry[3] = b.standard(ACCEPT, (0, 0)) as u32;
    info.underflow[3] = info.hook_entry[3];
    b.error("cali-from-wl-dispatch");
    let first_rule = b.entry(EntrySpec {
        matches: vec![comment("Unknown interface")],
        target_data: DROP.to_ne_bytes().to_vec(),
        ..Default::default()
    });
    b.entry(EntrySpec {
        goto: true,
        target_data: (first_rule as i32).to_ne_bytes().to_vec(),
        ..Default::default()
    });
    b.standard(XT_RETURN, (0, 0));
    b.error("ERROR");
    // Patch the jump verdict, right after the standard target's header.
    let l = if v6 { &IPV6 } else { &IPV4 };
    let at = jump + l.entry_size + XT_HEAD;
    b.blob[at..at + 4].copy_from_slice(&(first_rule as i32).to_ne_bytes());
    info.size = b.blob.len() as u32;
    (info, b.blob)
}

fn check_filter(t: &Table, v6: bool) {
    let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["INPUT", "FORWARD", "OUTPUT", "cali-from-wl-dispatch"]
    );
    let fwd = &t.chains[1];
    assert_eq!(fwd.hook, Some(Hook::Forward));
    assert_eq!(fwd.priority, Some(0));
    assert_eq!(fwd.policy, Some(Verdict::Drop));
    assert_eq!(
        fwd.policy_counters,
        Some(Counters {
            packets: 7,
            bytes: 700
        })
    );
    assert_eq!(fwd.rules.len(), 4);
    let r = &fwd.rules[0];
    assert_eq!(r.id, "1");
    assert_eq!(
        r.verdict,
        Some(Verdict::Jump("cali-from-wl-dispatch".into()))
    );
    assert_eq!(
        r.counters,
        Some(Counters {
            packets: 5,
            bytes: 500
        })
    );
    let src = if v6 {
        "fdfd:fdfd:fdfd:fdfd::/64"
    } else {
        "10.0.0.0/8"
    };
    assert_eq!(
        r.text,
        format!("-s {src} -i cali+ -p tcp -j cali-from-wl-dispatch")
    );
    assert_eq!(fwd.rules[1].verdict, None, "fall-through rule");
    assert_eq!(fwd.rules[1].text, "-i eth0");
    assert_eq!(fwd.rules[2].verdict, Some(Verdict::Reject));
    // `with` 0: IPv4's net unreachable, IPv6's no route (their enums differ).
    let told = if v6 {
        "icmpv6 no-route"
    } else {
        "icmp net-unreachable"
    };
    assert_eq!(fwd.rules[2].reject_with.as_deref(), Some(told));
    assert_eq!(fwd.rules[3].verdict, None, "LOG goes on");
    let user = &t.chains[3];
    assert_eq!((user.hook, user.policy.as_ref()), (None, None));
    assert_eq!(user.rules.len(), 2, "the implicit RETURN is not a rule");
    assert_eq!(user.rules[0].comment.as_deref(), Some("Unknown interface"));
    assert_eq!(user.rules[0].verdict, Some(Verdict::Drop));
    assert_eq!(
        user.rules[0].text,
        "-m comment --comment \"Unknown interface\" -j DROP"
    );
    assert_eq!(
        user.rules[1].verdict,
        Some(Verdict::Goto("cali-from-wl-dispatch".into()))
    );
}

#[test]
fn decodes_an_ipv4_filter_table() {
    let (info, blob) = filter_table(false);
    let t = parse_table(&IPV4, "filter", &info, &blob).unwrap();
    assert_eq!((t.backend, t.family), (Backend::Legacy, Family::Ipv4));
    check_filter(&t, false);
}

#[test]
fn decodes_an_ipv6_filter_table() {
    let (info, blob) = filter_table(true);
    let t = parse_table(&IPV6, "filter", &info, &blob).unwrap();
    assert_eq!(t.family, Family::Ipv6);
    check_filter(&t, true);
}

#[test]
fn getinfo_layout() {
    let mut b = [0u8; GETINFO_SIZE];
    b[32..36].copy_from_slice(&0x1fu32.to_ne_bytes());
    b[36 + 8..36 + 12].copy_from_slice(&100u32.to_ne_bytes());
    b[56 + 8..56 + 12].copy_from_slice(&200u32.to_ne_bytes());
    b[80..84].copy_from_slice(&999u32.to_ne_bytes());
    let i = parse_info(&b).unwrap();
    assert_eq!(
        (i.valid_hooks, i.hook_entry[2], i.underflow[2], i.size),
        (0x1f, 100, 200, 999)
    );
    assert!(parse_info(&b[..83]).is_none());
}

#[test]
fn nat_priorities() {
    assert_eq!(table_priority("nat", Hook::Prerouting), Some(-100));
    assert_eq!(table_priority("nat", Hook::Postrouting), Some(100));
    assert_eq!(table_priority("raw", Hook::Output), Some(-300));
    assert_eq!(table_priority("weird", Hook::Output), None);
}

#[test]
fn match_arguments() {
    let mut tcp = vec![0u8; 12];
    tcp[2..4].copy_from_slice(&0xffffu16.to_ne_bytes());
    tcp[4..6].copy_from_slice(&80u16.to_ne_bytes());
    tcp[6..8].copy_from_slice(&80u16.to_ne_bytes());
    assert_eq!(match_args("tcp", 0, &tcp), ["--dport 80"]);
    let mut mark = vec![0u8; 12];
    mark[..4].copy_from_slice(&0x10000u32.to_ne_bytes());
    mark[4..8].copy_from_slice(&0x10000u32.to_ne_bytes());
    assert_eq!(match_args("mark", 1, &mark), ["--mark 0x10000/0x10000"]);
    assert!(match_args("tcp", 0, &tcp[..3]).is_empty());
}

#[test]
fn non_contiguous_masks_and_targets() {
    assert_eq!(
        addr_text(&[10, 0, 0, 1], &[255, 0, 255, 0]),
        "10.0.0.1/255.0.255.0"
    );
    assert_eq!(addr_text(&[10, 0, 0, 1], &[255; 4]), "10.0.0.1/32");
    assert_eq!(target_verdict("MARK"), None);
    assert_eq!(target_verdict("DNAT"), Some(Verdict::Other("DNAT".into())));
    assert_eq!(builtin_verdict(-4), Verdict::Queue);
    assert_eq!(builtin_verdict(XT_RETURN), Verdict::Return);
}

#[test]
fn truncated_and_garbage_blobs_do_not_panic() {
    let (info, blob) = filter_table(false);
    for len in 0..blob.len() {
        let _ = parse_table(&IPV4, "filter", &info, &blob[..len]);
    }
    for b in corrupted(&blob, 0x2545_f491, 2000, 4) {
        let _ = parse_table(&IPV4, "filter", &info, &b);
    }
    let junk = TableInfo {
        valid_hooks: u32::MAX,
        hook_entry: [u32::MAX; 5],
        underflow: [0; 5],
        size: 0,
    };
    let _ = parse_table(&IPV6, "filter", &junk, &blob);
    assert!(parse_table(&IPV4, "filter", &info, &[0u8; 200]).is_err());
}
