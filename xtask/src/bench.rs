//! `cargo xtask bench`: calitrace's performance figures, as one table.
//!
//! The measurements live in the `calitrace-bench` binary of the
//! calitrace-tests crate (it links the tracer_user library and the netns
//! lab); this runs its sections one process at a time (so that peak RSS is
//! each section's own), collects the JSON rows they print, and renders the
//! table to stdout and to `target/bench/`. Nothing here is part of
//! `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{build, cargo, is_root, root, run};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer repetitions and shorter runs (a smoke test, not figures to quote).
    #[arg(long)]
    quick: bool,
    /// Only these sections (comma-separated): pipeline, replay, cluster, k8s-scale, memory-flows,
    /// memory-churn, memory-live, lost, attach, dataplane, datapath.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the table here (it always goes to target/bench/latest.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Another calitrace binary to measure next to this one in the datapath
    /// section (before/after a change).
    #[arg(long)]
    compare: Option<PathBuf>,
}

/// Sections in the order they run, with the table's heading for each.
const SECTIONS: [(&str, &str); 11] = [
    ("pipeline", "pipeline"),
    ("replay", "replay"),
    ("cluster", "cluster"),
    ("k8s-scale", "cluster"),
    ("memory-flows", "memory"),
    ("memory-churn", "memory"),
    ("memory-live", "memory"),
    ("lost", "pipeline"),
    ("attach", "attach"),
    ("dataplane", "dataplane"),
    ("datapath", "datapath"),
];

/// The table's groups, in the issue's order.
const GROUPS: [(&str, &str); 7] = [
    (
        "datapath",
        "1. Datapath overhead (pod to pod across two lab nodes, calitrace on the sender's node)",
    ),
    (
        "pipeline",
        "2. Event pipeline (one core; CPU time of the measuring thread)",
    ),
    (
        "replay",
        "3. Replay (one core, and as `calitrace replay` runs: reading, processing and output on threads of their own)",
    ),
    ("memory", "4. Memory"),
    ("attach", "5. Attach / detach"),
    (
        "cluster",
        "6. Cluster scale (synthetic agent streams; the merge on one core)",
    ),
    (
        "dataplane",
        "7. Dataplane readers (Calico's eBPF maps: CPU per drop explained)",
    ),
];

/// Sections that need the lab (root, network namespaces, eBPF).
fn needs_lab(section: &str) -> bool {
    matches!(
        section,
        "memory-live" | "lost" | "attach" | "dataplane" | "datapath"
    )
}

fn needs_iperf3(section: &str) -> bool {
    matches!(section, "lost" | "datapath")
}

fn has_command(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn bench(args: BenchArgs) -> Result<()> {
    for s in &args.only {
        if !SECTIONS.iter().any(|(name, _)| name == s) {
            bail!("unknown section {s:?}");
        }
    }
    // Without root the lab's sections are skipped, and tshark is optional.
    if is_root()
        && SECTIONS
            .iter()
            .any(|(s, _)| args.selected(s) && (needs_lab(s) || *s == "replay"))
    {
        crate::prereqs::ensure_and_say(crate::prereqs::Task::Bench.sets())?;
    }
    let started = Instant::now();
    let calitrace = build(true)?;
    let helper = build_helper()?;
    let built = started.elapsed().as_secs_f64();
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let header = machine(&calitrace);
    let measuring = Instant::now();
    let mut runs = Runs::default();
    let (root_ok, iperf3) = (is_root(), has_command("iperf3", "--version"));
    for (section, _) in SECTIONS {
        if !args.selected(section) {
            continue;
        }
        if needs_lab(section) && !root_ok {
            runs.skipped
                .push(format!("{section}: needs root (network namespaces, eBPF)"));
            continue;
        }
        if needs_iperf3(section) && !iperf3 {
            runs.skipped.push(format!(
                "{section}: iperf3 is not installed (`apt-get install iperf3`)"
            ));
            continue;
        }
        if section == "datapath" && !has_command("tcpdump", "--version") {
            runs.skipped
                .push("datapath: the tcpdump rows (`apt-get install tcpdump`)".to_string());
        }
        runs.section(section, &helper, &calitrace, &dir, &args)?;
    }
    let measured = measuring.elapsed().as_secs_f64();
    let table = render(
        &header,
        &runs.rows,
        &runs.skipped,
        &runs.timings,
        built,
        measured,
        args.quick,
    );
    println!("\n{table}");
    write_results(&dir, &header, &table, &runs.rows, args.out.as_deref())?;
    eprintln!(
        "bench: table written to {} ({:.0} s in all: {built:.0} s building, {measured:.0} s measuring)",
        dir.join("latest.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

impl BenchArgs {
    fn selected(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == section)
    }
}

/// The benchmark helper, built for release.
fn build_helper() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "calitrace-tests",
        "--bin",
        "calitrace-bench",
    ]))?;
    Ok(root().join("target/release/calitrace-bench"))
}

/// What the sections measured, left out, and how long each took.
#[derive(Default)]
struct Runs {
    rows: Vec<Value>,
    skipped: Vec<String>,
    timings: Vec<String>,
}

impl Runs {
    /// Runs one section of the helper, keeping its JSON rows.
    fn section(
        &mut self,
        section: &str,
        helper: &Path,
        calitrace: &Path,
        dir: &Path,
        args: &BenchArgs,
    ) -> Result<()> {
        eprintln!("\n== {section}");
        let t = Instant::now();
        let mut c = Command::new(helper);
        c.arg(section)
            .arg("--dir")
            .arg(dir)
            .env("CALITRACE_BIN", calitrace)
            .stderr(Stdio::inherit());
        if args.quick {
            c.arg("--quick");
        }
        if let (Some(other), "datapath") = (&args.compare, section) {
            c.arg("--compare").arg(other);
        }
        let out = c
            .output()
            .with_context(|| format!("running {}", helper.display()))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                self.rows.push(v);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        self.timings.push(format!("{section} {secs:.0} s"));
        if !out.status.success() {
            self.skipped.push(format!(
                "{section}: failed ({}), see its output above",
                out.status
            ));
        }
        Ok(())
    }
}

/// The table as latest.md, a dated copy and `--out`; the rows as JSON.
fn write_results(
    dir: &Path,
    header: &Machine,
    table: &str,
    rows: &[Value],
    out: Option<&Path>,
) -> Result<()> {
    let stamp = header.date.replace([':', ' '], "");
    for path in [dir.join("latest.md"), dir.join(format!("bench-{stamp}.md"))]
        .into_iter()
        .chain(out.map(Path::to_path_buf))
    {
        std::fs::write(&path, table).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(rows)?)?;
    Ok(())
}

struct Machine {
    date: String,
    cpu: String,
    cpus: usize,
    memory: String,
    kernel: String,
    os: String,
    commit: String,
    load: String,
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine(calitrace: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let commit =
        first_line(
            Command::new("git")
                .current_dir(root())
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let dirty = !first_line(Command::new("git").current_dir(root()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_empty();
    let _ = calitrace;
    Machine {
        date: utc_now(),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory,
        kernel: first_line(Command::new("uname").arg("-r")),
        os,
        commit: format!(
            "{commit}{}",
            if dirty { " + uncommitted changes" } else { "" }
        ),
        load: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `YYYY-MM-DD HH:MM UTC`, as `date` writes it (calitrace's own civil-date
/// code lives in tracer-user, which xtask does not build).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// How far a figure's repetitions spread, each as measured (a traced
/// datapath figure itself is the untraced median times the median ratio):
/// `11 reps measured 96.1%-98.4%, middle half 97.0%-97.9%`; from three
/// repetitions on, the middle half from five.
fn spread(samples: &[f64], unit: &str) -> Option<String> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 3 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let f = |x: f64| fmt_value(x, unit);
    let mut s = format!(
        "{} reps measured {}-{}",
        v.len(),
        f(v[0]),
        f(v[v.len() - 1])
    );
    if v.len() >= 5 {
        s.push_str(&format!(", middle half {}-{}", f(at(0.25)), f(at(0.75))));
    }
    Some(s)
}

fn fmt_value(v: f64, unit: &str) -> String {
    let n = if !v.is_finite() {
        "n/a".to_string()
    } else if v.abs() >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    format!("{n} {unit}")
}

fn render(
    m: &Machine,
    rows: &[Value],
    skipped: &[String],
    timings: &[String],
    built: f64,
    measured: f64,
    quick: bool,
) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "calitrace benchmarks, {}{}\n\n- machine: {}, {} CPUs, {} RAM; {}\n- kernel: {}\n- calitrace: {}\n- load average at the start: {}\n- time: {built:.0} s building, {measured:.0} s measuring ({})\n\n",
        m.date,
        if quick { " (--quick: smoke test, not figures to quote)" } else { "" },
        m.cpu,
        m.cpus,
        m.memory,
        m.os,
        m.kernel,
        m.commit,
        m.load,
        timings.join(", ")
    ));
    t.push_str("Medians of interleaved repetitions; \"baseline\" is the same figure without calitrace (or with one interface) measured in the same run.\n");
    for (group, title) in GROUPS {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["section"] == group).collect();
        if mine.is_empty() {
            continue;
        }
        t.push_str(&format!("\n### {title}\n\n"));
        t.push_str("| figure | result | baseline | ratio | target | met | notes |\n|---|---:|---:|---:|---|---|---|\n");
        for r in mine {
            let unit = r["unit"].as_str().unwrap_or("");
            let value = fmt_value(r["value"].as_f64().unwrap_or(f64::NAN), unit);
            let baseline = r["baseline"]
                .as_f64()
                .map(|b| fmt_value(b, unit))
                .unwrap_or_default();
            let ratio = r["ratio"]
                .as_f64()
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or_default();
            let met = match r["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let mut note = r["note"].as_str().unwrap_or("").replace('|', "/");
            let samples: Vec<f64> = r["samples"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default();
            if let Some(s) = spread(&samples, unit) {
                note = if note.is_empty() {
                    s
                } else {
                    format!("{note}; {s}")
                };
            }
            t.push_str(&format!(
                "| {} | {value} | {baseline} | {ratio} | {} | {met} | {note} |\n",
                r["name"].as_str().unwrap_or(""),
                r["target"].as_str().unwrap_or(""),
            ));
        }
    }
    if !skipped.is_empty() {
        t.push_str("\nNot measured:\n");
        for s in skipped {
            t.push_str(&format!("- {s}\n"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_figure_of_several_repetitions_says_how_far_they_spread() {
        use super::{fmt_value as f, spread};
        assert_eq!(
            spread(&[1.0, 2.0], "s"),
            None,
            "two are no spread to speak of"
        );
        assert_eq!(
            spread(&[3.0, 1.0, 2.0], "s").unwrap(),
            format!("3 reps measured {}-{}", f(1.0, "s"), f(3.0, "s"))
        );
        assert_eq!(
            spread(&[5.0, 1.0, 3.0, 2.0, 4.0], "s").unwrap(),
            format!(
                "5 reps measured {}-{}, middle half {}-{}",
                f(1.0, "s"),
                f(5.0, "s"),
                f(2.0, "s"),
                f(4.0, "s")
            )
        );
    }

    use super::*;

    #[test]
    fn the_date_reads_as_a_date() {
        let d = utc_now();
        assert!(
            d.ends_with(" UTC") && d.len() == "2026-11-29 19:38 UTC".len(),
            "{d}"
        );
    }

    #[test]
    fn values() {
        assert_eq!(fmt_value(2_345_678.0, "ev/s"), "2.35 M ev/s");
        assert_eq!(fmt_value(0.4123, "s"), "0.412 s");
        assert_eq!(fmt_value(0.0, "events"), "0 events");
        assert_eq!(fmt_value(28.19, "MiB"), "28.19 MiB");
    }
}
