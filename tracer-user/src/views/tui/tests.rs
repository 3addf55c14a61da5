//! App-state tests (keys, sorting, filter, pause) and rendering snapshots with
//! ratatui's `TestBackend`.
//!
//! Snapshots live in `snapshots/NAME.snap` as plain text. A missing or
//! different snapshot fails the test and writes `NAME.snap.new` next to it;
//! `CALITRACE_BLESS=1 cargo test -p tracer-user --lib tui` accepts them.

use std::path::PathBuf;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;

use super::app::{App, Focus, Mode, Overlay, Sort};
use super::model::{History, SEC, StepKind};
use super::render::{render, sparkline};
use super::{Inbox, Summary};
use crate::model::{
    Attribution, Backend, CalicoPlacement, Code, Detail, Diagnosis, Dir, DropRecord, Flow, Hook,
    Hop, Icmp, NetfilterInfo, NfVerdict, PacketRecord, ProbeStatus, Proto, Record, Stage, Start,
    Unavailable, VerdictRecord,
};
use crate::views::{Control, Status};

// ------------------------------------------------------------ fixtures

pub(super) const NODE_NETNS: u32 = 4026531840;
pub(super) const POD_A: &str = "10.244.1.10";
pub(super) const POD_B: &str = "10.244.2.10";
pub(super) const CALI_B: &str = "cali577c632c6f2";
/// Record time of the first event: 1000 s of CLOCK_MONOTONIC.
pub(super) const T0: u64 = 1000 * SEC;
pub(super) const MS: u64 = 1_000_000;

pub(super) fn start() -> Record {
    Record::Start(Start {
        node: "node-b".into(),
        kernel: "6.18.44".into(),
        netns: NODE_NETNS,
        filter: String::new(),
        interfaces: vec!["eth0".into(), CALI_B.into()],
        probes_attached: vec![
            ProbeStatus {
                name: "tc classifier (TCX)".into(),
                detail: Some(format!("ingress+egress on eth0, {CALI_B}")),
            },
            ProbeStatus {
                name: "kfree_skb raw tracepoint".into(),
                detail: Some("130 drop reasons from BTF".into()),
            },
        ],
        probes_unavailable: vec![Unavailable {
            name: "fexit nft_do_chain".into(),
            reason: "BPF_PROG_LOAD: EPERM (kernel lockdown)".into(),
        }],
        iptables: Some(Backend::Nft),
        calico_chains: Some(CalicoPlacement::Nft),
        checks: vec![],
    })
}

pub(super) fn flow(src: &str, dst: &str, proto: Proto, ports: Option<(u16, u16)>) -> Flow {
    Flow {
        src: Some(src.parse().unwrap()),
        dst: Some(dst.parse().unwrap()),
        proto: Some(proto),
        sport: ports.map(|p| p.0),
        dport: ports.map(|p| p.1),
        src_pod: None,
        dst_pod: None,
    }
}

pub(super) fn ping_detail(seq: u16, ttl: u8, reply: bool) -> Detail {
    Detail {
        ttl: Some(ttl),
        ip_id: Some(if reply { 5000 } else { 100 } + seq),
        len: 84,
        icmp: Some(if reply {
            Icmp::EchoReply { id: 7, seq }
        } else {
            Icmp::EchoRequest { id: 7, seq }
        }),
        arp: None,
    }
}

fn tcp_detail(id: u16) -> Detail {
    Detail {
        ttl: Some(63),
        ip_id: Some(id),
        len: 60,
        icmp: None,
        arp: None,
    }
}

pub(super) fn packet(ts: u64, ifname: &str, dir: Dir, flow: Flow, detail: Detail) -> Record {
    Record::Packet(PacketRecord {
        node: None,
        ts_ns: ts,
        netns: NODE_NETNS,
        ifname: Some(ifname.into()),
        dir,
        flow,
        detail,
        outer: None,
    })
}

pub(super) fn hop(ts: u64, ifname: &str, dir: Dir, ttl: u8) -> Hop {
    Hop {
        node: None,
        ts_ns: ts,
        netns: NODE_NETNS,
        ifname: Some(ifname.into()),
        dir,
        ttl: Some(ttl),
        netfilter: None,
        verdict: None,
        point: None,
        priority: None,
        outer: None,
    }
}

use crate::model::fixtures::legacy_forward;

pub(super) fn nf_drop(ts: u64, seq: u16) -> Record {
    Record::Drop(DropRecord {
        node: None,
        ts_ns: ts,
        netns: NODE_NETNS,
        ifname: Some("eth0".into()),
        flow: flow(POD_A, POD_B, Proto::Icmp, None),
        reason: crate::model::DropReason::named("NETFILTER_DROP"),
        reason_from_location: false,
        location: Some("nf_hook_slow".into()),
        stage: Stage::Netfilter,
        netfilter: Some(legacy_forward()),
        detail: ping_detail(seq, 62, false),
        pod: None,
        journey: vec![hop(ts - 31_000, "eth0", Dir::Ingress, 63)],
        benign: None,
        calico_ebpf: None,
    })
}

fn nf_diagnosis(count: u64, last: u64) -> Record {
    Record::Diagnosis(Diagnosis {
        code: Code::NetfilterDrop,
        stage: Some(Stage::Netfilter),
        summary: format!(
            "{POD_A} > {POD_B} dropped by netfilter: iptables-legacy (table not known), hook FORWARD"
        ),
        hint: "look for a DROP rule or a DROP policy in FORWARD with `iptables-legacy-save -c`; \
               Calico's own rules live in cali-* chains"
            .into(),
        count,
        src: Some(POD_A.parse().unwrap()),
        dst: Some(POD_B.parse().unwrap()),
        backend: Some(Backend::Legacy),
        hook: Some(Hook::Forward),
        attribution: Some(Attribution::Inferred),
        first_ts_ns: T0 + 1000 * MS,
        last_ts_ns: last,
        ..Default::default()
    })
}

/// A ping that gets through: request in by eth0, out to pod B; reply back.
pub(super) fn good_ping(ts: u64, seq: u16) -> Vec<Record> {
    let req = flow(POD_A, POD_B, Proto::Icmp, None);
    let rep = flow(POD_B, POD_A, Proto::Icmp, None);
    vec![
        packet(
            ts,
            "eth0",
            Dir::Ingress,
            req.clone(),
            ping_detail(seq, 63, false),
        ),
        packet(
            ts + 20_000,
            CALI_B,
            Dir::Egress,
            req,
            ping_detail(seq, 62, false),
        ),
        packet(
            ts + 90_000,
            CALI_B,
            Dir::Ingress,
            rep.clone(),
            ping_detail(seq, 64, true),
        ),
        packet(
            ts + 110_000,
            "eth0",
            Dir::Egress,
            rep,
            ping_detail(seq, 63, true),
        ),
    ]
}

fn tcp_exchange(ts: u64, n: u16) -> Vec<Record> {
    let c2s = flow(POD_A, POD_B, Proto::Tcp, Some((40312, 8080)));
    let s2c = flow(POD_B, POD_A, Proto::Tcp, Some((8080, 40312)));
    let mut out = Vec::new();
    for i in 0..n {
        let t = ts + u64::from(i) * 10 * MS;
        out.push(packet(
            t,
            "eth0",
            Dir::Ingress,
            c2s.clone(),
            tcp_detail(200 + i),
        ));
        out.push(packet(
            t + 15_000,
            CALI_B,
            Dir::Egress,
            c2s.clone(),
            tcp_detail(200 + i),
        ));
        out.push(packet(
            t + 60_000,
            CALI_B,
            Dir::Ingress,
            s2c.clone(),
            tcp_detail(900 + i),
        ));
        out.push(packet(
            t + 80_000,
            "eth0",
            Dir::Egress,
            s2c.clone(),
            tcp_detail(900 + i),
        ));
    }
    out
}

pub(super) fn app() -> App {
    let mut a = App::new(Mode::Live);
    a.color = true;
    a.stamp = || "20261127T101500Z".into();
    a.set_status(Status {
        events_per_sec: 0.0,
        ..Status::default()
    });
    a.ingest(&[start()]);
    a
}

fn healthy_app() -> App {
    let mut a = app();
    for seq in 1..=3 {
        a.ingest(&good_ping(T0 + u64::from(seq) * SEC, seq));
    }
    a.ingest(&tcp_exchange(T0 + 3500 * MS, 5));
    a.set_status(Status {
        events_per_sec: 12.5,
        ..Status::default()
    });
    a.tick(T0 + 4 * SEC);
    a
}

/// Ping 1 passes; then FORWARD policy DROP in iptables-legacy; pings 2..=4 die.
pub(super) fn netfilter_app() -> App {
    let mut a = app();
    a.ingest(&good_ping(T0, 1));
    a.ingest(&tcp_exchange(T0 + 200 * MS, 2));
    for seq in 2..=4u16 {
        let t = T0 + u64::from(seq - 1) * SEC;
        a.ingest(&[
            packet(
                t,
                "eth0",
                Dir::Ingress,
                flow(POD_A, POD_B, Proto::Icmp, None),
                ping_detail(seq, 63, false),
            ),
            nf_drop(t + 31_000, seq),
        ]);
        a.ingest(&[nf_diagnosis(u64::from(seq) - 1, t + 31_000)]);
    }
    a.set_status(Status {
        events_per_sec: 4.0,
        ..Status::default()
    });
    a.tick(T0 + 3 * SEC + 500 * MS);
    a
}

pub(super) fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

pub(super) fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

fn type_text(a: &mut App, s: &str) {
    for c in s.chars() {
        a.key(ch(c));
    }
}

// ------------------------------------------------------------ snapshots

pub(super) fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| render(f, app)).unwrap();
    term
}

pub(super) fn screen(app: &App, w: u16, h: u16) -> String {
    let term = draw(app, w, h);
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn snapshot(name: &str, app: &App, w: u16, h: u16) {
    let text = screen(app, w, h);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/views/tui/snapshots");
    let path = dir.join(format!("{name}.snap"));
    let new = dir.join(format!("{name}.snap.new"));
    let bless = std::env::var_os("CALITRACE_BLESS").is_some();
    let old = std::fs::read_to_string(&path).ok();
    if old.as_deref() == Some(text.as_str()) {
        let _ = std::fs::remove_file(&new);
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    if bless {
        std::fs::write(&path, &text).unwrap();
        let _ = std::fs::remove_file(&new);
        return;
    }
    std::fs::write(&new, &text).unwrap();
    panic!(
        "snapshot {name} ({w}x{h}) {}; wrote {}; accept with CALITRACE_BLESS=1\n--- expected\n{}\n--- got\n{text}",
        if old.is_some() { "differs" } else { "is new" },
        new.display(),
        old.unwrap_or_default()
    );
}

#[test]
fn snapshot_empty_start() {
    snapshot("empty_start", &app(), 100, 30);
}

#[test]
fn snapshot_healthy_flows() {
    snapshot("healthy_flows", &healthy_app(), 100, 30);
}

#[test]
fn snapshot_netfilter_drop_with_journey() {
    let a = netfilter_app();
    let s = screen(&a, 100, 30);
    assert!(s.contains("✗ FORWARD (legacy: DROP)"), "{s}");
    assert!(s.contains(&format!("never reached {CALI_B} egress")), "{s}");
    snapshot("netfilter_drop", &a, 100, 30);
}

#[test]
fn snapshot_netfilter_drop_80x24() {
    let a = netfilter_app();
    let s = screen(&a, 80, 24);
    for want in [
        "Flows",
        "Drop points",
        "Journey",
        "Diagnosis",
        "NETFILTER_DROP",
        "q quit",
    ] {
        assert!(s.contains(want), "{want} missing at 80x24\n{s}");
    }
    snapshot("netfilter_drop_80x24", &a, 80, 24);
}

#[test]
fn snapshot_wide_layout() {
    snapshot("netfilter_drop_wide", &netfilter_app(), 150, 36);
}

#[test]
fn snapshot_help() {
    let mut a = netfilter_app();
    a.key(ch('?'));
    snapshot("help", &a, 100, 30);
}

#[test]
fn snapshot_filter_error() {
    let mut a = healthy_app();
    a.key(ch('/'));
    type_text(&mut a, "host 10.244.2.10 and prot 80");
    a.key(key(KeyCode::Enter));
    assert!(a.edit.is_some(), "a bad filter stays in the editor");
    snapshot("filter_error", &a, 100, 30);
}

#[test]
fn snapshot_lost_events() {
    let mut a = healthy_app();
    a.set_status(Status {
        events_per_sec: 250_000.0,
        lost: 1234,
        recording: Some("calitrace-node-b-20261127T101500Z.calitrace".into()),
        ..Status::default()
    });
    a.ui_skipped = 56;
    a.status_stale = true;
    a.key(ch(' '));
    let s = screen(&a, 100, 30);
    assert!(s.contains("⚠ LOST ≥1234"), "{s}");
    assert!(s.contains("status not updated"), "{s}");
    assert!(s.contains("⏸ PAUSED") && s.contains("● REC"), "{s}");
    snapshot("lost_events", &a, 100, 30);
}

#[test]
fn the_header_counts_the_traced_interfaces_and_those_waiting() {
    let mut a = healthy_app();
    assert!(
        !screen(&a, 100, 30).contains("ifaces"),
        "none said: none shown"
    );
    a.set_status(Status {
        interfaces: Some(crate::views::Interfaces {
            traced: 5,
            waiting: 117,
        }),
        ..Status::default()
    });
    let s = screen(&a, 100, 30);
    assert!(
        s.contains("lost 0 │ ifaces 5 (+117 attaching) │ filter"),
        "{s}"
    );
    a.set_status(Status {
        interfaces: Some(crate::views::Interfaces {
            traced: 122,
            waiting: 0,
        }),
        ..Status::default()
    });
    let s = screen(&a, 100, 30);
    assert!(
        s.contains("│ ifaces 122 │") && !s.contains("attaching"),
        "{s}"
    );
}

#[test]
fn snapshot_flow_details() {
    let mut a = netfilter_app();
    a.key(key(KeyCode::Enter));
    snapshot("flow_details", &a, 100, 30);
}

#[test]
fn snapshot_replay_paused() {
    let mut a = App::new(Mode::Replay {
        file: "rp.calitrace".into(),
    });
    a.color = true;
    a.ingest(&[start()]);
    a.ingest(&good_ping(T0, 1));
    a.key(ch(' '));
    assert_eq!(a.take_controls().len(), 1);
    snapshot("replay_paused", &a, 80, 24);
}

// ------------------------------------------------------------ rendering

#[test]
fn renders_at_any_size() {
    let mut a = netfilter_app();
    for (w, h) in [
        (1, 1),
        (10, 3),
        (29, 7),
        (30, 8),
        (40, 10),
        (60, 15),
        (80, 24),
        (120, 40),
        (200, 60),
    ] {
        draw(&a, w, h);
    }
    a.key(ch('?'));
    for (w, h) in [(20, 5), (30, 8), (80, 24)] {
        draw(&a, w, h);
    }
    a.key(key(KeyCode::Esc));
    a.key(ch('/'));
    type_text(&mut a, "host 10.0.0.1 and and");
    a.key(key(KeyCode::Enter));
    for (w, h) in [(30, 8), (80, 24)] {
        draw(&a, w, h);
    }
}

#[test]
fn no_color_keeps_every_symbol_and_drops_colour() {
    let mut a = netfilter_app();
    a.set_status(Status {
        lost: 7,
        ..Status::default()
    });
    let coloured = screen(&a, 100, 30);
    a.color = false;
    let plain = screen(&a, 100, 30);
    assert_eq!(coloured, plain, "colour never carries meaning alone");
    let term = draw(&a, 100, 30);
    for cell in term.backend().buffer().content() {
        assert!(
            matches!(cell.fg, Color::Reset) && matches!(cell.bg, Color::Reset),
            "a colour with NO_COLOR: {cell:?}"
        );
    }
}

#[test]
fn sparkline_scales_and_shows_silence() {
    assert_eq!(sparkline(&[0, 1, 2, 4, 8, 0]), "·▁▂▄█·");
    assert_eq!(sparkline(&[0, 0]), "··");
    let mut h = History::default();
    for t in [10, 10, 11, 13] {
        h.add(t * SEC + 5);
    }
    assert_eq!(h.series(14 * SEC, 6), vec![0, 2, 1, 0, 1, 0]);
    // Out of order still counts; very old seconds fall off.
    h.add(12 * SEC);
    assert_eq!(h.series(13 * SEC, 4), vec![2, 1, 1, 1]);
    h.add(1000 * SEC);
    assert_eq!(h.series(13 * SEC, 4), vec![0, 0, 0, 0]);
}

// ------------------------------------------------------------ model

#[test]
fn one_packet_seen_twice_counts_once_and_drops_after_sighting_too() {
    let a = netfilter_app();
    let rows = a.flow_rows();
    let req = rows
        .iter()
        .find(|f| {
            f.key.src.map(|a| a.to_string()).as_deref() == Some(POD_A)
                && f.key.proto == Some(Proto::Icmp)
        })
        .unwrap();
    assert_eq!((req.packets, req.drops), (4, 3));
    let rep = rows
        .iter()
        .find(|f| {
            f.key.src.map(|a| a.to_string()).as_deref() == Some(POD_B)
                && f.key.proto == Some(Proto::Icmp)
        })
        .unwrap();
    assert_eq!((rep.packets, rep.drops), (1, 0));
    let tcp = rows.iter().find(|f| f.key.sport == Some(40312)).unwrap();
    assert_eq!(tcp.packets, 2);
}

/// Arriving on the uplink, on the way to FORWARD.
const INTO_FORWARD: [(StepKind, &str); 3] = [
    (StepKind::Seen, "eth0 ingress"),
    (StepKind::Implied, "PREROUTING"),
    (StepKind::Implied, "route lookup"),
];

/// The steps of the selected flow's latest packet are `want`.
fn assert_steps(a: &App, want: &[(StepKind, &str)]) {
    let f = a.selected_flow().unwrap();
    let steps = f.steps(a.info.netns, &a.shown().egress_to);
    let got: Vec<(StepKind, &str)> = steps.iter().map(|s| (s.kind, s.label.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn journey_of_a_netfilter_drop() {
    let a = netfilter_app();
    let f = a.selected_flow().unwrap();
    assert_eq!(
        f.key.src.map(|a| a.to_string()).as_deref(),
        Some(POD_A),
        "the flow with recent drops comes first"
    );
    assert_steps(
        &a,
        &[
            INTO_FORWARD[0],
            INTO_FORWARD[1],
            INTO_FORWARD[2],
            (StepKind::Failed, "FORWARD (legacy: DROP)"),
            (StepKind::Missed, "cali577c632c6f2 egress"),
        ],
    );
}

#[test]
fn journey_with_netfilter_verdicts_marks_the_dropping_table() {
    let mut a = app();
    let nft_accept = NetfilterInfo {
        backend: Some(Backend::Nft),
        table: Some("filter".into()),
        chain: Some("FORWARD".into()),
        hook: Some(Hook::Forward),
        attribution: Attribution::Exact,
        ..Default::default()
    };
    let legacy_drop = NetfilterInfo {
        table: Some("filter".into()),
        chain: Some("FORWARD".into()),
        attribution: Attribution::Exact,
        ..legacy_forward()
    };
    let nf_hop = |ts: u64, nf: &NetfilterInfo, verdict: NfVerdict| Hop {
        node: None,
        ts_ns: ts,
        netns: NODE_NETNS,
        ifname: None,
        dir: Dir::Netfilter,
        ttl: Some(63),
        netfilter: Some(nf.clone()),
        verdict: Some(verdict),
        point: None,
        priority: None,
        outer: None,
    };
    let t = T0 + 10 * MS;
    a.ingest(&[Record::Verdict(VerdictRecord {
        node: None,
        ts_ns: t + 10_000,
        netns: NODE_NETNS,
        flow: flow(POD_A, POD_B, Proto::Icmp, None),
        verdict: NfVerdict::Accept,
        netfilter: nft_accept.clone(),
        detail: ping_detail(1, 63, false),
    })]);
    let Record::Drop(dropped) = nf_drop(t + 30_000, 1) else {
        unreachable!()
    };
    a.ingest(&[Record::Drop(DropRecord {
        netfilter: Some(legacy_drop.clone()),
        detail: ping_detail(1, 63, false),
        journey: vec![
            hop(t, "eth0", Dir::Ingress, 63),
            nf_hop(t + 10_000, &nft_accept, NfVerdict::Accept),
            nf_hop(t + 20_000, &legacy_drop, NfVerdict::Drop),
        ],
        ..dropped
    })]);
    let f = a.selected_flow().unwrap();
    assert_eq!(
        (f.packets, f.drops),
        (1, 1),
        "the verdict record is the same packet"
    );
    assert_steps(
        &a,
        &[
            INTO_FORWARD[0],
            INTO_FORWARD[1],
            INTO_FORWARD[2],
            (StepKind::Seen, "FORWARD (nft filter: ACCEPT)"),
            (StepKind::Failed, "FORWARD (legacy filter: DROP)"),
            (StepKind::Missed, "egress"),
        ],
    );
}

#[test]
fn header_shows_backends_or_unknown() {
    let a = app();
    let s = screen(&a, 200, 10);
    assert!(s.contains("backends: iptables nft · cali-* in nft"), "{s}");
    let mut b = App::new(Mode::Live);
    let s = screen(&b, 200, 10);
    assert!(s.contains("backends: unknown"), "{s}");
    if let Record::Start(mut st) = start() {
        st.iptables = Some(Backend::Legacy);
        st.calico_chains = Some(CalicoPlacement::Nft);
        b.ingest(&[Record::Start(st)]);
    }
    let s = screen(&b, 200, 10);
    assert!(s.contains("iptables legacy · cali-* in nft ⚠"), "{s}");
}

#[test]
fn unknown_and_stats_records_are_harmless() {
    let mut a = app();
    a.ingest(&[Record::Stats(crate::model::Stats {
        lost: 9,
        ..Default::default()
    })]);
    assert_eq!(a.lost(), 9);
}

// ------------------------------------------------------------ keys

#[test]
fn quit_keys() {
    for k in [
        ch('q'),
        key(KeyCode::Esc),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        let mut a = app();
        a.key(k);
        assert!(a.quit);
        assert!(matches!(a.take_controls().as_slice(), [Control::Quit]));
    }
    // Esc closes a popup first; Ctrl-C quits even while editing.
    let mut a = app();
    a.key(ch('?'));
    assert_eq!(a.overlay, Overlay::Help);
    a.key(key(KeyCode::Esc));
    assert_eq!(a.overlay, Overlay::None);
    assert!(!a.quit);
    a.key(ch('/'));
    a.key(ch('q'));
    assert!(!a.quit, "q is text in the filter editor");
    a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(a.quit);
}

#[test]
fn help_probes_and_details_toggle() {
    let mut a = netfilter_app();
    a.key(ch('?'));
    assert_eq!(a.overlay, Overlay::Help);
    a.key(ch('?'));
    assert_eq!(a.overlay, Overlay::None);
    a.key(ch('p'));
    assert_eq!(a.overlay, Overlay::Probes);
    let s = screen(&a, 100, 30);
    assert!(s.contains("BPF_PROG_LOAD: EPERM (kernel lockdown)"), "{s}");
    a.key(key(KeyCode::Esc));
    a.key(key(KeyCode::Enter));
    assert_eq!(a.overlay, Overlay::Details { scroll: 0 });
    a.key(ch('j'));
    assert_eq!(a.overlay, Overlay::Details { scroll: 1 });
    a.key(key(KeyCode::Enter));
    assert_eq!(a.overlay, Overlay::None);
}

#[test]
fn moving_follows_the_flow_not_the_row() {
    let mut a = healthy_app();
    a.sort = Sort::Address;
    let keys: Vec<_> = a.flow_rows().iter().map(|f| f.key.clone()).collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(a.selected_flow().unwrap().key, keys[0]);
    a.key(ch('j'));
    a.key(key(KeyCode::Down));
    assert_eq!(a.selected_flow().unwrap().key, keys[2]);
    a.key(ch('k'));
    assert_eq!(a.selected_flow().unwrap().key, keys[1]);
    a.key(key(KeyCode::End));
    assert_eq!(a.selected_flow().unwrap().key, keys[3]);
    a.key(key(KeyCode::Down));
    assert_eq!(a.selected_flow().unwrap().key, keys[3], "stops at the end");
    a.key(ch('g'));
    assert_eq!(a.selected_flow().unwrap().key, keys[0]);
    // The selection stays on its flow when the order changes.
    a.key(ch('j'));
    let chosen = a.selected_flow().unwrap().key.clone();
    a.sort = Sort::Packets;
    assert_eq!(a.selected_flow().unwrap().key, chosen);
}

#[test]
fn tab_moves_between_panels() {
    let mut a = netfilter_app();
    assert_eq!(a.focus, Focus::Flows);
    a.key(key(KeyCode::Tab));
    assert_eq!(a.focus, Focus::DropPoints);
    a.key(key(KeyCode::Tab));
    assert_eq!(a.focus, Focus::Diagnoses);
    a.key(key(KeyCode::Enter));
    let s = screen(&a, 100, 30);
    assert!(s.contains("iptables-legacy-save -c"), "{s}");
    a.key(key(KeyCode::Esc));
    a.key(key(KeyCode::BackTab));
    assert_eq!(a.focus, Focus::DropPoints);
}

#[test]
fn sorting() {
    let a = netfilter_app();
    let first = &a.flow_rows()[0].key;
    assert_eq!(
        (first.src.map(|a| a.to_string()).as_deref(), first.proto),
        (Some(POD_A), Some(Proto::Icmp)),
        "recent drops first"
    );
    let mut a = netfilter_app();
    a.key(ch('s'));
    assert_eq!(a.sort, Sort::Drops);
    assert_eq!(a.flow_rows()[0].drops, 3);
    a.key(ch('s'));
    assert_eq!(a.sort, Sort::Packets);
    let p: Vec<u64> = a.flow_rows().iter().map(|f| f.packets).collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    a.key(ch('s'));
    assert_eq!(a.sort, Sort::LastSeen);
    let t: Vec<u64> = a.flow_rows().iter().map(|f| f.last_ts).collect();
    assert!(t.windows(2).all(|w| w[0] >= w[1]), "{t:?}");
    a.key(ch('s'));
    assert_eq!(a.sort, Sort::Address);
    let k: Vec<_> = a.flow_rows().iter().map(|f| f.key.clone()).collect();
    assert!(k.windows(2).all(|w| w[0] <= w[1]));
    a.key(ch('s'));
    assert_eq!(a.sort, Sort::RecentDrops);

    // Drops stop being "recent" after a while: then the last seen comes first.
    let mut a = netfilter_app();
    a.ingest(&tcp_exchange(T0 + 20 * SEC, 1));
    assert_eq!(a.flow_rows()[0].key.proto, Some(Proto::Tcp));
}

#[test]
fn filter_editing() {
    let mut a = healthy_app();
    a.key(ch('/'));
    assert_eq!(
        a.edit.as_ref().unwrap().text,
        "",
        "starts from the active filter"
    );
    type_text(&mut a, "host 10.244.2.10 and");
    a.key(key(KeyCode::Enter));
    let e = a.edit.as_ref().unwrap();
    let (pos, msg) = e.error.clone().unwrap();
    assert_eq!(pos, 20, "{msg}");
    assert!(
        a.take_controls().is_empty(),
        "nothing is sent for a bad filter"
    );
    // Editing: Backspace, cursor moves, insert in the middle.
    for _ in 0..4 {
        a.key(key(KeyCode::Backspace));
    }
    assert_eq!(
        a.edit.as_ref().unwrap().error,
        None,
        "the error goes once the text changes"
    );
    a.key(key(KeyCode::Home));
    type_text(&mut a, "icmp and ");
    a.key(key(KeyCode::End));
    type_text(&mut a, "x");
    a.key(key(KeyCode::Left));
    a.key(key(KeyCode::Delete));
    assert_eq!(a.edit.as_ref().unwrap().text, "icmp and host 10.244.2.10");
    a.key(key(KeyCode::Enter));
    assert!(a.edit.is_none());
    match a.take_controls().as_slice() {
        [Control::SetFilter(f)] => assert_eq!(f.to_string(), "icmp and host 10.244.2.10"),
        other => panic!("{other:?}"),
    }
    // The session confirms; the header shows it and `/` starts from it.
    a.set_status(Status {
        filter: "icmp and host 10.244.2.10".into(),
        ..Status::default()
    });
    assert!(screen(&a, 100, 30).contains("filter: icmp and host 10.244.2.10"));
    a.key(ch('/'));
    assert_eq!(a.edit.as_ref().unwrap().text, "icmp and host 10.244.2.10");
    a.key(key(KeyCode::Esc));
    assert!(a.edit.is_none() && !a.quit, "Esc cancels editing");
    assert!(a.take_controls().is_empty());
    // Too long for the kernel: refused in place too.
    a.key(ch('/'));
    a.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    let long: Vec<String> = (1..=12).map(|i| format!("host 10.0.0.{i}")).collect();
    type_text(&mut a, &long.join(" or "));
    a.key(key(KeyCode::Enter));
    let (_, msg) = a.edit.as_ref().unwrap().error.clone().unwrap();
    assert!(msg.contains("too long"), "{msg}");
    // An empty filter means everything.
    a.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    a.key(key(KeyCode::Enter));
    assert!(matches!(a.take_controls().as_slice(), [Control::SetFilter(f)] if f.is_match_all()));
}

#[test]
fn session_errors_show_in_place() {
    let mut a = healthy_app();
    a.set_status(Status {
        error: Some("creating calitrace-x.calitrace: Permission denied".into()),
        ..Status::default()
    });
    let s = screen(&a, 100, 30);
    assert!(
        s.contains("✗ creating calitrace-x.calitrace: Permission denied"),
        "{s}"
    );
    a.key(ch('j'));
    assert!(a.message.is_none(), "a key dismisses the message");
}

#[test]
fn pause_freezes_the_view_but_not_the_counting() {
    let mut a = healthy_app();
    let before = a.flow_rows().len();
    a.key(ch(' '));
    assert!(a.paused);
    assert!(
        a.take_controls().is_empty(),
        "live pause is the view's alone"
    );
    a.ingest(&[packet(
        T0 + 5 * SEC,
        "eth0",
        Dir::Ingress,
        flow("10.244.1.11", POD_B, Proto::Udp, Some((5353, 53))),
        tcp_detail(1),
    )]);
    assert_eq!(a.flow_rows().len(), before, "frozen while paused");
    // Navigation works on the frozen view.
    a.key(ch('j'));
    a.key(ch(' '));
    assert!(!a.paused);
    assert_eq!(
        a.flow_rows().len(),
        before + 1,
        "everything counted meanwhile shows up"
    );
}

#[test]
fn replay_pause_and_step_go_to_the_session() {
    let mut a = App::new(Mode::Replay {
        file: "x.calitrace".into(),
    });
    a.key(ch('n'));
    assert!(a.take_controls().is_empty(), "step needs a pause");
    a.key(ch(' '));
    a.key(ch('n'));
    a.key(ch(' '));
    let c = a.take_controls();
    assert!(
        matches!(
            c.as_slice(),
            [Control::Pause(true), Control::Step, Control::Pause(false)]
        ),
        "{c:?}"
    );
    a.key(ch('r'));
    assert!(a.take_controls().is_empty(), "no recording from a replay");
}

#[test]
fn recording_key() {
    let mut a = healthy_app();
    a.key(ch('r'));
    let path = match a.take_controls().as_slice() {
        [Control::StartRecording(p)] => p.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        path.to_str().unwrap(),
        "calitrace-node-b-20261127T101500Z.calitrace"
    );
    assert!(
        screen(&a, 100, 30).contains("recording to calitrace-node-b-20261127T101500Z.calitrace")
    );
    a.set_status(Status {
        recording: Some(path.clone()),
        ..Status::default()
    });
    assert!(screen(&a, 100, 30).contains("● REC  calitrace-node-b-20261127T101500Z.calitrace"));
    a.key(ch('r'));
    assert!(matches!(
        a.take_controls().as_slice(),
        [Control::StopRecording]
    ));
}

#[test]
fn clear_counters() {
    let mut a = netfilter_app();
    a.key(ch('c'));
    assert!(a.flow_rows().is_empty() && a.drop_rows().is_empty() && a.diag_rows().is_empty());
    a.ingest(&good_ping(T0 + 5 * SEC, 9));
    assert_eq!(a.flow_rows().len(), 2);
    assert!(a.info.node.is_some(), "what the node is stays");
}

// ------------------------------------------------------------ the sink's queue

#[test]
fn queue_never_blocks_and_counts_what_it_skips() {
    let mut ib = Inbox::default();
    let batch = good_ping(T0, 1);
    ib.push(&batch, 10);
    ib.push(&[nf_diagnosis(1, T0)], 10);
    ib.push(&batch, 10);
    ib.push(&batch, 10); // 13 > 10: the oldest batch goes
    assert_eq!((ib.skipped, ib.queued), (4, 9));
    ib.push(&batch, 10); // the diagnosis goes too, but is kept; then one more batch
    assert_eq!((ib.skipped, ib.queued), (8, 8));
    assert!(matches!(ib.kept.as_slice(), [Record::Diagnosis(_)]));
    let taken = ib.take(5);
    assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 8);
    assert_eq!(ib.queued, 0);
}

#[test]
fn under_a_flood_the_view_takes_in_a_while_of_records_then_looks_at_keys() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};
    let shared = super::Shared {
        inbox: Mutex::new(Inbox::default()),
        cv: Condvar::new(),
        failed: AtomicBool::new(false),
    };
    // Far more than one batch waits: 20 of the session's batches.
    let batch: Vec<Record> = (0..250u16)
        .flat_map(|i| good_ping(T0 + u64::from(i) * 1_000_000, i))
        .collect();
    for _ in 0..20 {
        shared.lock().push(&batch, 1_000_000);
    }
    let mut a = app();
    let mut last_status = Instant::now();
    let more = super::take_in(&mut a, &shared, true, &mut last_status, Duration::ZERO);
    assert_eq!(more, Some(true), "records still wait: keys without waiting");
    let left = shared.lock().queued;
    assert_eq!(
        left,
        20 * batch.len() - super::BATCH,
        "one batch taken in, the rest waits for the next turn"
    );
    // With time to spare, the view takes in all that waits.
    let more = super::take_in(
        &mut a,
        &shared,
        true,
        &mut last_status,
        Duration::from_secs(60),
    );
    assert_eq!(more, Some(false));
    assert_eq!(shared.lock().queued, 0);
    shared.lock().closing = true;
    let done = super::take_in(&mut a, &shared, true, &mut last_status, Duration::ZERO);
    assert_eq!(done, None, "the session is done with the view");
}

#[test]
fn summary_keeps_the_latest_of_each_diagnosis() {
    let mut s = Summary::default();
    s.note(&[nf_diagnosis(1, T0), nf_diagnosis(5, T0 + SEC)]);
    s.note(&good_ping(T0, 1));
    let mut out = Vec::new();
    s.print(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.matches("DIAGNOSIS NETFILTER_DROP (x5)").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("(x1)"));
}

// ------------------------------------------------------------ keys from bytes

#[test]
fn terminal_bytes_become_keys() {
    use super::terminal::parse_keys;
    let codes =
        |b: &[u8]| -> Vec<KeyCode> { parse_keys(b).0.into_iter().map(|k| k.code).collect() };
    assert_eq!(codes(b"q"), vec![KeyCode::Char('q')]);
    assert_eq!(
        codes(b"\x1b[A\x1b[B\x1bOC\x1b[D\x1b[5~\x1b[6~\x1b[H\x1b[4~\x1b[Z\x1b[3~"),
        vec![
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::Right,
            KeyCode::Left,
            KeyCode::PageUp,
            KeyCode::PageDown,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::BackTab,
            KeyCode::Delete,
        ]
    );
    assert_eq!(
        codes(b"\r\t\x7f "),
        vec![
            KeyCode::Enter,
            KeyCode::Tab,
            KeyCode::Backspace,
            KeyCode::Char(' ')
        ]
    );
    // A lone Esc, and Esc followed at once by a key (as tmux sends them).
    assert_eq!(codes(b"\x1b"), vec![KeyCode::Esc]);
    assert_eq!(codes(b"\x1b/"), vec![KeyCode::Esc, KeyCode::Char('/')]);
    // Modified arrows still move; UTF-8 is one key.
    assert_eq!(codes(b"\x1b[1;5A"), vec![KeyCode::Up]);
    assert_eq!(
        codes("é→".as_bytes()),
        vec![KeyCode::Char('é'), KeyCode::Char('→')]
    );
    // Ctrl-C, Ctrl-U.
    let (k, _) = parse_keys(b"\x03\x15");
    assert!(k.iter().all(|k| k.modifiers == KeyModifiers::CONTROL));
    assert_eq!(
        k.iter().map(|k| k.code).collect::<Vec<_>>(),
        vec![KeyCode::Char('c'), KeyCode::Char('u')]
    );
    // A sequence cut in two waits for the rest.
    assert_eq!(parse_keys(b"j\x1b[5"), (vec![key(KeyCode::Char('j'))], 1));
    assert_eq!(parse_keys(b"\x1bO").1, 0);
    assert_eq!(parse_keys(&"é".as_bytes()[..1]).1, 0);
}

#[test]
fn a_cluster_view_names_its_nodes_and_where_packets_were_lost() {
    use crate::merge::{AgentState, NodeView};
    use crate::model::Encap;
    let mut a = app();
    let node = |name: &str, state| NodeView {
        name: name.into(),
        state,
        events: 10,
        events_per_sec: 12.0,
        lost: 0,
        offset_ns: 1_500_000,
        traces_uplink: true,
    };
    a.set_status(Status {
        nodes: vec![
            node("node-a", AgentState::Running),
            node("node-b", AgentState::Ended(Some("exit status: 1".into()))),
        ],
        ..Status::default()
    });
    let on_a = |r: Record| {
        let mut r = r;
        r.set_node("node-a");
        r
    };
    a.ingest(&[
        on_a(packet(
            T0,
            CALI_B,
            Dir::Ingress,
            flow(POD_A, POD_B, Proto::Icmp, None),
            ping_detail(1, 64, false),
        )),
        on_a(packet(
            T0 + 10_000,
            "eth0",
            Dir::Egress,
            flow(POD_A, POD_B, Proto::Icmp, None),
            ping_detail(1, 63, false),
        )),
    ]);
    a.ingest(&[Record::Diagnosis(Diagnosis {
        code: Code::UnderlayDrop,
        src: Some(POD_A.parse().unwrap()),
        dst: Some(POD_B.parse().unwrap()),
        node: Some("node-a".into()),
        underlay: Some(crate::merge::underlay::path(
            "node-a",
            "node-b",
            Encap::Vxlan,
        )),
        summary: "lost between the nodes".into(),
        first_ts_ns: T0 + SEC,
        last_ts_ns: T0 + SEC,
        count: 1,
        ..Default::default()
    })]);
    let s = screen(&a, 160, 30);
    assert!(
        s.contains("✓ node-a running 12/s lost 0 clock +1.5 ms"),
        "{s}"
    );
    assert!(s.contains("✗ node-b failed"), "{s}");
    assert!(s.contains(&format!("{POD_A} → {POD_B} [node-a]")), "{s}");
    assert!(s.contains("LOST to node-b"), "{s}");
    assert!(
        s.contains("node-a eth0 egress → ✗ never reached node-b\n"),
        "{s}"
    );
    assert_steps(
        &a,
        &[
            (StepKind::Seen, &format!("node-a {CALI_B} ingress")),
            (StepKind::Seen, "node-a eth0 egress"),
            (StepKind::Failed, "never reached node-b"),
        ],
    );
}
