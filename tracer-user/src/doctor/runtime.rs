//! Where the container runtime looks for CNI plugins and configurations:
//! containerd's `config.toml` (the CRI plugin's `cni` section, config
//! versions 1 to 3) and CRI-O's `crio.conf` with its drop-ins.

use super::HostRoot;

pub(super) const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub(super) const CRIO_CONFIG: &str = "/etc/crio/crio.conf";
pub(super) const CRIO_DROPINS: &str = "/etc/crio/crio.conf.d";
pub(super) const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub(super) const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// A container runtime's CNI settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Runtime {
    pub name: &'static str,
    /// The directories searched for plugins, in order.
    pub bin_dirs: Vec<String>,
    pub conf_dir: String,
    /// Where these were read (`/etc/containerd/config.toml`), or "defaults".
    pub source: String,
    /// The setting to change, as the file spells it.
    pub setting: String,
    /// A file that could not be read or parsed: the runtime fails to start
    /// with it, or ignores it.
    pub error: Option<String>,
}

/// The runtimes this host has: a config file, or a process by the name.
pub(super) fn runtimes(root: &HostRoot) -> Vec<Runtime> {
    let procs = root.processes(&["containerd", "crio"]);
    let running = |name: &str| procs.iter().any(|p| p.comm == name);
    let mut out = Vec::new();
    if root.exists(CONTAINERD_CONFIG) || running("containerd") {
        out.push(containerd(root));
    }
    if root.exists(CRIO_CONFIG) || !crio_dropins(root).is_empty() || running("crio") {
        out.push(crio(root));
    }
    out
}

fn parse(root: &HostRoot, path: &str) -> Result<Option<toml::Table>, String> {
    let text = match root.read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    toml::from_str::<toml::Table>(&text)
        .map(Some)
        .map_err(|e| format!("{path}: {}", e.message()))
}

fn table<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Table> {
    path.iter()
        .try_fold(t, |t, key| t.get(*key).and_then(toml::Value::as_table))
}

fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    match v? {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// The CRI plugin's `cni` section of each containerd config version.
const CONTAINERD_SECTIONS: [(i64, &str, &[&str]); 3] = [
    (
        3,
        "[plugins.'io.containerd.cri.v1.runtime'.cni]",
        &["plugins", "io.containerd.cri.v1.runtime", "cni"],
    ),
    (
        2,
        "[plugins.\"io.containerd.grpc.v1.cri\".cni]",
        &["plugins", "io.containerd.grpc.v1.cri", "cni"],
    ),
    (1, "[plugins.cri.cni]", &["plugins", "cri", "cni"]),
];

fn containerd(root: &HostRoot) -> Runtime {
    let mut rt = Runtime {
        name: "containerd",
        bin_dirs: vec![DEFAULT_BIN_DIR.into()],
        conf_dir: DEFAULT_CONF_DIR.into(),
        source: "defaults (no config.toml)".into(),
        setting: format!(
            "bin_dir in {} of {CONTAINERD_CONFIG}",
            CONTAINERD_SECTIONS[1].1
        ),
        error: None,
    };
    let config = match parse(root, CONTAINERD_CONFIG) {
        Ok(Some(c)) => c,
        Ok(None) => return rt,
        Err(e) => {
            rt.error = Some(e);
            return rt;
        }
    };
    rt.source = CONTAINERD_CONFIG.into();
    let version = config
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    // The section of the file's version first; others as containerd migrates them.
    let mut sections = CONTAINERD_SECTIONS.to_vec();
    sections.sort_by_key(|(v, ..)| *v != version);
    let (_, name, cni) = sections
        .iter()
        .find(|(_, _, path)| table(&config, path).is_some())
        .copied()
        .unwrap_or(sections[0]);
    let key = if version >= 3 { "bin_dirs" } else { "bin_dir" };
    rt.setting = format!("{key} in {name} of {CONTAINERD_CONFIG}");
    if let Some(cni) = table(&config, cni) {
        if let Some(dirs) = strings(cni.get("bin_dirs")).or_else(|| strings(cni.get("bin_dir"))) {
            rt.bin_dirs = dirs;
        }
        if let Some(conf) = cni.get("conf_dir").and_then(toml::Value::as_str) {
            rt.conf_dir = conf.into();
        }
    }
    rt
}

fn crio_dropins(root: &HostRoot) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.path(CRIO_DROPINS)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|n| format!("{CRIO_DROPINS}/{n}"))
        .collect();
    names.sort();
    names
}

fn crio(root: &HostRoot) -> Runtime {
    let mut rt = Runtime {
        name: "CRI-O",
        bin_dirs: vec![DEFAULT_BIN_DIR.into()],
        conf_dir: DEFAULT_CONF_DIR.into(),
        source: "defaults".into(),
        setting: format!(
            "plugin_dirs in [crio.network] of {CRIO_CONFIG} (or a drop-in in {CRIO_DROPINS})"
        ),
        error: None,
    };
    let mut sources = Vec::new();
    // Drop-ins override the main file, later ones earlier ones, key by key.
    for path in std::iter::once(CRIO_CONFIG.to_string()).chain(crio_dropins(root)) {
        let config = match parse(root, &path) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                rt.error.get_or_insert(e);
                continue;
            }
        };
        let Some(net) = table(&config, &["crio", "network"]) else {
            continue;
        };
        let dirs = strings(net.get("plugin_dirs")).or_else(|| strings(net.get("plugin_dir")));
        if let Some(dirs) = dirs {
            rt.bin_dirs = dirs;
            sources.push(path.clone());
        }
        if let Some(conf) = net.get("network_dir").and_then(toml::Value::as_str) {
            rt.conf_dir = conf.into();
        }
    }
    if !sources.is_empty() {
        rt.source = sources.join(", ");
    }
    rt
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeRoot;
    use super::*;

    #[test]
    fn containerd_v2_bin_dir() {
        let f = FakeRoot::new();
        f.file(
            CONTAINERD_CONFIG,
            r#"version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
"#,
        );
        let rt = runtimes(&f.root());
        assert_eq!(rt.len(), 1);
        assert_eq!(rt[0].bin_dirs, ["/usr/lib/cni"]);
        assert!(
            rt[0].setting.contains("io.containerd.grpc.v1.cri"),
            "{}",
            rt[0].setting
        );
        assert_eq!(rt[0].error, None);
    }

    #[test]
    fn containerd_v3_bin_dirs_and_defaults() {
        let f = FakeRoot::new();
        f.file(
            CONTAINERD_CONFIG,
            "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dirs = ['/opt/cni/bin', '/usr/libexec/cni']\nconf_dir = '/etc/k8s/cni'\n",
        );
        let rt = &runtimes(&f.root())[0];
        assert_eq!(rt.bin_dirs, ["/opt/cni/bin", "/usr/libexec/cni"]);
        assert_eq!(rt.conf_dir, "/etc/k8s/cni");
        assert!(
            rt.setting
                .starts_with("bin_dirs in [plugins.'io.containerd.cri.v1.runtime'.cni]")
        );
        f.file(CONTAINERD_CONFIG, "version = 2\n[plugins]\n");
        let rt = &runtimes(&f.root())[0];
        assert_eq!(rt.bin_dirs, [DEFAULT_BIN_DIR]);
    }

    #[test]
    fn a_broken_containerd_config_is_reported() {
        let f = FakeRoot::new();
        f.file(
            CONTAINERD_CONFIG,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni\n",
        );
        let rt = &runtimes(&f.root())[0];
        assert!(rt.error.as_ref().unwrap().starts_with(CONTAINERD_CONFIG));
    }

    #[test]
    fn crio_plugin_dirs_with_drop_ins() {
        let f = FakeRoot::new();
        f.file(
            CRIO_CONFIG,
            "[crio.network]\nplugin_dirs = [\"/opt/cni/bin/\"]\n",
        );
        f.file(
            &format!("{CRIO_DROPINS}/10-cni.conf"),
            "[crio.network]\nplugin_dirs = [\"/usr/libexec/cni\"]\nnetwork_dir = \"/etc/crio/net.d\"\n",
        );
        f.file(
            &format!("{CRIO_DROPINS}/20-other.conf"),
            "[crio.runtime]\nlog_level = \"info\"\n",
        );
        let rt = runtimes(&f.root());
        assert_eq!(rt.len(), 1);
        assert_eq!(rt[0].name, "CRI-O");
        assert_eq!(rt[0].bin_dirs, ["/usr/libexec/cni"]);
        assert_eq!(rt[0].conf_dir, "/etc/crio/net.d");
        assert!(rt[0].source.ends_with("10-cni.conf"), "{}", rt[0].source);
    }

    #[test]
    fn a_running_runtime_without_config_has_defaults() {
        let f = FakeRoot::new();
        assert!(runtimes(&f.root()).is_empty());
        f.process(300, "containerd", &[]);
        let rt = runtimes(&f.root());
        assert_eq!(
            (rt[0].name, rt[0].bin_dirs.as_slice()),
            ("containerd", &[DEFAULT_BIN_DIR.to_string()][..])
        );
    }
}
