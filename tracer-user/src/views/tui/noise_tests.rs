//! Benign drops in the TUI (hidden until `b`, then dimmed, never `✗`), and
//! a drop point's "per second" line against its sparkline.

use ratatui::crossterm::event::KeyCode;

use super::app::App;
use super::render::{per_second, sparkline};
use super::tests::{
    CALI_B, MS, NODE_NETNS, POD_A, POD_B, T0, app, ch, flow, key, netfilter_app, packet, screen,
};
use crate::model::{Benign, Detail, Dir, DropRecord, Flow, Icmp, Proto, Record, Stage};
use crate::views::tui::model::SEC;

const VXLAN: &str = "vxlan.calico";
const NODE_LL: &str = "fe80::6463:74ff:fe6c:b";

fn icmpv6(ty: u8, len: u32) -> Detail {
    Detail {
        ttl: Some(1),
        ip_id: None,
        len,
        icmp: Some(Icmp::Other { kind: ty, code: 0 }),
        arp: None,
    }
}

fn benign_drop(ts: u64, flow: Flow, detail: Detail, reason: &str, benign: Benign) -> Record {
    Record::Drop(DropRecord {
        node: None,
        ts_ns: ts,
        netns: NODE_NETNS,
        ifname: Some(VXLAN.into()),
        flow,
        reason: crate::model::DropReason::named(reason),
        reason_from_location: false,
        location: Some("vxlan_xmit".into()),
        stage: Stage::Other,
        netfilter: None,
        detail,
        pod: None,
        journey: vec![],
        benign: Some(benign),
        calico_ebpf: None,
    })
}

/// A healthy VXLAN node: a router solicitation seen leaving by
/// `vxlan.calico` and freed there (no target), MLD reports freed the same
/// way without a tc sighting, netlink buffers purged while rules were read.
fn noisy_app() -> App {
    let mut a = app();
    let rs = flow(NODE_LL, "ff02::2", Proto::Icmpv6, None);
    let mld = flow(NODE_LL, "ff02::16", Proto::Icmpv6, None);
    a.ingest(&[
        packet(T0, VXLAN, Dir::Egress, rs.clone(), icmpv6(133, 56)),
        benign_drop(
            T0 + 5_000,
            rs,
            icmpv6(133, 56),
            "NO_TX_TARGET",
            Benign::LinkLocal,
        ),
    ]);
    for i in 0..3 {
        let t = T0 + i * SEC + 100 * MS;
        let d = icmpv6(143, 76);
        a.ingest(&[benign_drop(
            t,
            mld.clone(),
            d,
            "NO_TX_TARGET",
            Benign::LinkLocal,
        )]);
    }
    let nothing = Flow {
        src: None,
        dst: None,
        proto: None,
        sport: None,
        dport: None,
        src_pod: None,
        dst_pod: None,
    };
    let empty = Detail {
        ttl: None,
        ip_id: None,
        len: 0,
        icmp: None,
        arp: None,
    };
    let purge = benign_drop(
        T0 + 2 * SEC,
        nothing,
        empty,
        "QUEUE_PURGE",
        Benign::SocketClosed,
    );
    a.ingest(&[purge]);
    a.tick(T0 + 3 * SEC);
    a
}

/// The rows of the flows panel.
fn flows_panel(screen: &str) -> String {
    let lines: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("Flows ("))
        .take_while(|l| !l.contains("Drop points ("))
        .collect();
    lines.join("\n")
}

#[test]
fn benign_drops_are_counted_but_neither_a_cross_nor_a_drop_point() {
    let mut a = noisy_app();
    // The nodes' link-local control flows are hidden until `m`.
    assert!(a.flow_rows().is_empty(), "link-local control hidden");
    assert_eq!(a.hidden_control_flows(), 1);
    assert!(screen(&a, 100, 30).contains("1 link-local hidden [m]"));
    a.key(ch('m'));
    assert_eq!(a.hidden_control_flows(), 0);
    let rows = a.flow_rows();
    assert_eq!(rows.len(), 1, "only the flow tc saw");
    assert_eq!((rows[0].packets, rows[0].drops, rows[0].benign), (1, 0, 1));
    assert!(a.drop_rows().is_empty());
    assert_eq!(a.shown().benign_seen, 5);
    let s = screen(&a, 100, 30);
    assert!(!flows_panel(&s).contains('✗'), "no ✗ row\n{s}");
    assert!(s.contains("✓ fe80::6463:74ff:fe6c:b → ff02::2"), "{s}");
    assert!(
        s.contains("Drop points (0 drops · 5 benign hidden [b])"),
        "{s}"
    );
    assert!(s.contains("Diagnosis (0)"), "{s}");
}

#[test]
fn b_shows_benign_drops_dimmed_and_hides_them_again() {
    let mut a = noisy_app();
    a.key(ch('m'));
    a.key(ch('b'));
    assert!(a.show_benign);
    assert_eq!(a.flow_rows().len(), 3, "the MLD and netlink frees too");
    assert_eq!(a.drop_rows().len(), 2);
    let s = screen(&a, 100, 30);
    assert!(!flows_panel(&s).contains('✗'), "still no ✗ row\n{s}");
    assert!(s.contains("Drop points (0 drops · 5 benign [b])"), "{s}");
    let line = |needle: &str| {
        s.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}\n{s}"))
            .to_string()
    };
    let rs = line("→ ff02::2");
    assert!(
        rs.contains("· ") && rs.contains("benign: 1 × NO_TX_TARGET"),
        "{rs}"
    );
    let point = line("vxlan_xmit");
    assert!(
        point.contains("benign") && point.contains("NO_TX_TARGET"),
        "{point}"
    );
    assert!(point.trim_start().starts_with('·'), "{point}");
    // Dimmed: every cell of the benign drop point row is dark grey.
    let term = super::tests::draw(&a, 100, 30);
    let y = s.lines().position(|l| l.contains("vxlan_xmit")).unwrap() as u16;
    let buf = term.backend().buffer();
    let x = s
        .lines()
        .nth(y as usize)
        .unwrap()
        .find("vxlan_xmit")
        .unwrap() as u16;
    assert_eq!(buf[(x, y)].fg, ratatui::style::Color::DarkGray);

    a.key(key(KeyCode::Tab));
    a.key(key(KeyCode::Enter));
    let details = screen(&a, 100, 30);
    assert!(
        details.contains("benign     link_local: link-local or multicast housekeeping"),
        "{details}"
    );
    a.key(key(KeyCode::Esc));
    a.key(ch('b'));
    assert!(a.drop_rows().is_empty() && a.flow_rows().len() == 1);
}

#[test]
fn a_real_drop_stays_a_cross_next_to_benign_ones() {
    let mut a = netfilter_app();
    let d = icmpv6(143, 76);
    let mld = flow(NODE_LL, "ff02::16", Proto::Icmpv6, None);
    a.ingest(&[benign_drop(
        T0 + 3 * SEC,
        mld,
        d,
        "NO_TX_TARGET",
        Benign::LinkLocal,
    )]);
    let rows = a.drop_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.reason, "NETFILTER_DROP");
    let s = screen(&a, 100, 30);
    assert!(s.contains(&format!("›✗ {POD_A} → {POD_B}")), "{s}");
    assert!(
        s.contains("Drop points (3 drops · 1 benign hidden [b])"),
        "{s}"
    );
    assert!(s.contains(CALI_B), "{s}");
}

/// The series a "per second" text stands for (`0×N` is N quiet seconds).
fn expand(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        match w.split_once('×') {
            Some(("0", n)) => out.extend(std::iter::repeat_n(0, n.parse().unwrap())),
            _ => out.push(w.parse().unwrap()),
        }
    }
    out
}

#[test]
fn per_second_writes_quiet_runs_short_and_keeps_every_count() {
    assert_eq!(
        per_second(&[0, 0, 0, 0, 2, 0, 0, 5, 1, 0]),
        "0×4 2 0 0 5 1 0"
    );
    assert_eq!(per_second(&[0; 60]), "0×60");
    assert_eq!(per_second(&[3]), "3");
    let series: Vec<u64> = (0..60).map(|i| (i * 7 % 5) as u64 / 3).collect();
    assert_eq!(expand(&per_second(&series)), series);
}

#[test]
fn the_per_second_line_shows_the_drops_the_sparkline_shows() {
    // Drops at 1, 2 and 3 s; the details opened at 3.5 s.
    for (w, h) in [(100, 30), (80, 24), (150, 36)] {
        let mut a = netfilter_app();
        a.key(key(KeyCode::Tab));
        a.key(key(KeyCode::Enter));
        let s = screen(&a, w, h);
        let value = |k: &str| {
            let l = s
                .lines()
                .find(|l| l.contains(k))
                .unwrap_or_else(|| panic!("no {k:?} at {w}x{h}\n{s}"));
            let v = &l[l.find(k).unwrap() + k.len()..];
            v.split('│').next().unwrap_or("").trim().to_string()
        };
        let counts = expand(&value("per second"));
        let spark = value("last 60s");
        assert_eq!(counts.len(), 60, "{w}x{h}\n{s}");
        assert_eq!(counts.iter().sum::<u64>(), 3, "{w}x{h}\n{s}");
        assert_eq!(sparkline(&counts), spark, "the two agree at {w}x{h}\n{s}");
    }
}
