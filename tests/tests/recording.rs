//! Recording with `-w` and replaying: equivalence with the live run, damaged
//! files, pcapng export, and replay without privileges.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calitrace-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A live capture of an rp_filter fault (drops, a diagnosis that reads a
/// sysctl and a route) written to `file`; returns the live JSON run.
fn capture(file: &Path) -> Finished {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let nb = lab.node(1).netns.clone();
    lab.sh(&nb, &format!("ip route add {}/32 dev {}", a.ip, b.cali))
        .unwrap();
    lab.sysctl(&nb, "net.ipv4.conf.all.rp_filter", "1").unwrap();
    let t = Trace::start(&nb, &["-w", file.to_str().unwrap()]).unwrap();
    lab.ping(&a, &b.ip, 3);
    std::thread::sleep(Duration::from_millis(1200));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    f
}

fn replay(file: &Path, args: &[&str]) -> Finished {
    let mut full = vec!["replay", file.to_str().unwrap()];
    full.extend_from_slice(args);
    calitrace::run(None, &[], &full, Duration::from_secs(60)).unwrap()
}

fn content(f: &Finished) -> Vec<&Value> {
    f.lines
        .iter()
        .filter(|v| matches!(v["type"].as_str(), Some("packet" | "drop" | "diagnosis")))
        .collect()
}

#[test]
fn replay_shows_what_live_tracing_showed() {
    let dir = tmpdir("equiv");
    let file = dir.join("rp.calitrace");
    let live = capture(&file);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let replayed = replay(&file, &["--output", "json"]);
    assert!(replayed.status.success(), "{}", replayed.dump());
    let (l, r) = (content(&live), content(&replayed));
    assert!(
        l.iter()
            .any(|v| v["type"] == "diagnosis" && v["code"] == "RP_FILTER"),
        "{}",
        live.dump()
    );
    assert_eq!(
        l.len(),
        r.len(),
        "same number of records\nlive:\n{}\nreplay:\n{}",
        live.dump(),
        replayed.dump()
    );
    for (a, b) in l.iter().zip(&r) {
        assert_eq!(a, b, "records differ");
    }
    let stats = replayed.of_type("stats");
    assert_eq!(stats.len(), 1);
    assert!(
        stats[0]["events"]["tc"].as_u64().unwrap() > 0,
        "kernel counters are recorded: {}",
        stats[0]
    );

    // The same FILTER syntax on replay.
    let icmp_only = replay(&file, &["--output", "json", "arp"]);
    assert!(icmp_only.status.success());
    let packets = icmp_only.of_type("packet");
    assert!(
        !packets.is_empty() && packets.iter().all(|p| p["proto"] == "arp"),
        "{}",
        icmp_only.dump()
    );
    assert!(icmp_only.drops().is_empty());

    // Text view and paced replay work too.
    let text = replay(&file, &["--output", "text", "--speed", "50"]);
    assert!(
        text.status.success() && text.stdout.contains("DIAGNOSIS RP_FILTER"),
        "{}",
        text.stdout
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A xorshift generator from `seed`: each call a number below its argument.
fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

/// A damaged copy of `bytes`: cut at a random length if `truncate`, else
/// with three random bits flipped.
fn damage(bytes: &[u8], truncate: bool, rand: &mut impl FnMut(usize) -> usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if truncate {
        b.truncate(rand(bytes.len()));
    } else {
        for _ in 0..3 {
            let p = rand(b.len());
            b[p] ^= 1 << rand(8);
        }
    }
    b
}

/// The replay `f` of a damaged recording did not panic, exited with a code
/// that fits what it says on stderr (one line at most); if `cut_short` (a
/// truncated file) and it exited 0, it said so or ended at a frame boundary.
fn assert_a_clean_outcome(f: &Finished, cut_short: bool) {
    assert!(
        !f.stderr.contains("panicked"),
        "panic on damaged input:\n{}",
        f.stderr
    );
    let code = f.status.code().expect("exited, not killed");
    let err_lines: Vec<&str> = f.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        err_lines.len() <= 1,
        "at most one line on stderr: {:?}",
        f.stderr
    );
    match code {
        0 => {
            if let Some(l) = err_lines.first() {
                assert!(l.contains("cut short"), "{l}");
            }
            assert_eq!(
                f.of_type("stats").len(),
                1,
                "a complete run ends with stats"
            );
        }
        1 => assert!(
            err_lines[0].contains("corrupt") || err_lines[0].contains("cut short"),
            "{:?}",
            err_lines
        ),
        2 => assert!(
            err_lines[0].contains("recording") || err_lines[0].contains("header"),
            "{:?}",
            err_lines
        ),
        c => panic!("exit code {c}: {}", f.stderr),
    }
    if cut_short && code == 0 {
        assert!(
            !err_lines.is_empty() || f.lines.len() > 1,
            "a truncated file says so or ends at a frame boundary"
        );
    }
}

/// Empty, foreign and missing files (`broken` rewritten, in `dir`): one
/// clear error, usage exit code.
fn assert_non_recordings_refused(dir: &Path, broken: &Path) {
    std::fs::write(broken, b"").unwrap();
    let f = replay(broken, &[]);
    assert_eq!(f.status.code(), Some(2));
    assert!(f.stderr.contains("empty"), "{}", f.stderr);
    std::fs::write(broken, b"#!/bin/sh\necho not a recording\n").unwrap();
    let f = replay(broken, &[]);
    assert_eq!(f.status.code(), Some(2));
    assert!(
        f.stderr.contains("not a calitrace recording"),
        "{}",
        f.stderr
    );
    let f = replay(&dir.join("missing"), &[]);
    assert_eq!(f.status.code(), Some(2));
    assert!(f.stderr.contains("cannot open"), "{}", f.stderr);
}

#[test]
fn damaged_recordings_never_panic() {
    let dir = tmpdir("damage");
    let file = dir.join("orig.calitrace");
    capture(&file);
    let bytes = std::fs::read(&file).unwrap();
    let mut rand = xorshift(0x2545F4914F6CDD1D ^ bytes.len() as u64);
    let broken = dir.join("broken.calitrace");
    for i in 0..24 {
        let truncate = i % 2 == 0;
        let b = damage(&bytes, truncate, &mut rand);
        std::fs::write(&broken, &b).unwrap();
        let f = replay(&broken, &["--output", "json"]);
        let cut_short = truncate && b.len() > 200 && b.len() < bytes.len();
        assert_a_clean_outcome(&f, cut_short);
    }
    // Empty and foreign files: one clear error, usage exit code.
    assert_non_recordings_refused(&dir, &broken);
    std::fs::remove_dir_all(&dir).ok();
}

/// Replays (`--drops-only`, JSON) a copy of `file` as an unprivileged user
/// (nobody), with all of `dir` given to it: the diagnosis and no packet.
fn replay_as_nobody(dir: &Path, file: &Path) {
    // An unprivileged user (nobody) with a copy it may read.
    let copy = dir.join("nobody.calitrace");
    std::fs::copy(file, &copy).unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534", dir.to_str().unwrap()])
        .status()
        .unwrap();
    Command::new("chmod")
        .args(["755", dir.to_str().unwrap()])
        .status()
        .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(calitrace::binary())
        .args([
            "replay",
            copy.to_str().unwrap(),
            "--output",
            "json",
            "--drops-only",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"code\":\"RP_FILTER\""), "{stdout}");
    assert!(!stdout.contains("\"type\":\"packet\""), "--drops-only");
}

/// Exports `file` as pcapng to `pcap`; tshark reads its packets and the drop
/// in a packet comment.
fn assert_the_pcapng_export(file: &Path, pcap: &Path) {
    let out = Command::new(calitrace::binary())
        .args(["replay", file.to_str().unwrap(), "--output", "pcap"])
        .stdout(std::fs::File::create(pcap).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tshark = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "frame.comment",
        ])
        .output()
        .expect("tshark is installed");
    assert!(
        tshark.status.success(),
        "{}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    let text = String::from_utf8_lossy(&tshark.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows.len() >= 3, "packets in the capture:\n{text}");
    assert!(
        rows.iter().any(|r| r.contains("10.244.1.10\t10.244.2.10")),
        "{text}"
    );
    assert!(
        rows.iter().any(|r| r.contains("IP_RPFILTER")),
        "the drop is in a packet comment:\n{text}"
    );
}

#[test]
fn replay_needs_no_privileges_and_exports_pcapng() {
    let dir = tmpdir("pcap");
    let file = dir.join("rec.calitrace");
    capture(&file);
    replay_as_nobody(&dir, &file);
    assert_the_pcapng_export(&file, &dir.join("out.pcapng"));
    std::fs::remove_dir_all(&dir).ok();
}
