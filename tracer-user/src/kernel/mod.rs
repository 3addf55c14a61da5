//! Reading the running kernel and this node: BTF, symbols, netlink, sysctls.

pub mod btf;
pub mod kallsyms;
pub mod netlink;
pub mod netns;
pub mod system;
