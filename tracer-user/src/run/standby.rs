//! `calitrace standby`: what the agent DaemonSet's pods run. It prints the
//! doctor's checks once, as text on stdout (`kubectl logs` shows them), then
//! waits for SIGTERM, SIGINT or SIGHUP, stops the agents still running in the
//! container (as the preStop hook does, should the pod have none) and exits
//! 0. It loads nothing into the kernel: tracing happens in `kubectl exec ...
//! calitrace agent` sessions in the same container.

use std::io::Write;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::doctor::{checks_under, failed_line, write_report};
use super::registry;
use crate::cli::StandbyArgs;
use crate::doctor::HostRoot;

/// Ends standby (the kubelet stops a container with SIGTERM).
const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

pub fn run(args: StandbyArgs) -> Result<()> {
    // Before the checks, so that a SIGTERM while they run is not lost: as a
    // container's PID 1, a signal without a handler would be ignored.
    let mut signals = Signals::new(STOP_SIGNALS).context("installing the signal handlers")?;
    let root = HostRoot::new(&args.host_root);
    let checks = checks_under(&root);
    // A report that cannot be written (stdout gone) is no reason to leave:
    // the pod would only be restarted.
    if let Err(e) = print_report(&root, &checks) {
        eprintln!("calitrace: standby: writing the doctor's report: {e}");
    }
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
    let stopped = registry::stop_all(registry::STOP_WITHIN);
    if !stopped.ended.is_empty() || !stopped.running.is_empty() {
        eprintln!(
            "calitrace: standby: {name}: {} agent(s) stopped, {} still running",
            stopped.ended.len(),
            stopped.running.len()
        );
    }
    eprintln!("calitrace: standby: {name}: exiting");
    Ok(())
}

fn print_report(root: &HostRoot, checks: &[crate::doctor::Check]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write_report(&mut out, "calitrace standby", root, checks)?;
    if let Some(line) = failed_line(checks) {
        writeln!(out, "calitrace: {line}")?;
    }
    writeln!(
        out,
        "calitrace: standby: waiting (trace with `calitrace agent` in this container); SIGTERM ends it"
    )?;
    out.flush()
}
