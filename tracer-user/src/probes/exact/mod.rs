//! The exact netfilter probes: the verdict of every table walk of both
//! backends (`nft_do_chain` for nf_tables, `ipt_do_table` / `ip6t_do_table`
//! for iptables-legacy), by fexit where the kernel has BPF trampolines and by
//! kprobe + kretprobe where it has kprobes only.
//!
//! fexit programs are loaded with raw bpf(2) ([`super::raw`]) rather than
//! aya's `FExit`: distribution kernels build these functions into modules
//! (nf_tables, ip_tables, ip6_tables), and tracing a module's function needs
//! the module's BTF object as `attach_btf_obj_fd`, which aya 0.14 cannot pass.
//! kprobes name the function and need no BTF, so aya attaches them.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, anyhow};
use aya::Ebpf;
use aya::programs::KProbe;
use aya_obj::generated::{bpf_attach_type, bpf_prog_type};

use super::capabilities::{Capabilities, ProbeReport};
use super::loader::why;
use super::raw::{self, ProgSpec, Relocated};
use super::{Loading, Probe};
use crate::events::{DecodeError, Input, decode_verdict};
use crate::kernel::btf::KernelBtf;

/// The exact probes, once loaded.
pub struct ExactProbe {
    /// Whether they can read table (and chain) names: (legacy, nft).
    pub names_readable: (bool, bool),
    loaded: Option<ExactProbes>,
}

impl ExactProbe {
    pub fn new(names_readable: (bool, bool)) -> ExactProbe {
        ExactProbe {
            names_readable,
            loaded: None,
        }
    }

    /// Detaches and unloads the fexit programs.
    pub fn unload(&mut self) {
        self.loaded.take();
    }
}

/// A table walk's verdict.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    decode_verdict(bytes).map(Input::Verdict)
}

impl Probe for ExactProbe {
    fn load(&mut self, l: &mut Loading<'_>) -> Result<()> {
        let setup = Setup {
            ebpf: l.ebpf,
            object: l.object.as_ref().ok(),
            caps: l.caps,
            btf: l.btf,
            mode: l.opts.exact,
            attach: l.opts.attach,
            names: self.names_readable,
        };
        self.loaded = Some(load(setup, l.report));
        Ok(())
    }
}

/// Which exact probes to use (`--nf-probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// fexit where the kernel allows it, else kprobes, else none.
    #[default]
    Auto,
    Fexit,
    Kprobe,
    /// None: attribution is inferred (rule counters, netfilter links).
    Off,
}

/// One traced function and the programs that trace it.
struct Walker {
    function: &'static str,
    fexit: &'static str,
    kprobe: &'static str,
    kretprobe: &'static str,
    what: &'static str,
    /// Said instead of `what` where the kernel's BTF has no layout for the
    /// table (and chain) names.
    what_without_names: &'static str,
    /// Which backend's names: 0 legacy, 1 nft (index into `Setup::names`).
    backend: usize,
}

const WALKERS: [Walker; 3] = [
    Walker {
        function: "nft_do_chain",
        fexit: "nft_do_chain_exit",
        kprobe: "nft_do_chain_entry",
        kretprobe: "nft_do_chain_return",
        what: "exact nf_tables verdicts (table, chain)",
        what_without_names: "nf_tables verdicts with backend and hook (no BTF layout for table and chain names)",
        backend: 1,
    },
    Walker {
        function: "ipt_do_table",
        fexit: "ipt_do_table_exit",
        kprobe: "xt_do_table_entry",
        kretprobe: "xt_do_table_return",
        what: "exact iptables-legacy verdicts (table, hook)",
        what_without_names: "iptables-legacy verdicts with backend and hook (no BTF layout for the table name)",
        backend: 0,
    },
    Walker {
        function: "ip6t_do_table",
        fexit: "ip6t_do_table_exit",
        kprobe: "xt_do_table_entry",
        kretprobe: "xt_do_table_return",
        what: "exact ip6tables-legacy verdicts (table, hook)",
        what_without_names: "ip6tables-legacy verdicts with backend and hook (no BTF layout for the table name)",
        backend: 0,
    },
];

/// The name in the probe report: `fexit nft_do_chain`, `kprobe ipt_do_table`.
pub fn probe_name(kind: &str, function: &str) -> String {
    format!("{kind} {function}")
}

/// fexit programs and links loaded here (kprobes live in aya's `Ebpf`).
/// Dropping it detaches and unloads them.
#[derive(Default)]
pub struct ExactProbes {
    // Field order is drop order: links detach before their programs close.
    links: Vec<OwnedFd>,
    progs: Vec<OwnedFd>,
}

pub struct Setup<'a> {
    pub ebpf: &'a mut Ebpf,
    pub object: Option<&'a Relocated>,
    pub caps: &'a Capabilities,
    pub btf: Option<&'a KernelBtf>,
    pub mode: Mode,
    pub attach: bool,
    /// Whether the probes can read table names: (legacy, nft).
    pub names: (bool, bool),
}

/// Loads (and with `attach`, attaches) the exact probes `mode` allows,
/// reporting each function's outcome.
pub fn load(cx: Setup<'_>, report: &mut ProbeReport) -> ExactProbes {
    let mut out = ExactProbes::default();
    for w in &WALKERS {
        let names = if w.backend == 0 {
            cx.names.0
        } else {
            cx.names.1
        };
        let what = if names { w.what } else { w.what_without_names };
        if cx.mode == Mode::Off {
            report.missing(
                probe_name("fexit", w.function),
                "turned off (--nf-probes off)",
            );
            continue;
        }
        let fexit = if matches!(cx.mode, Mode::Auto | Mode::Fexit) {
            match fexit(&cx, w) {
                Ok((prog, link)) => {
                    out.progs.push(prog);
                    out.links.extend(link);
                    report.ok_exact("fexit", w.function, what.to_string());
                    continue;
                }
                Err(e) => Some(e),
            }
        } else {
            None
        };
        let kprobe = if matches!(cx.mode, Mode::Auto | Mode::Kprobe) {
            if !cx.caps.kprobes {
                Some(anyhow!("no kprobes (CONFIG_KPROBES not set)"))
            } else {
                match kprobe(cx.ebpf, w, cx.attach) {
                    Ok(()) => {
                        report.ok_exact(
                            "kprobe",
                            w.function,
                            format!("{what} (kprobe + kretprobe)"),
                        );
                        continue;
                    }
                    Err(e) => Some(e),
                }
            }
        } else {
            None
        };
        let lockdown = cx.caps.lockdown_note();
        match (fexit, kprobe) {
            (Some(f), Some(k)) => report.missing(
                probe_name("fexit", w.function),
                format!("{}{lockdown}; kprobe: {}", why(&f), why(&k)),
            ),
            (Some(f), None) => report.missing(
                probe_name("fexit", w.function),
                format!("{}{lockdown}", why(&f)),
            ),
            (None, Some(k)) => report.missing(
                probe_name("kprobe", w.function),
                format!("{}{lockdown}", why(&k)),
            ),
            (None, None) => {}
        }
    }
    out
}

/// Loads `w`'s fexit program against the function's BTF (vmlinux or its
/// module) and, with `attach`, attaches it.
fn fexit(cx: &Setup<'_>, w: &Walker) -> Result<(OwnedFd, Option<OwnedFd>)> {
    let btf = cx.btf.context("no kernel BTF")?;
    let object = cx
        .object
        .context("the eBPF object could not be relocated")?;
    let Some(target) = btf.function(w.function) else {
        let loaded: Vec<&str> = btf.modules();
        return Err(anyhow!(
            "{} is not in the kernel's BTF (module BTF read: {})",
            w.function,
            if loaded.is_empty() {
                "none; needs kernel 5.11+ with the module loaded".to_string()
            } else {
                loaded.join(", ")
            }
        ));
    };
    let module = match &target.module {
        Some(m) => {
            Some(raw::module_btf(m).with_context(|| format!("the BTF object of module {m}"))?)
        }
        None => None,
    };
    let insns = object.program(w.fexit)?;
    let prog = raw::prog_load(&ProgSpec {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING,
        attach_type: bpf_attach_type::BPF_TRACE_FEXIT,
        attach_btf_id: target.id,
        attach_btf_obj: module.as_ref(),
        name: w.fexit,
        insns: &insns,
        license: object.license(),
    })
    .map_err(|e| anyhow!("{e}"))?;
    if !cx.attach {
        return Ok((prog, None));
    }
    let link = raw::tracing_attach(&prog).context("attaching")?;
    Ok((prog, Some(link)))
}

/// Loads `w`'s kprobe and kretprobe (once: the x_tables pair serves both
/// functions) and, with `attach`, attaches them to `w.function`.
fn kprobe(ebpf: &mut Ebpf, w: &Walker, attach: bool) -> Result<()> {
    for name in [w.kprobe, w.kretprobe] {
        let prog: &mut KProbe = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        if attach {
            prog.attach(w.function, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tracer_common::{EVENT_SIZE, NfEvent, kind};

    use super::*;
    use crate::events::{encode_verdict, kernel_name};
    use crate::probes::decode_input;

    #[test]
    fn verdicts_decode_with_their_names() {
        let mut nf = NfEvent {
            hook: 2,
            pf: 2,
            backend: tracer_common::backend::NFT,
            ..Default::default()
        };
        nf.ev.kind = kind::VERDICT;
        nf.table[..6].copy_from_slice(b"filter");
        nf.chain[..7].copy_from_slice(b"FORWARD");
        let bytes = encode_verdict(&nf).to_vec();
        assert_eq!(decode_input(&bytes), Ok(Input::Verdict(nf)));
        assert_eq!(kernel_name(&nf.table), "filter");
        assert_eq!(
            decode_input(&bytes[..EVENT_SIZE]),
            Err(DecodeError(EVENT_SIZE)),
            "a cut verdict is refused"
        );
    }
}
