//! Exact netfilter attribution: fexit on `nft_do_chain` (nf_tables: table,
//! chain, verdict) and `ipt_do_table` (x_tables: table, hook, verdict).
//! Kernels without BPF trampolines (or with lockdown) refuse to load these;
//! userspace then falls back to inferred attribution.

use aya_ebpf::{
    Global,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{fexit, map},
    maps::PerCpuArray,
    programs::FExitContext,
};
use tracer_common::{NfEvent, NfOffsets, backend, counter, kind};

use crate::maps::{EVENTS, count, filter_matches};
use crate::parse::Reader;
use crate::skb::{Kernel, field, netns_and_ifindex, netns_wanted, parse};

#[unsafe(no_mangle)]
pub static NF_OFFSETS: Global<NfOffsets> = Global::new(NfOffsets::UNSET);

/// Non-zero: report every verdict (`--verdicts`); zero: only drops.
#[unsafe(no_mangle)]
static ALL_VERDICTS: Global<u8> = Global::new(0);

#[map]
static NF_SCRATCH: PerCpuArray<NfEvent> = PerCpuArray::with_max_entries(1, 0);

const NF_DROP: u32 = 0;
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
    if ALL_VERDICTS.load() == 0 && verdict != NF_DROP {
        return;
    }
    let (netns, ifindex) = netns_and_ifindex(skb);
    if !netns_wanted(netns) {
        return;
    }
    let Some(nf) = NF_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let nf = unsafe { &mut *nf };
    *nf = NfEvent::default();
    parse(skb, &mut nf.ev.pkt);
    if !filter_matches(&nf.ev.pkt) {
        return;
    }
    let off = NF_OFFSETS.load();
    nf.ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    nf.ev.kind = kind::VERDICT;
    nf.ev.netns = netns;
    nf.ev.ifindex = ifindex;
    nf.ev.reason = verdict;
    nf.hook = field(state, off.state_hook).unwrap_or(u8::MAX);
    nf.pf = field(state, off.state_pf).unwrap_or(0);
    nf.backend = which;
    if table_name != 0 {
        if inline_name {
            if let Some(name) = Kernel(table_name).read::<[u8; 32]>(0) {
                nf.table = name;
            }
        } else {
            let _ =
                unsafe { bpf_probe_read_kernel_str_bytes(table_name as *const u8, &mut nf.table) };
        }
    }
    if chain_name != 0 {
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(chain_name as *const u8, &mut nf.chain) };
    }
    if EVENTS.output::<NfEvent>(nf, 0).is_ok() {
        count(counter::VERDICT_EMITTED);
    } else {
        count(counter::LOST);
    }
}

#[fexit(function = "nft_do_chain")]
pub fn nft_do_chain_exit(ctx: FExitContext) -> i32 {
    // unsigned int nft_do_chain(struct nft_pktinfo *pkt, void *priv /* struct nft_chain */)
    let pkt: u64 = ctx.arg(0);
    let chain: u64 = ctx.arg(1);
    let ret: u64 = ctx.arg(2);
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

/// `ipt_do_table` and `ip6t_do_table` share their signature.
#[inline(always)]
fn xt_exit(ctx: &FExitContext) -> i32 {
    let off = NF_OFFSETS.load();
    // The argument order changed in 5.16; ctx offsets must be constants, so
    // branch on the layout userspace found in BTF.
    let (table, skb, state): (u64, u64, u64) = if off.ipt_layout == 0 {
        (ctx.arg(0), ctx.arg(1), ctx.arg(2))
    } else {
        (ctx.arg(2), ctx.arg(0), ctx.arg(1))
    };
    let ret: u64 = ctx.arg(3);
    let name = if table != 0 && off.xt_table_name != u16::MAX {
        table + off.xt_table_name as u64
    } else {
        0
    };
    report(skb, state, ret as u32, backend::LEGACY, name, true, 0);
    0
}
