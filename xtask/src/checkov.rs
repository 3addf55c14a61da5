//! checkov (PyPI), a policy scanner, over every manifest of `deploy/` and
//! the DaemonSet with each component applied: a finding fails the check
//! unless README's "What a policy scanner says" justifies its id (listed
//! here, and a test keeps the two lists the same).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::manifests::venv_tool;
use crate::root;

const CHECKOV_VERSION: &str = "3.3.30";

/// The findings README justifies: what the agents are (root, the host's
/// network and PID namespaces, privileged or capabilities, seccomp
/// Unconfined) and settings chosen on purpose.
pub const JUSTIFIED: &[&str] = &[
    "CKV2_K8S_6",
    "CKV_K8S_8",
    "CKV_K8S_11",
    "CKV_K8S_15",
    "CKV_K8S_16",
    "CKV_K8S_17",
    "CKV_K8S_19",
    "CKV_K8S_20",
    "CKV_K8S_23",
    "CKV_K8S_25",
    "CKV_K8S_28",
    "CKV_K8S_31",
    "CKV_K8S_37",
    "CKV_K8S_39",
    "CKV_K8S_40",
    "CKV_K8S_43",
];

pub fn scan(files: &[PathBuf]) -> Result<()> {
    let checkov = venv_tool("checkov", CHECKOV_VERSION)?;
    // checkov scans a directory (and names files relative to it).
    let dir = root().join("target/manifests/checkov");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for f in files {
        std::fs::copy(f, dir.join(f.file_name().context("a file name")?))?;
    }
    let out = Command::new(&checkov)
        .arg("-d")
        .arg(&dir)
        .args([
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ])
        .output()
        .with_context(|| format!("running {}", checkov.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let findings = failed(&text)
        .with_context(|| format!("checkov's report: {}", String::from_utf8_lossy(&out.stderr)))?;
    let new: Vec<String> = findings
        .iter()
        .filter(|(id, _, _)| !JUSTIFIED.contains(&id.as_str()))
        .map(|(id, name, file)| format!("{id} ({name}) in {file}"))
        .collect();
    if !new.is_empty() {
        bail!(
            "checkov {CHECKOV_VERSION}: fix these, or justify each in README's \"What a policy scanner says\" and xtask/src/checkov.rs:\n  {}",
            new.join("\n  ")
        );
    }
    println!(
        "xtask: checkov {CHECKOV_VERSION}: {} finding(s) in {} file(s), each justified in README",
        findings.len(),
        files.len()
    );
    Ok(())
}

/// (id, name, file) of every failed check in checkov's JSON report (one
/// object, or a list of them, one per framework).
fn failed(report: &str) -> Result<Vec<(String, String, String)>> {
    let v: serde_json::Value = serde_json::from_str(report)?;
    let reports = match v {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    Ok(reports
        .iter()
        .flat_map(|r| {
            r["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            (s("check_id"), s("check_name"), s("file_path"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_justified_finding_is_justified_in_the_readme() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let section = readme
            .split("### What a policy scanner says")
            .nth(1)
            .expect("README has the section")
            .split("\n## ")
            .next()
            .unwrap();
        for id in JUSTIFIED {
            assert!(
                section.contains(&format!("`{id}`")),
                "{id} is not justified in README"
            );
        }
    }

    #[test]
    fn the_report_names_each_failed_check() {
        let one = r#"{"check_type":"kubernetes","results":{"failed_checks":[{"check_id":"CKV_K8S_8","check_name":"Liveness Probe Should be Configured","file_path":"/a.yaml"}]}}"#;
        assert_eq!(
            failed(one).unwrap(),
            [(
                "CKV_K8S_8".to_string(),
                "Liveness Probe Should be Configured".to_string(),
                "/a.yaml".to_string()
            )]
        );
        assert_eq!(failed(&format!("[{one},{one}]")).unwrap().len(), 2);
        assert!(failed("not json").is_err());
    }
}
