//! The netfilter links as a probe: loaded and tried once at start (one
//! attach, undone, shows that the kernel takes them), then linked on demand.

use anyhow::{Result, anyhow};

use super::super::loader::why;
use super::super::{Loading, Probe};
use super::{MAX_LINKS, NfLinks, Program, describe, on_demand, plan};

/// The probe report's name for the netfilter link observation points.
pub const NF_LINKS: &str = "netfilter links (6.4+)";

#[derive(Default)]
pub struct NfLinkProbe {
    /// The links, loaded and unlinked, where the kernel takes them.
    links: Option<NfLinks>,
}

impl Probe for NfLinkProbe {
    fn load(&mut self, l: &mut Loading<'_>) -> Result<()> {
        if l.btf.is_none() {
            l.report.missing(
                NF_LINKS,
                "no kernel BTF (/sys/kernel/btf/vmlinux): skb offsets unknown",
            );
            return Ok(());
        }
        let program = match l
            .object
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(Program::new)
        {
            Ok(p) => p,
            Err(e) => {
                l.report.missing(NF_LINKS, why(&e));
                return Ok(());
            }
        };
        let (points, left_out) = plan(l.opts.inventory);
        let mut links = match NfLinks::load(&program, &points, l.opts.attach) {
            Ok(links) => links,
            Err(e) => {
                let reason = if l.caps.at_least(6, 4) {
                    e.to_string()
                } else {
                    format!(
                        "kernel {} is older than 6.4, which added BPF netfilter programs ({e})",
                        l.caps.kernel
                    )
                };
                l.report.missing(NF_LINKS, reason);
                return Ok(());
            }
        };
        if !l.opts.attach {
            l.report.ok(NF_LINKS, Some("loadable".into()));
            return Ok(());
        }
        links.attach();
        if links.attached.is_empty() {
            let reason = links
                .failed
                .first()
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| "no points".into());
            l.report.missing(NF_LINKS, reason);
            return Ok(());
        }
        l.report.ok(NF_LINKS, Some(report_line(&links, left_out)));
        links.detach();
        self.links = Some(links);
        Ok(())
    }
}

/// What was linked, what the kernel refused, what was left out, and when
/// the links are made.
fn report_line(links: &NfLinks, left_out: usize) -> String {
    let mut detail = describe(&links.attached);
    if let Some((p, e)) = links.failed.first() {
        detail.push_str(&format!(
            "; {} refused (first: pf {} hook {} priority {}: {e})",
            links.failed.len(),
            p.pf,
            p.hook,
            p.priority
        ));
    }
    if left_out > 0 {
        detail.push_str(&format!(
            "; {left_out} more table priorities left out (limit {MAX_LINKS} links)"
        ));
    }
    detail.push_str(&format!("; {}", on_demand()));
    detail
}

impl NfLinkProbe {
    /// Links the observation points. How many links were made now: 0 when
    /// they were linked already, `None` when this kernel has none to link.
    pub fn link(&mut self) -> Option<usize> {
        let links = self.links.as_mut()?;
        if links.is_attached() {
            return Some(0);
        }
        links.attach();
        Some(links.attached.len())
    }

    pub fn unlink(&mut self) {
        if let Some(links) = self.links.as_mut() {
            links.detach();
        }
    }

    pub fn linked(&self) -> bool {
        self.links.as_ref().is_some_and(NfLinks::is_attached)
    }

    /// Closes the links and their program.
    pub fn unload(&mut self) {
        self.links.take();
    }
}
