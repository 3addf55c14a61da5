//! Loading the eBPF object, attaching what this kernel allows, and undoing it
//! all when dropped (normal exit, signals and errors alike).

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
};
use tracer_common::{SkbOffsets, counter, filter::FilterProg};

use super::capabilities::{Capabilities, ProbeReport};
use super::drops::DropsProbe;
use super::exact::{self, ExactProbe};
use super::nf_link::{NF_LINKS, NfLinkProbe};
use super::raw::Relocated;
use super::tc::TcProbe;
use super::{Loading, Probe, Topic};
use crate::kernel::{btf::KernelBtf, netlink, netlink::Link};
use crate::netfilter::Inventory;

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

/// The probes of [`Topic::ALL`], each with what it loaded.
struct Probes {
    tc: TcProbe,
    drops: DropsProbe,
    exact: ExactProbe,
    nf_links: NfLinkProbe,
}

impl Probes {
    fn get(&mut self, t: Topic) -> &mut dyn Probe {
        match t {
            Topic::Tc => &mut self.tc,
            Topic::Drops => &mut self.drops,
            Topic::Exact => &mut self.exact,
            Topic::NfLinks => &mut self.nf_links,
        }
    }
}

pub struct Tracer {
    probes: Probes,
    ebpf: Option<Ebpf>,
    ring: Option<RingBuf<MapData>>,
    pub report: ProbeReport,
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
        let nf_offsets = nf_offsets(btf, caps);
        let vxlan_port = node_vxlan_port();
        let mut ebpf = load_object(btf, &nf_offsets, vxlan_port, &opts)?;
        // Relocated while every map is still in `ebpf` (EVENTS is taken below).
        let relocated = Relocated::new(OBJECT, &ebpf);
        let ring = fill_maps(&mut ebpf, &opts, vxlan_port)?;
        let names_readable = (
            nf_offsets.xt_table_name != u16::MAX,
            [
                nf_offsets.chain_table,
                nf_offsets.chain_name,
                nf_offsets.table_name,
            ]
            .iter()
            .all(|&o| o != u16::MAX),
        );
        let mut probes = Probes {
            tc: TcProbe::default(),
            drops: DropsProbe::new(opts.netns.is_some()),
            exact: ExactProbe::new(names_readable),
            nf_links: NfLinkProbe::default(),
        };
        let mut report = ProbeReport::default();
        let mut loading = Loading {
            ebpf: &mut ebpf,
            object: &relocated,
            caps,
            btf,
            opts: &opts,
            report: &mut report,
        };
        // What one probe loaded stays attached if a later one stops tracing:
        // a Tracer holds it all from here, and dropping it detaches.
        let mut failed = None;
        for topic in Topic::ALL {
            if let Err(e) = probes.get(topic).load(&mut loading) {
                failed = Some(e);
                break;
            }
        }
        let tracer = Tracer {
            probes,
            ebpf: Some(ebpf),
            ring: Some(ring),
            report,
            vxlan_port,
        };
        match failed {
            Some(e) => Err(e),
            None => Ok(tracer),
        }
    }

    /// The report's tc line, naming the interfaces with programs now.
    pub fn refresh_tc_report(&mut self) {
        self.probes.tc.refresh_report(&mut self.report);
    }

    /// Whether the tc programs loaded, so that interfaces can get them.
    pub fn can_attach_tc(&self) -> bool {
        self.probes.tc.loaded()
    }

    /// Attaches the tc programs to one more interface.
    pub fn attach_interface(&mut self, link: &Link) -> Result<()> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            bail!("the tc programs are not loaded");
        };
        self.probes.tc.attach(ebpf, link)
    }

    /// Detaches the tc programs from interface `index` (gone, or going);
    /// its name when it had them.
    pub fn detach_interface(&mut self, index: u32) -> Option<String> {
        self.probes.tc.detach(self.ebpf.as_mut()?, index)
    }

    /// The interfaces with tc programs, in the order they got them.
    pub fn interfaces(&self) -> Vec<String> {
        self.probes.tc.interfaces()
    }

    /// How many interfaces have tc programs.
    pub fn interface_count(&self) -> usize {
        self.probes.tc.interface_count()
    }

    /// Whether drops are reported only from the namespaces it was told of
    /// (not `--all-netns`).
    pub fn filters_netns(&self) -> bool {
        self.probes.drops.filters_netns()
    }

    /// Reports drops from the namespace `inode` too (a pod that appeared).
    /// Nothing to do when drops are reported from every namespace.
    pub fn watch_netns(&mut self, inode: u32) -> Result<()> {
        let ebpf = self.ebpf.as_mut().context("not loaded")?;
        self.probes
            .drops
            .netns_map(ebpf, |set| set.insert(inode, 1, 0))
    }

    /// No longer reports drops from the namespace `inode` (its pod went: the
    /// inode number may be given to a namespace that is none of ours).
    pub fn unwatch_netns(&mut self, inode: u32) {
        if let Some(ebpf) = self.ebpf.as_mut() {
            let _ = self.probes.drops.netns_map(ebpf, |set| set.remove(&inode));
        }
    }

    /// Links the netfilter observation points (a netfilter drop needs its
    /// hook named). Returns how many links were made now: 0 when they were
    /// linked already, `None` when this kernel has none to link.
    pub fn link_nf_points(&mut self) -> Option<usize> {
        self.probes.nf_links.link()
    }

    /// Unlinks the netfilter observation points (no drop needs them).
    pub fn unlink_nf_points(&mut self) {
        self.probes.nf_links.unlink();
    }

    pub fn nf_points_linked(&self) -> bool {
        self.probes.nf_links.linked()
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
        let names_readable = self.probes.exact.names_readable;
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
            ("legacy", walker("ipt_do_table", names_readable.0)),
            ("nft", walker("nft_do_chain", names_readable.1)),
        ]
    }

    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// Replaces the in-kernel filter while tracing.
    pub fn set_filter(&mut self, prog: FilterProg) -> Result<()> {
        let ebpf = self.ebpf.as_mut().context("not loaded")?;
        write_filter(ebpf, prog, self.vxlan_port)
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

/// The object's maps, its load-time globals set for this kernel.
fn load_object(
    btf: Option<&KernelBtf>,
    nf_offsets: &tracer_common::NfOffsets,
    vxlan_port: u16,
    opts: &LoadOptions<'_>,
) -> Result<Ebpf> {
    let offsets = btf.map(KernelBtf::skb_offsets).unwrap_or(SkbOffsets::UNSET);
    let has_reason: u8 = (offsets.reason_arg != SkbOffsets::ABSENT) as u8;
    let netns_filter: u8 = opts.netns.is_some() as u8;
    let all_verdicts: u8 = opts.all_verdicts as u8;
    EbpfLoader::new()
        .override_global("SKB_OFFSETS", &offsets, true)
        .override_global("HAS_REASON", &has_reason, true)
        .override_global("NETNS_FILTER", &netns_filter, true)
        .override_global("TC_NETNS", &opts.own_netns, true)
        .override_global("NF_OFFSETS", nf_offsets, true)
        .override_global("ALL_VERDICTS", &all_verdicts, true)
        .override_global("VXLAN_PORT", &vxlan_port, true)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(OBJECT)
        .context("loading the eBPF maps")
}

/// `prog` into the FILTER map, with the port the tc programs decode VXLAN
/// on beside its quick nets.
fn write_filter(ebpf: &mut Ebpf, mut prog: FilterProg, vxlan_port: u16) -> Result<()> {
    prog.quick.vxlan_port = vxlan_port;
    let mut filter: Array<_, FilterProg> =
        Array::try_from(ebpf.map_mut("FILTER").context("FILTER map")?)?;
    filter.set(0, prog, 0).context("setting the filter")
}

/// The filter and the namespaces drops are reported from, in their maps;
/// the ring buffer, taken out of the object.
fn fill_maps(ebpf: &mut Ebpf, opts: &LoadOptions<'_>, vxlan_port: u16) -> Result<RingBuf<MapData>> {
    write_filter(ebpf, opts.filter, vxlan_port)?;
    if let Some(list) = &opts.netns {
        let mut set: HashMap<_, u32, u8> =
            HashMap::try_from(ebpf.map_mut("NETNS").context("NETNS map")?)?;
        for ns in list {
            set.insert(ns, 1, 0)
                .context("adding a namespace to the drop filter")?;
        }
    }
    Ok(RingBuf::try_from(
        ebpf.take_map("EVENTS").context("EVENTS map")?,
    )?)
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
        let clsact = self.probes.tc.take_clsact();
        self.probes.nf_links.unload();
        self.probes.exact.unload();
        self.ring.take();
        self.ebpf.take();
        for ifindex in clsact {
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
