//! A `calitrace doctor` check: one line `{"type":"check", ...}` with
//! `-o json`, one row of the text table otherwise.

use serde::{Deserialize, Serialize};

use super::Owner;
use super::diagnosis::Code;

macro_rules! ids {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// The checks of the JSON contract, in the order doctor runs them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum CheckId { $($variant),+ }

        impl CheckId {
            pub const ALL: &[CheckId] = &[$(CheckId::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(CheckId::$variant => $text),+ }
            }
        }
    };
}

ids! {
    IptablesBackend => "iptables_backend",
    CniBinDir => "cni_bin_dir",
    CniConfig => "cni_config",
    IpForward => "ip_forward",
    RpFilter => "rp_filter",
    ProxyArp => "proxy_arp",
    DefaultRoute => "default_route",
    Mtu => "mtu",
    Conntrack => "conntrack",
    Tunnel => "tunnel",
    Routes => "routes",
    Bgp => "bgp",
    Dataplane => "dataplane",
    Ebpf => "ebpf",
    Wireguard => "wireguard",
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CheckId {
    /// The checks whose failure can explain a live diagnosis of `code`.
    pub fn explaining(code: Code) -> &'static [CheckId] {
        match code {
            Code::IptablesBackendMismatch | Code::NetfilterDrop => {
                &[CheckId::IptablesBackend, CheckId::Dataplane]
            }
            Code::PolicyDrop => &[CheckId::Dataplane, CheckId::Ebpf],
            Code::CalicoEbpfDrop => &[CheckId::Ebpf],
            Code::WireguardRefused => &[CheckId::Wireguard],
            Code::NoRoute => &[CheckId::IpForward, CheckId::DefaultRoute, CheckId::Routes],
            Code::RpFilter => &[CheckId::RpFilter],
            Code::ProxyArpDisabled => &[CheckId::ProxyArp, CheckId::DefaultRoute],
            Code::MtuExceeded | Code::UnderlayMtu => &[CheckId::Mtu],
            Code::UnderlayDrop => &[CheckId::Tunnel, CheckId::Routes, CheckId::Wireguard],
            _ => &[],
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Could not be checked here; the summary says why.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }

    /// The symbol of the text table.
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "⚠",
            Status::Fail => "✗",
            Status::Skip => "–",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "check")]
pub struct Check {
    pub id: CheckId,
    pub status: Status,
    /// One sentence: what was found (for `skip`: why it could not be checked).
    pub summary: String,
    /// The readings behind it (`net.ipv4.ip_forward = 0`, file paths, routes).
    pub evidence: String,
    /// What to change, with the exact setting; null when nothing is to be done.
    pub hint: Option<String>,
    /// Whose netfilter rules a failed check puts in doubt: a diagnosis cites
    /// it only for a drop in their tables (empty: any drop it explains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implicates: Vec<Owner>,
}

impl Check {
    pub fn new(id: CheckId, status: Status, summary: impl Into<String>) -> Check {
        Check {
            id,
            status,
            summary: summary.into(),
            evidence: String::new(),
            hint: None,
            implicates: Vec::new(),
        }
    }

    pub fn ok(id: CheckId, summary: impl Into<String>) -> Check {
        Check::new(id, Status::Ok, summary)
    }

    pub fn warn(id: CheckId, summary: impl Into<String>) -> Check {
        Check::new(id, Status::Warn, summary)
    }

    pub fn fail(id: CheckId, summary: impl Into<String>) -> Check {
        Check::new(id, Status::Fail, summary)
    }

    pub fn skip(id: CheckId, why: impl Into<String>) -> Check {
        Check::new(id, Status::Skip, why)
    }

    pub fn evidence(mut self, evidence: impl Into<String>) -> Check {
        self.evidence = evidence.into();
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Check {
        self.hint = Some(hint.into());
        self
    }

    pub fn implicates(mut self, owners: &[Owner]) -> Check {
        self.implicates = owners.to_vec();
        self
    }

    /// Whether this check can explain a drop in `owner`'s rules.
    pub fn concerns(&self, owner: Option<Owner>) -> bool {
        self.implicates.is_empty() || owner.is_some_and(|o| self.implicates.contains(&o))
    }

    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_contract_fields() {
        let c = Check::fail(CheckId::IpForward, "forwarding is off")
            .evidence("net.ipv4.ip_forward = 0")
            .hint("sysctl -w net.ipv4.ip_forward=1");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "check", "id": "ip_forward", "status": "fail",
                "summary": "forwarding is off", "evidence": "net.ipv4.ip_forward = 0",
                "hint": "sysctl -w net.ipv4.ip_forward=1"
            })
        );
        let back: Check = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let skip = serde_json::to_value(Check::skip(CheckId::Bgp, "BIRD is not in use")).unwrap();
        assert_eq!(
            (&skip["status"], &skip["hint"]),
            (&"skip".into(), &None::<String>.into())
        );
    }

    #[test]
    fn ids_are_spelled_as_serde_writes_them() {
        for id in CheckId::ALL {
            assert_eq!(serde_json::to_value(id).unwrap(), id.as_str());
        }
        assert_eq!(CheckId::ALL.len(), 15);
        assert!(CheckId::explaining(Code::ProxyArpDisabled).contains(&CheckId::ProxyArp));
    }
}
