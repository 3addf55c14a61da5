//! `calitrace doctor`: runs the checks once and prints them, as a table or
//! as JSON lines. Exits 1 (through an error naming the failed checks) when
//! one fails.

use std::io::Write;

use anyhow::{Result, bail};

use crate::cli::{DoctorArgs, DoctorOutput};
use crate::doctor::{Check, HostRoot, Inputs, Status, run_checks};
use crate::kernel::system;

pub fn run(args: DoctorArgs) -> Result<()> {
    let root = HostRoot::new(&args.host_root);
    let checks = checks_under(&root);
    let mut out = std::io::stdout().lock();
    match args.output {
        DoctorOutput::Json => write_json(&mut out, &checks)?,
        DoctorOutput::Text => write_report(&mut out, "calitrace doctor", &root, &checks)?,
    }
    out.flush()?;
    match failed_line(&checks) {
        Some(line) => bail!("{line}"),
        None => Ok(()),
    }
}

/// The checks of the live node with host files under `root` (a root that is
/// not a directory is said on stderr: its checks skip).
pub fn checks_under(root: &HostRoot) -> Vec<Check> {
    if !root.dir().is_dir() {
        eprintln!(
            "calitrace: --host-root {} is not a directory: the checks of host files skip",
            root.dir().display()
        );
    }
    run_checks(&Inputs::live(root.clone()))
}

/// The text report: a line naming the node, then the table.
pub fn write_report(
    out: &mut impl Write,
    title: &str,
    root: &HostRoot,
    checks: &[Check],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{title}: node {}, kernel {}, host root {}",
        system::node_name(),
        system::kernel_release(),
        root.dir().display()
    )?;
    write_text(out, checks)
}

/// "N check(s) failed: ids; ..." when any failed.
pub fn failed_line(checks: &[Check]) -> Option<String> {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.id.as_str())
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} check(s) failed: {}; each one's hint says what to change",
            failed.len(),
            failed.join(", ")
        )
    })
}

pub fn write_json(out: &mut impl Write, checks: &[Check]) -> std::io::Result<()> {
    for c in checks {
        serde_json::to_writer(&mut *out, c)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Width of the id column.
const ID_WIDTH: usize = 16;

/// One row per check: symbol, status, id, summary; then its evidence and
/// hint, indented under the summary; then the counts.
pub fn write_text(out: &mut impl Write, checks: &[Check]) -> std::io::Result<()> {
    let indent = " ".repeat(2 + 5 + ID_WIDTH + 1);
    for c in checks {
        writeln!(
            out,
            "{} {:<4} {:<ID_WIDTH$} {}",
            c.status.symbol(),
            c.status.as_str(),
            c.id.as_str(),
            c.summary
        )?;
        if !c.evidence.is_empty() {
            writeln!(out, "{indent}{}", c.evidence)?;
        }
        if let Some(h) = &c.hint {
            writeln!(out, "{indent}hint: {h}")?;
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "{} checks: {} ok, {} warn, {} fail, {} skip",
        checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::CheckId;

    fn sample() -> Vec<Check> {
        vec![
            Check::ok(CheckId::IpForward, "the node forwards IP packets")
                .evidence("net.ipv4.ip_forward = 1"),
            Check::fail(CheckId::ProxyArp, "proxy ARP is off on cali1")
                .evidence("net.ipv4.conf.cali1.proxy_arp = 0")
                .hint("sysctl -w net.ipv4.conf.cali1.proxy_arp=1"),
            Check::skip(CheckId::Bgp, "BIRD is not in use"),
        ]
    }

    #[test]
    fn text_table_rows() {
        let mut out = Vec::new();
        write_text(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let want = "\
✓ ok   ip_forward       the node forwards IP packets
                        net.ipv4.ip_forward = 1
✗ fail proxy_arp        proxy ARP is off on cali1
                        net.ipv4.conf.cali1.proxy_arp = 0
                        hint: sysctl -w net.ipv4.conf.cali1.proxy_arp=1
– skip bgp              BIRD is not in use
3 checks: 1 ok, 0 warn, 1 fail, 1 skip
";
        assert_eq!(text, want);
    }

    #[test]
    fn json_lines_one_per_check() {
        let mut out = Vec::new();
        write_json(&mut out, &sample()).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["type"], "check");
        assert_eq!(lines[1]["status"], "fail");
        assert_eq!(lines[2]["hint"], serde_json::Value::Null);
    }

    #[test]
    fn failed_line_names_the_failed_checks() {
        assert_eq!(
            failed_line(&sample()).as_deref(),
            Some("1 check(s) failed: proxy_arp; each one's hint says what to change")
        );
        assert_eq!(failed_line(&sample()[..1]), None);
    }
}
