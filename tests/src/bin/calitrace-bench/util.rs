//! Measuring: medians, rows of the result table, RSS, CPU pinning.

use serde_json::{Value, json};

/// One figure of the table, printed as a JSON line for `cargo xtask bench`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The same figure without calitrace (or before), measured in this run.
    pub baseline: Option<f64>,
    /// What the target is, in words (`>= 97% of untraced`).
    pub target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    pub met: Option<bool>,
    pub note: String,
    /// Every repetition, for the curious.
    pub samples: Vec<f64>,
}

impl Row {
    pub fn new(
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            section,
            name: name.into(),
            value,
            unit,
            ..Default::default()
        }
    }

    pub fn baseline(mut self, b: f64) -> Row {
        self.baseline = Some(b);
        self
    }

    pub fn target(mut self, t: impl Into<String>, met: bool) -> Row {
        self.target = t.into();
        self.met = Some(met);
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }

    pub fn samples(mut self, s: &[f64]) -> Row {
        self.samples = s.to_vec();
        self
    }

    pub fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.baseline.filter(|b| *b != 0.0).map(|b| self.value / b),
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "samples": self.samples,
        })
    }

    /// Prints the row for xtask (stdout) and for whoever watches (stderr).
    pub fn emit(&self) {
        println!("{}", self.to_json());
        eprintln!(
            "  {:<58} {:>14} {}{}",
            self.name,
            human(self.value),
            self.unit,
            match self.baseline {
                Some(b) if b != 0.0 =>
                    format!("  ({:.1}% of {})", 100.0 * self.value / b, human(b)),
                _ => String::new(),
            }
        );
    }
}

pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `VmRSS` and `VmHWM` of a process (KiB), from /proc/PID/status.
pub fn rss_kib(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time this thread has used: what "per core" figures divide by, so
/// that other work on a busy machine does not count against calitrace.
#[derive(Clone, Copy)]
pub struct CpuClock(f64);

impl CpuClock {
    pub fn start() -> CpuClock {
        CpuClock(thread_cpu_s())
    }

    pub fn elapsed_s(&self) -> f64 {
        (thread_cpu_s() - self.0).max(1e-9)
    }
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// Keeps this thread on one CPU (the last one), so that "per core" means it.
pub fn pin_to_one_cpu() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    cpu
}

/// Lets this thread (and those it starts from now on) run on any CPU.
pub fn unpin_all() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let r = Row::new("x", "y", 97.0, "Gbit/s").baseline(100.0).to_json();
        assert!((r["ratio"].as_f64().unwrap() - 0.97).abs() < 1e-9);
        assert_eq!(human(2_500_000.0), "2.50M");
    }
}
