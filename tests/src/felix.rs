//! A stand-in for Calico Felix's eBPF dataplane, for tests only: the program
//! of `tests/felix-standin` (built by `build.rs`) on one lab interface, with
//! Calico's `cali_counters6` and `cali_rule_ctrs2` maps (v3.32.1 layout)
//! pinned under a directory the test chooses, as Felix pins them under
//! `/sys/fs/bpf/tc/globals`.
//!
//! It counts every packet in counter 0 of the key `{ifindex, cfg.hook}` and,
//! when [`StandinCfg::reason`] is set, drops the IPv4 packets of protocol
//! [`StandinCfg::proto`], counting them in that counter (and, for reason 4,
//! "dropped by policy", in the rule counter of [`StandinCfg::match_id`]).
//! Everything else goes on to the next tc program.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::Array;
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, tc};

use crate::lab::spawn_in_netns;

/// The stand-in's eBPF object.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/felix-standin.bpf.o"));

/// The classifier's name in the object.
pub const PROGRAM: &str = "cali_tc_preambl";
/// Calico's counters map (v3.32.1: `[u64; 27]` per CPU, key `{ifindex, hook}`).
pub const COUNTERS_MAP: &str = "cali_counters6";
/// Calico's rule counters map (key: rule MatchID, value: per-CPU hits).
pub const RULE_CTRS_MAP: &str = "cali_rule_ctrs2";
/// Number of counters per key in [`COUNTERS_MAP`] (Calico v3.32.1).
pub const MAX_COUNTERS: usize = 27;

/// Which Calico release's counters map the stand-in keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `cali_counters6`, 27 counters.
    #[default]
    V3_32_1,
    /// `cali_counters2`, 14 counters (Calico 3.26 to 3.29).
    V3_29,
}

impl Layout {
    pub fn map(self) -> &'static str {
        match self {
            Layout::V3_32_1 => COUNTERS_MAP,
            Layout::V3_29 => "cali_counters2",
        }
    }
}
/// The stand-in's own configuration map (see [`StandinCfg`]).
const CFG_MAP: &str = "standin_cfg";
/// Where bpffs lives (Felix pins under `/sys/fs/bpf/tc/globals`).
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The tc hook the program is attached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }
}

/// What the stand-in does (the entries of its `standin_cfg` map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandinCfg {
    /// Calico counter index of the drop reason (4: dropped by policy, ...);
    /// 0 drops nothing.
    pub reason: u32,
    /// Rule MatchID counted in `cali_rule_ctrs2` on a drop with reason 4; 0: none.
    pub match_id: u64,
    /// The hook value of the counters key: 0 (tc ingress) or 1 (tc egress), as
    /// Calico's `COUNTERS_TC_INGRESS` / `COUNTERS_TC_EGRESS`.
    pub hook: u32,
    /// IPv4 protocol number of the packets to drop (1 ICMP, 6 TCP, 17 UDP).
    pub proto: u8,
    /// The counters map it counts in (and [`FelixStandin::attach`] pins).
    pub layout: Layout,
}

impl StandinCfg {
    fn entries(&self) -> [u64; 5] {
        [
            self.reason.into(),
            self.match_id,
            self.hook.into(),
            self.proto.into(),
            u64::from(self.layout == Layout::V3_29),
        ]
    }
}

/// The stand-in attached to one interface; dropping it detaches the program
/// and removes the pinned maps and the directories [`FelixStandin::attach`]
/// created.
pub struct FelixStandin {
    /// `None` only while it is being dropped.
    ebpf: Option<Ebpf>,
    link: Option<SchedClassifierLinkId>,
    netns: String,
    iface: String,
    /// The program went on with netlink, into a clsact qdisc it added.
    clsact: bool,
    pinned: Vec<PathBuf>,
    /// Directories created for the pins, outermost first.
    created_dirs: Vec<PathBuf>,
}

impl FelixStandin {
    /// Loads the stand-in, pins `cali_counters6` and `cali_rule_ctrs2` in
    /// `pin_dir` (created if missing; under `/sys/fs/bpf`, bpffs is mounted there
    /// if it is not yet), writes `cfg`, and attaches the classifier to `iface`
    /// in the named netns at `tc_hook`, before every other tc program there
    /// (TCX, first in the chain; on kernels without TCX a netlink filter of
    /// priority 1 in a clsact qdisc).
    pub fn attach(
        lab_netns: &str,
        iface: &str,
        tc_hook: Hook,
        pin_dir: &Path,
        cfg: StandinCfg,
    ) -> Result<FelixStandin> {
        if pin_dir.starts_with(BPFFS) {
            ensure_bpffs()?;
        }
        let mut ebpf = Ebpf::load(OBJECT).context("loading the Felix stand-in")?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
            .try_into()?;
        prog.load().context("loading the Felix stand-in")?;
        let mut standin = FelixStandin {
            ebpf: Some(ebpf),
            link: None,
            netns: lab_netns.to_string(),
            iface: iface.to_string(),
            clsact: false,
            pinned: Vec::new(),
            created_dirs: Vec::new(),
        };
        standin.set(cfg)?;
        standin.make_dirs(pin_dir)?;
        for name in [cfg.layout.map(), RULE_CTRS_MAP] {
            let path = pin_dir.join(name);
            standin
                .ebpf()?
                .map(name)
                .ok_or_else(|| anyhow!("no map {name}"))?
                .pin(&path)
                .with_context(|| format!("pinning {name} at {}", path.display()))?;
            standin.pinned.push(path);
        }
        let ebpf = standin.ebpf.take().expect("loaded");
        let iface = iface.to_string();
        let (ebpf, attached) = spawn_in_netns(lab_netns, move || {
            let mut ebpf = ebpf;
            let attached = attach_first(&mut ebpf, &iface, tc_hook.attach_type());
            (ebpf, attached)
        })?
        .join()
        .map_err(|_| anyhow!("the attaching thread panicked"))??;
        standin.ebpf = Some(ebpf);
        let (link, clsact) = attached
            .with_context(|| format!("attaching {PROGRAM} to {} in {lab_netns}", standin.iface))?;
        standin.link = Some(link);
        standin.clsact = clsact;
        Ok(standin)
    }

    /// Writes `cfg` into `standin_cfg`; it applies from the next packet on.
    pub fn set(&mut self, cfg: StandinCfg) -> Result<()> {
        let map = self
            .ebpf
            .as_mut()
            .ok_or_else(|| anyhow!("not loaded"))?
            .map_mut(CFG_MAP)
            .ok_or_else(|| anyhow!("no map {CFG_MAP}"))?;
        let mut array: Array<_, u64> = Array::try_from(map)?;
        for (i, v) in (0u32..).zip(cfg.entries()) {
            array
                .set(i, v, 0)
                .with_context(|| format!("{CFG_MAP}[{i}] = {v}"))?;
        }
        Ok(())
    }

    fn ebpf(&self) -> Result<&Ebpf> {
        self.ebpf.as_ref().ok_or_else(|| anyhow!("not loaded"))
    }

    /// Creates `dir` and the ancestors it lacks, remembering which.
    fn make_dirs(&mut self, dir: &Path) -> Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        for d in missing.into_iter().rev() {
            std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
            self.created_dirs.push(d.to_path_buf());
        }
        Ok(())
    }
}

/// Attaches the program first in `iface`'s chain at `ty` (in the caller's
/// netns); whether it added a clsact qdisc for it.
fn attach_first(
    ebpf: &mut Ebpf,
    iface: &str,
    ty: TcAttachType,
) -> Result<(SchedClassifierLinkId, bool)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
        .try_into()?;
    let tcx =
        match prog.attach_with_options(iface, ty, TcAttachOptions::TcxOrder(LinkOrder::first())) {
            Ok(id) => return Ok((id, false)),
            Err(e) => e,
        };
    // No TCX (before 6.6): a netlink filter, ahead of others by its priority.
    let clsact = tc::qdisc_add_clsact(iface).is_ok();
    let options = NlOptions {
        priority: 1,
        ..Default::default()
    };
    match prog.attach_with_options(iface, ty, TcAttachOptions::Netlink(options)) {
        Ok(id) => Ok((id, clsact)),
        Err(e) => {
            if clsact {
                let _ = delete_clsact(iface);
            }
            bail!("TCX: {tcx}; netlink: {e}")
        }
    }
}

/// Removes `iface`'s clsact qdisc (in the caller's netns).
fn delete_clsact(iface: &str) -> Result<()> {
    let status = Command::new("tc")
        .args(["qdisc", "del", "dev", iface, "clsact"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("tc qdisc del dev {iface} clsact: {status}");
    }
    Ok(())
}

impl Drop for FelixStandin {
    fn drop(&mut self) {
        if let (Some(mut ebpf), Some(link)) = (self.ebpf.take(), self.link.take()) {
            // Netlink filters are detached through a socket in the interface's
            // netns; a TCX link goes with its fd, wherever it is closed. If the
            // netns is gone, so are the program's attachments.
            let (iface, clsact) = (self.iface.clone(), self.clsact);
            if let Ok(handle) = spawn_in_netns(&self.netns, move || {
                if let Some(prog) = ebpf
                    .program_mut(PROGRAM)
                    .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
                {
                    let _ = prog.detach(link);
                }
                if clsact {
                    let _ = delete_clsact(&iface);
                }
                drop(ebpf);
            }) {
                let _ = handle.join();
            }
        }
        for path in self.pinned.drain(..) {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!("felix stand-in: could not remove {}: {e}", path.display());
            }
        }
        for dir in self.created_dirs.drain(..).rev() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("felix stand-in: could not remove {}: {e}", dir.display());
            }
        }
    }
}

/// Mounts bpffs at `/sys/fs/bpf` unless it is there already (systemd does this
/// on a usual host, and every Felix node has it; the machines of this project
/// boot without it). The mount stays: it is the host's ordinary state, and
/// other pins may live in it by then.
pub fn ensure_bpffs() -> Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .stdin(Stdio::null())
        .output()
        .context("running mount")?;
    if !out.status.success() || !is_bpffs(Path::new(BPFFS)) {
        bail!(
            "mount -t bpf bpf {BPFFS} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Writes the policy debug file Felix 3.32 writes for `iface`'s ingress
/// policy into `dir`: tier default, NetworkPolicy demo/deny-icmp whose deny
/// rule has `match_id`, then an allow rule (MatchID 77).
pub fn policy_debug(dir: &Path, iface: &str, match_id: u64) -> Result<()> {
    let json = format!(
        r#"{{"ifacename":"{iface}","hook":"tc egress","policyInfo":[
 {{"inst":[191,22,0,0,0,0,0,0],"comments":["Load packet metadata saved by previous program"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["Start of tier default"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["Start of NetworkPolicy demo/deny-icmp 0","Start of rule demo/deny-icmp action:\"deny\" protocol:{{name:\"icmp\"}} rule_id:\"x1\"","Rule MatchID: {match_id}"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["End of rule demo/deny-icmp x1","Start of rule demo/deny-icmp action:\"allow\" protocol:{{name:\"tcp\"}} rule_id:\"x2\"","Rule MatchID: 77"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["End of rule demo/deny-icmp x2","End of NetworkPolicy demo/deny-icmp 0","End of tier default: deny"]}}],"error":""}}
"#
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{iface}_ingress_v4.json"));
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}
