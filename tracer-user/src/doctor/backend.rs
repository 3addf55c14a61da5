//! `iptables_backend`: Calico's `cali-*` chains must be in the backend the
//! node (its `iptables` command, kube-proxy) uses; both backends run for
//! every packet, and a rule in the one nobody lists is invisible.

use super::{Check, CheckId, HostRoot, Inputs};
use crate::netfilter::inventory::backend_of_name;
use crate::netfilter::{Backend, CalicoPlacement, Inventory, iptables_binary_backend};

const ID: CheckId = CheckId::IptablesBackend;

/// Which backend the host's `iptables` command uses, from its symlinks.
pub(super) fn iptables_command(root: &HostRoot) -> Option<Backend> {
    if root.is_slash() {
        return iptables_binary_backend();
    }
    ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .map(|p| root.link_chain(p))
        .find(|chain| !chain.is_empty())?
        .iter()
        .rev()
        .find_map(|p| backend_of_name(p))
}

/// Felix's `FELIX_IPTABLESBACKEND`, as far as it can be seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Felix {
    /// No calico-node process in this root's /proc.
    NotSeen,
    Unreadable(String),
    /// The calico-node process and its setting (`None`: not set, Felix's
    /// default `Auto`).
    Set(u32, Option<String>),
}

fn felix(root: &HostRoot) -> Felix {
    let procs = root.processes(&["calico-node"]);
    let Some(first) = procs.first() else {
        return Felix::NotSeen;
    };
    let mut why = None;
    for p in &procs {
        match root.environ(p.pid) {
            Ok(env) => {
                let value = env
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("FELIX_IPTABLESBACKEND"))
                    .map(|(_, v)| v);
                return Felix::Set(p.pid, value);
            }
            Err(e) => why = Some(e),
        }
    }
    Felix::Unreadable(format!(
        "calico-node (pid {}): {}",
        first.pid,
        why.unwrap_or_default()
    ))
}

/// The backend a `FELIX_IPTABLESBACKEND` value names (`Auto`: none).
fn felix_backend(value: &str) -> Option<Backend> {
    match value.to_ascii_lowercase().as_str() {
        "legacy" => Some(Backend::Legacy),
        "nft" => Some(Backend::Nft),
        _ => None,
    }
}

fn felix_value(b: Backend) -> &'static str {
    match b {
        Backend::Legacy => "Legacy",
        Backend::Nft => "NFT",
    }
}

/// Where chains whose names start with `prefix` are.
fn placement(inv: &Inventory, prefix: &str) -> Option<CalicoPlacement> {
    let has = |backend| {
        inv.tables
            .iter()
            .filter(|t| t.backend == backend)
            .flat_map(|t| &t.chains)
            .any(|c| c.name.starts_with(prefix))
    };
    match (has(Backend::Legacy), has(Backend::Nft)) {
        (true, true) => Some(CalicoPlacement::Both),
        (true, false) => Some(CalicoPlacement::Legacy),
        (false, true) => Some(CalicoPlacement::Nft),
        (false, false) => None,
    }
}

fn rules_in(inv: &Inventory, backend: Backend) -> usize {
    inv.tables
        .iter()
        .filter(|t| t.backend == backend)
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum()
}

fn other(b: Backend) -> Backend {
    match b {
        Backend::Legacy => Backend::Nft,
        Backend::Nft => Backend::Legacy,
    }
}

fn single(p: Option<CalicoPlacement>) -> Option<Backend> {
    match p? {
        CalicoPlacement::Legacy => Some(Backend::Legacy),
        CalicoPlacement::Nft => Some(Backend::Nft),
        CalicoPlacement::Both => None,
    }
}

/// What was found, for the evidence and the verdict.
struct Seen {
    calico: Option<CalicoPlacement>,
    kube: Option<CalicoPlacement>,
    command: Option<Backend>,
    felix: Felix,
    rules: [(Backend, usize); 2],
}

impl Seen {
    fn evidence(&self) -> String {
        let place = |p: Option<CalicoPlacement>| p.map_or("none".to_string(), |p| p.to_string());
        let felix = match &self.felix {
            Felix::NotSeen => "no calico-node process".to_string(),
            Felix::Unreadable(e) => format!("unreadable ({e})"),
            Felix::Set(pid, v) => format!(
                "{} (calico-node pid {pid})",
                v.as_deref().unwrap_or("unset = Auto")
            ),
        };
        format!(
            "rules: legacy {}, nft {}; cali-* chains: {}; KUBE-* chains: {}; iptables command: {}; FELIX_IPTABLESBACKEND: {felix}",
            self.rules[0].1,
            self.rules[1].1,
            place(self.calico),
            place(self.kube),
            self.command.map_or("unknown".into(), |b| b.to_string()),
        )
    }

    fn felix_explicit(&self) -> Option<Backend> {
        match &self.felix {
            Felix::Set(_, Some(v)) => felix_backend(v),
            _ => None,
        }
    }
}

/// The hint that makes Felix write to `backend`.
fn set_felix(backend: Backend, why: &str) -> String {
    let v = felix_value(backend);
    format!(
        "{why}: set FELIX_IPTABLESBACKEND={v} on calico-node (`kubectl -n calico-system set env daemonset/calico-node FELIX_IPTABLESBACKEND={v}`, kube-system on manifest installs; or `iptablesBackend: {v}` in the default FelixConfiguration), then remove the stale cali-* chains of iptables-{} (or reboot the node); `iptables -V` and `ls -l /usr/sbin/iptables` show the node's backend",
        other(backend)
    )
}

pub(super) fn iptables_backend(inputs: &Inputs) -> Check {
    let inv = match &inputs.netfilter {
        Ok(inv) => inv,
        Err(e) => return Check::skip(ID, e.clone()),
    };
    let seen = Seen {
        calico: inv.calico_chains(),
        kube: placement(inv, "KUBE-"),
        command: inputs.iptables_command,
        felix: felix(&inputs.root),
        rules: [Backend::Legacy, Backend::Nft].map(|b| (b, rules_in(inv, b))),
    };
    verdict(&seen).evidence(seen.evidence())
}

fn verdict(s: &Seen) -> Check {
    // The backend the node's tools write to: its iptables command, else kube-proxy's.
    let node = s.command.or(single(s.kube));
    let Some(calico) = s.calico else {
        return match s.command {
            Some(cmd) if s.rules.iter().any(|(b, n)| *b != cmd && *n > 0) => Check::warn(
                ID,
                format!(
                    "iptables-{} holds rules that the node's iptables command ({cmd}) does not show; both backends see every packet",
                    other(cmd)
                ),
            )
            .hint(format!("list them with `{}`", other(cmd).list_command())),
            _ => Check::skip(
                ID,
                "no cali-* chains in either backend: Felix is not running in this network namespace, or runs the eBPF or nftables dataplane",
            ),
        };
    };
    let Some(calico) = single(Some(calico)) else {
        let why = "Calico's cali-* chains are in both iptables backends";
        return Check::fail(
            ID,
            format!("{why}: one set is stale and both see every packet"),
        )
        .hint(set_felix(node.unwrap_or(Backend::Nft), "keep one"));
    };
    if let Some(cmd) = s.command.filter(|c| *c != calico) {
        let why = format!(
            "Calico's cali-* chains are in iptables-{calico} while the node's iptables command uses {cmd}"
        );
        return Check::fail(ID, why.clone())
            .hint(set_felix(cmd, "make Felix write where the node does"));
    }
    if let Some(kube) = single(s.kube).filter(|k| *k != calico) {
        let why = format!(
            "Calico's cali-* chains are in iptables-{calico} while kube-proxy's KUBE-* chains are in iptables-{kube}"
        );
        return Check::fail(ID, why).hint(set_felix(
            kube,
            "make Felix and kube-proxy write to the same backend (or run kube-proxy with the node's iptables)",
        ));
    }
    if let Some(f) = s.felix_explicit().filter(|f| *f != calico) {
        return Check::warn(
            ID,
            format!("FELIX_IPTABLESBACKEND names {f}, but Calico's cali-* chains are in iptables-{calico}"),
        )
        .hint(set_felix(calico, "make the setting match the chains Felix keeps"));
    }
    if s.kube == Some(CalicoPlacement::Both) {
        return Check::warn(ID, "kube-proxy's KUBE-* chains are in both iptables backends")
            .hint("one set is stale: remove the KUBE-* chains of the backend the node's iptables command does not use");
    }
    let stray = s.rules.iter().find(|(b, n)| *b != calico && *n > 0);
    if let Some((b, n)) = stray {
        return Check::warn(
            ID,
            format!("Calico uses iptables-{calico}, but iptables-{b} holds {n} rule(s) too; both see every packet"),
        )
        .hint(format!("make sure none of them drops pod traffic: `{}`", b.list_command()));
    }
    Check::ok(
        ID,
        format!("Calico's cali-* chains are in iptables-{calico}, the backend the node uses"),
    )
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, table};
    use super::*;
    use crate::netfilter::{Rule, Table};

    fn inventory(tables: Vec<Table>) -> Inventory {
        Inventory {
            tables,
            errors: vec![],
            traces: vec![],
        }
    }

    fn with_rule(mut t: Table) -> Table {
        t.chains[0].rules.push(Rule {
            id: "1".into(),
            text: "-j ACCEPT".into(),
            verdict: None,
            comment: None,
            counters: None,
            reject_with: None,
        });
        t
    }

    #[test]
    fn legacy_calico_chains_on_an_nft_node_fail_naming_felix() {
        let f = FakeRoot::new();
        f.process(77, "calico-node", &["FELIX_IPTABLESBACKEND=Auto"]);
        let mut inputs = f.inputs();
        inputs.iptables_command = Some(Backend::Nft);
        inputs.netfilter = Ok(inventory(vec![table(
            Backend::Legacy,
            "filter",
            &["FORWARD", "cali-FORWARD"],
        )]));
        let c = iptables_backend(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("iptables-legacy"), "{c:?}");
        let hint = c.hint.unwrap();
        assert!(hint.contains("FELIX_IPTABLESBACKEND=NFT"), "{hint}");
        assert!(
            c.evidence.contains("Auto (calico-node pid 77)"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn chains_in_both_backends_fail() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        inputs.iptables_command = Some(Backend::Legacy);
        inputs.netfilter = Ok(inventory(vec![
            table(Backend::Legacy, "filter", &["cali-INPUT"]),
            table(Backend::Nft, "filter", &["cali-INPUT"]),
        ]));
        let c = iptables_backend(&inputs);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("FELIX_IPTABLESBACKEND=Legacy"));
    }

    #[test]
    fn kube_proxy_in_the_other_backend_fails() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        inputs.netfilter = Ok(inventory(vec![
            table(Backend::Nft, "filter", &["cali-INPUT"]),
            table(Backend::Legacy, "nat", &["KUBE-SERVICES"]),
        ]));
        let c = iptables_backend(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("kube-proxy"), "{c:?}");
        assert!(c.hint.unwrap().contains("FELIX_IPTABLESBACKEND=Legacy"));
    }

    #[test]
    fn agreeing_backends_are_ok_and_stray_rules_warn() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        inputs.iptables_command = Some(Backend::Nft);
        let calico = table(Backend::Nft, "filter", &["cali-INPUT", "KUBE-FORWARD"]);
        inputs.netfilter = Ok(inventory(vec![calico.clone()]));
        assert_eq!(iptables_backend(&inputs).status, Status::Ok);
        let stray = with_rule(table(Backend::Legacy, "filter", &["FORWARD"]));
        inputs.netfilter = Ok(inventory(vec![calico, stray]));
        let c = iptables_backend(&inputs);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.hint.unwrap().contains("iptables-legacy-save"));
    }

    #[test]
    fn felix_set_to_the_other_backend_warns() {
        let f = FakeRoot::new();
        f.process(5, "calico-node", &["FELIX_IPTABLESBACKEND=Legacy"]);
        let mut inputs = f.inputs();
        inputs.iptables_command = Some(Backend::Nft);
        inputs.netfilter = Ok(inventory(vec![table(Backend::Nft, "filter", &["cali-x"])]));
        assert_eq!(iptables_backend(&inputs).status, Status::Warn);
    }

    #[test]
    fn no_calico_chains_or_no_privileges_skip() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        assert_eq!(iptables_backend(&inputs).status, Status::Skip);
        inputs.netfilter = Err("not root".into());
        let c = iptables_backend(&inputs);
        assert_eq!((c.status, c.summary.as_str()), (Status::Skip, "not root"));
    }

    #[test]
    fn the_command_backend_follows_links_inside_the_root() {
        let f = FakeRoot::new();
        f.file("/usr/sbin/xtables-legacy-multi", "");
        f.link("/usr/sbin/iptables", "/etc/alternatives/iptables");
        f.link(
            "/etc/alternatives/iptables",
            "/usr/sbin/xtables-legacy-multi",
        );
        assert_eq!(iptables_command(&f.root()), Some(Backend::Legacy));
        assert_eq!(iptables_command(&FakeRoot::new().root()), None);
    }
}
