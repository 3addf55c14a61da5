//! Loading the eBPF object, attaching what this kernel allows, and undoing it
//! all when dropped (normal exit, signals and errors alike).

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, SchedClassifier},
};
use tracer_common::{SkbOffsets, counter, filter::FilterProg};

use super::capabilities::{Capabilities, ProbeReport};
use super::exact::{self, ExactProbes};
use super::nf_link::{self, NfLinks};
use super::raw::Relocated;
use super::tc::{self, TcAttachments};
use crate::kernel::{btf::KernelBtf, netlink, netlink::Link};
use crate::netfilter::Inventory;

/// The probe report's name for the netfilter link observation points.
const NF_LINKS: &str = "netfilter links (6.4+)";

/// Calico's VXLAN device, whose UDP port the tc programs decode VXLAN on.
const VXLAN_DEVICE: &str = "vxlan.calico";
/// The IANA VXLAN port, Calico's default: decoded where the node has no
/// `vxlan.calico` (the uplink may still carry VXLAN).
const VXLAN_DEFAULT_PORT: u16 = 4789;

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
    /// Which exact netfilter probes to use.
    pub exact: exact::Mode,
    pub tc_attach: TcAttach,
}

/// How the tc programs attach (`--tc-attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TcAttach {
    /// TCX where the kernel has it (6.6+), else netlink.
    #[default]
    Auto,
    Tcx,
    Netlink,
}

pub struct Tracer {
    /// Netfilter link observation points (raw bpf(2), see `nf_link`).
    nf_links: Option<NfLinks>,
    /// fexit programs loaded with raw bpf(2) (see `exact`).
    exact: Option<ExactProbes>,
    /// Whether the exact probes can read table (and chain) names: per
    /// backend, (legacy, nft).
    names_readable: (bool, bool),
    ebpf: Option<Ebpf>,
    ring: Option<RingBuf<MapData>>,
    pub report: ProbeReport,
    /// The interfaces with tc programs; `None` until the programs loaded.
    tc: Option<TcAttachments>,
    /// Drops are reported only from the namespaces in the NETNS map.
    netns_filter: bool,
    /// UDP port the tc programs decode VXLAN on.
    pub vxlan_port: u16,
}

/// One line for a failed load/attach: the innermost cause is usually the
/// useful part (e.g. "Operation not permitted").
pub(crate) fn why(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    shorten_verifier_log(&chain.join(": "))
}

/// The statistics the verifier appends after its verdict; "processed N
/// insns" is the reason itself when the program was too long (E2BIG).
fn is_log_summary(line: &str, too_long: bool) -> bool {
    (line.starts_with("processed ") && !too_long)
        || line.starts_with("verification time")
        || line.starts_with("stack depth")
}

/// Verifier logs run to thousands of lines: keep the error and the log's last line.
fn shorten_verifier_log(msg: &str) -> String {
    match msg.split_once("Verifier output:") {
        Some((head, log)) => {
            let head = head.trim_end_matches(['.', ' ']);
            let too_long = head.contains("(os error 7)");
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with(':') && !is_log_summary(l, too_long));
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
        let nf_offsets = nf_offsets(btf, caps);
        let all_verdicts: u8 = opts.all_verdicts as u8;
        let vxlan_port = node_vxlan_port();
        let mut ebpf = EbpfLoader::new()
            .override_global("SKB_OFFSETS", &offsets, true)
            .override_global("HAS_REASON", &has_reason, true)
            .override_global("NETNS_FILTER", &netns_filter, true)
            .override_global("TC_NETNS", &opts.own_netns, true)
            .override_global("NF_OFFSETS", &nf_offsets, true)
            .override_global("ALL_VERDICTS", &all_verdicts, true)
            .override_global("VXLAN_PORT", &vxlan_port, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .load(OBJECT)
            .context("loading the eBPF maps")?;
        // Relocated while every map is still in `ebpf` (EVENTS is taken below).
        let relocated = Relocated::new(OBJECT, &ebpf);
        let nf_program = relocated
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(nf_link::Program::new);

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
            exact: None,
            names_readable: (
                nf_offsets.xt_table_name != u16::MAX,
                [
                    nf_offsets.chain_table,
                    nf_offsets.chain_name,
                    nf_offsets.table_name,
                ]
                .iter()
                .all(|&o| o != u16::MAX),
            ),
            ebpf: None,
            ring: Some(ring),
            report: ProbeReport::default(),
            tc: None,
            netns_filter: opts.netns.is_some(),
            vxlan_port,
        };
        tracer.attach_tc(&mut ebpf, caps, &opts)?;
        tracer.attach_drops(&mut ebpf, caps, btf, &opts);
        tracer.exact = Some(exact::load(
            exact::Setup {
                ebpf: &mut ebpf,
                object: relocated.as_ref().ok(),
                caps,
                btf,
                mode: opts.exact,
                attach: opts.attach,
                names: tracer.names_readable,
            },
            &mut tracer.report,
        ));
        tracer.load_nf_links(nf_program, caps, btf, &opts);
        tracer.ebpf = Some(ebpf);
        Ok(tracer)
    }

    fn attach_tc(
        &mut self,
        ebpf: &mut Ebpf,
        caps: &Capabilities,
        opts: &LoadOptions<'_>,
    ) -> Result<()> {
        let tcx = match opts.tc_attach {
            TcAttach::Auto => caps.tcx(),
            TcAttach::Tcx if !caps.tcx() => bail!(
                "--tc-attach tcx needs kernel 6.6 or later (this is {}): use --tc-attach netlink",
                caps.kernel
            ),
            TcAttach::Tcx => true,
            TcAttach::Netlink => false,
        };
        let mut attachments = TcAttachments::new(tcx);
        for name in tc::LOADED_AT_START {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
            if let Err(e) = prog.load() {
                self.report.missing(format!("tc ({name})"), why(&e.into()));
                return Ok(());
            }
        }
        if !opts.attach {
            self.report.ok(
                format!("tc classifier ({})", attachments.mechanism()),
                Some("loadable".into()),
            );
            return Ok(());
        }
        for link in opts.interfaces {
            if let Err(e) = attachments.attach(ebpf, link) {
                self.report.missing(format!("tc on {}", link.name), why(&e));
            }
        }
        self.tc = Some(attachments);
        self.refresh_tc_report();
        Ok(())
    }

    /// The report's tc line, naming the interfaces with programs now.
    pub fn refresh_tc_report(&mut self) {
        let Some(tc) = &self.tc else { return };
        let name = format!("tc classifier ({})", tc.mechanism());
        let names = tc.names();
        let detail = Some(format!("ingress+egress on {}", names.join(", ")));
        let line = self.report.attached.iter().position(|p| p.name == name);
        match (line, names.is_empty()) {
            (Some(i), true) => drop(self.report.attached.remove(i)),
            (Some(i), false) => self.report.attached[i].detail = detail,
            (None, true) => {}
            (None, false) => self.report.ok(name, detail),
        }
    }

    /// Whether the tc programs loaded, so that interfaces can get them.
    pub fn can_attach_tc(&self) -> bool {
        self.tc.is_some()
    }

    /// Attaches the tc programs to one more interface.
    pub fn attach_interface(&mut self, link: &Link) -> Result<()> {
        let (Some(ebpf), Some(tc)) = (self.ebpf.as_mut(), self.tc.as_mut()) else {
            bail!("the tc programs are not loaded");
        };
        tc.attach(ebpf, link)
    }

    /// Detaches the tc programs from interface `index` (gone, or going);
    /// its name when it had them.
    pub fn detach_interface(&mut self, index: u32) -> Option<String> {
        let (Some(ebpf), Some(tc)) = (self.ebpf.as_mut(), self.tc.as_mut()) else {
            return None;
        };
        tc.detach(ebpf, index)
    }

    /// The interfaces with tc programs, in the order they got them.
    pub fn interfaces(&self) -> Vec<String> {
        self.tc
            .as_ref()
            .map(TcAttachments::names)
            .unwrap_or_default()
    }

    /// How many interfaces have tc programs.
    pub fn interface_count(&self) -> usize {
        self.tc.as_ref().map_or(0, TcAttachments::len)
    }

    /// Whether drops are reported only from the namespaces it was told of
    /// (not `--all-netns`).
    pub fn filters_netns(&self) -> bool {
        self.netns_filter
    }

    /// Reports drops from the namespace `inode` too (a pod that appeared).
    /// Nothing to do when drops are reported from every namespace.
    pub fn watch_netns(&mut self, inode: u32) -> Result<()> {
        self.netns_map(|set| set.insert(inode, 1, 0))
    }

    /// No longer reports drops from the namespace `inode` (its pod went: the
    /// inode number may be given to a namespace that is none of ours).
    pub fn unwatch_netns(&mut self, inode: u32) {
        let _ = self.netns_map(|set| set.remove(&inode));
    }

    fn netns_map(
        &mut self,
        f: impl FnOnce(&mut HashMap<&mut MapData, u32, u8>) -> Result<(), aya::maps::MapError>,
    ) -> Result<()> {
        if !self.netns_filter {
            return Ok(());
        }
        let ebpf = self.ebpf.as_mut().context("not loaded")?;
        let mut set: HashMap<_, u32, u8> =
            HashMap::try_from(ebpf.map_mut("NETNS").context("NETNS map")?)?;
        f(&mut set).context("updating the namespaces of the drop filter")
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

    /// BPF netfilter links around each IPv4/IPv6 hook's priorities: the
    /// copies are loaded and one attach is tried (and undone) to see that
    /// the kernel takes the links; they are linked again on demand
    /// ([`Tracer::link_nf_points`]).
    fn load_nf_links(
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
        let mut links = match NfLinks::load(&program, &points, opts.attach) {
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
        if opts.attach {
            links.attach();
        }
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
            detail.push_str(&format!("; {}", nf_link::on_demand()));
            self.report.ok(NF_LINKS, Some(detail));
            links.detach();
            self.nf_links = Some(links);
        }
    }

    /// Links the netfilter observation points (a netfilter drop needs its
    /// hook named). Returns how many links were made now: 0 when they were
    /// linked already, `None` when this kernel has none to link.
    pub fn link_nf_points(&mut self) -> Option<usize> {
        let links = self.nf_links.as_mut()?;
        if links.is_attached() {
            return Some(0);
        }
        links.attach();
        Some(links.attached.len())
    }

    /// Unlinks the netfilter observation points (no drop needs them).
    pub fn unlink_nf_points(&mut self) {
        if let Some(links) = self.nf_links.as_mut() {
            links.detach();
        }
    }

    pub fn nf_points_linked(&self) -> bool {
        self.nf_links.as_ref().is_some_and(NfLinks::is_attached)
    }

    /// How netfilter drops are attributed with the probes that loaded: one
    /// line in all, then one per backend (`calitrace probes` prints them).
    pub fn attribution_method(&self) -> String {
        let exact: Vec<String> = self
            .report
            .exact
            .iter()
            .map(|(k, f)| exact::probe_name(k, f))
            .collect();
        if exact.is_empty() {
            format!("inferred ({})", self.inferred_how())
        } else {
            format!("exact via {} (rule from counters)", exact.join(", "))
        }
    }

    fn inferred_how(&self) -> String {
        let links = self.report.attached.iter().any(|p| p.name == NF_LINKS);
        let hook = if links {
            "hook from netfilter links"
        } else {
            "hook from addresses"
        };
        format!(
            "backend from the drop location (6.8+) or the rule counters, {hook}, table/chain/rule from rule counters"
        )
    }

    /// Per backend ("legacy", "nft"): "exact" or "inferred", and how.
    pub fn attribution_by_backend(&self) -> [(&'static str, String); 2] {
        let walker = |function: &str, names: bool| match self.report.exact_on(function) {
            Some(p) if names => {
                format!("exact ({p}: table and hook from the walk, rule from counters)")
            }
            Some(p) => format!(
                "inferred ({p}: backend and hook exact; this kernel's BTF has no layout for the table name, so table, chain and rule from counters)"
            ),
            None => format!("inferred ({})", self.inferred_how()),
        };
        [
            ("legacy", walker("ipt_do_table", self.names_readable.0)),
            ("nft", walker("nft_do_chain", self.names_readable.1)),
        ]
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

/// The UDP port of this namespace's `vxlan.calico`, else the default port.
fn node_vxlan_port() -> u16 {
    netlink::vxlan_port(VXLAN_DEVICE)
        .ok()
        .flatten()
        .unwrap_or(VXLAN_DEFAULT_PORT)
}

/// The netfilter offsets from BTF, with what older kernels without module
/// BTF (before 5.11) leave out filled in from their fixed layouts (x86_64).
/// The names of nf_tables tables and chains stay unknown there: rule
/// counters name them, and attribution says "inferred".
fn nf_offsets(btf: Option<&KernelBtf>, caps: &Capabilities) -> tracer_common::NfOffsets {
    let Some(btf) = btf else {
        return tracer_common::NfOffsets::UNSET;
    };
    let mut o = btf.nf_offsets();
    if btf.function_params("ipt_do_table").is_empty() && !caps.at_least(5, 16) {
        // ipt_do_table(skb, state, table) until 5.16.
        o.ipt_layout = 1;
    }
    if !caps.at_least(5, 11) {
        // struct nft_pktinfo { sk_buff *skb; bool tprot_set; u8 tprot;
        // struct xt_action_param xt; } with xt.state at 16 in xt, 4.x to 5.10.
        if o.pktinfo_skb == u16::MAX {
            o.pktinfo_skb = 0;
        }
        if o.pktinfo_state == u16::MAX {
            o.pktinfo_state = 32;
        }
    }
    if o.xt_table_name == u16::MAX && !caps.at_least(5, 11) {
        // struct xt_table { list_head list; unsigned valid_hooks; xt_table_info
        // *private; module *me; u8 af; int priority; int (*table_init)(net *);
        // const char name[32]; }, unchanged from 4.9 to 5.10 (x86_64).
        o.xt_table_name = 56;
    }
    o
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Dropping the Ebpf object detaches every link and closes every
        // program; the raw-loaded ones are closed the same way, first.
        let clsact = self.tc.as_mut().map(TcAttachments::take_clsact);
        self.nf_links.take();
        self.exact.take();
        self.ring.take();
        self.ebpf.take();
        for ifindex in clsact.unwrap_or_default() {
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
        let denied = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: R1=ctx()\n5: (85) call bpf_foo#99\nunknown func bpf_foo#99\nprocessed 31 insns (limit 1000000) max_states_per_insn 0\n";
        assert_eq!(
            shorten_verifier_log(denied),
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13) (verifier: unknown func bpf_foo#99)"
        );
        assert_eq!(shorten_verifier_log("plain"), "plain");
    }
}
