//! The agent DaemonSet's host paths (`deploy/agent-daemonset.yaml`) are what
//! calitrace reads with `--host-root /host`: every mount is read-only, at
//! `/host` + its host path, and `calitrace doctor` in a root built from those
//! mounts alone (read-only bind mounts in a private mount namespace) says what
//! it says with the real root.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use calitrace_tests::{Lab, Mode, calitrace};
use serde_json::Value;

const DAEMONSET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/agent-daemonset.yaml"
);

#[derive(Debug, Default, Clone)]
struct Mount {
    mount_path: String,
    read_only: bool,
    host_path: String,
}

/// The container's volume mounts of host paths, with those paths; the
/// other volumes (emptyDir) are the container's own.
fn mounts(yaml: &str) -> Vec<Mount> {
    let ds: Value = serde_saphyr::from_str(yaml).unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let host_paths: BTreeMap<&str, &str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let name = m["name"].as_str()?;
            Some(Mount {
                mount_path: m["mountPath"].as_str()?.to_string(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                host_path: host_paths.get(name)?.to_string(),
            })
        })
        .collect()
}

fn doctor(node: &str, host_root: &Path, mounts_under: Option<(&Path, &[Mount])>) -> Vec<Value> {
    let bin = calitrace::binary();
    let run = format!(
        "exec ip netns exec {node} {} doctor -o json --host-root {}",
        bin.display(),
        host_root.display()
    );
    let script = match mounts_under {
        None => run,
        Some((root, mounts)) => {
            let mut s = String::from("set -e\n");
            for m in mounts.iter().filter(|m| m.mount_path.starts_with("/host/")) {
                let at = format!("{}{}", root.display(), m.mount_path);
                s += &format!("mkdir -p '{at}'\n");
                // A host path this machine lacks stays an empty directory, as
                // the runtime makes it for DirectoryOrCreate.
                if Path::new(&m.host_path).exists() {
                    s += &format!(
                        "mount --bind '{}' '{at}'\nmount -o remount,bind,ro '{at}'\n",
                        m.host_path
                    );
                }
            }
            s + &run
        }
    };
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_host_path_is_read_only_under_host() {
    let mounts = mounts(&std::fs::read_to_string(DAEMONSET).unwrap());
    assert!(mounts.len() >= 7, "{mounts:?}");
    for m in &mounts {
        assert!(m.read_only, "{m:?}");
        assert!(!m.host_path.is_empty(), "{m:?} has no hostPath");
        let expected = format!("/host{}", m.host_path);
        assert_eq!(m.mount_path, expected, "--host-root /host finds it there");
    }
}

#[test]
fn doctor_under_the_daemonsets_mounts_reads_what_it_reads_on_the_host() {
    let mounts = mounts(&std::fs::read_to_string(DAEMONSET).unwrap());
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = &lab.node(0).netns;
    let root = std::env::temp_dir().join(format!("calitrace-deploy-it-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let host = root.join("host");
    let on_host = doctor(node, Path::new("/"), None);
    let in_pod = doctor(node, &host, Some((&root, &mounts)));
    // The mounts were in the test's own mount namespace: only directories remain.
    std::fs::remove_dir_all(&root).unwrap();
    // Each check as (id, status, summary | evidence), `root` taken out of paths.
    let shown = |checks: &[Value], root: Option<&str>| -> Vec<(String, String, String)> {
        checks
            .iter()
            .map(|c| {
                let text = |k: &str| {
                    let t = c[k].as_str().unwrap_or("");
                    root.map_or(t.to_string(), |r| t.replace(r, ""))
                };
                (
                    text("id"),
                    text("status"),
                    text("summary") + " | " + &text("evidence"),
                )
            })
            .collect()
    };
    let (want, got) = (
        shown(&on_host, None),
        shown(&in_pod, Some(&host.display().to_string())),
    );
    assert_eq!(want.len(), 15, "{want:#?}");
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "the pod's doctor differs from the host's");
    }
    // What the comparison rests on: host files were read through the mounts.
    let check = |id: &str| got.iter().find(|c| c.0 == id).unwrap().clone();
    assert_eq!(check("ip_forward").1, "ok", "{:?}", check("ip_forward"));
}
