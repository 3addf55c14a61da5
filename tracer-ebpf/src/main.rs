//! calitrace's kernel programs.
//!
//! Kept deliberately small: parse headers, apply the in-kernel filters, emit one
//! fixed-size `Event`. Everything else (names, correlation, diagnosis) happens in
//! userspace where it can be tested.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod drop;
mod encap;
mod event;
mod maps;
mod netfilter;
mod nf_link;
mod parse;
mod prefilter;
mod skb;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
