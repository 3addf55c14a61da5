//! Exact netfilter attribution: the verdict of every table walk, from
//! `nft_do_chain` (nf_tables: table, chain, verdict) and `ipt_do_table` /
//! `ip6t_do_table` (x_tables: table, hook, verdict).
//!
//! Two ways in, same events: fexit (BPF trampolines: arguments and return
//! value in one program) or, on kernels without trampolines, a kprobe that
//! keeps the arguments and a kretprobe that reports with the return value.
//! Locked-down kernels refuse both; userspace then infers attribution.

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_probe_read_kernel_str_bytes,
    },
    macros::{fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use tracer_common::{NfEvent, NfOffsets, backend, counter, kind};

use crate::event::emit;
use crate::maps::count;
use crate::parse::Reader;
use crate::skb::{Kernel, field, skb_event};

#[unsafe(no_mangle)]
pub static NF_OFFSETS: Global<NfOffsets> = Global::new(NfOffsets::UNSET);

/// Non-zero: report every verdict (`--verdicts`); zero: only drops.
#[unsafe(no_mangle)]
static ALL_VERDICTS: Global<u8> = Global::new(0);

#[map]
static NF_SCRATCH: PerCpuArray<NfEvent> = PerCpuArray::with_max_entries(1, 0);

const NF_DROP: u32 = 0;
const NF_STOLEN: u32 = 2;
const NF_VERDICT_MASK: u32 = 0xff;

#[inline(always)]
fn report(
    skb: u64,
    state: u64,
    verdict: u32,
    which: u8,
    table_name: u64,
    inline_name: bool,
    chain_name: u64,
) {
    count(counter::VERDICT_SEEN);
    let verdict = verdict & NF_VERDICT_MASK;
    // nf_tables frees a packet it drops itself on newer kernels and returns
    // NF_STOLEN: those walks are reported too, userspace pairs them with the
    // drop.
    if ALL_VERDICTS.load() == 0
        && verdict != NF_DROP
        && !(which == backend::NFT && verdict == NF_STOLEN)
    {
        return;
    }
    let Some(nf) = skb_event(skb, &NF_SCRATCH, kind::VERDICT) else {
        return;
    };
    nf.ev.reason = verdict;
    hook_and_pf(state, nf);
    nf.backend = which;
    if table_name != 0 {
        if inline_name {
            if let Some(name) = Kernel(table_name).read::<[u8; 32]>(0) {
                nf.table = name;
            }
        } else {
            // SAFETY: the helper checks the kernel address itself and writes
            // at most `nf.table`'s length.
            let _ =
                unsafe { bpf_probe_read_kernel_str_bytes(table_name as *const u8, &mut nf.table) };
        }
    }
    if chain_name != 0 {
        // SAFETY: as for the table name.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(chain_name as *const u8, &mut nf.chain) };
    }
    emit(nf, counter::VERDICT_EMITTED);
}

/// The hook and family of the `struct nf_hook_state` at `state` into `nf`.
#[inline(always)]
pub fn hook_and_pf(state: u64, nf: &mut NfEvent) {
    let off = NF_OFFSETS.load();
    nf.hook = field(state, off.state_hook).unwrap_or(u8::MAX);
    nf.pf = field(state, off.state_pf).unwrap_or(0);
}

/// `unsigned int nft_do_chain(struct nft_pktinfo *pkt, void *priv /* struct nft_chain */)`
#[inline(always)]
fn nft_verdict(pkt: u64, chain: u64, ret: u64) {
    let off = NF_OFFSETS.load();
    let skb: u64 = field(pkt, off.pktinfo_skb).unwrap_or(0);
    let state: u64 = field(pkt, off.pktinfo_state).unwrap_or(0);
    let table: u64 = field(chain, off.chain_table).unwrap_or(0);
    let table_name: u64 = field(table, off.table_name).unwrap_or(0);
    let chain_name: u64 = field(chain, off.chain_name).unwrap_or(0);
    report(
        skb,
        state,
        ret as u32,
        backend::NFT,
        table_name,
        false,
        chain_name,
    );
}

/// `ipt_do_table` and `ip6t_do_table` share their signature, whose argument
/// order changed in 5.16: (table, skb, state) before, (skb, state, table) since.
#[inline(always)]
fn xt_verdict(a0: u64, a1: u64, a2: u64, ret: u64) {
    let off = NF_OFFSETS.load();
    let (table, skb, state) = if off.ipt_layout == 0 {
        (a0, a1, a2)
    } else {
        (a2, a0, a1)
    };
    let name = if table != 0 && off.xt_table_name != u16::MAX {
        table + off.xt_table_name as u64
    } else {
        0
    };
    report(skb, state, ret as u32, backend::LEGACY, name, true, 0);
}

#[fexit(function = "nft_do_chain")]
pub fn nft_do_chain_exit(ctx: FExitContext) -> i32 {
    nft_verdict(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[fexit(function = "ipt_do_table")]
pub fn ipt_do_table_exit(ctx: FExitContext) -> i32 {
    xt_exit(&ctx)
}

#[fexit(function = "ip6t_do_table")]
pub fn ip6t_do_table_exit(ctx: FExitContext) -> i32 {
    xt_exit(&ctx)
}

#[inline(always)]
fn xt_exit(ctx: &FExitContext) -> i32 {
    // ctx offsets must be constants: read all three, let xt_verdict pick.
    xt_verdict(ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    0
}

/// A table walk in progress, from its kprobe to its kretprobe: walks of one
/// task (or of one CPU's softirqs) nest, e.g. a REJECT sends its ICMP error
/// through the OUTPUT hook from within a FORWARD walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkKey {
    /// pid_tgid, or the CPU (top bit set) for the idle task, whose pid is 0
    /// on every CPU.
    owner: u64,
    /// How many walks of the same owner are under this one.
    depth: u64,
}

/// Arguments by walk, and the number of walks in progress by owner. One entry
/// per walk and no indexing by a variable: older verifiers (5.10) refuse
/// variable offsets into map values. LRU: a kretprobe the kernel missed
/// leaves entries that get evicted.
#[map]
static NF_WALK_ARGS: LruHashMap<WalkKey, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);
#[map]
static NF_WALK_DEPTH: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn walk_owner() -> u64 {
    let id = bpf_get_current_pid_tgid();
    if id as u32 == 0 {
        // SAFETY: a helper without arguments or preconditions.
        (1u64 << 63) | unsafe { bpf_get_smp_processor_id() } as u64
    } else {
        id
    }
}

#[inline(always)]
fn walk_enter(a0: u64, a1: u64, a2: u64) -> u32 {
    let owner = walk_owner();
    // SAFETY: the value is copied at once; another program changing or
    // evicting it meanwhile gives at worst a stale depth, not a bad read.
    let depth = unsafe { NF_WALK_DEPTH.get(&owner) }.copied().unwrap_or(0);
    let _ = NF_WALK_ARGS.insert(&WalkKey { owner, depth }, &[a0, a1, a2], 0);
    let _ = NF_WALK_DEPTH.insert(&owner, &(depth + 1), 0);
    0
}

/// The arguments of the innermost walk in progress, which ends.
#[inline(always)]
fn walk_leave() -> Option<[u64; 3]> {
    let owner = walk_owner();
    // SAFETY: copied at once, as in walk_enter.
    let depth = unsafe { NF_WALK_DEPTH.get(&owner) }.copied()?;
    if depth <= 1 {
        let _ = NF_WALK_DEPTH.remove(&owner);
    } else {
        let _ = NF_WALK_DEPTH.insert(&owner, &(depth - 1), 0);
    }
    let key = WalkKey {
        owner,
        depth: depth.checked_sub(1)?,
    };
    // SAFETY: copied at once, as in walk_enter.
    let args = unsafe { NF_WALK_ARGS.get(&key) }.copied();
    let _ = NF_WALK_ARGS.remove(&key);
    args
}

#[kprobe]
pub fn nft_do_chain_entry(ctx: ProbeContext) -> u32 {
    walk_enter(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0), 0)
}

#[kretprobe]
pub fn nft_do_chain_return(ctx: RetProbeContext) -> u32 {
    if let Some([pkt, chain, _]) = walk_leave() {
        nft_verdict(pkt, chain, ctx.ret());
    }
    0
}

/// For `ipt_do_table` and `ip6t_do_table`.
#[kprobe]
pub fn xt_do_table_entry(ctx: ProbeContext) -> u32 {
    walk_enter(
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
    )
}

#[kretprobe]
pub fn xt_do_table_return(ctx: RetProbeContext) -> u32 {
    if let Some([a0, a1, a2]) = walk_leave() {
        xt_verdict(a0, a1, a2, ctx.ret());
    }
    0
}
