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

/// The message of a 403 that RBAC gave (or that names no other refuser:
/// Pod Security admission, a webhook and a quota need other fixes).
pub fn rbac_forbidden(e: &kube::Error) -> Option<&str> {
    status(e)
        .filter(|s| {
            s.code == 403 && matches!(refusal(&s.message), None | Some(Refusal::Rbac { .. }))
        })
        .map(|s| s.message.as_str())
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

/// Who refused a call, read from the API server's Status message: RBAC,
/// Pod Security admission, an admission webhook or a resource quota all
/// answer 403 (a webhook often 400), and each needs another fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `User "x" cannot VERB resource "R" ...`
    Rbac { verb: String, resource: String },
    /// `violates PodSecurity "LEVEL:VERSION": WHAT`
    PodSecurity { level: String, what: String },
    /// `admission webhook "NAME" denied the request: WHY`
    Webhook { name: String, why: String },
    /// `exceeded quota: NAME, requested: ..., used: ..., limited: ...`
    Quota { detail: String },
}

/// The refusal a Status message describes, if it is one of those.
pub fn refusal(message: &str) -> Option<Refusal> {
    if let Some(rest) = after(message, "violates PodSecurity \"") {
        let (level, what) = rest.split_once('"')?;
        let what = what.trim_start_matches(':').trim();
        return Some(Refusal::PodSecurity {
            level: level.to_string(),
            what: what.to_string(),
        });
    }
    if let Some(rest) = after(message, "admission webhook \"") {
        let (name, why) = rest.split_once('"')?;
        let why = why
            .trim_start_matches(" denied the request")
            .trim_start_matches(':')
            .trim();
        return Some(Refusal::Webhook {
            name: name.to_string(),
            why: why.to_string(),
        });
    }
    if let Some(rest) = after(message, "exceeded quota: ") {
        return Some(Refusal::Quota {
            detail: rest.to_string(),
        });
    }
    forbidden_parts(message).map(|(verb, resource)| Refusal::Rbac { verb, resource })
}

fn after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    s.find(marker).map(|i| &s[i + marker.len()..])
}

/// One clear error for a failed call: what was refused and how to get it,
/// or why the server could not be reached.
pub fn explain(e: kube::Error, call: Call<'_>) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 || s.code == 400 => match refusal(&s.message) {
            Some(r) => refused(r, call, &s.message),
            None if s.code == 403 => refused(
                Refusal::Rbac {
                    verb: call.verb.to_string(),
                    resource: call.resource.to_string(),
                },
                call,
                &s.message,
            ),
            None => answered(s, call),
        },
        kube::Error::Api(s) if s.code == 401 => usage(format!(
            "unauthorized: the API server refused the kubeconfig's credentials ({}); \
             log in again or refresh the credentials, then `kubectl get nodes` should work",
            s.message
        )),
        kube::Error::Api(s) if s.message.contains("error dialing backend") => anyhow::anyhow!(
            "the API server cannot reach this node's kubelet to {} {}: {}; \
             check that the kubelet runs on the node and that the API server (or its \
             konnectivity agent) reaches the node's port 10250: `kubectl logs` of any pod \
             on that node fails the same way",
            call.verb,
            call.resource,
            s.message
        ),
        kube::Error::Api(s) => answered(s, call),
        _ => anyhow::anyhow!(
            "{} {} {}: cannot reach the API server: {e:#}; check that `kubectl get nodes` works with the same kubeconfig",
            call.verb,
            call.resource,
            call.scope()
        ),
    }
}

fn answered(s: &Status, call: Call<'_>) -> anyhow::Error {
    anyhow::anyhow!(
        "{} {} {}: the API server answered {} {}: {}",
        call.verb,
        call.resource,
        call.scope(),
        s.code,
        s.reason,
        s.message
    )
}

/// A refused call, with the fix its refuser needs.
fn refused(r: Refusal, call: Call<'_>, message: &str) -> anyhow::Error {
    let ns = call.namespace.unwrap_or("default");
    usage(match r {
        Refusal::Rbac { verb, resource } => format!(
            "forbidden: calitrace needs the verb `{verb}` on `{resource}` {}; the API server said: {message}. \
             Grant it with deploy/operator-rbac.yaml (ClusterRole and Role calitrace-operator) \
             bound to your user or group; `kubectl auth can-i {verb} {resource}{}` checks it",
            call.scope(),
            call.namespace
                .map(|n| format!(" -n {n}"))
                .unwrap_or_default(),
        ),
        Refusal::PodSecurity { level, what } => format!(
            "Pod Security admission refused the agent pod in namespace {ns}: it enforces \
             \"{level}\" there, and the agent needs a privileged pod ({what}). Label the \
             namespace for it: `kubectl label namespace {ns} pod-security.kubernetes.io/enforce=privileged` \
             (deploy/namespace.yaml does), or run the agents in a namespace that allows it (--namespace)"
        ),
        Refusal::Webhook { name, why } => format!(
            "the admission webhook {name} refused to {} {} in namespace {ns}: {why}. \
             Its policy must allow calitrace's agent pods (privileged, host network and PID, \
             hostPath): ask its owner for an exception for namespace {ns}, \
             or see `kubectl get validatingwebhookconfigurations` for {name}",
            call.verb, call.resource
        ),
        Refusal::Quota { detail } => format!(
            "a resource quota in namespace {ns} refused the agent pod: exceeded quota: {detail}. \
             `kubectl describe resourcequota -n {ns}` shows it: raise it, or free what it counts"
        ),
    })
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

    /// Status messages as Kubernetes writes them: Pod Security admission
    /// (`violates PodSecurity %q: %s`), an admission webhook (`admission
    /// webhook %q denied the request: %s`), a quota (`exceeded quota: %s,
    /// requested: %s, used: %s, limited: %s`), RBAC.
    #[test]
    fn each_refuser_is_told_apart() {
        let pss = r#"pods "calitrace-agent-node-a-x7k2p" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volumes "host-root"), privileged (container "agent" must not set securityContext.privileged=true)"#;
        assert_eq!(
            refusal(pss),
            Some(Refusal::PodSecurity {
                level: "baseline:latest".into(),
                what: r#"host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volumes "host-root"), privileged (container "agent" must not set securityContext.privileged=true)"#.into(),
            })
        );
        let hook = r#"admission webhook "validation.gatekeeper.sh" denied the request: [psp-privileged-container] Privileged container is not allowed: agent"#;
        assert_eq!(
            refusal(hook),
            Some(Refusal::Webhook {
                name: "validation.gatekeeper.sh".into(),
                why: "[psp-privileged-container] Privileged container is not allowed: agent".into(),
            })
        );
        let quota = r#"pods "calitrace-agent-node-a-x7k2p" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10"#;
        assert_eq!(
            refusal(quota),
            Some(Refusal::Quota {
                detail: "pods, requested: pods=1, used: pods=10, limited: pods=10".into()
            })
        );
        let rbac = r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "calitrace""#;
        assert_eq!(
            refusal(rbac),
            Some(Refusal::Rbac {
                verb: "create".into(),
                resource: "pods".into()
            })
        );
    }

    #[test]
    fn each_refusal_names_its_fix() {
        let call = Call::new("create", "pods", Some("calitrace"));
        let err = |code: u16, message: &str| {
            let e = kube::Error::Api(Box::new(
                Status::failure(message, "Forbidden").with_code(code),
            ));
            let e = explain(e, call);
            (crate::run::exit_code(&e), e.to_string())
        };
        let (code, pss) = err(
            403,
            r#"pods "x" is forbidden: violates PodSecurity "restricted:v1.35": privileged (container "agent" must not set securityContext.privileged=true)"#,
        );
        assert_eq!(code, 2);
        assert!(pss.contains(r#"enforces "restricted:v1.35""#), "{pss}");
        assert!(
            pss.contains("pod-security.kubernetes.io/enforce=privileged"),
            "{pss}"
        );
        assert!(!pss.contains("operator-rbac"), "not an RBAC fix: {pss}");
        let (_, hook) = err(
            400,
            r#"admission webhook "validate.kyverno.svc-fail" denied the request: policy Pod/calitrace/x for resource violation: disallow-privileged-containers"#,
        );
        assert!(
            hook.starts_with("the admission webhook validate.kyverno.svc-fail refused"),
            "{hook}"
        );
        assert!(hook.contains("disallow-privileged-containers"), "{hook}");
        let (_, quota) = err(
            403,
            r#"pods "x" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10"#,
        );
        assert!(
            quota.contains("kubectl describe resourcequota -n calitrace"),
            "{quota}"
        );
        let (_, rbac) = err(
            403,
            r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "calitrace""#,
        );
        assert!(
            rbac.contains("kubectl auth can-i create pods -n calitrace"),
            "{rbac}"
        );
        let e = kube::Error::Api(Box::new(
            Status::failure(
                "error dialing backend: dial tcp 192.0.2.3:10250: connect: connection refused",
                "",
            )
            .with_code(500),
        ));
        let kubelet = explain(e, Call::new("create", "pods/exec", Some("calitrace"))).to_string();
        assert!(
            kubelet.contains("cannot reach this node's kubelet"),
            "{kubelet}"
        );
        assert!(kubelet.contains("10250"), "{kubelet}");
    }
}
