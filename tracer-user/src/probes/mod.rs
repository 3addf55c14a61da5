//! Kernel side: loading and attaching the eBPF programs, reading their ring
//! buffer, and reporting what this kernel allows.

pub mod capabilities;
pub mod exact;
pub mod ifaces;
pub mod leftovers;
pub mod loader;
pub mod nf_link;
pub mod raw;
pub mod tc;
