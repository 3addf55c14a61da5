//! Parsing: what is accepted and its canonical text.

use super::*;

#[test]
fn empty_matches_everything() {
    for src in ["", "   ", "\t\n "] {
        let f = Filter::parse(src).unwrap();
        assert!(f.is_match_all());
        assert_eq!(f.to_string(), "");
        assert_eq!(f.source(), "");
        assert_eq!(f.compile().unwrap(), FilterProg::MATCH_ALL);
        assert!(f.matches(&PacketMeta::default()));
    }
    assert!(Filter::match_all().is_match_all());
    assert!(Filter::parse_words(&[]).unwrap().is_match_all());
    assert!(!Filter::parse("tcp").unwrap().is_match_all());
}

#[test]
fn canonical_forms() {
    let cases = [
        ("host 10.0.0.1", "host 10.0.0.1"),
        ("HOST 10.0.0.1 AND Port 53", "host 10.0.0.1 and port 53"),
        (
            "src host 10.0.0.1 && dst port 80",
            "src host 10.0.0.1 and dst port 80",
        ),
        ("!tcp||udp", "not tcp or udp"),
        ("not (tcp or udp)", "not (tcp or udp)"),
    ];
    for (src, want) in cases {
        assert_eq!(canon(src), want, "{src}");
    }
    assert_eq!(canon("tcp or udp and icmp"), "tcp or udp and icmp");
    assert_eq!(canon("(tcp or udp) and icmp"), "(tcp or udp) and icmp");
    assert_eq!(canon("tcp and (udp and icmp)"), "tcp and (udp and icmp)");
    assert_eq!(canon("((tcp))"), "tcp");
    assert_eq!(canon("net fd00:0:0::/8"), "net fd00::/8");
    assert_eq!(canon("host FD00::0001"), "host fd00::1");
    assert_eq!(canon("src 10.0.0.1"), "src host 10.0.0.1");
    assert_eq!(canon("dst 10.0.0.0/8"), "dst net 10.0.0.0/8");
    assert_eq!(canon("tcp port 80"), "tcp and port 80");
    assert_eq!(canon("udp dst port 53"), "udp and dst port 53");
    assert_eq!(canon("not tcp port 80"), "not (tcp and port 80)");
    assert_eq!(canon("arp host 169.254.1.1"), "arp and host 169.254.1.1");
    assert_eq!(canon("port 80 or 443"), "port 80 or port 443");
    assert_eq!(
        canon("host 10.0.0.1 or 10.0.0.2 and not 10.0.0.3"),
        "host 10.0.0.1 or host 10.0.0.2 and not host 10.0.0.3"
    );
    assert_eq!(
        canon("tcp src port 80 or 443"),
        "tcp and src port 80 or tcp and src port 443"
    );
    assert_eq!(
        canon("icmp or icmp6 or ip or ip6 or arp"),
        "icmp or icmp6 or ip or ip6 or arp"
    );
    assert_eq!(
        canon("port 0 or port 65535 or port 0080"),
        "port 0 or port 65535 or port 80"
    );
}

#[test]
fn source_and_words() {
    let f = Filter::parse("  host   10.0.0.1\tand port 53 ").unwrap();
    assert_eq!(f.source(), "host 10.0.0.1 and port 53");
    let words: Vec<String> = ["host", "10.0.0.1", "and", "not", "port", "22"]
        .map(String::from)
        .to_vec();
    let f = Filter::parse_words(&words).unwrap();
    assert_eq!(f.source(), "host 10.0.0.1 and not port 22");
    assert_eq!(f.to_string(), "host 10.0.0.1 and not port 22");
    let f: Filter = "tcp".parse().unwrap();
    assert_eq!(f, Filter::parse("tcp").unwrap());
    // A quoted word with spaces inside is fine too.
    let words: Vec<String> = vec!["host 10.0.0.1".into(), "or".into(), "arp".into()];
    assert_eq!(
        Filter::parse_words(&words).unwrap().to_string(),
        "host 10.0.0.1 or arp"
    );
}
