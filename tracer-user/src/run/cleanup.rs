//! `calitrace cleanup`: removes what SIGKILLed calitraces left on this node
//! (`probes::leftovers`, the trace tables), after stopping the agents that
//! run here with `--stop-agents` (the DaemonSet's preStop hook). It prints
//! one line per thing removed; `cluster --k8s --cleanup` runs it in every
//! DaemonSet pod and shows the lines per node.

use anyhow::{Result, bail};

use super::registry::{self, STOP_WITHIN};
use super::usage;
use crate::cli::CleanupArgs;
use crate::netfilter::trace::NfTracer;
use crate::probes::leftovers;

pub fn run(args: CleanupArgs) -> Result<()> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(usage(
            "calitrace cleanup removes tc filters and nftables tables: run it as root (sudo calitrace cleanup)",
        ));
    }
    let mut failed = 0;
    if args.stop_agents {
        let s = registry::stop_all(STOP_WITHIN);
        for pid in &s.ended {
            println!("stopped agent {pid}: it detached and exited");
        }
        for pid in &s.running {
            println!("agent {pid} still runs after {} s", STOP_WITHIN.as_secs());
            failed += 1;
        }
    }
    let mut removed = 0;
    for r in leftovers::remove_tc_filters(&args.host_root.join("proc"))? {
        let hook = if r.ingress { "ingress" } else { "egress" };
        match r.error {
            None => {
                println!("removed tc filter {} at {} {hook}", r.program, r.iface);
                removed += 1;
            }
            Some(e) => {
                println!(
                    "cannot remove tc filter {} at {} {hook}: {e}",
                    r.program, r.iface
                );
                failed += 1;
            }
        }
    }
    match NfTracer::remove_left_behind() {
        Ok(tables) => {
            for t in &tables {
                println!("removed nftables table inet {t}");
            }
            removed += tables.len();
        }
        Err(e) => println!("nftables trace tables not checked: {e}"),
    }
    if removed == 0 && failed == 0 {
        println!(
            "nothing left behind: no calitrace tc filter without its calitrace, no stale trace table"
        );
    }
    if failed > 0 {
        bail!("cleanup: {failed} thing(s) could not be stopped or removed (above)");
    }
    Ok(())
}
