//! API errors as the user can act on them: a 403 names the verb and the
//! resource that are missing and where RBAC grants them.

use kube::core::Status;

use crate::run::usage;

/// The request that failed, as RBAC names it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    /// The namespace, or None for the cluster scope.
    pub namespace: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(verb: &'a str, resource: &'a str, namespace: Option<&'a str>) -> Self {
        Call {
            verb,
            resource,
            namespace,
        }
    }

    fn scope(&self) -> String {
        match self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".into(),
        }
    }
}

/// The API's answer for a failed call, when it gave one.
pub fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| s.code == 404)
}

pub fn is_forbidden(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| s.code == 403)
}

/// The verb and resource that a Forbidden message names (`User "x" cannot
/// list resource "pods" in API group "" ...`).
pub fn forbidden_parts(message: &str) -> Option<(String, String)> {
    let rest = &message[message.find("cannot ")? + "cannot ".len()..];
    let (verb, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("resource \"")?;
    let (resource, _) = rest.split_once('"')?;
    Some((verb.to_string(), resource.to_string()))
}

/// One clear error for a failed call: what was refused and how to get it,
/// or why the server could not be reached.
pub fn explain(e: kube::Error, call: Call<'_>) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 => {
            let (verb, resource) = forbidden_parts(&s.message)
                .unwrap_or_else(|| (call.verb.to_string(), call.resource.to_string()));
            usage(format!(
                "forbidden: calitrace needs the verb `{verb}` on `{resource}` {}; the API server said: {}. \
                 Grant it with deploy/operator-rbac.yaml (ClusterRole and Role calitrace-operator) \
                 bound to your user or group; `kubectl auth can-i {verb} {resource}{}` checks it",
                call.scope(),
                s.message,
                call.namespace
                    .map(|n| format!(" -n {n}"))
                    .unwrap_or_default(),
            ))
        }
        kube::Error::Api(s) if s.code == 401 => usage(format!(
            "unauthorized: the API server refused the kubeconfig's credentials ({}); \
             log in again or refresh the credentials, then `kubectl get nodes` should work",
            s.message
        )),
        kube::Error::Api(s) => anyhow::anyhow!(
            "{} {} {}: the API server answered {} {}: {}",
            call.verb,
            call.resource,
            call.scope(),
            s.code,
            s.reason,
            s.message
        ),
        _ => anyhow::anyhow!(
            "{} {} {}: cannot reach the API server: {e:#}; check that `kubectl get nodes` works with the same kubeconfig",
            call.verb,
            call.resource,
            call.scope()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_name_verb_and_resource() {
        let m = r#"pods "calitrace-agent-x" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "calitrace""#;
        assert_eq!(
            forbidden_parts(m),
            Some(("create".into(), "pods/exec".into()))
        );
        assert_eq!(forbidden_parts("nodes is forbidden"), None);
    }
}
