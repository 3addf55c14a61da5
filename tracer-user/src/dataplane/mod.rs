//! Dataplanes that decide outside netfilter, read from their own state on
//! the node: one module per dataplane.

pub mod calico_ebpf;
