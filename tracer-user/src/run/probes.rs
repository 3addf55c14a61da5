//! `calitrace probes`: what this kernel allows, by really loading the programs
//! (without attaching them).

use anyhow::Result;

use super::setup::Setup;
use crate::probes::loader::{LoadOptions, Tracer};

pub fn run() -> Result<()> {
    let setup = Setup::read()?;
    let c = &setup.caps;
    println!("kernel {} ({}.{})", c.kernel, c.version.0, c.version.1);
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("  BTF (/sys/kernel/btf/vmlinux): {}", yn(c.btf));
    println!(
        "  lockdown: {}",
        c.lockdown
            .as_deref()
            .unwrap_or("unknown (securityfs not mounted)")
    );
    println!("  kallsyms addresses: {}", yn(c.kallsyms));
    println!("  TCX links (6.6+): {}", yn(c.tcx()));
    println!("  BPF netfilter links (6.4+): {}", yn(c.at_least(6, 4)));
    println!(
        "  kprobes: {}",
        if c.kprobes {
            "yes".into()
        } else {
            "no (CONFIG_KPROBES not set)".to_string()
        }
    );
    setup.require_privileges()?;
    let tracer = Tracer::load(
        c,
        setup.btf.as_ref(),
        LoadOptions {
            filter: Default::default(),
            netns: None,
            own_netns: setup.own_netns,
            ring_bytes: 4096 * 16,
            interfaces: &[],
            attach: false,
            all_verdicts: false,
            inventory: None,
            exact: Default::default(),
            tc_attach: Default::default(),
        },
    )?;
    println!("probes:");
    for p in &tracer.report.attached {
        println!(
            "  ok   {}{}",
            p.name,
            p.detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    for u in &tracer.report.unavailable {
        println!("  no   {}: {}", u.name, u.reason);
    }
    let nftrace = crate::netfilter::trace::NfTracer::available();
    match &nftrace {
        Ok(()) => println!("  ok   nftables trace (NFNLGRP_NFTRACE)"),
        Err(e) => println!("  no   nftables trace: NFNLGRP_NFTRACE: {e}"),
    }
    println!(
        "netfilter attribution: {}",
        with_nftrace(tracer.attribution_method(), nftrace.is_ok())
    );
    for (backend, how) in tracer.attribution_by_backend() {
        let how = match (backend, &nftrace) {
            ("nft", Ok(())) if how.starts_with("inferred") => format!(
                "exact (nftables trace: table, chain and rule of every nf_tables drop from a dropping flow's second packet on; its first: {how})"
            ),
            _ => how,
        };
        println!("  {backend}: {how}");
    }
    println!("dataplanes read from their own state:");
    for d in crate::dataplane::Dataplane::ALL {
        println!("  {}", d.reads());
    }
    Ok(())
}

/// The attribution in all, where nftables' trace names nf_tables drops
/// exactly that no table walk does.
pub fn with_nftrace(method: String, nftrace: bool) -> String {
    match method.strip_prefix("inferred ") {
        Some(how) if nftrace => format!(
            "exact for nf_tables via nftables trace (from a dropping flow's second packet on); otherwise inferred {how}"
        ),
        _ => method,
    }
}
