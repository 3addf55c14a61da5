//! Rejected filters: messages, positions, and filters too long for the kernel.

use super::*;

/// Each rejected filter, the position of the error and part of its message.
const CASES: &[(&str, usize, &str)] = &[
    ("hots 10.0.0.1", 0, "unknown keyword \"hots\""),
    ("tcp and bogus", 8, "unknown keyword \"bogus\""),
    ("portrange 1-5", 0, "not supported"),
    ("10.0.0.1", 0, "did you mean \"host 10.0.0.1\"?"),
    ("53", 0, "did you mean \"port 53\"?"),
    (
        "host",
        4,
        "expected an IPv4 or IPv6 address after \"host\", found end of input",
    ),
    ("host and tcp", 5, "found \"and\""),
    ("src host", 8, "found end of input"),
    ("host foo", 5, "\"foo\" is not an IPv4 or IPv6 address"),
    ("host 10.0.0.0/8", 5, "write \"net 10.0.0.0/8\""),
    ("host 10.0.0.256", 5, "not an IPv4 or IPv6 address"),
    ("port 70000", 5, "port 70000 is out of range 0-65535"),
    ("port 99999999999999999999", 5, "out of range"),
    (
        "port http",
        5,
        "expected a port number (0-65535) after \"port\", found \"http\"",
    ),
    ("port -1", 5, "expected a port number"),
    ("port +1", 5, "expected a port number"),
    ("port", 4, "found end of input"),
    (
        "(tcp",
        4,
        "expected \")\" to close the \"(\" at column 1, found end of input",
    ),
    ("((tcp) or (udp)", 15, "to close the \"(\" at column 1"),
    ("(tcp udp)", 5, "found \"udp\""),
    ("tcp)", 3, "unmatched \")\""),
    (")", 0, "found \")\""),
    (
        "tcp udp",
        4,
        "expected \"and\", \"or\" or the end of the filter, found \"udp\"",
    ),
    ("host 10.0.0.1 port 53", 14, "found \"port\""),
    ("()", 0, "empty parentheses"),
    ("tcp and ()", 8, "empty parentheses"),
    ("tcp and", 7, "found end of input"),
    ("and tcp", 0, "found \"and\""),
    ("tcp or or udp", 7, "found \"or\""),
    ("not", 3, "found end of input"),
    ("tcp & udp", 4, "single \"&\"; write \"&&\" or \"and\""),
    ("tcp | udp", 4, "single \"|\""),
    (
        "net 10.0.0.1/24",
        4,
        "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
    ),
    (
        "net fd00::1/8",
        4,
        "fd00::1/8 has host bits set; did you mean fd00::/8?",
    ),
    (
        "net 10.0.0.0/33",
        13,
        "bad prefix length \"/33\": an IPv4 prefix is /0 to /32",
    ),
    ("net fd00::/129", 11, "an IPv6 prefix is /0 to /128"),
    ("net 10.0.0.0/", 13, "bad prefix length"),
    ("net 10.0.0.0/x", 13, "bad prefix length"),
    ("net 10.0.0.0", 4, "has no prefix length"),
    ("net foo/8", 4, "\"foo\" is not an IPv4 or IPv6 address"),
    (
        "src",
        3,
        "expected host, net, port or an address after \"src\"",
    ),
    ("dst foo", 4, "after \"dst\", found \"foo\""),
    ("icmp port 1", 5, "icmp has no ports"),
    ("arp port 1", 4, "arp has no ports"),
    ("ip6 host 10.0.0.1", 9, "ip6 host needs an IPv6 address"),
    ("ip net fd00::/8", 7, "ip net needs an IPv4 address"),
    ("arp host fd00::1", 9, "needs an IPv4 address"),
];

#[test]
fn errors_have_positions() {
    for (src, pos, msg) in CASES {
        let e = err(src);
        assert_eq!(e.pos, *pos, "{src:?}: {e}");
        assert!(e.msg.contains(msg), "{src:?}: {e}");
        assert_eq!(e.input, *src);
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn error_display() {
    let e = err("port 70000");
    assert_eq!(
        e.to_string(),
        "bad filter at column 6: port 70000 is out of range 0-65535"
    );
    assert_eq!(e.column(), 6);
    assert_eq!(
        e.with_caret(),
        "bad filter at column 6: port 70000 is out of range 0-65535\n  port 70000\n       ^"
    );
    let e = err("net 10.0.0.1/24");
    assert_eq!(
        e.to_string(),
        "bad filter at column 5: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("bad filter"));
    // Positions count characters, not bytes.
    assert_eq!(err("host é").pos, 5);
    assert_eq!(err("é tcp").pos, 0);
    assert_eq!(err("tcp and é").pos, 8);
}

#[test]
fn too_long() {
    // 11 ports: 11 * 3 + 10 = 43 instructions.
    let src = (1..=11)
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let e = err(&src);
    assert!(
        e.msg.contains("needs 43 instructions") && e.msg.contains("at most 32"),
        "{e}"
    );
    assert!(e.pos > 0 && e.pos < src.len());
    // The caret points at the primitive that no longer fits: 8 ports take 31.
    assert_eq!(&src[e.pos..e.pos + 2], "9 ", "{}", e.with_caret());
    // Exactly 32 fits: 8 ports (8 * 3 + 7 = 31) and one more `not`.
    let src = format!(
        "not ({})",
        (1..=8)
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    assert_eq!(Filter::parse(&src).unwrap().compile().unwrap().len, 32);
    let src = format!("{src} or tcp");
    assert!(err(&src).msg.contains("needs 34"));
    // 16 one-instruction primitives: 31 instructions.
    let src = vec!["tcp"; 16].join(" or ");
    assert_eq!(Filter::parse(&src).unwrap().compile().unwrap().len, 31);
    // Huge inputs fail fast and without overflowing the stack.
    let e = err(&vec!["tcp"; 100_000].join(" or "));
    assert!(e.msg.contains("too long"), "{e}");
    assert_eq!(e.pos, 32 * 7);
    let e = err(&format!(
        "{}tcp{}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    ));
    assert!(e.msg.contains("too deeply nested"), "{e}");
    let e = err(&format!("{}tcp", "not ".repeat(100_000)));
    assert!(e.msg.contains("too deeply nested"), "{e}");
    let e = err(&"!".repeat(100_000));
    assert!(e.msg.contains("too deeply nested"), "{e}");
    // Double negation costs nothing.
    let f = Filter::parse(&format!("{}tcp", "not ".repeat(40))).unwrap();
    assert_eq!(f.compile().unwrap().len, 1);
    assert_eq!(
        Filter::parse("not not not tcp")
            .unwrap()
            .compile()
            .unwrap()
            .len,
        2
    );
}
