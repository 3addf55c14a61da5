//! What calitrace's datapath cost is compared with, in the same run: the
//! floor of any tc tracer (an empty tc program on the same interfaces) and
//! what operators run today (`tcpdump -w /dev/null`).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use calitrace_tests::Lab;

// bpf(2) commands, program and attach types (uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// An empty tc program (`r0 = TCX_NEXT; exit`: reads nothing, changes
/// nothing) on ingress and egress of some interfaces, attached with TCX
/// links as calitrace attaches its own; closing the fds detaches it.
pub struct EmptyProgram {
    _links: Vec<OwnedFd>,
    _prog: OwnedFd,
}

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load_empty() -> std::io::Result<OwnedFd> {
    // mov64 r0, -1; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..56].copy_from_slice(b"cb_empty");
    sys_bpf(BPF_PROG_LOAD, &mut attr)
}

fn tcx_link(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    sys_bpf(BPF_LINK_CREATE, &mut attr)
}

impl EmptyProgram {
    /// Attaches to `ifaces` of the namespace `netns`.
    pub fn attach(lab: &Lab, netns: &str, ifaces: &[String]) -> Result<EmptyProgram> {
        let mut indexes = Vec::new();
        for i in ifaces {
            indexes.push(lab.ifindex(netns, i)?);
        }
        // The ifindex is looked up in the calling thread's namespace.
        Lab::in_netns(netns, move || -> Result<EmptyProgram> {
            let prog = load_empty().context("loading an empty tc program")?;
            let mut links = Vec::new();
            for &ifindex in &indexes {
                for ty in [BPF_TCX_INGRESS, BPF_TCX_EGRESS] {
                    links.push(
                        tcx_link(&prog, ifindex, ty)
                            .context("TCX link for the empty program (kernel 6.6+)")?,
                    );
                }
            }
            Ok(EmptyProgram {
                _links: links,
                _prog: prog,
            })
        })?
    }
}

/// `tcpdump -i IFACE -w /dev/null [FILTER]` in a namespace, one process per
/// interface (as an operator captures several interfaces).
pub struct Tcpdump {
    procs: Vec<(Child, ChildStderr)>,
}

/// What the tcpdumps counted when they stopped.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpdumpCounts {
    pub captured: u64,
    pub dropped_by_kernel: u64,
}

impl Tcpdump {
    /// Starts one tcpdump per interface and waits until each is capturing.
    pub fn start(netns: &str, ifaces: &[String], filter: Option<&str>) -> Result<Tcpdump> {
        let mut procs = Vec::new();
        for iface in ifaces {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns, "tcpdump", "-n", "-i", iface])
                .args(["-w", "/dev/null"]);
            if let Some(f) = filter {
                c.args(f.split_whitespace());
            }
            let mut child = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting tcpdump (apt-get install tcpdump)")?;
            let stderr = child.stderr.take().context("tcpdump's stderr")?;
            let stderr = wait_listening(stderr).with_context(|| format!("tcpdump on {iface}"))?;
            procs.push((child, stderr));
        }
        Ok(Tcpdump { procs })
    }

    /// SIGINT to every tcpdump; the counts they print at exit.
    pub fn stop(mut self) -> Result<TcpdumpCounts> {
        let mut counts = TcpdumpCounts::default();
        for (child, stderr) in &mut self.procs {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            child.wait()?;
            let mut rest = String::new();
            stderr.read_to_string(&mut rest)?;
            counts.captured += count_of(&rest, "packets captured");
            counts.dropped_by_kernel += count_of(&rest, "packets dropped by kernel");
        }
        self.procs.clear();
        Ok(counts)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        for (child, _) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads tcpdump's stderr until it says it is listening (`tcpdump:
/// listening on IFACE, ...`); gives the stream back for the rest.
fn wait_listening(stderr: ChildStderr) -> Result<ChildStderr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut said = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Err(said));
                    return;
                }
                Ok(_) if line.contains("listening on") => {
                    // Nothing is buffered past this line before the exit stats.
                    let _ = tx.send(Ok(r.into_inner()));
                    return;
                }
                Ok(_) => said.push_str(&line),
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(said)) => bail!("exited: {said}"),
        Err(_) => bail!("not listening after 10 s"),
    }
}

/// `N` of a line `N WHAT` in tcpdump's exit statistics.
fn count_of(text: &str, what: &str) -> u64 {
    text.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_statistics() {
        let s = "12 packets captured\n15 packets received by filter\n3 packets dropped by kernel\n";
        assert_eq!(super::count_of(s, "packets captured"), 12);
        assert_eq!(super::count_of(s, "packets dropped by kernel"), 3);
        assert_eq!(super::count_of("", "packets captured"), 0);
    }
}
