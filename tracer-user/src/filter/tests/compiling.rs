//! The shape of compiled programs.

use super::*;

#[test]
fn compiled_shape() {
    let p = Filter::parse("src net 10.244.0.0/16")
        .unwrap()
        .compile()
        .unwrap();
    assert_eq!(p.len, 1);
    let i = p.insns[0];
    assert_eq!((i.op, i.arg), (op::SRC_NET, 4));
    assert_eq!(i.addr, [u32::from_ne_bytes([10, 244, 0, 0]), 0, 0, 0]);
    assert_eq!(i.mask, [u32::from_ne_bytes([255, 255, 0, 0]), 0, 0, 0]);

    let p = Filter::parse("dst net fd00:1:2000::/36")
        .unwrap()
        .compile()
        .unwrap();
    let i = p.insns[0];
    assert_eq!((i.op, i.arg), (op::DST_NET, 6));
    assert_eq!(
        i.addr,
        [
            u32::from_ne_bytes([0xfd, 0, 0, 1]),
            u32::from_ne_bytes([0x20, 0, 0, 0]),
            0,
            0
        ]
    );
    assert_eq!(
        i.mask,
        [u32::MAX, u32::from_ne_bytes([0xf0, 0, 0, 0]), 0, 0]
    );

    let p = Filter::parse("host 10.0.0.1 and not port 22")
        .unwrap()
        .compile()
        .unwrap();
    let ops: Vec<(u32, u32)> = p.insns[..p.len as usize]
        .iter()
        .map(|i| (i.op, i.arg))
        .collect();
    assert_eq!(
        ops,
        [
            (op::SRC_NET, 4),
            (op::DST_NET, 4),
            (op::OR, 0),
            (op::SPORT, 22),
            (op::DPORT, 22),
            (op::OR, 0),
            (op::NOT, 0),
            (op::AND, 0)
        ]
    );
    assert!(
        p.insns[p.len as usize..]
            .iter()
            .all(|i| *i == FilterInsn::default())
    );
    assert_eq!(p._pad, 0);
    assert_eq!(Filter::parse("icmp").unwrap().compile().unwrap().len, 3);
    assert_eq!(
        Filter::parse("net 0.0.0.0/0")
            .unwrap()
            .compile()
            .unwrap()
            .insns[0]
            .mask,
        [0; 4]
    );
}

/// How many quick nets the compiled program of `src` carries.
fn quick_len(src: &str) -> u32 {
    Filter::parse(src).unwrap().compile().unwrap().quick.len
}

#[test]
fn quick_nets_only_where_every_match_needs_an_address() {
    assert_eq!(quick_len(""), 0);
    assert_eq!(quick_len("host 10.0.0.1"), 1);
    assert_eq!(quick_len("src net 10.244.0.0/16 and port 53"), 1);
    assert_eq!(quick_len("tcp and (host 10.0.0.1 or dst host fd00::1)"), 2);
    // Either side of an `and` holds: the side with fewer nets is kept.
    assert_eq!(
        quick_len("(host 10.0.0.1 or host 10.0.0.2) and host 10.0.0.3"),
        1
    );
    // The same net twice is one.
    assert_eq!(quick_len("host 10.0.0.1 or src host 10.0.0.1"), 1);
    for none in [
        "port 80",
        "tcp",
        "arp",
        "not host 10.0.0.1",
        "host 10.0.0.1 or port 80",
        "host 10.0.0.1 or host 10.0.0.2 or host 10.0.0.3 or host 10.0.0.4 or host 10.0.0.5",
    ] {
        assert_eq!(quick_len(none), 0, "{none}");
    }
    let q = Filter::parse("net 10.244.1.0/24")
        .unwrap()
        .compile()
        .unwrap()
        .quick;
    let n = q.nets[0];
    assert_eq!((n.arg, n.addr[0]), (4, u32::from_ne_bytes([10, 244, 1, 0])));
}
