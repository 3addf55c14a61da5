//! What the running kernel is and offers, for tests whose expectations depend on it.
//!
//! A test that cannot run without a feature asks [`must_skip`], which says why on
//! stdout (`SKIP <test>: ...`) before the test returns: a skip is never silent, and
//! the VM lane counts these lines apart from passes.

use std::sync::OnceLock;

/// Start of the line a skipping test prints (`SKIP <test>: <why>`).
pub const SKIP_MARK: &str = "SKIP ";

/// A kernel feature a test may need.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// What it is called in the skip line.
    pub name: &'static str,
    /// The mainline release that added it.
    pub since: (u32, u32),
    /// A kernel function that exists exactly when the feature does: what decides,
    /// so that a kernel with the feature backported never skips. The version only
    /// decides where `/proc/kallsyms` cannot be read.
    pub symbol: &'static str,
}

/// BPF netfilter links (`BPF_LINK_TYPE_NETFILTER`).
pub const NETFILTER_LINKS: Feature = Feature {
    name: "BPF netfilter links",
    since: (6, 4),
    symbol: "bpf_nf_link_attach",
};

/// IP-in-IP tunnels (`tunl0`, the `ipip` module: not built into every kernel,
/// e.g. not into these machines'; the VM lane loads it).
pub const IPIP: Feature = Feature {
    name: "ipip module",
    since: (2, 6),
    symbol: "ipip_tunnel_xmit",
};

impl Feature {
    /// Whether the running kernel has it.
    pub fn present(&self) -> bool {
        match kallsyms() {
            Some(symbols) => has_symbol(symbols, self.symbol),
            None => version() >= self.since,
        }
    }
}

/// Whether the calling test must skip because the running kernel lacks `feature`;
/// if so, prints `SKIP <test>: kernel <release> has no <feature> (<since>+)` first.
/// Call it from the test's own thread (its name is the test's).
pub fn must_skip(feature: Feature) -> bool {
    if feature.present() {
        return false;
    }
    let (major, minor) = feature.since;
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    println!(
        "{SKIP_MARK}{test}: kernel {} has no {} ({major}.{minor}+, `{}`)",
        release(),
        feature.name,
        feature.symbol
    );
    true
}

/// `uname -r` of the running kernel.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The running kernel's version (major, minor).
pub fn version() -> (u32, u32) {
    parse_version(&release())
}

fn parse_version(release: &str) -> (u32, u32) {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// Whether the running kernel has drop reasons in `kfree_skb` (5.17+); before,
/// calitrace names the reason from the location (`reason_from_location`).
pub fn has_drop_reasons() -> bool {
    version() >= (5, 17)
}

/// Where the running kernel frees a packet that nf_tables dropped:
/// `nft_do_chain` itself from 6.8 on, `nf_hook_slow` before.
pub fn nft_drop_location() -> &'static str {
    if version() >= (6, 8) {
        "nft_do_chain"
    } else {
        "nf_hook_slow"
    }
}

/// `/proc/kallsyms`, read once (None where it cannot be read or is empty).
fn kallsyms() -> Option<&'static str> {
    static ONCE: OnceLock<Option<String>> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::fs::read_to_string("/proc/kallsyms")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Whether a `/proc/kallsyms` text has this function (`ADDR TYPE NAME [MODULE]`).
fn has_symbol(kallsyms: &str, name: &str) -> bool {
    kallsyms
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_symbols() {
        assert_eq!(parse_version("6.12.95+deb12-cloud-amd64"), (6, 12));
        assert_eq!(parse_version("5.10.0-32-cloud-amd64"), (5, 10));
        let syms =
            "ffffffff81f2c1f0 T bpf_nf_link_attach\n0000000000000000 t nft_do_chain\t[nf_tables]\n";
        assert!(has_symbol(syms, "bpf_nf_link_attach"));
        assert!(has_symbol(syms, "nft_do_chain"));
        assert!(!has_symbol(syms, "bpf_nf_link"));
    }

    #[test]
    fn only_a_missing_feature_skips() {
        let missing = Feature {
            name: "a feature no kernel has",
            since: (99, 0),
            symbol: "calitrace_no_such_function",
        };
        assert!(must_skip(missing));
        let present = Feature {
            name: "the scheduler",
            since: (2, 6),
            symbol: "schedule",
        };
        assert!(!must_skip(present));
    }
}
