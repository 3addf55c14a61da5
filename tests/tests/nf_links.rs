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

/// Traces on node 1 while node 0 pings node 1's own underlay address.
fn ping_node(lab: &Lab, signal: i32, during: impl FnOnce(&Trace)) -> Finished {
    let t = Trace::start(&lab.node(1).netns, &["--drops-only"]).unwrap();
    during(&t);
    assert!(
        // One ping: a second drop by the same rule can land between the
        // first one and the counter reading that names its rule.
        !lab.ping_from(&lab.node(0).netns, &lab.node(1).underlay_ip, 1),
        "the fault drops the ping"
    );
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop_with(signal).unwrap();
    if signal == libc::SIGINT {
        assert!(f.status.success(), "{}", f.dump());
    }
    f
}

/// Pings to node 1 dropped in its INPUT chain (legacy), traced there until
/// `signal`; also the netfilter links calitrace held while it ran.
fn input_drop(signal: i32) -> (Lab, Finished, Vec<NfLink>) {
    let lab = Lab::new(Mode::Direct).unwrap();
    lab.iptables(
        1,
        Backend::Legacy,
        &["-A", "INPUT", "-p", "icmp", "-j", "DROP"],
    )
    .unwrap();
    let mut ours = Vec::new();
    let f = ping_node(&lab, signal, |t| {
        ours = netfilter_links_of(t.pid().unwrap());
    });
    (lab, f, ours)
}

/// The last drop of the ping from node 0 to node 1.
fn drop_of(lab: &Lab, f: &Finished) -> Value {
    let drops = f.drops();
    let flow = Finished::between(&drops, &lab.node(0).underlay_ip, &lab.node(1).underlay_ip);
    assert!(!flow.is_empty(), "no drop for the ping\n{}", f.dump());
    flow[flow.len() - 1].clone()
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
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    false
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
    let d = drop_of(lab, f);
    let nf = &d["netfilter"];
    assert_eq!(
        (d["stage"].as_str(), d["reason"].as_str()),
        (Some("netfilter"), Some("NETFILTER_DROP")),
        "{d}"
    );
    assert_eq!(
        (
            nf["hook"].as_str(),
            nf["backend"].as_str(),
            nf["table"].as_str(),
            nf["chain"].as_str()
        ),
        (Some("INPUT"), Some("legacy"), Some("filter"), Some("INPUT")),
        "{d}"
    );
    assert!(
        d["journey"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h.get("point").is_none()),
        "no link points without links: {d}"
    );
}

#[test]
fn input_drop_gets_its_hook_from_the_links_which_go_away_on_exit() {
    let (lab, f, ours) = input_drop(libc::SIGINT);
    if !NETFILTER_LINKS.present() {
        input_drop_without_links(&lab, &f, &ours);
        return;
    }
    assert!(
        links_attached(&f).contains("entry and exit of PREROUTING, INPUT, FORWARD"),
        "{}",
        f.dump()
    );

    let d = drop_of(&lab, &f);
    let nf = &d["netfilter"];
    assert_eq!(d["stage"], "netfilter", "{d}");
    assert_eq!(
        (
            nf["hook"].as_str(),
            nf["backend"].as_str(),
            nf["table"].as_str()
        ),
        (Some("INPUT"), Some("legacy"), Some("filter")),
        "{d}"
    );
    if nf["attribution"] == "inferred" {
        // No fexit (this kernel): the hook came from the links.
        assert_eq!(nf["chain"], "INPUT", "{d}");
    }
    let seen = points(&d);
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
fn a_raw_prerouting_drop_is_not_taken_for_input() {
    if kernel::must_skip(NETFILTER_LINKS) {
        return;
    }
    // To the node's own address, so addresses alone would say INPUT.
    let lab = Lab::new(Mode::Direct).unwrap();
    lab.iptables(
        1,
        Backend::Legacy,
        &["-t", "raw", "-A", "PREROUTING", "-p", "icmp", "-j", "DROP"],
    )
    .unwrap();
    let f = ping_node(&lab, libc::SIGINT, |_| {});
    let d = drop_of(&lab, &f);
    let nf = &d["netfilter"];
    assert_eq!(nf["hook"], "PREROUTING", "{d}");
    assert_eq!(
        (nf["table"].as_str(), nf["chain"].as_str()),
        (Some("raw"), Some("PREROUTING")),
        "the counters of the right hook's chains: {d}"
    );
    let seen = points(&d);
    assert!(seen.contains(&"PREROUTING entry".to_string()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s == "PREROUTING exit" || s.starts_with("INPUT")),
        "{seen:?}"
    );
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
    let d = flow.last().unwrap_or_else(|| panic!("{}", f.dump()));
    assert_eq!(d["netfilter"]["hook"], "FORWARD", "{d}");
    assert_eq!(d["netfilter"]["backend"], "legacy", "{d}");
    let seen = points(d);
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
    let (_lab, _, ours) = input_drop(libc::SIGKILL);
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
