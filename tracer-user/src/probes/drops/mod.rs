//! The `kfree_skb` raw tracepoint: every packet the kernel frees as a drop,
//! with its reason (from BTF where the kernel has reasons) and location.
//! Drops are reported from the namespaces in the NETNS map only, unless
//! tracing every namespace.

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use aya::programs::RawTracePoint;

use super::loader::why;
use super::{Loading, Probe};
use crate::events::{self, DecodeError, Input};

const NAME: &str = "kfree_skb raw tracepoint";

pub struct DropsProbe {
    /// Drops are reported only from the namespaces in the NETNS map.
    netns_filter: bool,
}

/// A drop's record.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    events::decode(bytes).map(Input::Event)
}

impl Probe for DropsProbe {
    fn load(&mut self, l: &mut Loading<'_>) -> Result<()> {
        let Some(btf) = l.btf else {
            l.report.missing(
                NAME,
                "no kernel BTF (/sys/kernel/btf/vmlinux): skb offsets unknown",
            );
            return Ok(());
        };
        let result = (|| -> Result<()> {
            let prog: &mut RawTracePoint = l
                .ebpf
                .program_mut("kfree_skb")
                .context("program")?
                .try_into()?;
            prog.load()?;
            if l.opts.attach {
                prog.attach("kfree_skb")?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let reasons = btf.drop_reasons().len();
                let detail = if reasons > 0 {
                    format!("{reasons} drop reasons from BTF")
                } else {
                    format!("no drop reasons on kernel {}: location only", l.caps.kernel)
                };
                l.report.ok(NAME, Some(detail));
            }
            Err(e) => l.report.missing(NAME, why(&e)),
        }
        Ok(())
    }
}

impl DropsProbe {
    pub fn new(netns_filter: bool) -> DropsProbe {
        DropsProbe { netns_filter }
    }

    /// Whether drops are reported only from the namespaces it was told of.
    pub fn filters_netns(&self) -> bool {
        self.netns_filter
    }

    /// Changes the namespaces drops are reported from; nothing to do when
    /// they are reported from every namespace.
    pub fn netns_map(
        &self,
        ebpf: &mut Ebpf,
        f: impl FnOnce(&mut HashMap<&mut MapData, u32, u8>) -> Result<(), aya::maps::MapError>,
    ) -> Result<()> {
        if !self.netns_filter {
            return Ok(());
        }
        let mut set: HashMap<_, u32, u8> =
            HashMap::try_from(ebpf.map_mut("NETNS").context("NETNS map")?)?;
        f(&mut set).context("updating the namespaces of the drop filter")
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{Event, kind};

    use super::*;
    use crate::events::encode;
    use crate::probes::decode_input;

    #[test]
    fn drops_decode_and_short_records_are_refused() {
        let ev = Event {
            ts_ns: 42,
            kind: kind::DROP,
            reason: 7,
            ..Default::default()
        };
        let bytes = encode(&ev).to_vec();
        assert_eq!(decode_input(&bytes), Ok(Input::Event(ev)));
        assert_eq!(decode_input(&bytes[..10]), Err(DecodeError(10)));
    }
}
