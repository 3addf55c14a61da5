//! BPF netfilter links (kernel >= 6.4): observation points at chosen
//! priorities of each IPv4/IPv6 hook, so that a journey shows which hooks a
//! packet entered and left, and which tables it got past. They work where
//! fentry and kprobes do not (lockdown), and make the hook of an inferred
//! netfilter drop an observation instead of a guess from addresses.
//!
//! # How the program is loaded, and why this way
//!
//! aya 0.14 has no netfilter program type, and an ELF section named
//! `netfilter` makes `Ebpf::load` fail. The alternatives:
//! - a newer aya with netfilter support needs a newer rustc than this project
//!   builds with;
//! - libbpf(-rs) would load the object a second time with maps of its own, so
//!   its events would not reach aya's ring buffer (or every map would have to
//!   be re-plumbed by fd), and it adds a C library and its build to a project
//!   that is pure Rust;
//! - a second eBPF object would still have to share aya's maps, i.e. be
//!   relocated against them by hand.
//!
//! So the program stays in calitrace's one object, in a `classifier/nf_hook`
//! section that aya parses but is never asked to load, and is loaded with raw
//! bpf(2) calls after relocation against aya's maps ([`super::raw`]):
//! BPF_PROG_LOAD (type BPF_PROG_TYPE_NETFILTER, expected attach type
//! BPF_NETFILTER) and BPF_LINK_CREATE (BPF_NETFILTER with family, hook and
//! priority). The netfilter context does not say at which priority a program
//! runs, so each priority gets its own loaded copy whose `NF_POINT` map
//! reference is pointed at a one-entry map holding that copy's point.
//! Closing a link's fd detaches it.

mod probe;

pub use probe::{NF_LINKS, NfLinkProbe};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData};
use aya_obj::generated::{
    BPF_DW, BPF_IMM, BPF_LD, BPF_PSEUDO_MAP_FD, bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn,
    bpf_map_type, bpf_prog_type,
};
use tracer_common::{NfPoint, nf_point};

use super::raw::{self, LoadError, ProgSpec, Relocated, map_data};
use crate::events::{DecodeError, Input, decode_verdict};
use crate::netfilter::{Family, Hook, Inventory, Verdict};

/// The function in the eBPF object, and the map each copy gets its own of.
const PROGRAM: &str = "nf_hook";
const POINT_MAP: &str = "NF_POINT";
/// The name the kernel shows for every copy (`bpftool prog`).
pub const PROG_NAME: &str = "calitrace_nf";

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
/// NF_INET_PRE_ROUTING .. NF_INET_POST_ROUTING.
const HOOKS: std::ops::Range<u8> = 0..5;
/// NF_IP_PRI_FIRST and NF_IP_PRI_LAST themselves are refused for BPF links.
pub const ENTRY_PRIORITY: i32 = i32::MIN + 1;
pub const EXIT_PRIORITY: i32 = i32::MAX - 1;
/// The points stay linked until this long after the last netfilter drop
/// that no table walk saw (`run::nf_demand`).
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// How the probe report says when the points are linked.
pub fn on_demand() -> String {
    format!(
        "linked from the first netfilter drop no table walk saw, until {} s without one",
        QUIET.as_secs()
    )
}
/// At most this many links: entry and exit of 5 hooks of 2 families take 20.
pub const MAX_LINKS: usize = 40;

/// Where one link goes and what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Point {
    pub pf: u8,
    pub hook: u8,
    /// The link's priority.
    pub priority: i32,
    /// [`nf_point`].
    pub point: u8,
}

/// The observation points for a netns whose tables are `inventory`: entry and
/// exit of every IPv4/IPv6 hook, and just after the priority of every base
/// chain there (x_tables tables included; the legacy filter table's 0 always).
/// Returns the points and how many candidate points the link limit left out.
pub fn plan(inventory: Option<&Inventory>) -> (Vec<Point>, usize) {
    let mut points = BTreeSet::new();
    for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
        for hook in HOOKS {
            for (priority, point) in [
                (ENTRY_PRIORITY, nf_point::ENTRY),
                (EXIT_PRIORITY, nf_point::EXIT),
            ] {
                points.insert(Point {
                    pf,
                    hook,
                    priority,
                    point,
                });
            }
        }
    }
    // Candidates for "after" points, most useful first: chains that drop,
    // then the legacy filter table's priority, then any other base chain.
    let mut dropping = Vec::new();
    let mut others = Vec::new();
    for t in inventory.map(|i| i.tables.as_slice()).unwrap_or_default() {
        let pfs: &[u8] = match t.family {
            Family::Ipv4 => &[NFPROTO_IPV4],
            Family::Ipv6 => &[NFPROTO_IPV6],
            Family::Inet => &[NFPROTO_IPV4, NFPROTO_IPV6],
            _ => &[],
        };
        for c in &t.chains {
            let (Some(hook), Some(priority)) = (c.hook.and_then(inet_hook), c.priority) else {
                continue;
            };
            let drops = c.policy == Some(Verdict::Drop)
                || c.rules
                    .iter()
                    .any(|r| matches!(r.verdict, Some(Verdict::Drop | Verdict::Reject)));
            for &pf in pfs {
                let list = if drops { &mut dropping } else { &mut others };
                list.push((pf, hook, priority));
            }
        }
    }
    let mut defaults = Vec::new();
    for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
        for hook in [1, 2, 3] {
            defaults.push((pf, hook, 0));
        }
    }
    let mut left_out = BTreeSet::new();
    for (pf, hook, table_priority) in dropping.into_iter().chain(defaults).chain(others) {
        // The link runs after the table: one above its priority, strictly
        // between the entry and exit points.
        if !(ENTRY_PRIORITY..EXIT_PRIORITY - 1).contains(&table_priority) {
            continue;
        }
        let p = Point {
            pf,
            hook,
            priority: table_priority + 1,
            point: nf_point::AFTER,
        };
        if points.contains(&p) {
            continue;
        }
        if points.len() < MAX_LINKS {
            points.insert(p);
        } else {
            left_out.insert(p);
        }
    }
    (points.into_iter().collect(), left_out.len())
}

fn inet_hook(h: Hook) -> Option<u8> {
    Some(match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
        Hook::Ingress | Hook::Egress => return None,
    })
}

/// What the probe report says about the points: how many, and after which
/// table priorities.
pub fn describe(points: &[Point]) -> String {
    let after: BTreeSet<i32> = points
        .iter()
        .filter(|p| p.point == nf_point::AFTER)
        .map(|p| p.priority - 1)
        .collect();
    let after: Vec<String> = after.iter().map(i32::to_string).collect();
    let mut s = format!(
        "{} points: entry and exit of PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING (IPv4, IPv6)",
        points.len()
    );
    if !after.is_empty() {
        s.push_str(&format!(", after priorities {}", after.join(", ")));
    }
    s
}

/// The netfilter program, relocated against the maps aya created for the
/// rest of the object. Valid while those maps are open.
pub struct Program {
    insns: Vec<bpf_insn>,
    license: CString,
    /// The fd of aya's `NF_POINT`: each copy's references to it are patched.
    point_map_fd: RawFd,
}

impl Program {
    pub fn new(object: &Relocated) -> Result<Program> {
        Ok(Program {
            insns: object.program(PROGRAM)?,
            license: object.license().clone(),
            point_map_fd: object
                .map_fd(POINT_MAP)
                .context("no NF_POINT map in the eBPF object")?,
        })
    }

    /// A copy whose `NF_POINT` references point at the map `fd`.
    fn with_point_map(&self, fd: RawFd) -> Result<Vec<bpf_insn>> {
        let mut insns = self.insns.clone();
        let mut patched = 0;
        for insn in &mut insns {
            if u32::from(insn.code) == BPF_LD | BPF_IMM | BPF_DW
                && u32::from(insn.src_reg()) == BPF_PSEUDO_MAP_FD
                && insn.imm == self.point_map_fd
            {
                insn.imm = fd;
                patched += 1;
            }
        }
        if patched == 0 {
            bail!("nf_hook does not read NF_POINT");
        }
        Ok(insns)
    }

    /// Loads one copy reporting `point`.
    fn load(&self, point: NfPoint) -> Result<OwnedFd, LoadError> {
        let map = point_map(point).map_err(LoadError::Other)?;
        let insns = self
            .with_point_map(map_data(&map).fd().as_fd().as_raw_fd())
            .map_err(LoadError::Other)?;
        // The program holds its own reference to the map: `map` may close.
        raw::prog_load(&ProgSpec {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_NETFILTER,
            attach_type: bpf_attach_type::BPF_NETFILTER,
            attach_btf_id: 0,
            attach_btf_obj: None,
            name: PROG_NAME,
            insns: &insns,
            license: &self.license,
        })
    }
}

/// Loaded copies of the program and, while attached, their links. Dropping
/// it detaches every link and unloads every copy.
///
/// Links are the expensive part: a registered netfilter hook takes every
/// packet off netfilter's fast path, and each point runs a program for
/// every packet passing it. So the copies are loaded at start and linked
/// only while a drop needs them ([`NfLinks::attach`], [`NfLinks::detach`]).
#[derive(Default)]
pub struct NfLinks {
    // Field order is drop order: links detach before their programs close.
    links: Vec<OwnedFd>,
    /// Each loaded copy with the points it links at.
    progs: Vec<(OwnedFd, Vec<Point>)>,
    /// Points with a link now.
    pub attached: Vec<Point>,
    /// Points whose link the kernel refused at the last attach, with why.
    pub failed: Vec<(Point, String)>,
}

impl NfLinks {
    /// Loads one copy per distinct (point, priority); with `all` false only
    /// the first, to see that the kernel takes it. Nothing is linked yet.
    pub fn load(program: &Program, points: &[Point], all: bool) -> Result<NfLinks, LoadError> {
        let mut by_copy: BTreeMap<(i32, u8), Vec<Point>> = BTreeMap::new();
        for p in points {
            by_copy.entry((p.priority, p.point)).or_default().push(*p);
        }
        let mut out = NfLinks::default();
        for ((priority, point), at) in by_copy {
            let prog = program.load(NfPoint {
                priority,
                point,
                _pad: [0; 3],
            })?;
            out.progs.push((prog, at));
            if !all {
                break;
            }
        }
        Ok(out)
    }

    /// Every point the loaded copies link at.
    pub fn points(&self) -> Vec<Point> {
        let mut all: Vec<Point> = self.progs.iter().flat_map(|(_, at)| at.clone()).collect();
        all.sort();
        all
    }

    pub fn is_attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Links every copy at each of its points in the calling thread's netns
    /// (nothing when linked already); the points the kernel refused are in
    /// [`NfLinks::failed`].
    pub fn attach(&mut self) {
        if self.is_attached() {
            return;
        }
        self.failed.clear();
        for (prog, at) in &self.progs {
            for &p in at {
                match link_create(prog, p) {
                    Ok(link) => {
                        self.links.push(link);
                        self.attached.push(p);
                    }
                    Err(e) => self.failed.push((p, format!("BPF_LINK_CREATE: {e}"))),
                }
            }
        }
    }

    /// Closes every link: the hooks are unregistered, the copies stay loaded.
    pub fn detach(&mut self) {
        self.links.clear();
        self.attached.clear();
    }
}

/// A one-entry array holding `point`, for one program copy.
fn point_map(point: NfPoint) -> Result<Map> {
    let def = aya_obj::Map::new_from_params(
        bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        size_of::<u32>() as u32,
        size_of::<NfPoint>() as u32,
        1,
        0,
    );
    let mut map = Map::Array(MapData::create(def, "nf_point", None).context("creating NF_POINT")?);
    let mut array: Array<&mut MapData, NfPoint> = Array::try_from(&mut map)?;
    array.set(0, point, 0).context("setting NF_POINT")?;
    Ok(map)
}

fn link_create(prog: &OwnedFd, p: Point) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the BPF_LINK_CREATE member of the union and, inside it,
    // the prog_fd and netfilter members.
    unsafe {
        let l = &mut attr.link_create;
        l.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
        l.attach_type = bpf_attach_type::BPF_NETFILTER as u32;
        l.__bindgen_anon_3.netfilter.pf = u32::from(p.pf);
        l.__bindgen_anon_3.netfilter.hooknum = u32::from(p.hook);
        l.__bindgen_anon_3.netfilter.priority = p.priority;
        l.__bindgen_anon_3.netfilter.flags = 0;
    }
    raw::sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(raw::owned)
}

/// A packet passing a link point.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    decode_verdict(bytes).map(Input::Verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_points_decode_with_hook_and_priority() {
        use tracer_common::{EVENT_SIZE, NfEvent, kind};

        use crate::events::{encode_verdict, set_ip};
        use crate::probes::decode_input;
        let mut nf = NfEvent {
            hook: 1,
            pf: 10,
            point: nf_point::AFTER,
            priority: -4,
            ..Default::default()
        };
        nf.ev.kind = kind::HOOK;
        nf.ev.netns = 7;
        set_ip(&mut nf.ev.pkt.dst, "fd00::1".parse().unwrap());
        let bytes = encode_verdict(&nf).to_vec();
        assert_eq!(decode_input(&bytes), Ok(Input::Verdict(nf)));
        assert_eq!(
            decode_input(&bytes[..EVENT_SIZE]),
            Err(DecodeError(EVENT_SIZE)),
            "a cut link point is refused, not read as a plain event"
        );
    }
    use crate::netfilter::{Backend, Chain, Rule, Table};

    fn chain(hook: Hook, priority: i32, policy: Verdict, drop_rule: bool) -> Chain {
        Chain {
            name: format!("{hook}"),
            hook: Some(hook),
            priority: Some(priority),
            policy: Some(policy),
            policy_counters: None,
            rules: drop_rule
                .then(|| Rule {
                    id: "1".into(),
                    text: "drop".into(),
                    verdict: Some(Verdict::Drop),
                    comment: None,
                    counters: None,
                    reject_with: None,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn entry_and_exit_of_every_hook_and_after_the_filter_table() {
        let (points, left_out) = plan(None);
        assert_eq!(left_out, 0);
        let count = |kind| points.iter().filter(|p| p.point == kind).count();
        assert_eq!(count(nf_point::ENTRY), 10);
        assert_eq!(count(nf_point::EXIT), 10);
        assert_eq!(count(nf_point::AFTER), 6, "INPUT, FORWARD, OUTPUT x 2");
        assert!(points.iter().all(|p| p.hook < 5 && [2, 10].contains(&p.pf)));
        assert!(points.contains(&Point {
            pf: NFPROTO_IPV4,
            hook: 2,
            priority: 1,
            point: nf_point::AFTER
        }));
        assert!(
            points
                .iter()
                .all(|p| p.priority != i32::MIN && p.priority != i32::MAX),
            "the kernel refuses NF_IP_PRI_FIRST and NF_IP_PRI_LAST"
        );
    }

    #[test]
    fn base_chains_get_a_point_after_them_within_the_limit() {
        let mut inv = Inventory::default();
        inv.tables.push(Table {
            backend: Backend::Nft,
            family: Family::Inet,
            name: "cttest".into(),
            chains: vec![chain(Hook::Forward, -5, Verdict::Accept, true)],
        });
        inv.tables.push(Table {
            backend: Backend::Nft,
            family: Family::Ipv4,
            name: "extremes".into(),
            chains: vec![
                chain(Hook::Input, i32::MAX - 1, Verdict::Drop, false),
                chain(Hook::Ingress, 3, Verdict::Drop, false),
            ],
        });
        let (points, left_out) = plan(Some(&inv));
        assert_eq!(left_out, 0);
        for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
            assert!(points.contains(&Point {
                pf,
                hook: 2,
                priority: -4,
                point: nf_point::AFTER
            }));
        }
        assert_eq!(points.len(), 28, "20 + 6 defaults + 2 for the inet chain");
        assert!(describe(&points).contains("after priorities -5, 0"));

        // Many chains: dropping ones first, never more than MAX_LINKS.
        let mut many = Inventory::default();
        many.tables.push(Table {
            backend: Backend::Nft,
            family: Family::Inet,
            name: "many".into(),
            chains: (0..30)
                .map(|i| chain(Hook::Prerouting, -100 - i, Verdict::Accept, false))
                .chain([chain(Hook::Output, 7, Verdict::Drop, false)])
                .collect(),
        });
        let (points, left_out) = plan(Some(&many));
        assert_eq!(points.len(), MAX_LINKS);
        // 60 + 2 + 6 candidates for the 20 places left after entry and exit.
        assert_eq!(left_out, 68 - 20);
        assert!(
            points.iter().any(|p| p.hook == 3 && p.priority == 8),
            "a dropping chain is kept"
        );
    }
}
