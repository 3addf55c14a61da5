//! `dataplane`: which dataplane Calico runs (iptables-legacy, iptables-nft,
//! its native nftables, eBPF) and which kube-proxy runs (iptables in either
//! backend, nftables, or none), and whether they agree. Every table of every
//! backend sees each packet: when Calico and kube-proxy write to different
//! ones, each evaluates its own rules and a drop in either wins (calico#8025,
//! kubespray#12198); kube-proxy beside Calico's eBPF dataplane fights it
//! (calico#10538).
//!
//! Names as the software writes them: Felix's iptables chains `cali-*` (in
//! x_tables, or in iptables-nft's `ip filter`/`nat`/`mangle`/`raw`), its
//! nftables tables `ip calico`/`ip6 calico` (3.30+), its pinned eBPF maps
//! `/sys/fs/bpf/tc/globals/cali_*`; kube-proxy's `KUBE-SERVICES` and
//! `KUBE-SVC-*`-like chains, or its tables `ip kube-proxy`/`ip6 kube-proxy`.
//! kubelet's own `KUBE-FIREWALL`, `KUBE-KUBELET-CANARY` and `KUBE-MARK-*`
//! are not kube-proxy's. In eBPF mode Felix still keeps a few netfilter
//! rules: cali-* chains (or `ip calico`) beside the maps are its, in one place.

use std::fmt;

use super::{Check, CheckId, HostRoot, Inputs};
use crate::model::Owner;
use crate::netfilter::{Backend, Family, Inventory, Table, owner};

const ID: CheckId = CheckId::Dataplane;

/// Where Felix pins the eBPF dataplane's maps.
const BPF_GLOBALS: &str = "/sys/fs/bpf/tc/globals";

/// Where a component's rules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    IptablesLegacy,
    IptablesNft,
    Nftables,
    Ebpf,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::IptablesLegacy => "iptables-legacy",
            Mode::IptablesNft => "iptables-nft",
            Mode::Nftables => "nftables",
            Mode::Ebpf => "ebpf",
        })
    }
}

/// One component's rules in one mode, and the tables that hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    mode: Mode,
    /// `ip filter`, `ip6 calico`; for eBPF the map count.
    places: Vec<String>,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.mode {
            Mode::IptablesLegacy | Mode::IptablesNft => "chains in ",
            Mode::Nftables => "table ",
            Mode::Ebpf => "",
        };
        write!(f, "{} ({what}{})", self.mode, self.places.join(", "))
    }
}

fn list(found: &[Found]) -> String {
    if found.is_empty() {
        return "none found".into();
    }
    found
        .iter()
        .map(Found::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// iptables' own table names, as iptables-nft makes them in nf_tables.
const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// The iptables mode a table is in (x_tables, or iptables-nft's tables).
fn iptables_mode(t: &Table) -> Option<Mode> {
    match t.backend {
        Backend::Legacy => Some(Mode::IptablesLegacy),
        Backend::Nft
            if matches!(t.family, Family::Ipv4 | Family::Ipv6)
                && IPTABLES_TABLES.contains(&t.name.as_str()) =>
        {
            Some(Mode::IptablesNft)
        }
        Backend::Nft => None,
    }
}

/// kube-proxy's iptables and IPVS chains (not kubelet's KUBE-FIREWALL,
/// KUBE-KUBELET-CANARY, KUBE-MARK-*).
fn is_kube_proxy_chain(c: &str) -> bool {
    const CHAINS: [&str; 6] = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-FORWARD",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
        "KUBE-PROXY-CANARY",
    ];
    const PREFIXES: [&str; 5] = [
        "KUBE-SVC-",
        "KUBE-SEP-",
        "KUBE-EXT-",
        "KUBE-FW-",
        "KUBE-XLB-",
    ];
    CHAINS.contains(&c) || PREFIXES.iter().any(|p| c.starts_with(p))
}

/// Where `who`'s rules are in the inventory, one entry per mode.
fn netfilter_modes(inv: &Inventory, who: Owner) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for t in &inv.tables {
        let native = t.backend == Backend::Nft && owner::of_table(t.family, &t.name) == Some(who);
        let chains = |c: &str| match who {
            Owner::KubeProxy => is_kube_proxy_chain(c),
            _ => c.starts_with("cali-"),
        };
        let mode = if native {
            Some(Mode::Nftables)
        } else {
            iptables_mode(t).filter(|_| t.chains.iter().any(|c| chains(&c.name)))
        };
        let Some(mode) = mode else { continue };
        let place = format!("{} {}", t.family, t.name);
        match found.iter_mut().find(|f| f.mode == mode) {
            Some(f) if !f.places.contains(&place) => f.places.push(place),
            Some(_) => {}
            None => found.push(Found {
                mode,
                places: vec![place],
            }),
        }
    }
    found.sort_by_key(|f| f.mode);
    found
}

/// Calico's pinned eBPF maps, or why they cannot be listed (`Ok(empty)`:
/// no such directory).
fn pinned_maps(root: &HostRoot) -> Result<Vec<String>, String> {
    let dir = root.path(BPF_GLOBALS);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut maps: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("cali_"))
        .collect();
    maps.sort();
    Ok(maps)
}

/// Felix's dataplane settings in calico-node's environment, where visible.
fn felix_settings(root: &HostRoot) -> String {
    const KEYS: [&str; 3] = [
        "FELIX_NFTABLESMODE",
        "FELIX_BPFENABLED",
        "FELIX_IPTABLESBACKEND",
    ];
    let Some(p) = root.processes(&["calico-node"]).into_iter().next() else {
        return "Felix's settings: no calico-node process".into();
    };
    match root.environ(p.pid) {
        Ok(env) => {
            let set: Vec<String> = KEYS
                .iter()
                .map(|k| {
                    let v = env.iter().find(|(n, _)| n.eq_ignore_ascii_case(k));
                    format!("{k}={}", v.map_or("unset", |(_, v)| v.as_str()))
                })
                .collect();
            format!("calico-node (pid {}): {}", p.pid, set.join(", "))
        }
        Err(e) => format!("Felix's settings: unreadable ({e})"),
    }
}

/// At most `n` names, then how many more.
fn some(names: &[&str], n: usize) -> String {
    let mut s = names.iter().take(n).copied().collect::<Vec<_>>().join(", ");
    if names.len() > n {
        s.push_str(&format!(", +{} more", names.len() - n));
    }
    s
}

/// The tables of both backends, each with its Calico and kube-proxy chains
/// first, a few named.
fn tables_evidence(inv: &Inventory) -> String {
    let per_backend: Vec<String> = [Backend::Legacy, Backend::Nft]
        .iter()
        .map(|b| {
            let tables: Vec<String> = inv
                .tables
                .iter()
                .filter(|t| t.backend == *b)
                .map(|t| {
                    let mut names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
                    names.sort_by_key(|c| {
                        !(c.starts_with("cali-")
                            || c.starts_with("KUBE-")
                            || c.starts_with("filter-"))
                    });
                    format!("{} {} [{}]", t.family, t.name, some(&names, 4))
                })
                .collect();
            let tables = if tables.is_empty() {
                "no tables".to_string()
            } else {
                tables.join(", ")
            };
            format!("{b}: {tables}")
        })
        .collect();
    per_backend.join("; ")
}

/// What was found, for the verdict and the evidence.
struct Seen {
    /// Calico's rules, by netfilter mode.
    calico: Vec<Found>,
    /// Calico's pinned maps (eBPF dataplane).
    maps: Vec<String>,
    kube: Vec<Found>,
}

impl Seen {
    /// Calico's dataplane: eBPF where its maps are pinned (its netfilter rules
    /// are then its helpers), else each netfilter mode with its rules.
    fn calico_modes(&self) -> Vec<Found> {
        if self.maps.is_empty() {
            return self.calico.clone();
        }
        vec![Found {
            mode: Mode::Ebpf,
            places: vec![format!("{} pinned cali_* maps", self.maps.len())],
        }]
    }
}

pub(super) fn dataplane(inputs: &Inputs) -> Check {
    let inv = match &inputs.netfilter {
        Ok(inv) => inv,
        Err(e) => return Check::skip(ID, format!("the netfilter rules cannot be read: {e}")),
    };
    let (maps, maps_evidence) = match pinned_maps(&inputs.root) {
        Ok(m) if m.is_empty() => (m, format!("no cali_* maps in {BPF_GLOBALS}")),
        Ok(m) => {
            let names: Vec<&str> = m.iter().map(String::as_str).collect();
            let e = format!("pinned in {BPF_GLOBALS}: {}", some(&names, 6));
            (m, e)
        }
        Err(e) => (Vec::new(), format!("pinned maps unreadable: {e}")),
    };
    let seen = Seen {
        calico: netfilter_modes(inv, Owner::Calico),
        maps,
        kube: netfilter_modes(inv, Owner::KubeProxy),
    };
    let mut evidence = vec![
        tables_evidence(inv),
        maps_evidence,
        felix_settings(&inputs.root),
    ];
    if !inv.errors.is_empty() {
        evidence.push(format!("not read: {}", inv.errors.join("; ")));
    }
    verdict(&seen).evidence(evidence.join("; "))
}

const KUBE_PROXY_NFT: &str = "kube-proxy's `--proxy-mode=nftables` (`mode: nftables` in its configuration, Kubernetes 1.31+)";
const FELIX_NFT: &str = "Felix's `FELIX_NFTABLESMODE=Enabled` (`nftablesMode: Enabled` in the default FelixConfiguration; `Auto` follows kube-proxy since Calico 3.32)";
const FELIX_IPTABLES: &str = "Felix's `FELIX_NFTABLESMODE=Disabled` (`nftablesMode: Disabled` in the default FelixConfiguration)";
const DISABLE_KUBE_PROXY: &str = r#"`kubectl patch ds -n kube-system kube-proxy -p '{"spec":{"template":{"spec":{"nodeSelector":{"non-calico": "true"}}}}}'`"#;

/// The hint for Calico in `calico` while kube-proxy is in `kube`.
fn split_hint(calico: Mode, kube: Mode) -> String {
    let agree = "run Calico and kube-proxy in the same dataplane";
    let stale = "; a node reboot clears rules left behind by the mode given up";
    match (calico, kube) {
        (Mode::Ebpf, _) => format!(
            "Calico's eBPF dataplane replaces kube-proxy, which must not run on its nodes: {DISABLE_KUBE_PROXY} (as Calico's documentation says); Felix then removes kube-proxy's rules"
        ),
        (Mode::Nftables, _) => format!(
            "{agree}: {KUBE_PROXY_NFT}, or Calico in iptables mode with {FELIX_IPTABLES}{stale}"
        ),
        (_, Mode::Nftables) => {
            format!("{agree}: {FELIX_NFT}, or kube-proxy's `--proxy-mode=iptables`{stale}")
        }
        (_, _) => {
            let felix = if kube == Mode::IptablesNft {
                "NFT"
            } else {
                "Legacy"
            };
            format!(
                "{agree} iptables backend: `FELIX_IPTABLESBACKEND={felix}` on calico-node (`iptablesBackend: {felix}` in the default FelixConfiguration), or kube-proxy with the node's iptables command (`iptables -V`){stale}"
            )
        }
    }
}

fn verdict(s: &Seen) -> Check {
    let calico = s.calico_modes();
    let summary = format!("Calico: {}; kube-proxy: {}", list(&calico), list(&s.kube));
    // Calico's netfilter rules in more than one place: a half-finished
    // migration, or two backends (also in eBPF mode, for its helper rules).
    if s.calico.len() > 1 {
        let modes: Vec<String> = s.calico.iter().map(Found::to_string).collect();
        return Check::fail(
            ID,
            format!(
                "Calico's rules are in {}: one set is stale and both see every packet",
                modes.join(" and ")
            ),
        )
        .hint("finish the change of dataplane: Felix writes to one (FELIX_NFTABLESMODE, FELIX_IPTABLESBACKEND, FELIX_BPFENABLED); remove the rules of the other (`nft delete table ip calico`, or the cali-* chains of the backend given up), or reboot the node")
        .implicates(&[Owner::Calico]);
    }
    if s.kube.len() > 1 {
        return Check::fail(
            ID,
            format!(
                "kube-proxy's rules are in {}: one set is stale and both see every packet",
                list(&s.kube)
            ),
        )
        .hint("kube-proxy writes in one mode (`--proxy-mode`); remove the rules of the other (`kube-proxy --cleanup` with that mode) or reboot the node")
        .implicates(&[Owner::KubeProxy]);
    }
    let Some(c) = calico.first() else {
        return Check::warn(
            ID,
            format!(
                "no Calico dataplane found: no cali-* chains, no table ip calico, no pinned cali_* maps (kube-proxy: {})",
                list(&s.kube)
            ),
        )
        .hint("is calico-node running on this node, and calitrace in the host's network namespace?");
    };
    let Some(k) = s.kube.first() else {
        return Check::ok(ID, summary);
    };
    if c.mode == Mode::Ebpf {
        return Check::fail(
            ID,
            format!(
                "{summary}: kube-proxy's rules are still there beside Calico's eBPF dataplane, which replaces it"
            ),
        )
        .hint(split_hint(c.mode, k.mode))
        .implicates(&[Owner::KubeProxy]);
    }
    if c.mode != k.mode {
        return Check::fail(
            ID,
            format!("{summary}: each evaluates its own rules and a drop in either wins"),
        )
        .hint(split_hint(c.mode, k.mode))
        .implicates(&[Owner::Calico, Owner::KubeProxy]);
    }
    Check::ok(ID, summary)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, table};
    use super::*;

    fn inventory(tables: Vec<Table>) -> Inventory {
        Inventory {
            tables,
            ..Default::default()
        }
    }

    fn nft(family: Family, name: &str, chains: &[&str]) -> Table {
        Table {
            family,
            ..table(Backend::Nft, name, chains)
        }
    }

    /// Calico 3.32's nftables dataplane.
    fn calico_nft() -> Vec<Table> {
        let chains = [
            "filter-FORWARD",
            "filter-cali-FORWARD",
            "filter-cali-to-wl-dispatch",
            "filter-cali-from-wl-dispatch",
            "nat-PREROUTING",
        ];
        vec![
            nft(Family::Ipv4, "calico", &chains),
            nft(Family::Ipv6, "calico", &chains),
        ]
    }

    /// Calico's iptables dataplane in `backend`.
    fn calico_iptables(backend: Backend) -> Vec<Table> {
        vec![
            table(
                backend,
                "filter",
                &[
                    "INPUT",
                    "FORWARD",
                    "cali-FORWARD",
                    "cali-INPUT",
                    "cali-to-wl-dispatch",
                ],
            ),
            table(
                backend,
                "nat",
                &["PREROUTING", "cali-PREROUTING", "cali-nat-outgoing"],
            ),
        ]
    }

    /// kube-proxy's iptables mode in `backend`, with kubelet's chains.
    fn kube_iptables(backend: Backend) -> Vec<Table> {
        vec![
            table(
                backend,
                "nat",
                &[
                    "KUBE-SERVICES",
                    "KUBE-SVC-ERIFXISQEP7F7OF4",
                    "KUBE-MARK-MASQ",
                ],
            ),
            table(
                backend,
                "filter",
                &["KUBE-FORWARD", "KUBE-FIREWALL", "KUBE-KUBELET-CANARY"],
            ),
        ]
    }

    /// kube-proxy's nftables mode.
    fn kube_nft() -> Vec<Table> {
        let chains = [
            "filter-forward",
            "service-endpoints-check",
            "nat-prerouting",
            "services",
        ];
        vec![
            nft(Family::Ipv4, "kube-proxy", &chains),
            nft(Family::Ipv6, "kube-proxy", &chains),
        ]
    }

    fn check(f: &FakeRoot, tables: Vec<Vec<Table>>) -> Check {
        let mut inputs = f.inputs();
        inputs.netfilter = Ok(inventory(tables.concat()));
        dataplane(&inputs)
    }

    fn ebpf_root() -> FakeRoot {
        let f = FakeRoot::new();
        f.file("/sys/fs/bpf/tc/globals/cali_v4_ct3", "");
        f.file("/sys/fs/bpf/tc/globals/cali_counters3", "");
        f.file("/sys/fs/bpf/tc/globals/other_map", "");
        f
    }

    #[test]
    fn calico_and_kube_proxy_in_nftables_are_ok() {
        let f = FakeRoot::new();
        let c = check(&f, vec![calico_nft(), kube_nft()]);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(
            c.summary,
            "Calico: nftables (table ip calico, ip6 calico); kube-proxy: nftables (table ip kube-proxy, ip6 kube-proxy)"
        );
        assert!(
            c.evidence.contains("nft: ip calico [filter-FORWARD"),
            "{}",
            c.evidence
        );
        assert!(c.implicates.is_empty());
    }

    #[test]
    fn the_same_iptables_backend_is_ok() {
        let f = FakeRoot::new();
        for b in [Backend::Legacy, Backend::Nft] {
            let c = check(&f, vec![calico_iptables(b), kube_iptables(b)]);
            assert_eq!(c.status, Status::Ok, "{c:?}");
            let mode = if b == Backend::Nft {
                "iptables-nft"
            } else {
                "iptables-legacy"
            };
            assert_eq!(
                c.summary,
                format!(
                    "Calico: {mode} (chains in ip filter, ip nat); kube-proxy: {mode} (chains in ip nat, ip filter)"
                )
            );
        }
    }

    #[test]
    fn calico_nftables_with_kube_proxy_iptables_is_a_split() {
        let f = FakeRoot::new();
        for b in [Backend::Legacy, Backend::Nft] {
            let c = check(&f, vec![calico_nft(), kube_iptables(b)]);
            assert_eq!(c.status, Status::Fail, "{c:?}");
            assert!(c.summary.contains("a drop in either wins"), "{c:?}");
            let hint = c.hint.clone().unwrap();
            assert!(
                hint.contains("--proxy-mode=nftables")
                    && hint.contains("FELIX_NFTABLESMODE=Disabled"),
                "{hint}"
            );
            assert_eq!(c.implicates, [Owner::Calico, Owner::KubeProxy]);
        }
    }

    #[test]
    fn calico_iptables_with_kube_proxy_nftables_is_a_split() {
        let f = FakeRoot::new();
        let c = check(&f, vec![calico_iptables(Backend::Nft), kube_nft()]);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.starts_with(
                "Calico: iptables-nft (chains in ip filter, ip nat); kube-proxy: nftables"
            ),
            "{c:?}"
        );
        let hint = c.hint.unwrap();
        assert!(
            hint.contains("FELIX_NFTABLESMODE=Enabled") && hint.contains("Auto"),
            "{hint}"
        );
    }

    #[test]
    fn two_iptables_backends_are_a_split() {
        let f = FakeRoot::new();
        let c = check(
            &f,
            vec![
                calico_iptables(Backend::Legacy),
                kube_iptables(Backend::Nft),
            ],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.hint.unwrap().contains("FELIX_IPTABLESBACKEND=NFT"));
        let c = check(
            &f,
            vec![
                calico_iptables(Backend::Nft),
                kube_iptables(Backend::Legacy),
            ],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.hint.unwrap().contains("FELIX_IPTABLESBACKEND=Legacy"));
    }

    #[test]
    fn calico_in_two_places_is_a_half_finished_migration() {
        let f = FakeRoot::new();
        let c = check(
            &f,
            vec![calico_nft(), calico_iptables(Backend::Nft), kube_nft()],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("iptables-nft (chains in ip filter, ip nat) and nftables (table ip calico, ip6 calico)"),
            "{c:?}"
        );
        assert_eq!(c.implicates, [Owner::Calico]);
        let c = check(
            &f,
            vec![
                calico_iptables(Backend::Legacy),
                calico_iptables(Backend::Nft),
            ],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary
                .contains("iptables-legacy (chains in ip filter, ip nat) and iptables-nft"),
            "{c:?}"
        );
    }

    #[test]
    fn ebpf_without_kube_proxy_is_ok_and_with_it_fails() {
        let f = ebpf_root();
        // kubelet's chains and Felix's helper rules stay in eBPF mode.
        let helpers = vec![table(
            Backend::Nft,
            "filter",
            &["cali-FORWARD", "KUBE-FIREWALL", "KUBE-KUBELET-CANARY"],
        )];
        let c = check(&f, vec![helpers.clone()]);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(
            c.summary,
            "Calico: ebpf (2 pinned cali_* maps); kube-proxy: none found"
        );
        assert!(
            c.evidence.contains("cali_counters3, cali_v4_ct3"),
            "{}",
            c.evidence
        );
        for kube in [kube_iptables(Backend::Nft), kube_nft()] {
            let c = check(&f, vec![helpers.clone(), kube]);
            assert_eq!(c.status, Status::Fail, "{c:?}");
            let hint = c.hint.unwrap();
            assert!(
                hint.contains(r#"{"nodeSelector":{"non-calico": "true"}}"#),
                "{hint}"
            );
            assert_eq!(c.implicates, [Owner::KubeProxy]);
        }
    }

    #[test]
    fn no_calico_warns_and_unreadable_rules_skip() {
        let f = FakeRoot::new();
        let c = check(&f, vec![kube_nft()]);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("kube-proxy: nftables"), "{c:?}");
        let mut inputs = f.inputs();
        inputs.netfilter = Err("not root: reading the netfilter rules needs CAP_NET_ADMIN".into());
        let c = dataplane(&inputs);
        assert_eq!(c.status, Status::Skip);
        assert!(c.summary.contains("not root"), "{c:?}");
    }

    #[test]
    fn felix_settings_are_evidence() {
        let f = FakeRoot::new();
        f.process(12, "calico-node", &["FELIX_NFTABLESMODE=Enabled"]);
        let c = check(&f, vec![calico_nft(), kube_nft()]);
        assert!(
            c.evidence.contains(
                "calico-node (pid 12): FELIX_NFTABLESMODE=Enabled, FELIX_BPFENABLED=unset"
            ),
            "{}",
            c.evidence
        );
    }
}
