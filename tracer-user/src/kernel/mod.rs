//! Reading the running kernel and this node: BTF, symbols, netlink, sysctls.

pub mod bpf_map;
pub mod btf;
pub(crate) mod bytes;
pub mod kallsyms;
pub mod netlink;
pub mod netns;
pub(crate) mod syscall;
pub mod system;
pub mod tc_filters;
pub mod tc_programs;
