//! A stand-in for Calico Felix's eBPF dataplane programs, **for calitrace's
//! integration tests only**: it is not Calico and does none of Calico's work
//! (no policy, no conntrack, no NAT). It only leaves in the maps what Felix's
//! tc programs leave there when they drop a packet, so that tests can check
//! how calitrace reads them.
//!
//! It reproduces exactly these Calico maps (names, types, key and value
//! layouts; Calico v3.32.1, `felix/bpf-gpl/counters.h`, `rule_counters.h`):
//!
//! * `cali_counters6`: `BPF_MAP_TYPE_PERCPU_HASH`, key `{u32 ifindex; u32 hook}`
//!   (hook 0 = tc ingress, 1 = tc egress), value `[u64; 27]` (v3.32.1's
//!   `MAX_COUNTERS_SIZE`; index 0 = total packets, 4 = dropped by policy, ...),
//!   20000 entries. Like v3.29/v3.30's `counters_get()`, the program creates a
//!   missing entry itself.
//! * `cali_rule_ctrs2`: `BPF_MAP_TYPE_PERCPU_HASH`, key u64 (the rule's
//!   MatchID), value u64 (hits), 10000 entries.
//!
//! and a map of its own, `standin_cfg` (`BPF_MAP_TYPE_ARRAY` u32 -> u64,
//! 4 entries), written by the test:
//!
//! * `[0]` counter index of the drop reason (0: drop nothing);
//! * `[1]` rule MatchID counted on a policy drop (reason 4; 0: none);
//! * `[2]` the hook value of the counters key (0 or 1);
//! * `[3]` the IPv4 protocol number to drop (1 ICMP, 6 TCP, 17 UDP).
//!
//! The program is named as the kernel shows Calico's entry program
//! (`cali_tc_preamble`, cut to 15 characters), so that whatever looks for
//! Calico's programs on an interface finds it. It counts every packet in counter 0; an IPv4
//! packet of the configured protocol, when a reason is set, gets that counter
//! (and the rule counter for reason 4) and is dropped (`TC_ACT_SHOT`). Every
//! other packet goes on to the next program (`TC_ACT_UNSPEC`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::{Array, PerCpuHashMap},
    programs::TcContext,
};

/// Calico v3.32.1's `MAX_COUNTERS_SIZE`.
const MAX_COUNTERS: usize = 27;
/// Calico v3.26-v3.29's (`cali_counters2`).
const MAX_COUNTERS_3_29: usize = 14;
/// `COUNTER_TOTAL_PACKETS`.
const TOTAL_PACKETS: usize = 0;
/// `CALI_REASON_DROPPED_BY_POLICY`.
const DROPPED_BY_POLICY: u64 = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_HLEN: usize = 14;

/// Calico's `struct counters_key`.
#[repr(C)]
pub struct CountersKey {
    pub ifindex: u32,
    pub hook: u32,
}

#[map(name = "cali_counters6")]
static CALI_COUNTERS: PerCpuHashMap<CountersKey, [u64; MAX_COUNTERS]> =
    PerCpuHashMap::with_max_entries(20000, 0);

/// Calico v3.26-v3.29's counters map; `standin_cfg[4]` = 1 counts in it
/// instead.
#[map(name = "cali_counters2")]
static CALI_COUNTERS_3_29: PerCpuHashMap<CountersKey, [u64; MAX_COUNTERS_3_29]> =
    PerCpuHashMap::with_max_entries(20000, 0);

#[map(name = "cali_rule_ctrs2")]
static CALI_RULE_CTRS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(10000, 0);

#[map(name = "standin_cfg")]
static STANDIN_CFG: Array<u64> = Array::with_max_entries(5, 0);

fn cfg(index: u32) -> u64 {
    STANDIN_CFG.get(index).copied().unwrap_or(0)
}

/// The counters of `key` in `map`, created zeroed if missing.
fn counters<const N: usize>(
    map: &PerCpuHashMap<CountersKey, [u64; N]>,
    key: &CountersKey,
) -> Option<*mut [u64; N]> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    let _ = map.insert(key, [0u64; N], BPF_NOEXIST.into());
    map.get_ptr_mut(key)
}

#[classifier]
pub fn cali_tc_preambl(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = CountersKey {
        ifindex,
        hook: cfg(2) as u32,
    };
    if cfg(4) == 1 {
        return run(&ctx, &CALI_COUNTERS_3_29, &key);
    }
    run(&ctx, &CALI_COUNTERS, &key)
}

/// Counts the packet in `map` and drops it as configured.
#[inline(always)]
fn run<const N: usize>(
    ctx: &TcContext,
    map: &PerCpuHashMap<CountersKey, [u64; N]>,
    key: &CountersKey,
) -> i32 {
    let Some(ctrs) = counters(map, key) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: a per-CPU map value of this CPU, valid for the whole run.
    unsafe { (*ctrs)[TOTAL_PACKETS] += 1 };

    let reason = cfg(0);
    if reason == 0 || reason >= N as u64 {
        return TC_ACT_UNSPEC;
    }
    let is_ipv4 = ctx
        .load::<u16>(12)
        .is_ok_and(|p| u16::from_be(p) == ETH_P_IP);
    if !is_ipv4 || ctx.load::<u8>(ETH_HLEN + 9).ok() != Some(cfg(3) as u8) {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: as above; `reason` is below N.
    unsafe { (*ctrs)[reason as usize] += 1 };
    let match_id = cfg(1);
    if reason == DROPPED_BY_POLICY && match_id != 0 {
        if CALI_RULE_CTRS.get_ptr_mut(match_id).is_none() {
            let _ = CALI_RULE_CTRS.insert(match_id, 0, BPF_NOEXIST.into());
        }
        if let Some(hits) = CALI_RULE_CTRS.get_ptr_mut(match_id) {
            // SAFETY: a per-CPU map value of this CPU, valid for the whole run.
            unsafe { *hits += 1 };
        }
    }
    TC_ACT_SHOT as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
