//! The commands: live tracing, replay, the probe report, doctor, and the
//! DaemonSet's standby.

pub mod agent;
pub mod cleanup;
pub mod cluster;
pub mod doctor;
pub mod event_loop;
pub mod interfaces;
pub mod k8s;
pub mod live;
pub mod merged_replay;
pub mod nf_demand;
pub mod output;
pub mod probes;
pub mod registry;
pub mod replay;
pub mod session;
pub mod setup;
pub mod standby;
pub mod status;

use std::fmt;

/// An error that is the user's to fix (bad filter, missing privileges, no such
/// interface): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The exit code for an error returned by a command.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

pub fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}
