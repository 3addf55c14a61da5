//! What this kernel allows, checked before (and while) loading programs.

use std::path::Path;

use crate::kernel::{btf, system};
use crate::model::{ProbeStatus, Unavailable};

/// Mechanisms and their availability, for `calitrace probes` and the start-up report.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub attached: Vec<ProbeStatus>,
    pub unavailable: Vec<Unavailable>,
    /// The exact netfilter probes among `attached`: (`fexit` or `kprobe`,
    /// the table walker's function).
    pub exact: Vec<(&'static str, &'static str)>,
}

impl ProbeReport {
    pub fn ok(&mut self, name: impl Into<String>, detail: Option<String>) {
        self.attached.push(ProbeStatus {
            name: name.into(),
            detail,
        });
    }

    /// An exact netfilter probe of `kind` on `function` attached.
    pub fn ok_exact(&mut self, kind: &'static str, function: &'static str, detail: String) {
        self.exact.push((kind, function));
        self.ok(super::exact::probe_name(kind, function), Some(detail));
    }

    /// The name of the exact probe on `function`, if one attached.
    pub fn exact_on(&self, function: &str) -> Option<String> {
        self.exact
            .iter()
            .find(|(_, f)| *f == function)
            .map(|(k, f)| super::exact::probe_name(k, f))
    }

    pub fn missing(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.unavailable.push(Unavailable {
            name: name.into(),
            reason: reason.into(),
        });
    }
}

#[derive(Debug, Clone)]
pub struct Capabilities {
    pub kernel: String,
    pub version: (u32, u32),
    pub btf: bool,
    pub lockdown: Option<String>,
    /// Missing capabilities, if any.
    pub missing_privileges: Option<String>,
    pub kprobes: bool,
    pub kallsyms: bool,
}

impl Capabilities {
    pub fn detect(kallsyms: &crate::kernel::kallsyms::Kallsyms) -> Self {
        let kernel = system::kernel_release();
        let version = system::parse_release(&kernel);
        Self {
            version,
            kernel,
            btf: Path::new(btf::VMLINUX_BTF).exists(),
            lockdown: system::lockdown(),
            missing_privileges: system::missing_privileges(system::effective_caps()),
            // CONFIG_KPROBES builds in register_kprobe.
            kprobes: kallsyms.contains("register_kprobe"),
            kallsyms: kallsyms.usable(),
        }
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version >= (major, minor)
    }

    pub fn tcx(&self) -> bool {
        self.at_least(6, 6)
    }

    /// Why a tracing (fentry/fexit) or kprobe program would be refused, as far
    /// as can be told without trying.
    pub fn lockdown_note(&self) -> String {
        match self.lockdown.as_deref() {
            Some(l) if l != "none" => format!(" (lockdown={l})"),
            _ => String::new(),
        }
    }
}
