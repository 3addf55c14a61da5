//! Randomized filters, packets and bytes: the AST and the program agree.

use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

#[rustfmt::skip]
const ADDRS: &[&str] = &[
    "10.0.0.1", "10.0.0.2", "10.244.1.7", "10.245.0.1", "192.168.1.1", "169.254.1.1",
    "0.0.0.0", "fd00::1", "fd00:10:244::5", "fe80::1", "2001:db8::1", "::",
];

fn random_addr(r: &mut XorShift) -> [u8; 16] {
    if r.below(5) == 0 {
        let mut a = [0u8; 16];
        a.iter_mut().for_each(|b| *b = r.next() as u8);
        a
    } else {
        ip(r.pick(ADDRS)).1
    }
}

fn random_port(r: &mut XorShift) -> u16 {
    let any = r.next() as u16;
    r.pick(&[22, 53, 80, 443, 0, 65535, any])
}

fn random_packet(r: &mut XorShift) -> PacketMeta {
    let (any_l3, any_proto) = (r.next() as u8, r.next() as u8);
    PacketMeta {
        src: random_addr(r),
        dst: random_addr(r),
        l3: r.pick(&[
            l3::NONE,
            l3::IPV4,
            l3::IPV4,
            l3::IPV6,
            l3::IPV6,
            l3::ARP,
            any_l3,
        ]),
        proto: r.pick(&[
            0,
            proto::ICMP,
            proto::TCP,
            proto::UDP,
            proto::ICMPV6,
            any_proto,
        ]),
        flags: (r.next() & 3) as u8,
        sport: random_port(r),
        dport: random_port(r),
        ..Default::default()
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "host", "net", "port", "src", "dst", "tcp", "udp", "icmp", "icmp6", "arp", "ip", "ip6",
    "and", "or", "not", "!", "&&", "||", "(", ")", "(", ")", "10.0.0.1", "10.0.0.0/8",
    "10.244.0.0/16", "fd00::/8", "fd00::1", "::/0", "0.0.0.0/0", "53", "80", "0", "65535",
    "70000", "10.0.0.1/24", "foo", "&", "HOST", "Tcp", "AND", "192.168.1.1",
];

fn random_filter(r: &mut XorShift) -> String {
    let n = r.below(16);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(r.pick(WORDS));
        s.push_str(if r.below(8) == 0 { "" } else { " " });
    }
    s
}

#[test]
fn ast_agrees_with_program() {
    let filters = [
        "host 10.0.0.1",
        "src host 10.0.0.2 or dst host fd00::1",
        "net 10.0.0.0/8 and not port 22",
        "net fd00::/8 or net 10.244.0.0/16",
        "tcp and (port 80 or port 443) or udp and port 53",
        "icmp or arp or icmp6",
        "not (ip or ip6)",
        "src port 22 or dst port 65535 or port 0",
        "tcp src port 53 or 80 or udp dst port 0",
        "arp and host 169.254.1.1 or ip6 and net fe80::/10",
        "not not host 192.168.1.1",
        "net 0.0.0.0/0 and not net ::/0",
        "dst 10.0.0.0/31",
        "not (not tcp or not port 80)",
    ];
    let mut r = XorShift(0x9e37_79b9_7f4a_7c15);
    let packets: Vec<PacketMeta> = (0..3000).map(|_| random_packet(&mut r)).collect();
    for src in filters {
        let f = Filter::parse(src).unwrap();
        let prog = f.compile().unwrap();
        let hits = packets.iter().filter(|p| f.matches(p)).count();
        for p in &packets {
            assert_eq!(f.matches(p), prog_matches(&prog, p), "{src:?} on {p:?}");
        }
        // The packets exercise both outcomes of every filter.
        assert!(hits > 0 && hits < packets.len(), "{src:?}: {hits} hits");
    }
}

#[test]
fn random_filters_roundtrip_and_agree() {
    let mut r = XorShift(0x1234_5678_9abc_def1);
    let packets: Vec<PacketMeta> = (0..200).map(|_| random_packet(&mut r)).collect();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let src = random_filter(&mut r);
        let f = match Filter::parse(&src) {
            Ok(f) => f,
            Err(e) => {
                assert!(e.pos <= src.chars().count(), "{src:?}: {e}");
                assert!(!e.msg.is_empty());
                continue;
            }
        };
        parsed += 1;
        let prog = f.compile().unwrap();
        assert!(prog.len as usize <= MAX_INSNS);
        let again = Filter::parse(&f.to_string()).unwrap_or_else(|e| panic!("{src:?} -> {f}: {e}"));
        assert_eq!(again.to_string(), f.to_string(), "{src:?}");
        assert_eq!(again.compile().unwrap(), prog, "{src:?}");
        for p in &packets {
            assert_eq!(f.matches(p), prog_matches(&prog, p), "{src:?} on {p:?}");
        }
    }
    assert!(parsed > 500, "only {parsed} random filters parsed");
}

#[test]
fn random_bytes_never_panic() {
    let mut r = XorShift(42);
    for _ in 0..20_000 {
        let len = r.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match r.below(4) {
                0 => r.pick(b"()!&| :/.0123456789abcdefhnostp"),
                _ => r.next() as u8,
            })
            .collect();
        let s = String::from_utf8_lossy(&bytes);
        match Filter::parse(&s) {
            Ok(f) => {
                let prog = f.compile().unwrap();
                let p = random_packet(&mut r);
                assert_eq!(f.matches(&p), prog_matches(&prog, &p));
            }
            Err(e) => {
                assert!(e.pos <= s.chars().count());
                let _ = e.with_caret();
            }
        }
        let words: Vec<String> = s.split(' ').map(String::from).collect();
        let _ = Filter::parse_words(&words);
    }
}

/// A packet's addresses as the words `quick_passes` takes.
fn words(a: &[u8; 16]) -> [u32; 4] {
    [0, 1, 2, 3].map(|i| u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]]))
}

#[rustfmt::skip]
const PRIMS: &[&str] = &[
    "host 10.0.0.1", "src host 10.0.0.2", "dst net 10.0.0.0/8", "net fd00::/8", "host fd00::1",
    "net 0.0.0.0/0", "dst host 10.244.1.7", "port 53", "tcp", "udp", "icmp", "arp", "ip6",
];

/// A well-formed filter of random shape (`and`, `or`, `not` over `PRIMS`).
fn random_expr(r: &mut XorShift, depth: u32) -> String {
    if depth == 0 || r.below(3) == 0 {
        return r.pick(PRIMS).to_string();
    }
    match r.below(5) {
        0 => format!("not ({})", random_expr(r, depth - 1)),
        1 | 2 => format!(
            "({}) and ({})",
            random_expr(r, depth - 1),
            random_expr(r, depth - 1)
        ),
        _ => format!(
            "({}) or ({})",
            random_expr(r, depth - 1),
            random_expr(r, depth - 1)
        ),
    }
}

/// The quick nets never turn away an IP packet the program matches, and
/// they do turn packets away (a prefilter that passes everything is no
/// prefilter).
#[test]
fn quick_nets_never_reject_a_matching_packet() {
    use tracer_common::filter::quick_passes;
    let mut r = XorShift(0x0ddb_a11c_afef_00d1);
    let packets: Vec<PacketMeta> = (0..300).map(|_| random_packet(&mut r)).collect();
    let (mut with_nets, mut rejected) = (0, 0);
    for _ in 0..20_000 {
        let Ok(f) = Filter::parse(&random_expr(&mut r, 4)) else {
            continue;
        };
        let prog = f.compile().unwrap();
        with_nets += (prog.quick.len > 0) as usize;
        for p in packets
            .iter()
            .filter(|p| p.l3 == l3::IPV4 || p.l3 == l3::IPV6)
        {
            let family = if p.l3 == l3::IPV6 { 6 } else { 4 };
            let passes = quick_passes(&prog.quick, family, &words(&p.src), &words(&p.dst));
            if prog_matches(&prog, p) {
                assert!(passes, "{f} on {p:?}: {:?}", prog.quick);
            }
            rejected += !passes as usize;
        }
    }
    assert!(with_nets > 100, "only {with_nets} filters had quick nets");
    assert!(rejected > 1000, "only {rejected} packets rejected");
}
