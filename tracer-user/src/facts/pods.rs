//! Pods as people name them, found on the node without the API server: the
//! kubelet's pod log directories (`/var/log/pods/NAMESPACE_NAME_UID`) matched
//! to `cali*` interfaces by Calico's veth naming, and each pod's address from
//! the host route on its interface.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use super::topology::RouteEntry;
use crate::model::PodRef;

/// Calico's name for a pod's host-side veth: the prefix (`cali` by
/// default), then the first 11 hex digits of the SHA-1 of `NAMESPACE.NAME`.
pub fn calico_veth_name(prefix: &str, namespace: &str, name: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{namespace}.{name}"))
        .digest()
        .to_string();
    format!("{prefix}{}", &digest[..11])
}

/// `NAMESPACE_NAME_UID`: namespaces and names cannot hold `_`, UIDs neither.
fn parse_log_dir(dir: &str) -> Option<PodRef> {
    let mut parts = dir.splitn(3, '_');
    let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (!namespace.is_empty() && !name.is_empty() && !uid.is_empty()).then(|| PodRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Pods whose kubelet log directory is under `host_root` and whose Calico
/// veth has a host route, by address.
pub fn from_kubelet_logs(host_root: &Path, routes: &[RouteEntry]) -> BTreeMap<IpAddr, PodRef> {
    let mut out = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(host_root.join("var/log/pods")) else {
        return out;
    };
    for d in dirs.flatten() {
        let Some(pod) = d.file_name().to_str().and_then(parse_log_dir) else {
            continue;
        };
        let veth = calico_veth_name("cali", &pod.namespace, &pod.name);
        for ip in host_routes_on(routes, &veth) {
            out.insert(ip, pod.clone());
        }
    }
    out
}

/// The addresses routed to `dev` as hosts (/32, /128).
fn host_routes_on<'a>(routes: &'a [RouteEntry], dev: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
    routes
        .iter()
        .filter(move |r| r.dev == dev)
        .filter_map(RouteEntry::net)
        .filter(|(a, len)| u32::from(*len) == if a.is_ipv4() { 32 } else { 128 })
        .map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_calicos() {
        // sha1("default.frontend-7d9f") starts with these digits.
        let digest = sha1_smol::Sha1::from("default.frontend-7d9f")
            .digest()
            .to_string();
        assert_eq!(
            calico_veth_name("cali", "default", "frontend-7d9f"),
            format!("cali{}", &digest[..11])
        );
        assert_eq!(
            calico_veth_name("cali", "a", "b").len(),
            15,
            "an interface name fits"
        );
        assert_eq!(
            sha1_smol::Sha1::from("abc").digest().to_string(),
            "a9993e364706816aba3e25717850c26c9cd0d89d",
            "SHA-1 as FIPS 180 gives it"
        );
    }

    #[test]
    fn kubelet_log_directories_name_the_pods_behind_their_veths() {
        let root = std::env::temp_dir().join(format!("calitrace-pods-{}", std::process::id()));
        let logs = root.join("var/log/pods");
        for d in [
            "default_frontend-7d9f_0d4c1e9a-1",
            "db_redis-0_7f0e-2",
            "kube-system_coredns-x_9",
            "not-a-pod-dir",
        ] {
            std::fs::create_dir_all(logs.join(d)).unwrap();
        }
        let route = |dst: &str, dev: String| RouteEntry {
            dst: dst.into(),
            dev,
            via: None,
        };
        let routes = vec![
            route(
                "10.244.1.10/32",
                calico_veth_name("cali", "default", "frontend-7d9f"),
            ),
            route("10.244.1.11/32", calico_veth_name("cali", "db", "redis-0")),
            route("10.244.1.0/26", calico_veth_name("cali", "db", "redis-0")),
            route("10.244.2.0/26", "eth0".into()),
        ];
        let pods = from_kubelet_logs(&root, &routes);
        let named: Vec<String> = pods.iter().map(|(ip, p)| format!("{ip} {p}")).collect();
        assert_eq!(
            named,
            [
                "10.244.1.10 default/frontend-7d9f",
                "10.244.1.11 db/redis-0"
            ],
            "coredns has no interface here; a block route is no pod address"
        );
        assert!(from_kubelet_logs(Path::new("/nonexistent"), &routes).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
