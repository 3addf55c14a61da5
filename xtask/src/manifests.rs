//! `cargo xtask manifests` (also part of `cargo xtask lint`): every manifest
//! in `deploy/`, and what `kubectl kustomize deploy/` makes of them, checked
//! offline against the Kubernetes schemas of the current and the two previous
//! minor releases, strictly (an unknown field is an error), with PyPI's
//! `kubernetes-validate` (installed once in a virtual environment of its own).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run};

/// The Kubernetes releases the manifests must be valid for.
pub const KUBERNETES_VERSIONS: [&str; 3] = ["1.37", "1.36", "1.35"];
/// The validator's version (its schemas go up to Kubernetes 1.37).
const VALIDATOR_VERSION: &str = "1.37.0";
/// kustomize's own file: no Kubernetes schema describes it.
const KUSTOMIZATION: &str = "kustomization.yaml";

pub fn check() -> Result<()> {
    let validator = ensure_validator()?;
    let dir = root().join("deploy");
    let files = manifests(&dir)?;
    check_kustomization_lists(&dir, &files)?;
    validate(&validator, &files)?;
    let variants = components_applied(&dir)?;
    validate(&validator, &variants)?;
    let mut scanned = files.clone();
    scanned.extend(variants.iter().cloned());
    crate::checkov::scan(&scanned)?;
    match kustomize(&dir)? {
        Some(built) => {
            let out = root().join("target/manifests/kustomized.yaml");
            std::fs::create_dir_all(out.parent().unwrap())?;
            std::fs::write(&out, built)?;
            validate(&validator, &[out])?;
        }
        None => eprintln!(
            "xtask: kubectl is not installed: the output of `kubectl kustomize deploy/` is not validated (each file is)"
        ),
    }
    println!(
        "xtask: {} manifest file(s) in deploy/ and the DaemonSet with each of {} component(s) valid for Kubernetes {} (strict)",
        files.len(),
        variants.len(),
        KUBERNETES_VERSIONS.join(", ")
    );
    Ok(())
}

/// The YAML files of `dir` but kustomize's own, sorted.
fn manifests(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| !p.ends_with(KUSTOMIZATION))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no manifests in {}", dir.display());
    }
    Ok(files)
}

/// `kubectl apply -k` installs only what the kustomization lists: every
/// manifest must be there (and nothing else).
fn check_kustomization_lists(dir: &Path, files: &[PathBuf]) -> Result<()> {
    let text = std::fs::read_to_string(dir.join(KUSTOMIZATION))
        .with_context(|| format!("reading {}/{KUSTOMIZATION}", dir.display()))?;
    let listed = resources(&text);
    let mut present: Vec<String> = files
        .iter()
        .filter_map(|f| Some(f.file_name()?.to_str()?.to_string()))
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    if sorted != present {
        bail!(
            "{KUSTOMIZATION} lists {listed:?} but deploy/ has {present:?}: list every manifest there"
        );
    }
    Ok(())
}

/// The `resources:` entries of a kustomization (a plain YAML list).
fn resources(kustomization: &str) -> Vec<String> {
    kustomization
        .lines()
        .skip_while(|l| l.trim_end() != "resources:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- ") || l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Validates `files` for each release; a warning (an unknown kind or API
/// version has no schema, so it would pass unchecked) fails too.
pub fn validate(validator: &Path, files: &[PathBuf]) -> Result<()> {
    let mut problems = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(validator)
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(files)
            .output()
            .with_context(|| format!("running {}", validator.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.contains("WARN") || text.contains("ERROR") {
            problems.push(format!("Kubernetes {version}:\n{}", text.trim()));
        }
    }
    if !problems.is_empty() {
        bail!("manifests not valid:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// The DaemonSet with each component of `DIR/components/` applied as
/// kustomize applies it (its JSON 6902 patches), written under
/// `target/manifests/` for validation: a component's patch is not a
/// manifest that a schema checks by itself.
fn components_applied(dir: &Path) -> Result<Vec<PathBuf>> {
    let daemonset: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("agent-daemonset.yaml"))?)
            .context("agent-daemonset.yaml")?;
    let out_dir = root().join("target/manifests");
    std::fs::create_dir_all(&out_dir)?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("components")) else {
        return Ok(out);
    };
    let mut components: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    components.sort();
    for c in components {
        let name = c
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(c.join(KUSTOMIZATION))
            .with_context(|| format!("deploy/components/{name}/{KUSTOMIZATION}"))?;
        let applied = apply_component(&daemonset, &text)
            .with_context(|| format!("deploy/components/{name}"))?;
        let file = out_dir.join(format!("daemonset-with-{name}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&applied)?)?;
        out.push(file);
    }
    Ok(out)
}

/// `target` with a component's patches applied; each must target it.
fn apply_component(target: &serde_json::Value, component: &str) -> Result<serde_json::Value> {
    let k: serde_json::Value = serde_saphyr::from_str(component)?;
    if k["kind"] != "Component" {
        bail!("not a kustomize Component: kind {}", k["kind"]);
    }
    let mut doc = target.clone();
    for p in k["patches"].as_array().into_iter().flatten() {
        let (kind, name) = (&p["target"]["kind"], &p["target"]["name"]);
        if *kind != target["kind"] || *name != target["metadata"]["name"] {
            bail!("a patch targets {kind} {name}, not the DaemonSet");
        }
        let ops: serde_json::Value =
            serde_saphyr::from_str(p["patch"].as_str().context("a patch without text")?)?;
        for op in ops.as_array().into_iter().flatten() {
            apply_op(&mut doc, op)?;
        }
    }
    Ok(doc)
}

/// One JSON 6902 `add` or `replace` (what the components use).
fn apply_op(doc: &mut serde_json::Value, op: &serde_json::Value) -> Result<()> {
    let path = op["path"].as_str().context("an operation without a path")?;
    let (parent, key) = path.rsplit_once('/').context("a path without /")?;
    let at = doc
        .pointer_mut(parent)
        .and_then(|v| v.as_object_mut())
        .with_context(|| format!("{path}: no object at {parent}"))?;
    match op["op"].as_str() {
        Some("replace") if !at.contains_key(key) => bail!("replace {path}: nothing there"),
        Some("replace" | "add") => {
            at.insert(key.to_string(), op["value"].clone());
            Ok(())
        }
        other => bail!("{path}: operation {other:?} is not applied here"),
    }
}

/// `kubectl kustomize DIR` (offline), or None without kubectl.
fn kustomize(dir: &Path) -> Result<Option<String>> {
    if !crate::setup::on_path("kubectl") {
        return Ok(None);
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `kubernetes-validate` in a virtual environment of its own, cached across
/// checkouts (no system Python package is touched).
pub fn ensure_validator() -> Result<PathBuf> {
    venv_tool("kubernetes-validate", VALIDATOR_VERSION)
}

/// A PyPI command-line tool at `version`, installed once in a virtual
/// environment of its own under `~/.cache/calitrace/` (its command has the
/// package's name and prints its version with `--version`).
pub fn venv_tool(package: &str, version: &str) -> Result<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let venv = home.join(format!(".cache/calitrace/{package}-{version}"));
    let bin = venv.join("bin").join(package);
    if Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version)
    {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {package} {version} in {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).with_context(|| {
        format!("python3 -m venv (Debian's python3-venv) is needed for {package}")
    })?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{package}=={version}"),
    ]))?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_components_patches_are_applied_to_the_daemonset() {
        let ds = serde_json::json!({
            "kind": "DaemonSet",
            "metadata": { "name": "calitrace-agent" },
            "spec": { "template": { "spec": { "containers": [{ "securityContext": { "privileged": true } }] } } },
        });
        let c = "kind: Component\npatches:\n  - target:\n      kind: DaemonSet\n      name: calitrace-agent\n    patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/0/securityContext\n        value:\n          privileged: false\n      - op: add\n        path: /spec/template/spec/priorityClassName\n        value: system-node-critical\n";
        let got = apply_component(&ds, c).unwrap();
        let spec = &got["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0]["securityContext"]["privileged"],
            false
        );
        assert_eq!(spec["priorityClassName"], "system-node-critical");
        let wrong = c.replace(
            "op: add\n        path: /spec/template/spec/priorityClassName",
            "op: replace\n        path: /spec/template/spec/priorityClassName",
        );
        assert!(apply_component(&ds, &wrong).is_err(), "replace of nothing");
        let other = c.replace("name: calitrace-agent", "name: other");
        assert!(apply_component(&ds, &other).is_err(), "another target");
    }

    #[test]
    fn every_component_of_deploy_applies() {
        let ds: serde_json::Value = serde_saphyr::from_str(
            &std::fs::read_to_string(root().join("deploy/agent-daemonset.yaml")).unwrap(),
        )
        .unwrap();
        for name in ["capabilities", "node-critical"] {
            let text = std::fs::read_to_string(
                root()
                    .join("deploy/components")
                    .join(name)
                    .join(KUSTOMIZATION),
            )
            .unwrap();
            apply_component(&ds, &text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn resources_of_a_kustomization() {
        let k = "apiVersion: x\nresources:\n  - a.yaml\n  - b.yaml\n\nimages:\n  - name: c\n";
        assert_eq!(resources(k), ["a.yaml", "b.yaml"]);
    }

    #[test]
    fn every_manifest_must_be_in_the_kustomization() {
        let dir = std::env::temp_dir().join(format!("xtask-kust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KUSTOMIZATION), "resources:\n  - a.yaml\n").unwrap();
        std::fs::write(dir.join("a.yaml"), "").unwrap();
        assert!(check_kustomization_lists(&dir, &manifests(&dir).unwrap()).is_ok());
        std::fs::write(dir.join("b.yaml"), "").unwrap();
        let e = check_kustomization_lists(&dir, &manifests(&dir).unwrap()).unwrap_err();
        assert!(e.to_string().contains("b.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real manifests pass; the same with one wrong field, an unknown
    /// kind, or broken YAML fail (needs the validator: installs it once).
    #[test]
    fn deploy_validates_and_broken_manifests_do_not() {
        let validator = ensure_validator().unwrap();
        let files = manifests(&root().join("deploy")).unwrap();
        validate(&validator, &files).unwrap();
        let daemonset =
            std::fs::read_to_string(root().join("deploy/agent-daemonset.yaml")).unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = [
            (
                "field",
                daemonset.replace("hostPID: true", "hostPIDs: true"),
                "'hostPIDs' was unexpected",
            ),
            (
                "kind",
                daemonset.replace("kind: DaemonSet", "kind: DaemonSett"),
                "DaemonSett",
            ),
            (
                "type",
                daemonset.replace("privileged: true", "privileged: yes please"),
                "privileged",
            ),
            ("yaml", "a: [\n".to_string(), "parse"),
        ];
        for (name, text, says) in broken {
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, text).unwrap();
            let e = validate(&validator, &[file]).expect_err(name).to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
