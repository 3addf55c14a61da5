//! The compiled form of a FILTER expression and its evaluator.
//!
//! Userspace parses `host 10.0.0.1 and not port 22` into postfix instructions;
//! the same [`matches`] function runs in the eBPF programs and in userspace
//! (replay), so a filter means the same thing in both places. The evaluator is a
//! bounded loop over at most [`MAX_INSNS`] instructions with a bit stack, which
//! the verifier accepts.

use crate::{PacketMeta, l3, pkt_flags};

pub const MAX_INSNS: usize = 32;
/// Deepest boolean stack a program may use (bits of a `u32`).
pub const MAX_DEPTH: u32 = 31;

pub mod op {
    /// Push whether the source address is inside `addr`/`mask` (`arg` = family 4 or 6).
    pub const SRC_NET: u32 = 1;
    /// Push whether the destination address is inside `addr`/`mask`.
    pub const DST_NET: u32 = 2;
    /// Push whether the TCP/UDP source port equals `arg`.
    pub const SPORT: u32 = 3;
    /// Push whether the TCP/UDP destination port equals `arg`.
    pub const DPORT: u32 = 4;
    /// Push whether the IP protocol equals `arg` (IPv4 and IPv6).
    pub const PROTO: u32 = 5;
    /// Push whether the layer 3 kind equals `arg` (see [`crate::l3`]).
    pub const L3: u32 = 6;
    pub const AND: u32 = 7;
    pub const OR: u32 = 8;
    pub const NOT: u32 = 9;
    /// Push `true`.
    pub const TRUE: u32 = 10;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterInsn {
    pub op: u32,
    pub arg: u32,
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

/// Most nets a [`QuickNets`] holds.
pub const QUICK_NETS: usize = 4;

/// Nets such that every IPv4 or IPv6 packet the program matches has its
/// source or destination address in one of them (`SRC_NET`-style entries:
/// `arg` is the family). The tc programs test a packet's two addresses
/// against them before parsing the rest: a filter that names hosts then turns
/// other traffic away for the price of two loads. `len == 0`: no such nets
/// are known and every packet is evaluated in full. Userspace derives them
/// from the filter; they only ever reject what the program would reject.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuickNets {
    pub len: u32,
    /// UDP destination port whose packets the tc programs never turn away
    /// here (VXLAN's: the filter may pass them by their inner packet); 0:
    /// none. Set by the loader, beside the nets so that the programs' first
    /// look reads one cache line of the map.
    pub vxlan_port: u16,
    pub _pad: u16,
    pub nets: [FilterInsn; QUICK_NETS],
}

/// A whole program. `len == 0` matches everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterProg {
    pub len: u32,
    pub _pad: u32,
    pub insns: [FilterInsn; MAX_INSNS],
    pub quick: QuickNets,
}

impl Default for FilterProg {
    fn default() -> Self {
        Self::MATCH_ALL
    }
}

const NO_INSN: FilterInsn = FilterInsn {
    op: 0,
    arg: 0,
    addr: [0; 4],
    mask: [0; 4],
};

impl FilterProg {
    pub const MATCH_ALL: FilterProg = FilterProg {
        len: 0,
        _pad: 0,
        insns: [NO_INSN; MAX_INSNS],
        quick: QuickNets::NONE,
    };
}

impl QuickNets {
    pub const NONE: QuickNets = QuickNets {
        len: 0,
        vxlan_port: 0,
        _pad: 0,
        nets: [NO_INSN; QUICK_NETS],
    };
}

/// Whether an IP packet of `family` (4 or 6) with these addresses may pass
/// the program whose quick nets are `q`: false only when neither address is
/// in any of them. Addresses are the words [`FilterInsn::addr`] is built of
/// (the packet's bytes read as native-endian `u32`s; IPv4 in word 0).
#[inline(always)]
pub fn quick_passes(q: &QuickNets, family: u32, src: &[u32; 4], dst: &[u32; 4]) -> bool {
    let len = q.len as usize;
    if len == 0 {
        return true;
    }
    let words = if family == 6 { 4 } else { 1 };
    let mut i = 0;
    while i < QUICK_NETS {
        if i >= len {
            break;
        }
        let net = &q.nets[i];
        if net.arg == family && (words_in(src, net, words) || words_in(dst, net, words)) {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn words_in(a: &[u32; 4], net: &FilterInsn, words: usize) -> bool {
    let mut i = 0;
    while i < 4 {
        if i >= words {
            break;
        }
        if a[i] & net.mask[i] != net.addr[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn family(pkt: &PacketMeta) -> u32 {
    if pkt.l3 == l3::IPV6 { 6 } else { 4 }
}

#[inline(always)]
fn addr_in(a: &[u8; 16], insn: &FilterInsn) -> bool {
    let mut i = 0;
    while i < 4 {
        let w = u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]]);
        if w & insn.mask[i] != insn.addr[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn has_ports(pkt: &PacketMeta) -> bool {
    pkt.flags & pkt_flags::L4 != 0
        && (pkt.proto == crate::proto::TCP || pkt.proto == crate::proto::UDP)
}

#[inline(always)]
fn test(insn: &FilterInsn, pkt: &PacketMeta) -> bool {
    match insn.op {
        op::SRC_NET => pkt.l3 != l3::NONE && family(pkt) == insn.arg && addr_in(&pkt.src, insn),
        op::DST_NET => pkt.l3 != l3::NONE && family(pkt) == insn.arg && addr_in(&pkt.dst, insn),
        op::SPORT => has_ports(pkt) && pkt.sport as u32 == insn.arg,
        op::DPORT => has_ports(pkt) && pkt.dport as u32 == insn.arg,
        op::PROTO => (pkt.l3 == l3::IPV4 || pkt.l3 == l3::IPV6) && pkt.proto as u32 == insn.arg,
        op::L3 => pkt.l3 as u32 == insn.arg,
        _ => true,
    }
}

/// The evaluator's boolean stack. The eBPF programs keep it in map memory:
/// the verifier does not track values there, so the states of different
/// branches merge at the loop head instead of multiplying.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalState {
    pub stack: u32,
    pub depth: u32,
}

/// Evaluates `prog` on `pkt`. Malformed programs (stack underflow or overflow)
/// evaluate to `true`, so that a bug can never hide traffic silently; the
/// compiler in userspace never produces them.
#[inline(always)]
pub fn matches(prog: &FilterProg, pkt: &PacketMeta) -> bool {
    let mut st = EvalState::default();
    matches_with(prog, pkt, &mut st)
}

/// [`matches`] with caller-provided state (see [`EvalState`]).
#[inline(always)]
pub fn matches_with(prog: &FilterProg, pkt: &PacketMeta, st: &mut EvalState) -> bool {
    use core::ptr::{read_volatile, write_volatile};
    let len = prog.len as usize;
    if len == 0 {
        return true;
    }
    // SAFETY: `st` is a valid exclusive reference; volatile keeps the values
    // in memory (see EvalState).
    unsafe {
        write_volatile(&mut st.stack, 0);
        write_volatile(&mut st.depth, 0);
    }
    let mut i = 0;
    while i < MAX_INSNS {
        if i >= len {
            break;
        }
        let insn = &prog.insns[i];
        // SAFETY: `st` is a valid exclusive reference; volatile keeps the
        // values in memory (see EvalState).
        let (stack, depth) = unsafe { (read_volatile(&st.stack), read_volatile(&st.depth)) };
        let (stack, depth) = match insn.op {
            op::AND | op::OR => {
                if depth < 2 {
                    return true;
                }
                let a = stack & 1;
                let b = (stack >> 1) & 1;
                let r = if insn.op == op::AND { a & b } else { a | b };
                ((stack >> 2) << 1 | r, depth - 1)
            }
            op::NOT => {
                if depth < 1 {
                    return true;
                }
                (stack ^ 1, depth)
            }
            _ => {
                if depth >= MAX_DEPTH {
                    return true;
                }
                (stack << 1 | test(insn, pkt) as u32, depth + 1)
            }
        };
        // SAFETY: as above.
        unsafe {
            write_volatile(&mut st.stack, stack);
            write_volatile(&mut st.depth, depth);
        }
        i += 1;
    }
    // SAFETY: as above.
    let (stack, depth) = unsafe { (read_volatile(&st.stack), read_volatile(&st.depth)) };
    depth == 0 || stack & 1 == 1
}
