//! The netfilter link points cost every forwarded packet about seven program
//! runs and take it off netfilter's fast path, and they change an answer
//! only for a netfilter drop that no table walk saw (its hook is otherwise a
//! guess from addresses and counters). So they are linked when the first
//! such drop comes and unlinked once none came for a while.

use std::time::Instant;

use crate::probes::loader::Tracer;
use crate::probes::nf_link::QUIET;

#[derive(Default)]
pub struct NfDemand {
    /// The pipeline's count of such drops when last looked at.
    seen: u64,
    last_drop: Option<Instant>,
}

impl NfDemand {
    /// `inferred`: the pipeline's count of netfilter drops in this node's
    /// namespace that no table walk saw.
    pub fn tick(&mut self, tracer: &mut Tracer, inferred: u64, now: Instant) {
        if inferred > self.seen {
            self.seen = inferred;
            self.last_drop = Some(now);
            if let Some(n) = tracer.link_nf_points()
                && n > 0
            {
                eprintln!(
                    "calitrace: netfilter link points linked ({n}): a netfilter drop needs its hook"
                );
            }
        } else if tracer.nf_points_linked()
            && self
                .last_drop
                .is_none_or(|t| now.duration_since(t) >= QUIET)
        {
            tracer.unlink_nf_points();
            eprintln!(
                "calitrace: netfilter link points unlinked: no netfilter drop for {} s",
                QUIET.as_secs()
            );
        }
    }
}
