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
    assert_eq!(Filter::parse("icmp").unwrap().compile().unwrap().len, 7);
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
