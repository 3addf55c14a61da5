//! RBAC as the API server applies it, for the rules of one Role and
//! ClusterRole file (deploy/operator-rbac.yaml): a request is allowed when
//! a rule names its verb and resource, cluster-wide or in its namespace.

use anyhow::{Context, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    /// None: a ClusterRole's rule (every namespace, and the cluster scope).
    pub namespace: Option<String>,
}

/// The rules of every Role and ClusterRole in a multi-document YAML file.
pub fn rules(yaml: &str) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---") {
        let v: Value = serde_saphyr::from_str(doc).context("an RBAC document")?;
        let namespace = match v["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
            ),
            _ => continue,
        };
        for r in v["rules"].as_array().into_iter().flatten() {
            let strings = |k: &str| -> Vec<String> {
                r[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            out.push(Rule {
                verbs: strings("verbs"),
                resources: strings("resources"),
                namespace: namespace.clone(),
            });
        }
    }
    Ok(out)
}

pub fn allows(rules: &[Rule], verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    rules.iter().any(|r| {
        r.verbs.iter().any(|v| v == verb || v == "*")
            && r.resources.iter().any(|x| x == resource || x == "*")
            && (r.namespace.is_none() || r.namespace.as_deref() == namespace)
    })
}
