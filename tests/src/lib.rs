//! Test support for calitrace: a Calico-like two-node lab built from network namespaces.
//!
//! See [`lab`] for the topology and the API.

pub mod apiserver;
pub mod calitrace;
pub mod felix;
pub mod fleet;
pub mod k8s_lab;
pub mod kernel;
pub mod lab;
pub mod standby;
pub mod synth;

pub use lab::{Backend, Lab, LinkStats, Mode, Node, Pod, cleanup_stale};
