//! The figures that need the kernel: datapath overhead, lost events under
//! real traffic, live memory, attach/detach. Everything runs in a lab
//! ([`calitrace_tests::Lab`]): traffic only flows between its namespaces.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use calitrace_tests::calitrace::{self, Keep, Trace};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

use crate::util::{MIB, Row, median, rss_kib};

/// calitrace (`bin`) tracing in a lab namespace, keeping only the end of its
/// stdout (JSON lines), where the `stats` line ends up.
pub(crate) fn start_bin(bin: &Path, netns: &str, args: &[&str]) -> Result<Trace> {
    Trace::start_with(bin, netns, args, Keep::Tail(256 << 10))
}

/// The binary under test (`$CALITRACE_BIN`: `cargo xtask bench` builds it) tracing
/// in a lab namespace.
fn start(netns: &str, args: &[&str]) -> Result<Trace> {
    start_bin(&calitrace::binary(), netns, args)
}

/// SIGINT, wait for the exit; (time to exit, the `stats` line).
pub(crate) fn stop(t: Trace) -> Result<(Duration, Value)> {
    let f = t.stop()?;
    if !f.status.success() {
        bail!("calitrace exited with {}: {}", f.status, f.stderr);
    }
    let stats = f
        .of_type("stats")
        .last()
        .map(|v| (*v).clone())
        .ok_or_else(|| anyhow!("no stats line from calitrace"))?;
    Ok((f.waited, stats))
}

/// `iperf3 -s` in a lab namespace, killed when dropped.
pub(crate) struct Iperf3Server(Child);

impl Iperf3Server {
    pub(crate) fn start(netns: &str, port: u16) -> Result<Iperf3Server> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "iperf3",
                "-s",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (apt-get install iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Iperf3Server(child))
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an iperf3 client in `netns`, returns its JSON report.
pub(crate) fn iperf3(lab: &Lab, netns: &str, args: &[&str]) -> Result<Value> {
    let mut full = vec!["iperf3", "-J"];
    full.extend_from_slice(args);
    let out = lab.run(netns, &full)?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 {args:?}: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3 {args:?}: {e}");
    }
    Ok(v)
}

/// TCP throughput (bit/s, as received) from an iperf3 report.
pub(crate) fn tcp_bps(v: &Value) -> Result<f64> {
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("no end.sum_received in iperf3 output"))
}

/// UDP packets per second that arrived, from an iperf3 report.
pub(crate) fn udp_pps(v: &Value) -> Result<f64> {
    let s = &v["end"]["sum"];
    let (packets, lost, secs) = (
        s["packets"].as_f64(),
        s["lost_packets"].as_f64(),
        s["seconds"].as_f64(),
    );
    match (packets, lost, secs) {
        (Some(p), Some(l), Some(t)) if t > 0.0 => Ok((p - l) / t),
        _ => bail!("no end.sum packets in iperf3 output: {}", s),
    }
}

pub(crate) fn event_count(stats: &Value, key: &str) -> f64 {
    stats["events"][key].as_f64().unwrap_or(0.0)
}

/// Lost events with real traffic paced at `rate` events/s on node A (each
/// UDP packet from pod A to pod B passes two tc hooks there), then the
/// pipeline's rate on a recording of real traffic.
/// Every event the kernel side emitted (all probes), from a `stats` line.
pub(crate) fn events_emitted(stats: &Value) -> f64 {
    ["tc", "kfree_skb", "netfilter_verdicts", "netfilter_links"]
        .iter()
        .map(|k| event_count(stats, k))
        .sum()
}

/// Sends 64-byte UDP datagrams from `from` to `to_ip:port` at `pps` for
/// `secs`, paced every 32 packets; the receiving pod reads them (no ICMP
/// errors). Returns the packets sent.
pub(crate) fn paced_udp(
    from: &str,
    to_netns: &str,
    to_ip: &str,
    pps: f64,
    secs: f64,
) -> Result<u64> {
    let port = 5300;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let receiver = calitrace_tests::lab::spawn_in_netns(to_netns, move || -> Result<()> {
        let s = UdpSocket::bind(("0.0.0.0", port))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = [0u8; 2048];
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = s.recv(&mut buf);
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(100));
    let dst: std::net::Ipv4Addr = to_ip.parse()?;
    let sent = Lab::in_netns(from, move || -> Result<u64> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        let t = Instant::now();
        let mut n: u64 = 0;
        while t.elapsed().as_secs_f64() < secs {
            for _ in 0..32 {
                let _ = s.send_to(&[0u8; 64], (dst, port));
                n += 1;
            }
            let due = Duration::from_secs_f64(n as f64 / pps);
            if let Some(wait) = due.checked_sub(t.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    })??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = receiver.join();
    Ok(sent)
}

/// Lost events with real traffic paced so that calitrace on node A gets
/// `rate` events/s (a calibration run finds how many events a packet makes),
/// then the pipeline's rate on a recording of real traffic.
pub fn lost(rate: u64, secs: u32, dir: &Path) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(0).netns.clone();
    let tracer = start(&node, &[])?;
    let sent = paced_udp(&a.netns, &b.netns, &b.ip, 5_000.0, 1.0)?;
    let (_, stats) = stop(tracer)?;
    let per_packet = (events_emitted(&stats) / sent as f64).max(1.0);
    let pps = rate as f64 / per_packet;
    eprintln!(
        "lost: {per_packet:.2} events per UDP packet on node A: sending {pps:.0} packets/s for {secs} s"
    );

    let tracer = start(&node, &[])?;
    let cpu_at_ready = tracer.cpu_s();
    let began = Instant::now();
    let sent = paced_udp(&a.netns, &b.netns, &b.ip, pps, f64::from(secs))?;
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = tracer.cpu_s() - cpu_at_ready;
    let (_, stats) = stop(tracer)?;
    let events = events_emitted(&stats);
    let lost = stats["lost"].as_f64().unwrap_or(f64::NAN);
    // Over the sending time: the events all come from the paced packets.
    let achieved = (events + lost) / f64::from(secs);
    eprintln!(
        "lost: {sent} packets in {elapsed:.1} s; calitrace: {events} events ({achieved:.0}/s), lost {lost}, {cpu:.2} s CPU"
    );
    Row::new("pipeline", format!("lost events at {:.0}k ev/s of real traffic for {secs} s", achieved / 1e3), lost, "events")
        .target("0 lost at 100k ev/s", lost == 0.0 && achieved >= 0.9 * rate as f64)
        .note(format!(
            "paced 64-byte UDP pod to pod ({per_packet:.1} events per packet on node A), `-o json`, default 8 MiB ring; calitrace used {:.0}% of a CPU",
            100.0 * cpu / elapsed
        ))
        .emit();

    replay_real_traffic(&lab, &node, dir)
}

/// The pipeline's rate on a recording of real traffic (TCP, paced UDP,
/// ping) of the lab.
fn replay_real_traffic(lab: &Lab, node: &str, dir: &Path) -> Result<()> {
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let _srv = Iperf3Server::start(&b.netns, 5201)?;
    let _srv2 = Iperf3Server::start(&b.netns, 5202)?;
    // A recording of real traffic (TCP, paced UDP, ping), replayed here.
    let path = dir.join("real-traffic.calitrace");
    let p = path.to_string_lossy().into_owned();
    let tracer = start(node, &["-w", &p])?;
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &a.netns, "ping", "-q", "-i", "0.01", "-c", "300", &b.ip,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let udp_rate = format!("{}", 20_000 * 64 * 8);
    let udp = Command::new("ip")
        .args([
            "netns", "exec", &a.netns, "iperf3", "-c", &b.ip, "-p", "5202", "-u", "-l", "64", "-b",
            &udp_rate, "-t", "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    iperf3(
        lab,
        &a.netns,
        &["-c", &b.ip, "-p", "5201", "-t", "3", "-P", "4"],
    )?;
    for mut c in [ping, udp] {
        let _ = c.wait();
    }
    stop(tracer)?;
    let mut rates = vec![];
    let mut n = 0;
    for _ in 0..3 {
        let (events, s) = crate::userspace::replay_file(&path, true, true, false)?;
        rates.push(events as f64 / s);
        n = events;
    }
    std::fs::remove_file(&path).ok();
    Row::new(
        "pipeline",
        "decode + process, recording of real lab traffic",
        median(&rates),
        "ev/s",
    )
    .samples(&rates)
    .target(">= 2M ev/s per core", median(&rates) >= 2e6)
    .note(format!(
        "{n} events: 4 TCP streams, UDP, ping; read from the file included"
    ))
    .emit();
    Ok(())
}

/// Peak RSS of a live calitrace while 100k flows pass node A.
pub fn memory_live(flows: u32) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(0).netns.clone();
    let tracer = start(&node, &[])?;
    let pid = tracer.pid().context("pid")?.to_string();
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = rss_kib(&pid).unwrap_or_default();
    // One UDP packet to each of `flows` ports of pod B, ~50k packets/s, twice:
    // every flow is in calitrace's tables at once.
    let dst: std::net::Ipv4Addr = b.ip.parse()?;
    let sent = Lab::in_netns(&a.netns, move || -> Result<u64> {
        // Two source ports x 50k destination ports: `flows` distinct 5-tuples.
        let socks = [UdpSocket::bind("0.0.0.0:0")?, UdpSocket::bind("0.0.0.0:0")?];
        let mut n = 0;
        for _round in 0..2 {
            let t = Instant::now();
            for i in 0..flows {
                let port = 10_000 + (i % 50_000) as u16;
                let s = &socks[(i / 50_000) as usize % 2];
                let _ = s.send_to(&[0u8; 16], (dst, port));
                n += 1;
                if i % 1000 == 999 {
                    let due = Duration::from_micros(u64::from(i) * 20);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        Ok(n)
    })??;
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = rss_kib(&pid).unwrap_or_default();
    let (_, stats) = stop(tracer)?;
    eprintln!(
        "memory (live): {sent} packets; calitrace RSS idle {idle} KiB, after {rss} KiB, peak {hwm} KiB; {} tc events, lost {}",
        event_count(&stats, "tc"),
        stats["lost"]
    );
    let _ = a;
    let peak = hwm as f64 / 1024.0;
    let per_packet = events_emitted(&stats) / sent as f64;
    Row::new("memory", format!("live calitrace, {}k flows through node A: peak RSS", flows / 1000), peak, "MiB")
        .baseline(idle as f64 / 1024.0)
        .target("<= 64 MiB", peak <= 64.0)
        .note(format!(
            "`-o json`; baseline: idle after start; 2 x 100k UDP packets, {per_packet:.1} events each; RSS {:.1} MiB after; the ring (8 MiB) counts twice (mapped twice)",
            rss as f64 / 1024.0
        ))
        .emit();
    Ok(())
}

/// `X` of calitrace's "tc attach done: ... (X s in the background)"; NaN
/// when the line says no time.
fn background_secs(line: &str) -> f64 {
    line.rsplit_once('(')
        .and_then(|(_, tail)| tail.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Time to attach to (until "tracing on") and detach from (SIGINT to exit)
/// `n` cali* interfaces, against one interface.
pub fn attach(n: usize, reps: usize) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let node = lab.node(0).netns.clone();
    add_cali_veths(&node, n)?;
    let count = lab.sh(&node, "ip -o link show | grep -c ': cali'")?;
    eprintln!(
        "attach: {} cali* interfaces on node A, {reps} repetitions",
        count.trim()
    );
    let (mut all, mut one, mut netlink) = (Attach::default(), Attach::default(), Attach::default());
    for _ in 0..reps {
        all.measure(&node, "cali*", "auto")?;
        one.measure(&node, "eth0", "auto")?;
        netlink.measure(&node, "cali*", "netlink")?;
        eprintln!(
            "  {n} ifaces: attach {:.3} s, detach {:.3} s; 1 iface: {:.3} s, {:.3} s; {n} ifaces with --tc-attach netlink: {:.3} s, {:.3} s",
            all.up.last().unwrap(),
            all.down.last().unwrap(),
            one.up.last().unwrap(),
            one.down.last().unwrap(),
            netlink.up.last().unwrap(),
            netlink.down.last().unwrap()
        );
    }
    attach_rows(n, &all, &one, &netlink);
    let _ = MIB;
    Ok(())
}

/// The lab has one cali* veth on node A; adds the rest as veth pairs whose
/// both ends stay inside node A.
fn add_cali_veths(node: &str, n: usize) -> Result<()> {
    let mut script = String::new();
    for i in 1..n {
        script.push_str(&format!(
            "link add cali{i:011x} type veth peer name peer{i:06x}\nlink set cali{i:011x} up\nlink set peer{i:06x} up\n"
        ));
    }
    let batch = std::env::temp_dir().join(format!("calitrace-bench-veths-{}", std::process::id()));
    std::fs::write(&batch, script)?;
    let out = Command::new("ip")
        .args(["-n", node, "-batch"])
        .arg(&batch)
        .output()?;
    std::fs::remove_file(&batch).ok();
    if !out.status.success() {
        bail!("creating veths: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Attach and detach times of repeated runs: start to "tracing on", SIGINT
/// to exit, and seconds after "tracing on" until the last interface had its
/// programs.
#[derive(Default)]
struct Attach {
    up: Vec<f64>,
    down: Vec<f64>,
    rest: Vec<f64>,
}

impl Attach {
    fn measure(&mut self, node: &str, glob: &str, how: &str) -> Result<()> {
        let mut t = start(node, &["--iface", glob, "--tc-attach", how])?;
        let ready = t.ready_after.as_secs_f64();
        // The rest attach in the background: detach is timed with all attached.
        self.rest.push(
            if t.wait_for_stderr("tracing on", Duration::ZERO)?
                .contains("in the background")
            {
                background_secs(&t.wait_for_stderr("tc attach done", Duration::from_secs(300))?)
            } else {
                0.0
            },
        );
        std::thread::sleep(Duration::from_millis(200));
        let (exit, _) = stop(t)?;
        self.up.push(ready);
        self.down.push(exit.as_secs_f64());
        Ok(())
    }
}

/// The attach section's rows: `n` interfaces against one, TCX against
/// netlink.
fn attach_rows(n: usize, all: &Attach, one: &Attach, netlink: &Attach) {
    let (un, dn, u1, d1) = (
        median(&all.up),
        median(&all.down),
        median(&one.up),
        median(&one.down),
    );
    Row::new(
        "attach",
        format!("start to \"tracing on\", {n} cali* interfaces"),
        un,
        "s",
    )
    .baseline(u1)
    .target("< 1 s", un < 1.0)
    .samples(&all.up)
    .note(format!(
        "{:.3} s with 1 interface: {:.3} s for the other {}; all {n} attached {:.2} s after \"tracing on\" (in the background)",
        u1,
        un - u1,
        n - 1,
        median(&all.rest)
    ))
    .emit();
    Row::new(
        "attach",
        format!("SIGINT to exit (detach), {n} cali* interfaces"),
        dn,
        "s",
    )
    .baseline(d1)
    .target("< 1 s", dn < 1.0)
    .samples(&all.down)
    .note(format!("{d1:.3} s with 1 interface"))
    .emit();
    let (unl, dnl) = (median(&netlink.up), median(&netlink.down));
    Row::new(
        "attach",
        format!("start to \"tracing on\", {n} cali* interfaces, `--tc-attach netlink`"),
        unl,
        "s",
    )
    .baseline(un)
    .target("< 1 s", unl < 1.0)
    .samples(&netlink.up)
    .note(format!("baseline: TCX (the default); all {n} attached {:.2} s after \"tracing on\"; clsact qdisc + filters need no RCU grace period per attach, but a SIGKILL leaves them behind", median(&netlink.rest)))
    .emit();
    Row::new(
        "attach",
        format!("SIGINT to exit (detach), {n} cali* interfaces, `--tc-attach netlink`"),
        dnl,
        "s",
    )
    .baseline(dn)
    .target("< 1 s", dnl < 1.0)
    .samples(&netlink.down)
    .emit();
}
