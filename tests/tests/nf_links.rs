//! BPF netfilter link observation points (kernel >= 6.4): they work on this
//! locked-down kernel where fexit and kprobes do not, put the hooks a packet
//! entered and left into its journey, and give an inferred netfilter drop its
//! hook from what was observed rather than from the packet's addresses.

use std::collections::BTreeSet;
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::kernel::{self, NETFILTER_LINKS};
use calitrace_tests::{Backend, Lab, Mode};
use serde_json::Value;

#[test]
fn probes_report_the_links_or_why_not() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let f = calitrace::run(
        Some(&lab.node(1).netns),
        &[],
        &["probes"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let line = f
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ok   netfilter links") || l.starts_with("no   netfilter links"))
        .unwrap_or_else(|| panic!("no netfilter links probe\n{}", f.stdout));
    if NETFILTER_LINKS.present() {
        assert_eq!(
            line, "ok   netfilter links (6.4+): loadable",
            "{}",
            f.stdout
        );
    } else {
        assert!(
            line.starts_with("no   netfilter links (6.4+): ")
                && (kernel::version() >= (6, 4) || line.contains("older than 6.4")),
            "{}",
            f.stdout
        );
    }
}

/// Waits until `pid` holds netfilter links (they are linked on demand, at
/// the first netfilter drop no table walk saw); the links.
fn wait_for_links(pid: u32) -> Vec<NfLink> {
    for _ in 0..60 {
        let links = netfilter_links_of(pid);
        if !links.is_empty() {
            return links;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Vec::new()
}

/// Traces on node 1 while node 0 pings node 1's own underlay address twice:
/// the first drop finds no netfilter links (they are linked because of it),
/// the second passes them. Returns the output and the links calitrace held
/// between the pings (none where the kernel has no links).
fn ping_node_twice(lab: &Lab, signal: i32) -> (Finished, Vec<NfLink>) {
    let t = Trace::start(&lab.node(1).netns, &["--drops-only"]).unwrap();
    let pid = t.pid().unwrap();
    assert!(
        netfilter_links_of(pid).is_empty(),
        "no links before a netfilter drop"
    );
    let ping = || {
        assert!(
            // One ping each: a second drop by the same rule can land between
            // the first one and the counter reading that names its rule.
            !lab.ping_from(&lab.node(0).netns, &lab.node(1).underlay_ip, 1),
            "the fault drops the ping"
        );
    };
    ping();
    let ours = if NETFILTER_LINKS.present() {
        wait_for_links(pid)
    } else {
        Vec::new()
    };
    std::thread::sleep(Duration::from_millis(300));
    ping();
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop_with(signal).unwrap();
    if signal == libc::SIGINT {
        assert!(f.status.success(), "{}", f.dump());
    }
    (f, ours)
}

/// Pings to node 1 dropped in its INPUT chain (`backend`), traced there
/// until `signal`; also the netfilter links calitrace held while it ran.
fn input_drop(signal: i32, backend: Backend) -> (Lab, Finished, Vec<NfLink>) {
    let lab = Lab::new(Mode::Direct).unwrap();
    lab.iptables(1, backend, &["-A", "INPUT", "-p", "icmp", "-j", "DROP"])
        .unwrap();
    let (f, ours) = ping_node_twice(&lab, signal);
    (lab, f, ours)
}

/// The drops of the pings from node 0 to node 1, oldest first.
fn drops_of(lab: &Lab, f: &Finished) -> Vec<Value> {
    let drops = f.drops();
    let flow = Finished::between(&drops, &lab.node(0).underlay_ip, &lab.node(1).underlay_ip);
    assert!(!flow.is_empty(), "no drop for the ping\n{}", f.dump());
    flow.into_iter().cloned().collect()
}

/// `HOOK point` (or `HOOK after PRIO`) of every link point in a journey.
fn points(d: &Value) -> Vec<String> {
    d["journey"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h.get("point").is_some())
        .map(|h| {
            let hook = h["netfilter"]["hook"].as_str().unwrap_or("?");
            match h["priority"].as_i64() {
                Some(p) => format!("{hook} {} {p}", h["point"].as_str().unwrap()),
                None => format!("{hook} {}", h["point"].as_str().unwrap()),
            }
        })
        .collect()
}

fn links_attached(f: &Finished) -> String {
    let start = f
        .of_type("start")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no start line\n{}", f.dump()))
        .clone();
    let p = start["probes_attached"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "netfilter links (6.4+)")
        .unwrap_or_else(|| panic!("netfilter links not attached: {start}"));
    p["detail"].as_str().unwrap().to_string()
}

/// (link id, prog id, hooknum, priority) of a netfilter link.
type NfLink = (u32, u32, u32, i64);

/// The netfilter links `pid` holds, from its fdinfo.
fn netfilter_links_of(pid: u32) -> Vec<NfLink> {
    let mut out = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        // `key:\tvalue` pairs, several on a line for netfilter links
        // (`pf:\t2\thooknum:\t0\tprio:\t-2147483647`).
        let words: Vec<&str> = info.split_whitespace().collect();
        let field = |k: &str| {
            let key = format!("{k}:");
            words
                .windows(2)
                .find(|w| w[0] == key)
                .map(|w| w[1].to_string())
        };
        if field("link_type").as_deref() != Some("netfilter") {
            continue;
        }
        let num = |k: &str| field(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        out.push((
            num("link_id") as u32,
            num("prog_id") as u32,
            num("hooknum") as u32,
            num("prio"),
        ));
    }
    out
}

/// Whether a BPF link with this id exists anywhere (BPF_LINK_GET_FD_BY_ID).
fn link_exists(id: u32) -> bool {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: bpf(2) with an attr buffer (the link id, then zeros) of its
    // stated length, which outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd bpf(2) just returned, owned by nothing else.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    false
}

/// `(hook, backend, table, chain)` of a drop's netfilter details.
fn place(d: &Value) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    let nf = &d["netfilter"];
    (
        nf["hook"].as_str(),
        nf["backend"].as_str(),
        nf["table"].as_str(),
        nf["chain"].as_str(),
    )
}

fn has_points(d: &Value) -> bool {
    d["journey"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h.get("point").is_some())
}

/// Without links (before 6.4) an INPUT drop is still found, its hook from the
/// packet's addresses and its table and chain from the counters; the start
/// line says why there are no links, and calitrace holds none.
fn input_drop_without_links(lab: &Lab, f: &Finished, ours: &[NfLink]) {
    assert!(ours.is_empty(), "{ours:?}");
    let start = f.of_type("start");
    let why = start
        .first()
        .and_then(|s| s["probes_unavailable"].as_array())
        .and_then(|u| u.iter().find(|p| p["name"] == "netfilter links (6.4+)"))
        .unwrap_or_else(|| panic!("netfilter links not listed as unavailable\n{}", f.dump()));
    assert!(
        why["reason"].as_str().unwrap().contains("older than 6.4"),
        "{why}"
    );
    for d in drops_of(lab, f) {
        assert_eq!(
            (d["stage"].as_str(), d["reason"].as_str()),
            (Some("netfilter"), Some("NETFILTER_DROP")),
            "{d}"
        );
        assert_eq!(
            place(&d),
            (Some("INPUT"), Some("legacy"), Some("filter"), Some("INPUT")),
            "{d}"
        );
        assert!(!has_points(&d), "no link points without links: {d}");
    }
}

/// Whether the drop was seen by a table walk (fexit): then the links can
/// change no answer and are never linked.
fn exact(d: &Value) -> bool {
    d["netfilter"]["attribution"] == "exact"
}

/// An INPUT drop (iptables `backend`): the first one, before any link was
/// there, gets its hook from addresses and its table and chain from the
/// counters; it makes calitrace link the points, so that the next one gets
/// its hook from them and its journey shows the hooks it passed; every link
/// goes when calitrace exits.
fn input_drop_named_first_and_by_the_links(backend: Backend, name: &str) {
    let (lab, f, ours) = input_drop(libc::SIGINT, backend);
    if !NETFILTER_LINKS.present() {
        if backend == Backend::Legacy {
            input_drop_without_links(&lab, &f, &ours);
        }
        return;
    }
    assert!(
        links_attached(&f).contains("entry and exit of PREROUTING, INPUT, FORWARD")
            && links_attached(&f).contains("linked from the first netfilter drop"),
        "{}",
        f.dump()
    );
    let drops = drops_of(&lab, &f);
    assert_eq!(drops.len(), 2, "{}", f.dump());
    for d in &drops {
        assert_eq!(d["stage"], "netfilter", "{d}");
        assert_eq!(
            place(d),
            (Some("INPUT"), Some(name), Some("filter"), Some("INPUT")),
            "the hook is named for every drop, the first included: {d}"
        );
    }
    if exact(&drops[0]) {
        assert!(
            ours.is_empty(),
            "exact attribution needs no links: {ours:?}"
        );
        return;
    }
    assert!(
        !has_points(&drops[0]),
        "no links before the first drop: {}",
        drops[0]
    );
    let d = &drops[1];
    let seen = points(d);
    let at = |p: &str| {
        seen.iter()
            .position(|s| s == p)
            .unwrap_or_else(|| panic!("no {p} in the journey {seen:?}\n{d}"))
    };
    assert!(at("PREROUTING entry") < at("PREROUTING exit"), "{seen:?}");
    assert!(at("PREROUTING exit") < at("INPUT entry"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.starts_with("INPUT after 0") || s == "INPUT exit"),
        "it died in INPUT's filter table: {seen:?}"
    );
    let hops = d["journey"].as_array().unwrap();
    assert!(
        hops.iter()
            .any(|h| h["ifname"] == "eth0" && h["dir"] == "ingress"),
        "the tc sighting is still there: {d}"
    );
    assert!(
        hops.iter()
            .filter(|h| h.get("point").is_some())
            .all(|h| h["dir"] == "netfilter" && h.get("verdict").is_none()),
        "{d}"
    );

    // Entry and exit of 5 hooks for IPv4 and IPv6, and after the filter table.
    assert!(ours.len() >= 26, "{ours:?}");
    let hooks: BTreeSet<u32> = ours.iter().map(|l| l.2).collect();
    assert_eq!(hooks, (0..5).collect(), "{ours:?}");
    let prios: BTreeSet<i64> = ours.iter().map(|l| l.3).collect();
    assert!(
        prios.contains(&(i32::MIN as i64 + 1)) && prios.contains(&(i32::MAX as i64 - 1)),
        "{prios:?}"
    );
    assert!(prios.contains(&1), "just after the filter table: {prios:?}");
    for (link, _, _, _) in &ours {
        assert!(!link_exists(*link), "link {link} outlived calitrace");
    }
}

#[test]
fn input_drop_gets_its_hook_first_and_from_the_links_legacy() {
    input_drop_named_first_and_by_the_links(Backend::Legacy, "legacy");
}

#[test]
fn input_drop_gets_its_hook_first_and_from_the_links_nft() {
    input_drop_named_first_and_by_the_links(Backend::Nft, "nft");
}

/// A raw PREROUTING drop of a packet to the node itself, where addresses
/// alone would say INPUT: the first drop's hook comes from the counters (a
/// base chain names its hook), the next one's from the links.
fn raw_prerouting_drop(backend: Backend, name: &str) {
    if kernel::must_skip(NETFILTER_LINKS) {
        return;
    }
    let lab = Lab::new(Mode::Direct).unwrap();
    lab.iptables(
        1,
        backend,
        &["-t", "raw", "-A", "PREROUTING", "-p", "icmp", "-j", "DROP"],
    )
    .unwrap();
    let (f, _) = ping_node_twice(&lab, libc::SIGINT);
    let drops = drops_of(&lab, &f);
    assert_eq!(drops.len(), 2, "{}", f.dump());
    for d in &drops {
        assert_eq!(
            place(d),
            (
                Some("PREROUTING"),
                Some(name),
                Some("raw"),
                Some("PREROUTING")
            ),
            "the counters of the right hook's chains: {d}"
        );
    }
    if exact(&drops[0]) {
        return;
    }
    let seen = points(&drops[1]);
    assert!(seen.contains(&"PREROUTING entry".to_string()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s == "PREROUTING exit" || s.starts_with("INPUT")),
        "{seen:?}"
    );
}

#[test]
fn a_raw_prerouting_drop_is_not_taken_for_input_legacy() {
    raw_prerouting_drop(Backend::Legacy, "legacy");
}

#[test]
fn a_raw_prerouting_drop_is_not_taken_for_input_nft() {
    raw_prerouting_drop(Backend::Nft, "nft");
}

#[test]
fn a_forward_drop_shows_which_tables_it_got_past() {
    if kernel::must_skip(NETFILTER_LINKS) {
        return;
    }
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.nft(1, "table inet ctlinks { chain fwdchain { type filter hook forward priority -5; policy accept; counter\n }\n }")
        .unwrap();
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let t = Trace::start(&lab.node(1).netns, &["--drops-only"]).unwrap();
    assert!(!lab.ping(&a, &b.ip, 1));
    wait_for_links(t.pid().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!lab.ping(&a, &b.ip, 1));
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert!(
        links_attached(&f).contains("after priorities -5, 0"),
        "{}",
        f.dump()
    );
    let drops = f.drops();
    let flow = Finished::between(&drops, &a.ip, &b.ip);
    assert_eq!(flow.len(), 2, "{}", f.dump());
    for d in &flow {
        assert_eq!(d["netfilter"]["hook"], "FORWARD", "{d}");
        assert_eq!(d["netfilter"]["backend"], "legacy", "{d}");
    }
    if exact(flow[0]) {
        return;
    }
    let seen = points(flow[1]);
    for p in [
        "PREROUTING entry",
        "PREROUTING exit",
        "FORWARD entry",
        "FORWARD after -5",
    ] {
        assert!(seen.iter().any(|s| s == p), "no {p} in {seen:?}");
    }
    assert!(
        !seen
            .iter()
            .any(|s| s == "FORWARD after 0" || s == "FORWARD exit"),
        "the legacy filter table at 0 dropped it: {seen:?}"
    );
}

#[test]
fn links_go_away_when_calitrace_is_killed() {
    if kernel::must_skip(NETFILTER_LINKS) {
        return;
    }
    if calitrace::attribution().expected_for("legacy") == "exact" {
        // A table walk names legacy drops: the links are never linked.
        return;
    }
    let (_lab, _, ours) = input_drop(libc::SIGKILL, Backend::Legacy);
    assert!(ours.len() >= 20, "{ours:?}");
    // The kernel releases them with the process's files, shortly after.
    std::thread::sleep(Duration::from_millis(500));
    for (link, _, _, _) in &ours {
        assert!(
            !link_exists(*link),
            "link {link} outlived a killed calitrace"
        );
    }
}

/// Healthy traffic (pings answered, pod to pod and to the node) never makes
/// calitrace link the points; a netfilter drop does, and they are unlinked
/// again once no such drop came for the quiet period (10 s).
#[test]
fn links_only_while_netfilter_drops_need_them() {
    if kernel::must_skip(NETFILTER_LINKS) {
        return;
    }
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let mut t = Trace::start(&lab.node(1).netns, &["--drops-only"]).unwrap();
    let pid = t.pid().unwrap();
    assert!(lab.ping(&a, &b.ip, 3), "pod to pod");
    assert!(lab.ping_from(&lab.node(0).netns, &lab.node(1).underlay_ip, 3));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(netfilter_links_of(pid), vec![], "healthy traffic: no links");

    lab.iptables(
        1,
        Backend::Legacy,
        &["-A", "FORWARD", "-p", "icmp", "-j", "DROP"],
    )
    .unwrap();
    assert!(!lab.ping(&a, &b.ip, 1));
    let ours = wait_for_links(pid);
    if ours.is_empty() {
        // Only with exact attribution (fexit): then links can change nothing.
        let f = t.stop().unwrap();
        let drops = f.drops();
        assert!(drops.iter().all(|d| exact(d)), "{}", f.dump());
        return;
    }
    assert!(ours.len() >= 20, "{ours:?}");
    t.wait_for_stderr("netfilter link points unlinked", Duration::from_secs(15))
        .unwrap();
    assert_eq!(netfilter_links_of(pid), vec![], "unlinked while running");
    for (link, _, _, _) in &ours {
        assert!(
            !link_exists(*link),
            "link {link} stayed after the quiet period"
        );
    }
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drops = f.drops();
    let flow = Finished::between(&drops, &a.ip, &b.ip);
    assert_eq!(flow.len(), 1, "{}", f.dump());
    assert_eq!(flow[0]["netfilter"]["hook"], "FORWARD", "{}", flow[0]);
}
