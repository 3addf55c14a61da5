//! Loading the eBPF object, attaching what this kernel allows, and undoing it
//! all when dropped (normal exit, signals and errors alike).

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FExit, RawTracePoint, SchedClassifier, TcAttachType, tc},
};
use tracer_common::{SkbOffsets, counter, filter::FilterProg};

use super::capabilities::{Capabilities, ProbeReport};
use super::nf_link::{self, NfLinks};
use crate::kernel::{btf::KernelBtf, netlink, netlink::Link};
use crate::netfilter::Inventory;

/// The probe report's name for the netfilter link observation points.
const NF_LINKS: &str = "netfilter links (6.4+)";

/// The object built from `tracer-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));

pub struct LoadOptions<'a> {
    pub filter: FilterProg,
    /// Report drops only from these namespaces; `None` = all.
    pub netns: Option<Vec<u32>>,
    pub own_netns: u32,
    pub ring_bytes: u32,
    pub interfaces: &'a [Link],
    pub attach: bool,
    /// Report every netfilter verdict, not only drops.
    pub all_verdicts: bool,
    /// The netns' tables: netfilter links also go just after their priorities.
    pub inventory: Option<&'a Inventory>,
}

pub struct Tracer {
    /// Netfilter link observation points (raw bpf(2), see `nf_link`).
    nf_links: Option<NfLinks>,
    ebpf: Option<Ebpf>,
    ring: Option<RingBuf<MapData>>,
    pub report: ProbeReport,
    /// Interfaces with tc programs attached.
    pub interfaces: Vec<String>,
    /// clsact qdiscs calitrace added (netlink attach on kernels before TCX); removed on drop.
    created_clsact: Vec<u32>,
}

/// One line for a failed load/attach: the innermost cause is usually the
/// useful part (e.g. "Operation not permitted").
fn why(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    shorten_verifier_log(&chain.join(": "))
}

/// Verifier logs run to thousands of lines: keep the error and the log's last line.
fn shorten_verifier_log(msg: &str) -> String {
    match msg.split_once("Verifier output:") {
        Some((head, log)) => {
            let head = head.trim_end_matches(['.', ' ']);
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with(':'));
            match last {
                Some(l) => format!("{head} (verifier: {l})"),
                None => head.to_string(),
            }
        }
        None => msg.to_string(),
    }
}

impl Tracer {
    pub fn load(
        caps: &Capabilities,
        btf: Option<&KernelBtf>,
        opts: LoadOptions<'_>,
    ) -> Result<Tracer> {
        let offsets = btf.map(KernelBtf::skb_offsets).unwrap_or(SkbOffsets::UNSET);
        let has_reason: u8 = (offsets.reason_arg != SkbOffsets::ABSENT) as u8;
        let netns_filter: u8 = opts.netns.is_some() as u8;
        let nf_offsets = btf
            .map(KernelBtf::nf_offsets)
            .unwrap_or(tracer_common::NfOffsets::UNSET);
        let all_verdicts: u8 = opts.all_verdicts as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global("SKB_OFFSETS", &offsets, true)
            .override_global("HAS_REASON", &has_reason, true)
            .override_global("NETNS_FILTER", &netns_filter, true)
            .override_global("TC_NETNS", &opts.own_netns, true)
            .override_global("NF_OFFSETS", &nf_offsets, true)
            .override_global("ALL_VERDICTS", &all_verdicts, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .load(OBJECT)
            .context("loading the eBPF maps")?;
        // Relocated while every map is still in `ebpf` (EVENTS is taken below).
        let nf_program = nf_link::Program::relocate(OBJECT, &ebpf);

        let mut filter: Array<_, FilterProg> =
            Array::try_from(ebpf.map_mut("FILTER").context("FILTER map")?)?;
        filter
            .set(0, opts.filter, 0)
            .context("setting the filter")?;
        if let Some(list) = &opts.netns {
            let mut set: HashMap<_, u32, u8> =
                HashMap::try_from(ebpf.map_mut("NETNS").context("NETNS map")?)?;
            for ns in list {
                set.insert(ns, 1, 0)
                    .context("adding a namespace to the drop filter")?;
            }
        }
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map")?)?;

        let mut tracer = Tracer {
            nf_links: None,
            ebpf: None,
            ring: Some(ring),
            report: ProbeReport::default(),
            interfaces: Vec::new(),
            created_clsact: Vec::new(),
        };
        tracer.attach_tc(&mut ebpf, caps, &opts)?;
        tracer.attach_drops(&mut ebpf, caps, btf, &opts);
        tracer.attach_netfilter(&mut ebpf, caps, btf, &opts);
        tracer.attach_nf_links(nf_program, caps, btf, &opts);
        tracer.ebpf = Some(ebpf);
        Ok(tracer)
    }

    fn attach_tc(
        &mut self,
        ebpf: &mut Ebpf,
        caps: &Capabilities,
        opts: &LoadOptions<'_>,
    ) -> Result<()> {
        let mechanism = if caps.tcx() { "TCX" } else { "netlink clsact" };
        for name in ["tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3"] {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
            if let Err(e) = prog.load() {
                self.report.missing(format!("tc ({name})"), why(&e.into()));
                return Ok(());
            }
        }
        if !opts.attach {
            self.report.ok(
                format!("tc classifier ({mechanism})"),
                Some("loadable".into()),
            );
            return Ok(());
        }
        for link in opts.interfaces {
            let (ingress, egress) = if link.has_ethernet_header() {
                ("tc_ingress", "tc_egress")
            } else {
                ("tc_ingress_l3", "tc_egress_l3")
            };
            if !caps.tcx() {
                // An error means the qdisc is already there (someone else's):
                // it stays in place on exit.
                if tc::qdisc_add_clsact(&link.name).is_ok() {
                    self.created_clsact.push(link.index);
                }
            }
            let mut attach = |prog_name: &str, ty: TcAttachType| -> Result<()> {
                let prog: &mut SchedClassifier =
                    ebpf.program_mut(prog_name).context("program")?.try_into()?;
                prog.attach(&link.name, ty)
                    .map(|_| ())
                    .map_err(|e| anyhow!(e))
            };
            match attach(ingress, TcAttachType::Ingress)
                .and_then(|_| attach(egress, TcAttachType::Egress))
            {
                Ok(()) => self.interfaces.push(link.name.clone()),
                Err(e) => self.report.missing(format!("tc on {}", link.name), why(&e)),
            }
        }
        if !self.interfaces.is_empty() {
            self.report.ok(
                format!("tc classifier ({mechanism})"),
                Some(format!("ingress+egress on {}", self.interfaces.join(", "))),
            );
        }
        Ok(())
    }

    fn attach_drops(
        &mut self,
        ebpf: &mut Ebpf,
        caps: &Capabilities,
        btf: Option<&KernelBtf>,
        opts: &LoadOptions<'_>,
    ) {
        const NAME: &str = "kfree_skb raw tracepoint";
        if btf.is_none() {
            self.report.missing(
                NAME,
                "no kernel BTF (/sys/kernel/btf/vmlinux): skb offsets unknown",
            );
            return;
        }
        let result = (|| -> Result<()> {
            let prog: &mut RawTracePoint = ebpf
                .program_mut("kfree_skb")
                .context("program")?
                .try_into()?;
            prog.load()?;
            if opts.attach {
                prog.attach("kfree_skb")?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let reasons = btf.map(|b| b.drop_reasons().len()).unwrap_or(0);
                let detail = if reasons > 0 {
                    format!("{reasons} drop reasons from BTF")
                } else {
                    format!("no drop reasons on kernel {}: location only", caps.kernel)
                };
                self.report.ok(NAME, Some(detail));
            }
            Err(e) => self.report.missing(NAME, why(&e)),
        }
    }

    /// fexit on the netfilter table walkers: exact backend/table/chain/verdict.
    fn attach_netfilter(
        &mut self,
        ebpf: &mut Ebpf,
        caps: &Capabilities,
        btf: Option<&KernelBtf>,
        opts: &LoadOptions<'_>,
    ) {
        const PROBES: [(&str, &str, &str); 3] = [
            (
                "nft_do_chain_exit",
                "nft_do_chain",
                "exact nf_tables verdicts (table, chain)",
            ),
            (
                "ipt_do_table_exit",
                "ipt_do_table",
                "exact iptables-legacy verdicts (table, hook)",
            ),
            (
                "ip6t_do_table_exit",
                "ip6t_do_table",
                "exact ip6tables-legacy verdicts (table, hook)",
            ),
        ];
        let fallback = if caps.kprobes {
            "kprobes are present but not used yet"
        } else {
            "no kprobes either"
        };
        let btf_sys = match (btf, aya::Btf::from_sys_fs()) {
            (Some(_), Ok(b)) => b,
            _ => {
                for (_, func, _) in PROBES {
                    self.report.missing(
                        format!("fexit {func}"),
                        format!("no kernel BTF; {fallback}"),
                    );
                }
                return;
            }
        };
        for (prog_name, func, what) in PROBES {
            let result = (|| -> Result<()> {
                let prog: &mut FExit =
                    ebpf.program_mut(prog_name).context("program")?.try_into()?;
                prog.load(func, &btf_sys)?;
                if opts.attach {
                    prog.attach()?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => self
                    .report
                    .ok(format!("fexit {func}"), Some(what.to_string())),
                Err(e) => self.report.missing(
                    format!("fexit {func}"),
                    format!("{}{}; {fallback}", why(&e), caps.lockdown_note()),
                ),
            }
        }
    }

    /// BPF netfilter links around each IPv4/IPv6 hook's priorities.
    fn attach_nf_links(
        &mut self,
        program: Result<nf_link::Program>,
        caps: &Capabilities,
        btf: Option<&KernelBtf>,
        opts: &LoadOptions<'_>,
    ) {
        if btf.is_none() {
            self.report.missing(
                NF_LINKS,
                "no kernel BTF (/sys/kernel/btf/vmlinux): skb offsets unknown",
            );
            return;
        }
        let program = match program {
            Ok(p) => p,
            Err(e) => return self.report.missing(NF_LINKS, why(&e)),
        };
        let (points, left_out) = nf_link::plan(opts.inventory);
        let links = match NfLinks::load(&program, &points, opts.attach) {
            Ok(l) => l,
            Err(e) => {
                let reason = if caps.at_least(6, 4) {
                    e.to_string()
                } else {
                    format!(
                        "kernel {} is older than 6.4, which added BPF netfilter programs ({e})",
                        caps.kernel
                    )
                };
                return self.report.missing(NF_LINKS, reason);
            }
        };
        if !opts.attach {
            self.report.ok(NF_LINKS, Some("loadable".into()));
        } else if links.attached.is_empty() {
            let reason = links
                .failed
                .first()
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| "no points".into());
            self.report.missing(NF_LINKS, reason);
        } else {
            let mut detail = nf_link::describe(&links.attached);
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
                    "; {left_out} more table priorities left out (limit {} links)",
                    nf_link::MAX_LINKS
                ));
            }
            self.report.ok(NF_LINKS, Some(detail));
            self.nf_links = Some(links);
        }
    }

    /// How netfilter drops are attributed with the probes that loaded.
    pub fn attribution_method(&self) -> String {
        let exact: Vec<&str> = self
            .report
            .attached
            .iter()
            .filter_map(|p| p.name.strip_prefix("fexit "))
            .collect();
        if exact.is_empty() {
            let links = self.report.attached.iter().any(|p| p.name == NF_LINKS);
            let hook = if links {
                "hook from netfilter links"
            } else {
                "hook from addresses"
            };
            format!(
                "inferred (backend from the drop location, {hook}, table/chain/rule from rule counters)"
            )
        } else {
            format!(
                "exact via fexit on {} (rule from counters)",
                exact.join(", ")
            )
        }
    }

    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// Replaces the in-kernel filter while tracing.
    pub fn set_filter(&mut self, prog: FilterProg) -> Result<()> {
        let ebpf = self.ebpf.as_mut().context("not loaded")?;
        let mut filter: Array<_, FilterProg> =
            Array::try_from(ebpf.map_mut("FILTER").context("FILTER map")?)?;
        filter.set(0, prog, 0)?;
        Ok(())
    }

    /// Kernel-side counters summed over CPUs, indexed by `tracer_common::counter`.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        let Some(map) = self.ebpf.as_ref().and_then(|e| e.map("COUNTERS")) else {
            return out;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(vals) = arr.get(&(i as u32), 0) {
                *slot = vals.iter().sum();
            }
        }
        out
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Dropping the Ebpf object detaches every link and closes every
        // program; the netfilter links are closed the same way, first.
        self.nf_links.take();
        self.ring.take();
        self.ebpf.take();
        for ifindex in self.created_clsact.drain(..) {
            let _ = netlink::delete_clsact(ifindex);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shorten_verifier_log;

    #[test]
    fn verifier_logs_are_shortened() {
        let long = "the BPF_PROG_LOAD syscall returned Argument list too long (os error 7). Verifier output: 0: R1=ctx()\n1: ...\nprocessed 1000001 insns (limit 1000000)\n: Argument list too long";
        assert_eq!(
            shorten_verifier_log(long),
            "the BPF_PROG_LOAD syscall returned Argument list too long (os error 7) (verifier: processed 1000001 insns (limit 1000000))"
        );
        let empty = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output: ";
        assert_eq!(
            shorten_verifier_log(empty),
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)"
        );
        assert_eq!(shorten_verifier_log("plain"), "plain");
    }
}
