//! The TUI in a real terminal: `calitrace` under tmux inside a lab node with a
//! fault injected, driven with `send-keys` and read with `capture-pane`.
//!
//! Set `CALITRACE_TUI_CAPTURE=FILE` to keep the screen of the fault for the
//! README.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use calitrace_tests::calitrace::{self, binary};
use calitrace_tests::lab::Pod;
use calitrace_tests::{Backend, Lab, Mode};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Runs `script` with `sh -c` in a detached `width`x`height` session in `dir`.
    fn start(name: &str, dir: &Path, width: u16, height: u16, script: &str) -> Tmux {
        let t = Tmux {
            socket: format!("calitrace-test-{}-{name}", std::process::id()),
            session: name.to_string(),
        };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-c",
            dir.to_str().unwrap(),
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-u", "-f", "/dev/null", "-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("running tmux (Debian package tmux)")
    }

    fn capture(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `send-keys` with tmux key names (`Enter`, `Escape`, `Tab`, `q`, ...),
    /// one at a time: an Escape followed at once by another key would read
    /// as Alt+key, as in any terminal.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.tmux(&["send-keys", "-t", &self.session, k]);
            assert!(out.status.success(), "send-keys {k}");
            // Let the view take it in and draw (at most every 33 ms).
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Literal text, each character a key.
    fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", &self.session, "-l", text]);
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(300));
    }

    fn display(&self, format: &str) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", &self.session, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the screen satisfies `ok`; the last screen either way.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited {limit:?} for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pid of the shell running in the pane.
    fn pane_pid(&self) -> i32 {
        self.display("#{pane_pid}").parse().expect("pane pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// Children of `pid` (from /proc).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `sh -c` script: calitrace in `netns`, then its exit code and the
/// terminal's settings, then a long sleep so the pane stays to be read.
fn script(netns: Option<&str>, args: &str) -> String {
    let bin = binary();
    let run = match netns {
        Some(ns) => format!("ip netns exec {ns} {} {args}", bin.display()),
        None => format!("{} {args}", bin.display()),
    };
    format!(
        "{run}; echo \"EXIT=$?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo; sleep 600"
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calitrace-tui-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// calitrace exited 0 and left the terminal as it found it.
fn assert_exited_and_restored(t: &Tmux) -> String {
    let screen = t.wait_for("calitrace to exit", Duration::from_secs(30), |s| {
        s.contains("EXIT=") && (s.contains("icanon") || s.contains("echo "))
    });
    assert!(screen.contains("EXIT=0"), "exit status\n{screen}");
    let words: Vec<&str> = screen.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo") && !words.contains(&"-icanon"),
        "the terminal is out of raw mode\n{screen}"
    );
    assert_eq!(
        t.display("#{alternate_on}"),
        "0",
        "back from the alternate screen"
    );
    assert_eq!(t.display("#{cursor_flag}"), "1", "the cursor is visible");
    let left: Vec<String> = children(t.pane_pid()).into_iter().map(comm).collect();
    assert!(
        left.iter().all(|c| c == "sleep"),
        "only the pane's sleep is left: {left:?}"
    );
    screen
}

/// The TUI (`calitrace ARGS`) in a `width` x `height` pane on lab node B, once it
/// shows its main screen.
fn tui_on_node_b(
    lab: &Lab,
    name: &str,
    dir: &Path,
    (width, height): (u16, u16),
    args: &str,
) -> Tmux {
    let t = Tmux::start(
        name,
        dir,
        width,
        height,
        &script(Some(&lab.node(1).netns), args),
    );
    t.wait_for("the TUI", Duration::from_secs(60), main_screen_ready);
    t
}

/// The pid of calitrace in the pane (`ip netns exec` execs it: the shell's child).
fn calitrace_in_pane(t: &Tmux) -> i32 {
    children(t.pane_pid())
        .into_iter()
        .find(|&p| comm(p) == "calitrace")
        .expect("calitrace runs in the pane")
}

fn main_screen_ready(s: &str) -> bool {
    s.contains("Flows") && s.contains("Drop points") && s.contains("q quit")
}

/// The TUI shows the FORWARD drop of pings from `a` to `b`: the flow, where
/// it died, the journey, and a hint (the screen kept for the README if
/// `CALITRACE_TUI_CAPTURE` says where).
fn assert_the_drop_shown(t: &Tmux, a: &Pod, b: &Pod) {
    let screen = t.wait_for(
        "the drop point and its diagnosis",
        Duration::from_secs(20),
        |s| {
            s.contains("NETFILTER_DROP ×")
            && s.contains("netfilter legacy")
            // 4 pings, each seen once; the last 3 dropped once each.
            && s.contains("  4      3 DROP")
        },
    );
    // The flow, where it died, the journey and what to do.
    assert!(screen.contains(&format!("{} → {}", a.ip, b.ip)), "{screen}");
    assert!(screen.contains("DROP FORWARD legacy"), "{screen}");
    assert!(
        screen.contains("✗ FORWARD (legacy"),
        "the failing point of the journey\n{screen}"
    );
    assert!(screen.contains("eth0 ingress"), "{screen}");
    assert!(
        screen.contains(&format!("never reached {} egress", b.cali)),
        "where the ping that got through went next\n{screen}"
    );
    assert!(screen.contains("hint:"), "{screen}");
    if let Some(path) = std::env::var_os("CALITRACE_TUI_CAPTURE") {
        std::fs::write(path, &screen).unwrap();
    }
}

/// The details of the diagnosis, then of the flow, open with Enter and
/// close with Escape.
fn open_the_details(t: &Tmux) {
    // Details of the diagnosis: Tab to the panel, Enter.
    t.keys(&["Tab", "Tab", "Enter"]);
    let details = t.capture();
    assert!(
        details.contains("iptables-legacy-save -c") && details.contains("Esc closes"),
        "{details}"
    );
    t.keys(&["Escape"]);
    // Details of the flow, with its journey in order.
    t.keys(&["Tab", "Enter"]);
    let flow = t.capture();
    assert!(
        flow.contains("never reached") || flow.contains("✗"),
        "{flow}"
    );
    assert!(flow.contains("NETFILTER_DROP in"), "{flow}");
    t.keys(&["Escape", "j", "k"]);
}

/// Help, then a bad filter shown in place, then a good one in the header.
fn help_and_filters(t: &Tmux) {
    t.keys(&["?"]);
    assert!(t.capture().contains("quit and detach everything"));
    t.keys(&["Escape", "/"]);
    t.type_text("host 10.244.2.10 and prot 80");
    t.keys(&["Enter"]);
    let bad = t.capture();
    assert!(bad.contains("bad filter at column 22"), "{bad}");
    t.keys(&["C-u"]);
    t.type_text("icmp");
    t.keys(&["Enter"]);
    t.wait_for(
        "the new filter in the header",
        Duration::from_secs(5),
        |s| s.contains("filter: icmp"),
    );
}

/// Down to 80x24 and back up to 160x45: the view is redrawn to fit each time.
fn assert_redrawn_to_fit(t: &Tmux) {
    for (w, h) in [(80, 24), (160, 45)] {
        let out = t.tmux(&[
            "resize-window",
            "-t",
            &t.session,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
        ]);
        assert!(out.status.success(), "resize-window");
        let s = t.wait_for(
            &format!("a redraw at {w}x{h}"),
            Duration::from_secs(5),
            |s| {
                // Narrow: the backends go to a line of their own.
                let first = s.lines().next().unwrap_or("");
                s.contains("Journey")
                    && s.contains("Diagnosis")
                    && first.contains("backends") == (w > 150)
            },
        );
        assert!(s.contains("NETFILTER_DROP"), "{s}");
        assert!(s.lines().all(|l| l.chars().count() <= w), "{s}");
        assert!(s.lines().count() <= h, "{s}");
    }
}

/// The recording (`*.calitrace`) the TUI wrote in `dir`.
fn recording_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "calitrace"))
        .unwrap_or_else(|| panic!("no recording in {}", dir.display()))
}

/// `file` replays in the same view, which pauses, and Escape leaves it.
fn assert_the_recording_replays(dir: &Path, file: &Path) {
    let r = Tmux::start(
        "replay",
        dir,
        100,
        30,
        &script(None, &format!("replay {}", file.display())),
    );
    let s = r.wait_for("the replayed drop", Duration::from_secs(30), |s| {
        s.contains("replay finished") && s.contains("NETFILTER_DROP ×")
    });
    assert!(s.contains("netfilter legacy"), "{s}");
    r.keys(&["Space"]);
    assert!(r.capture().contains("PAUSED"));
    r.keys(&["Escape"]);
    assert_exited_and_restored(&r);
}

#[test]
fn tui_shows_a_netfilter_drop_and_detaches_on_q() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let dir = tmpdir("fault");
    let t = tui_on_node_b(&lab, "fault", &dir, (100, 32), "");

    // One ping gets through; then iptables-legacy's FORWARD policy drops.
    assert!(lab.ping(&a, &b.ip, 1), "the lab works before the fault");
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    assert!(!lab.ping(&a, &b.ip, 3), "the fault drops the ping");
    assert_the_drop_shown(&t, &a, &b);
    open_the_details(&t);
    help_and_filters(&t);

    // Pause: the view freezes, the session goes on.
    t.keys(&["Space"]);
    assert!(t.capture().contains("PAUSED"));
    t.keys(&["Space"]);
    assert!(!t.capture().contains("PAUSED"));

    // Record from the view, with more of the fault in it.
    t.keys(&["r"]);
    let rec = t.wait_for("recording", Duration::from_secs(5), |s| s.contains("● REC"));
    assert!(rec.contains("calitrace-"), "{rec}");
    assert!(!lab.ping(&a, &b.ip, 2));
    std::thread::sleep(Duration::from_millis(1500));

    assert_redrawn_to_fit(&t);

    t.keys(&["q"]);
    let after = assert_exited_and_restored(&t);
    assert!(
        after.contains("DIAGNOSIS NETFILTER_DROP"),
        "the diagnoses are printed on exit\n{after}"
    );
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
    calitrace::assert_nothing_attached(&lab, 1, "eth0");

    // The recording replays in the same view.
    let file = recording_in(&dir);
    drop(t);
    assert_the_recording_replays(&dir, &file);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tui_restores_the_terminal_on_sigterm() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let b = lab.pod(1, 0).clone();
    let dir = tmpdir("sigterm");
    let t = tui_on_node_b(&lab, "sigterm", &dir, (80, 24), "");
    let pid = calitrace_in_pane(&t);
    // SAFETY: kill(2) has no memory preconditions; pid is calitrace in the pane.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_exited_and_restored(&t);
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
    std::fs::remove_dir_all(&dir).ok();
}

/// The number after `word` on the screen (`LOST 12`, `lost 0`), if any.
fn number_after(screen: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = screen.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == word)
        .find_map(|w| w[1].trim_end_matches(',').parse().ok())
}

#[test]
fn tui_stays_responsive_under_a_flood() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let dir = tmpdir("flood");
    // A small ring buffer, so that the flood may well overflow it.
    let t = tui_on_node_b(&lab, "flood", &dir, (100, 30), "--ring-mib 1");
    std::thread::scope(|s| {
        let flood = s.spawn(|| {
            lab.sh(
                &a.netns,
                &format!("ping -f -q -w 12 {} >/dev/null || true", b.ip),
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        // Keys are answered at once while the events pour in.
        let asked = Instant::now();
        t.keys(&["?"]);
        t.wait_for("help during the flood", Duration::from_secs(3), |s| {
            s.contains("quit and detach everything")
        });
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
        t.keys(&["Escape"]);
        let during = t.wait_for("the flood's flow", Duration::from_secs(5), |s| {
            s.contains(&format!("{} → {}", a.ip, b.ip))
        });
        // Quitting works in the middle of the flood, and promptly.
        let quit = Instant::now();
        t.keys(&["q"]);
        let after = assert_exited_and_restored(&t);
        assert!(
            quit.elapsed() < Duration::from_secs(5),
            "quits promptly: {:?}",
            quit.elapsed()
        );
        if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
            eprintln!("{during}\n{after}");
        }
        // The lost counter is the kernel's: what the view showed is at most
        // what the final stats say.
        let shown = number_after(&during, "LOST")
            .or(number_after(&during, "lost"))
            .unwrap_or(0);
        let total = number_after(&after, "lost").expect("the stats line on exit");
        assert!(
            shown <= total,
            "view showed {shown} lost, stats say {total}\n{during}\n{after}"
        );
        calitrace::assert_nothing_attached(&lab, 1, &b.cali);
        flood.join().unwrap().unwrap();
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tui_ends_when_its_terminal_goes_away() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let b = lab.pod(1, 0).clone();
    let dir = tmpdir("hangup");
    let t = tui_on_node_b(&lab, "hangup", &dir, (80, 24), "");
    let pid = calitrace_in_pane(&t);
    drop(t); // kills the tmux server: the terminal hangs up
    let deadline = Instant::now() + Duration::from_secs(15);
    // Gone, or a zombie waiting for its parent.
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
    {
        assert!(
            Instant::now() < deadline,
            "calitrace {pid} outlived its terminal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
    std::fs::remove_dir_all(&dir).ok();
}

/// The rows of the flows panel of a screen.
fn flows_panel(screen: &str) -> String {
    let rows: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("Flows ("))
        .take_while(|l| !l.contains("Drop points ("))
        .collect();
    rows.join("\n")
}

#[test]
fn tui_on_a_healthy_vxlan_node_with_ipv6_shows_no_cross_and_no_diagnosis() {
    let lab = Lab::with_ipv6(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let dir = tmpdir("noise");
    let t = tui_on_node_b(&lab, "noise", &dir, (120, 36), "");
    // The node's IPv6 chatter (DAD and MLD on vxlan.calico, which has no
    // target for them), the rules read, and pod traffic both ways.
    lab.sh(
        &lab.node(1).netns,
        "ip -6 addr add fd00:cafe::2/64 dev vxlan.calico; \
         nft list ruleset >/dev/null; iptables-nft-save >/dev/null",
    )
    .unwrap();
    assert!(lab.ping(&a, &b.ip, 3) && lab.ping(&b, &a.ip, 2));
    let timeout = Duration::from_secs(5);
    assert!(lab.tcp_check(&a, &b, 0, timeout) && lab.tcp_check(&b, &a, 0, timeout));
    t.wait_for(
        "the pods' flows and the benign frees counted",
        Duration::from_secs(20),
        |s| s.contains(&format!("{} → {}", a.ip, b.ip)) && s.contains("benign hidden [b])"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let screen = t.capture();
    assert!(!flows_panel(&screen).contains('✗'), "no ✗ row\n{screen}");
    assert!(
        !flows_panel(&screen).contains("ff02::"),
        "the nodes' link-local control flows are hidden until `m`\n{screen}"
    );
    assert!(screen.contains("Diagnosis (0)"), "{screen}");
    assert!(screen.contains("Drop points (0 drops ·"), "{screen}");

    // On request, dimmed and marked `·`, still no ✗.
    t.keys(&["b"]);
    let shown = t.wait_for("the benign drops shown", Duration::from_secs(5), |s| {
        s.contains("benign [b])") && s.contains("NO_TX_TARGET")
    });
    assert!(!flows_panel(&shown).contains('✗'), "no ✗ row\n{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with('·') && l.contains("vxlan_xmit")),
        "{shown}"
    );
    t.keys(&["q"]);
    let after = assert_exited_and_restored(&t);
    assert!(!after.contains("DIAGNOSIS"), "{after}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tui_tells_firewallds_reject_from_a_drop() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    // firewalld 1.x's forward chain after an accepting table of Calico's
    // nftables dataplane (shortened; tests/tests/tables.rs has them whole).
    lab.nft(
        1,
        r#"
table ip calico {
    chain filter-FORWARD {
        type filter hook forward priority filter; policy accept;
        counter meta mark set meta mark | 0x00010000 comment "cali:fXaqbwKfGHq5dvHP;"
        meta mark & 0x00010000 == 0x00010000 counter accept comment "cali:yp7iNUYNEhDmKF6E; Policy explicitly accepted packet."
    }
}
table inet firewalld {
    chain filter_FORWARD {
        type filter hook forward priority filter + 10; policy accept;
        ct state { established, related } accept
        jump filter_FORWARD_ZONES
        reject with icmpx admin-prohibited
    }
    chain filter_FORWARD_ZONES {
        goto filter_FWD_public
    }
    chain filter_FWD_public {
        reject with icmpx admin-prohibited
    }
}
"#,
    )
    .unwrap();
    let dir = tmpdir("firewalld");
    let t = tui_on_node_b(&lab, "firewalld", &dir, (120, 34), "");
    assert!(!lab.ping(&a, &b.ip, 5), "firewalld rejects the ping");
    let screen = t.wait_for(
        "the reject, named as firewalld's",
        Duration::from_secs(20),
        |s| s.contains("REJECT FORWARD nft/firewalld") && s.contains("sender told icmpx"),
    );
    // The journey's failing point wraps: read it as one line.
    let words = screen.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("by firewalld; sender told icmpx admin-prohibited; Calico had allowed it"),
        "{screen}"
    );
    assert!(
        words.contains("Calico allowed it; firewalld rejected"),
        "the diagnosis says whose rule it was\n{screen}"
    );
    if let Some(path) = std::env::var_os("CALITRACE_TUI_CAPTURE") {
        std::fs::write(path, &screen).unwrap();
    }
    t.keys(&["q"]);
    assert_exited_and_restored(&t);
    std::fs::remove_dir_all(&dir).ok();
}
