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
    if !root.dir().is_dir() {
        eprintln!(
            "calitrace: --host-root {} is not a directory: the checks of host files skip",
            root.dir().display()
        );
    }
    let checks = run_checks(&Inputs::live(root.clone()));
    let mut out = std::io::stdout().lock();
    match args.output {
        DoctorOutput::Json => write_json(&mut out, &checks)?,
        DoctorOutput::Text => {
            writeln!(
                out,
                "calitrace doctor: node {}, kernel {}, host root {}",
                system::node_name(),
                system::kernel_release(),
                root.dir().display()
            )?;
            write_text(&mut out, &checks)?;
        }
    }
    out.flush()?;
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.id.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} check(s) failed: {}; each one's hint says what to change",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
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
}
