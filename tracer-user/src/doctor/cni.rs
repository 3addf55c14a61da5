//! `cni_bin_dir` and `cni_config`: the container runtime must find Calico's
//! `calico` and `calico-ipam` plugins where it looks for plugins, and
//! Calico's network configuration must be the first one it reads.

use std::path::Path;

use serde_json::Value;

use super::runtime::{DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, Runtime, runtimes};
use super::{Check, CheckId, HostRoot, Inputs, Status};

const PLUGINS: [&str; 2] = ["calico", "calico-ipam"];
/// Where CNI plugins are usually installed, besides the runtimes' own dirs.
const USUAL_DIRS: [&str; 4] = [
    DEFAULT_BIN_DIR,
    "/usr/libexec/cni",
    "/usr/lib/cni",
    "/usr/local/libexec/cni",
];

fn trimmed(dir: &str) -> String {
    match dir.trim_end_matches('/') {
        "" => "/".into(),
        d => d.into(),
    }
}

fn has_plugin(root: &HostRoot, dir: &str, plugin: &str) -> bool {
    root.is_file(Path::new(dir).join(plugin))
}

/// The runtimes, or the defaults when none is found.
fn runtimes_or_default(root: &HostRoot) -> Vec<Runtime> {
    let found = runtimes(root);
    if !found.is_empty() {
        return found;
    }
    vec![Runtime {
        name: "the container runtime",
        bin_dirs: vec![DEFAULT_BIN_DIR.into()],
        conf_dir: DEFAULT_CONF_DIR.into(),
        source: "defaults: no containerd or CRI-O found".into(),
        setting: "its CNI plugin directory".into(),
        error: None,
    }]
}

pub(super) fn cni_bin_dir(inputs: &Inputs) -> Check {
    let root = &inputs.root;
    let rts = runtimes_or_default(root);
    // The runtimes' directories, then the usual ones, each once.
    let mut seen: Vec<String> = Vec::new();
    let dirs = rts.iter().flat_map(|r| &r.bin_dirs).map(|d| trimmed(d));
    for d in dirs.chain(USUAL_DIRS.iter().map(|d| d.to_string())) {
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    let holding: Vec<&String> = seen
        .iter()
        .filter(|d| PLUGINS.iter().all(|p| has_plugin(root, d, p)))
        .collect();
    let calico_used =
        !calico_configs(root, &rts).is_empty() || !root.processes(&["calico-node"]).is_empty();
    let mut evidence: Vec<String> = rts
        .iter()
        .map(|r| format!("{}: {} (from {})", r.name, r.bin_dirs.join(", "), r.source))
        .collect();
    if !holding.is_empty() {
        let dirs: Vec<&str> = holding.iter().map(|s| s.as_str()).collect();
        evidence.push(format!("calico, calico-ipam in {}", dirs.join(", ")));
    }
    let checks: Vec<Check> = rts
        .iter()
        .map(|rt| judge(root, rt, &holding, calico_used, &seen))
        .collect();
    let worst = checks
        .into_iter()
        .max_by_key(|c| rank(c.status))
        .expect("at least one runtime");
    worst.evidence(evidence.join("; "))
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Skip => 0,
        Status::Ok => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    }
}

fn judge(
    root: &HostRoot,
    rt: &Runtime,
    holding: &[&String],
    calico_used: bool,
    seen: &[String],
) -> Check {
    let id = CheckId::CniBinDir;
    if let Some(e) = &rt.error {
        return Check::fail(
            id,
            format!("{}'s configuration cannot be read: {e}", rt.name),
        )
        .hint(format!(
            "fix {}; {} does not start, or ignores it, as it is",
            rt.source, rt.name
        ));
    }
    let missing: Vec<&str> = PLUGINS
        .iter()
        .copied()
        .filter(|p| !rt.bin_dirs.iter().any(|d| has_plugin(root, d, p)))
        .collect();
    let looks = rt.bin_dirs.join(", ");
    if missing.is_empty() {
        return Check::ok(
            id,
            format!("{} finds calico and calico-ipam in {looks}", rt.name),
        );
    }
    if let Some(there) = holding.first() {
        return Check::fail(
            id,
            format!("{} looks for CNI plugins in {looks}, but calico and calico-ipam are in {there}", rt.name),
        )
        .hint(format!(
            "set {} to \"{there}\" and restart {}, or make Calico install its plugins into {} (the cni-bin-dir hostPath of the calico-node DaemonSet, or the Installation's cni binDir)",
            rt.setting, rt.name, rt.bin_dirs[0]
        ));
    }
    if calico_used {
        return Check::fail(
            id,
            format!("{} is not in {looks} (nor in {}), though Calico is set up here", missing.join(" and "), seen.join(", ")),
        )
        .hint("calico-node's install-cni init container copies the plugins: check its logs, and that its cni-bin-dir hostPath is where the runtime looks");
    }
    Check::skip(
        id,
        format!(
            "no Calico CNI plugin on this node (looked in {})",
            seen.join(", ")
        ),
    )
}

/// A CNI network configuration file, as the runtime sees it.
struct ConfFile {
    name: String,
    /// The plugin types it names; `Err` when it is not valid JSON.
    types: Result<Vec<String>, String>,
}

impl ConfFile {
    fn is_calico(&self) -> bool {
        self.types
            .as_ref()
            .is_ok_and(|t| t.iter().any(|t| t == "calico"))
    }
}

fn plugin_types(v: &Value) -> Vec<String> {
    let one = |p: &Value| p.get("type").and_then(Value::as_str).map(str::to_string);
    match v.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(one).collect(),
        None => one(v).into_iter().collect(),
    }
}

/// The configuration files of `dir` in the order libcni reads them
/// (`*.conf`, `*.conflist`, `*.json`, lexical); `None` when there is no `dir`.
fn conf_files(root: &HostRoot, dir: &str) -> Option<Vec<ConfFile>> {
    let entries = std::fs::read_dir(root.path(dir)).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|x| n.ends_with(x))
        })
        .collect();
    names.sort();
    Some(
        names
            .into_iter()
            .map(|name| {
                let text = root
                    .read(Path::new(dir).join(&name))
                    .map_err(|e| e.to_string());
                let types = text.and_then(|t| {
                    serde_json::from_str::<Value>(&t)
                        .map(|v| plugin_types(&v))
                        .map_err(|e| e.to_string())
                });
                ConfFile { name, types }
            })
            .collect(),
    )
}

fn calico_configs(root: &HostRoot, rts: &[Runtime]) -> Vec<String> {
    rts.iter()
        .filter_map(|r| conf_files(root, &r.conf_dir))
        .flatten()
        .filter(ConfFile::is_calico)
        .map(|c| c.name)
        .collect()
}

pub(super) fn cni_config(inputs: &Inputs) -> Check {
    let id = CheckId::CniConfig;
    let rts = runtimes_or_default(&inputs.root);
    let rt = &rts[0];
    let dir = trimmed(&rt.conf_dir);
    let Some(files) = conf_files(&inputs.root, &dir) else {
        return Check::skip(
            id,
            format!("{dir} is absent: no CNI configuration on this node"),
        );
    };
    let listing = files
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let evidence = format!(
        "{dir} ({} reads it): {}",
        rt.name,
        if listing.is_empty() {
            "empty"
        } else {
            &listing
        }
    );
    let Some(first) = files.first() else {
        return Check::warn(id, format!("no CNI network configuration in {dir}: pods get no network"))
            .evidence(evidence)
            .hint("calico-node's install-cni init container writes 10-calico.conflist there: check its logs");
    };
    let calico: Vec<&ConfFile> = files.iter().filter(|f| f.is_calico()).collect();
    let check = match (&first.types, first.is_calico()) {
        (Err(e), _) => Check::fail(id, format!("{dir}/{}, the first file, is not valid JSON: {e}", first.name))
            .hint(format!("fix or remove {dir}/{}: the runtime reads only the first file in lexical order", first.name)),
        (Ok(_), true) => Check::ok(id, format!("Calico's {dir}/{} comes first", first.name)),
        (Ok(types), false) if !calico.is_empty() => Check::fail(
            id,
            format!("{dir}/{} ({}) comes before Calico's {}: the runtime uses it", first.name, types.join(", "), calico[0].name),
        )
        .hint(format!("remove {dir}/{} (or rename Calico's to sort first): the runtime reads only the first file in lexical order", first.name)),
        (Ok(types), false) => Check::warn(
            id,
            format!("no Calico configuration in {dir}; the runtime uses {} ({})", first.name, types.join(", ")),
        ),
    };
    check.evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeRoot;
    use super::super::runtime::CONTAINERD_CONFIG;
    use super::*;

    const CALICO_CONFLIST: &str = r#"{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"portmap"}]}"#;

    fn plugins(f: &FakeRoot, dir: &str) {
        for p in PLUGINS {
            f.file(&format!("{dir}/{p}"), "#!/bin/true\n");
        }
    }

    #[test]
    fn containerd_bin_dir_without_calico_fails_naming_the_setting() {
        let f = FakeRoot::new();
        f.file(
            CONTAINERD_CONFIG,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/usr/lib/cni\"\n",
        );
        f.file("/usr/lib/cni/loopback", "");
        plugins(&f, "/opt/cni/bin");
        let c = cni_bin_dir(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("/usr/lib/cni") && c.summary.contains("/opt/cni/bin"),
            "{c:?}"
        );
        let hint = c.hint.unwrap();
        assert!(
            hint.contains("bin_dir in [plugins.\"io.containerd.grpc.v1.cri\".cni]"),
            "{hint}"
        );
        assert!(hint.contains("\"/opt/cni/bin\""), "{hint}");
    }

    #[test]
    fn plugins_where_the_runtime_looks_are_ok() {
        let f = FakeRoot::new();
        f.file(
            CONTAINERD_CONFIG,
            "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dirs = ['/usr/lib/cni', '/opt/cni/bin']\n",
        );
        plugins(&f, "/opt/cni/bin");
        let c = cni_bin_dir(&f.inputs());
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.evidence.contains("/usr/lib/cni, /opt/cni/bin"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn crio_plugin_dirs_are_checked_too() {
        let f = FakeRoot::new();
        f.file(
            "/etc/crio/crio.conf",
            "[crio.network]\nplugin_dirs = [\"/usr/libexec/cni/\"]\n",
        );
        plugins(&f, "/opt/cni/bin");
        let c = cni_bin_dir(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.hint.unwrap().contains("plugin_dirs in [crio.network]"));
    }

    #[test]
    fn no_calico_anywhere_skips_unless_calico_is_configured() {
        let f = FakeRoot::new();
        assert_eq!(cni_bin_dir(&f.inputs()).status, Status::Skip);
        f.file("/etc/cni/net.d/10-calico.conflist", CALICO_CONFLIST);
        let c = cni_bin_dir(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("calico and calico-ipam"), "{c:?}");
    }

    #[test]
    fn calico_conflist_first_is_ok() {
        let f = FakeRoot::new();
        f.file("/etc/cni/net.d/10-calico.conflist", CALICO_CONFLIST);
        f.file("/etc/cni/net.d/99-loopback.conf", r#"{"type":"loopback"}"#);
        f.file("/etc/cni/net.d/calico-kubeconfig", "not a config");
        let c = cni_config(&f.inputs());
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.evidence.ends_with("10-calico.conflist, 99-loopback.conf"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn another_conflist_first_fails() {
        let f = FakeRoot::new();
        f.file("/etc/cni/net.d/10-calico.conflist", CALICO_CONFLIST);
        f.file(
            "/etc/cni/net.d/05-cilium.conflist",
            r#"{"plugins":[{"type":"cilium-cni"}]}"#,
        );
        let c = cni_config(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("05-cilium.conflist (cilium-cni)"),
            "{c:?}"
        );
    }

    #[test]
    fn broken_first_file_fails_and_missing_calico_warns() {
        let f = FakeRoot::new();
        f.file("/etc/cni/net.d/05-broken.conf", "{");
        f.file("/etc/cni/net.d/10-calico.conflist", CALICO_CONFLIST);
        assert_eq!(cni_config(&f.inputs()).status, Status::Fail);
        let g = FakeRoot::new();
        g.file("/etc/cni/net.d/10-bridge.conf", r#"{"type":"bridge"}"#);
        assert_eq!(cni_config(&g.inputs()).status, Status::Warn);
        g.mkdir("/etc/crio");
        let h = FakeRoot::new();
        h.mkdir("/etc/cni/net.d");
        assert_eq!(cni_config(&h.inputs()).status, Status::Warn);
    }

    #[test]
    fn no_cni_dir_skips() {
        let f = FakeRoot::new();
        let c = cni_config(&f.inputs());
        assert_eq!(c.status, Status::Skip);
        assert!(c.summary.contains("/etc/cni/net.d is absent"));
    }
}
