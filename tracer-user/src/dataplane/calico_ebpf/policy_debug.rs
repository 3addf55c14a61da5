//! Felix's policy debug files (`/var/run/calico/bpf/policy/<iface>_<dir>_v<4|6>.json`,
//! written while `BPFPolicyDebugEnabled`, the default): the policy program
//! of an interface with comments that say which tier, policy and rule each
//! part is, and each rule's `MatchID`, the key of its counter in
//! `cali_rule_ctrs2`. `calico-node -bpf policy dump` joins them so; the
//! comments' wording changed in 3.30 and 3.32, and both are read here.

use serde::Deserialize;

use crate::model::PolicyRef;

#[derive(Deserialize)]
struct DebugFile {
    #[serde(rename = "policyInfo", default)]
    policy_info: Vec<Insn>,
}

#[derive(Deserialize)]
struct Insn {
    #[serde(default)]
    comments: Vec<String>,
}

/// A rule of a policy program, as its comments name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugRule {
    pub match_id: u64,
    pub policy: PolicyRef,
    /// The rule as Felix prints it (protobuf text).
    pub rule: String,
    /// `allow`, `deny`, `pass`, ... from the rule's text.
    pub action: Option<String>,
}

impl DebugRule {
    pub fn is_deny(&self) -> bool {
        self.action.as_deref() == Some("deny")
    }
}

/// The file name Felix writes for `iface`'s policy in `direction`
/// (`ingress`: towards a workload) and IP version.
pub fn file_name(iface: &str, direction: &str, ipv6: bool) -> String {
    format!("{iface}_{direction}_v{}.json", if ipv6 { 6 } else { 4 })
}

/// The rules of a policy debug file; `direction` as its name says.
pub fn parse(json: &str, direction: &str) -> Result<Vec<DebugRule>, String> {
    let file: DebugFile =
        serde_json::from_str(json).map_err(|e| format!("not a Felix policy debug file: {e}"))?;
    let mut tier: Option<String> = None;
    let mut policy: Option<PolicyRef> = None;
    let mut rule = String::new();
    let mut rules = Vec::new();
    for c in file.policy_info.iter().flat_map(|i| &i.comments) {
        if let Some(t) = c.strip_prefix("Start of tier ") {
            tier = Some(t.to_string());
        } else if let Some(r) = c.strip_prefix("Start of rule ") {
            rule = r.to_string();
        } else if let Some(id) = c.strip_prefix("Rule MatchID: ") {
            let Ok(match_id) = id.trim().parse() else {
                continue;
            };
            let mut p = policy.clone().unwrap_or_else(|| profile(&rule));
            p.tier = if policy.is_some() { tier.clone() } else { None };
            p.direction = Some(direction.to_string());
            let text = strip_name(&rule, &p).to_string();
            rules.push(DebugRule {
                match_id,
                action: action(&text),
                policy: p,
                rule: text,
            });
        } else if let Some(start) = c.strip_prefix("Start of ") {
            if let Some(p) = policy_start(start) {
                policy = Some(p);
            }
        } else if c.starts_with("End of ") && policy_start(&c["End of ".len()..]).is_some() {
            policy = None;
        }
    }
    Ok(rules)
}

/// `policy <name>` (3.29-3.31) or `<Kind> <namespace>/<name> <n>` (3.32+).
fn policy_start(s: &str) -> Option<PolicyRef> {
    if let Some(name) = s.strip_prefix("policy ") {
        return Some(named(None, name));
    }
    let words: Vec<&str> = s.split(' ').collect();
    match words[..] {
        [kind, name, n] if n.parse::<u32>().is_ok() && !matches!(kind, "tier" | "rule") => {
            Some(named(Some(kind), name))
        }
        _ => None,
    }
}

fn named(kind: Option<&str>, name: &str) -> PolicyRef {
    let (namespace, name) = match name.split_once('/') {
        Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
        None => (None, name.to_string()),
    };
    PolicyRef {
        kind: kind.map(str::to_string),
        namespace,
        name: Some(name),
        ..Default::default()
    }
}

/// A rule outside any policy is a profile's; 3.32+ names it first.
fn profile(rule: &str) -> PolicyRef {
    let first = rule.split(' ').next().unwrap_or("");
    PolicyRef {
        kind: Some("Profile".into()),
        name: (!first.is_empty() && !first.contains(':')).then(|| first.to_string()),
        ..Default::default()
    }
}

/// 3.32+ writes the policy's name before the rule.
fn strip_name<'a>(rule: &'a str, p: &PolicyRef) -> &'a str {
    let full = match (&p.namespace, &p.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n} "),
        (None, Some(n)) => format!("{n} "),
        _ => return rule,
    };
    rule.strip_prefix(full.as_str()).unwrap_or(rule)
}

fn action(rule: &str) -> Option<String> {
    let rest = &rule[rule.find("action:\"")? + "action:\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Felix 3.32 writes it (`writePolicy`, `writePolicyRules`): a tier,
    /// a namespaced policy with an allow and a deny rule, a profile.
    const V3_32: &str = r#"{"ifacename":"cali1a2b3c4d5e6","hook":"tc egress","policyInfo":[
 {"inst":[191,22,0,0,0,0,0,0],"comments":["Load packet metadata saved by previous program"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["Start of tier default"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["Start of NetworkPolicy demo/allow-tcp 0",
   "Start of rule demo/allow-tcp action:\"allow\" protocol:{number:6} rule_id:\"aBcD\"",
   "Rule MatchID: 12817593485201384321"]},
 {"inst":[0,0,0,0,0,0,0,0],"labels":["rule_0_no_match"],"comments":["End of rule demo/allow-tcp aBcD",
   "Start of rule demo/allow-tcp action:\"deny\" protocol:{number:1} rule_id:\"eFgH\"",
   "Rule MatchID: 42"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["End of rule demo/allow-tcp eFgH","End of NetworkPolicy demo/allow-tcp 0"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["End of tier default: deny"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["Start of rule kns.demo action:\"allow\" rule_id:\"iJkL\"","Rule MatchID: 7"]}],
 "error":""}"#;

    /// As Felix 3.29 writes it: `Start of policy <name>`, rules without the
    /// policy's name.
    const V3_29: &str = r#"{"ifacename":"eth0","hook":"tc ingress","policyInfo":[
 {"inst":[0,0,0,0,0,0,0,0],"comments":["Start of tier default"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["Start of policy default.deny-icmp","Start of rule action:\"deny\" protocol:{name:\"icmp\"}","IPSets ","Rule MatchID: 99"]},
 {"inst":[0,0,0,0,0,0,0,0],"comments":["End of rule","End of tier default"]}],"error":""}"#;

    #[test]
    fn felix_3_32_names_kind_namespace_tier_and_rule() {
        let rules = parse(V3_32, "ingress").unwrap();
        assert_eq!(rules.len(), 3, "{rules:#?}");
        let deny = rules.iter().find(|r| r.match_id == 42).unwrap();
        assert_eq!(
            deny.policy,
            PolicyRef {
                kind: Some("NetworkPolicy".into()),
                namespace: Some("demo".into()),
                name: Some("allow-tcp".into()),
                tier: Some("default".into()),
                direction: Some("ingress".into()),
            }
        );
        assert_eq!(deny.action.as_deref(), Some("deny"));
        assert_eq!(
            deny.rule,
            r#"action:"deny" protocol:{number:1} rule_id:"eFgH""#
        );
        assert_eq!(rules[0].match_id, 12817593485201384321);
        let profile = &rules[2];
        assert_eq!(profile.policy.kind.as_deref(), Some("Profile"));
        assert_eq!(profile.policy.name.as_deref(), Some("kns.demo"));
        assert_eq!(profile.policy.tier, None);
    }

    #[test]
    fn felix_3_29_names_the_policy_and_its_rule() {
        let rules = parse(V3_29, "egress").unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].match_id, 99);
        assert_eq!(rules[0].policy.name.as_deref(), Some("default.deny-icmp"));
        assert_eq!(rules[0].policy.kind, None);
        assert_eq!(rules[0].policy.tier.as_deref(), Some("default"));
        assert_eq!(rules[0].action.as_deref(), Some("deny"));
    }

    #[test]
    fn a_file_that_is_not_felixs_is_one_error() {
        assert!(
            parse("{", "ingress")
                .unwrap_err()
                .contains("not a Felix policy debug file")
        );
        assert_eq!(
            file_name("cali12", "ingress", false),
            "cali12_ingress_v4.json"
        );
    }
}
