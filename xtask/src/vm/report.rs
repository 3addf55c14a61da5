//! Reading what a guest wrote to its results port (see tests/vm/suite.sh for the
//! markers) and printing the matrix: one row per test, one column per kernel.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Start of every marker line.
pub const MARK: &str = "@@CALITRACE-VM ";
/// Lines of a failing test's output printed at most (the log has all of it).
const MAX_FAILURE_LINES: usize = 400;

/// One framed piece of guest output: `calitrace probes` or one test.
pub struct Piece {
    pub kind: String,
    pub name: String,
    pub output: String,
    /// None: the guest never finished it (timed out or crashed).
    pub rc: Option<i32>,
    pub secs: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Ignored,
    Fail,
    Timeout,
    /// Started, never ended: the VM died or ran out of time.
    Unfinished,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.pad(match self {
            Outcome::Pass => "ok",
            Outcome::Ignored => "ignored",
            Outcome::Fail => "FAIL",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Unfinished => "UNFINISHED",
        })
    }
}

impl Piece {
    /// A test the lane was told to run that no test executable has.
    pub fn missing(name: &str) -> Piece {
        Piece {
            kind: "test".into(),
            name: name.into(),
            output: "no test of this name in the calitrace-tests executables (see KERNEL_SENSITIVE in xtask/src/vm.rs)\n".into(),
            rc: Some(-1),
            secs: Some(0.0),
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self.rc {
            None => Outcome::Unfinished,
            // timeout(1): 124 after SIGTERM, 137 when it needed SIGKILL.
            Some(124) | Some(137) => Outcome::Timeout,
            Some(0) if self.output.contains(" 0 passed; 0 failed; 1 ignored") => Outcome::Ignored,
            Some(0) => Outcome::Pass,
            Some(_) => Outcome::Fail,
        }
    }
}

/// What a guest reported on its results port.
#[derive(Default)]
pub struct Results {
    /// `uname -r` as the guest reported it (None: it never got that far).
    pub release: Option<String>,
    pub probes: Option<Piece>,
    /// The kernel's capabilities as the suite script checked them.
    pub facts: Option<Piece>,
    pub tests: Vec<Piece>,
    /// The suite reached its end.
    pub done: bool,
}

/// Everything about one kernel's run.
pub struct KernelRun {
    pub label: String,
    pub package: String,
    pub results: Results,
    pub timed_out: bool,
    pub wall: Duration,
    pub results_log: PathBuf,
    pub console_log: PathBuf,
}

impl KernelRun {
    pub fn ok(&self) -> bool {
        let r = &self.results;
        r.done
            && r.probes.as_ref().is_some_and(|p| p.rc == Some(0))
            && r.tests
                .iter()
                .all(|t| matches!(t.outcome(), Outcome::Pass | Outcome::Ignored))
    }

    fn count(&self, o: Outcome) -> usize {
        self.results
            .tests
            .iter()
            .filter(|t| t.outcome() == o)
            .count()
    }

    fn outcome_of(&self, test: &str) -> Option<Outcome> {
        self.results
            .tests
            .iter()
            .find(|t| t.name == test)
            .map(Piece::outcome)
    }
}

/// Reads the results port (see tests/vm/suite.sh for the markers).
pub fn parse(port: &str) -> Results {
    let mut results = Results::default();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut open = false;
    for line in port.lines() {
        let Some(marker) = line.strip_prefix(MARK) else {
            if open && let Some(p) = pieces.last_mut() {
                p.output.push_str(line);
                p.output.push('\n');
            }
            continue;
        };
        let words: Vec<&str> = marker.split_whitespace().collect();
        match words.as_slice() {
            ["KERNEL", r, ..] => results.release = Some(r.to_string()),
            ["BEGIN", kind, name, ..] => {
                pieces.push(Piece {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    output: String::new(),
                    rc: None,
                    secs: None,
                });
                open = true;
            }
            ["END", _, _, rest @ ..] => {
                if let Some(p) = pieces.last_mut() {
                    p.rc = field(rest, "rc=");
                    p.secs = field(rest, "secs=");
                }
                open = false;
            }
            ["DONE", ..] => results.done = true,
            _ => {}
        }
    }
    for piece in pieces {
        match piece.kind.as_str() {
            "probes" => results.probes = Some(piece),
            "facts" => results.facts = Some(piece),
            _ => results.tests.push(piece),
        }
    }
    results
}

fn field<T: std::str::FromStr>(words: &[&str], key: &str) -> Option<T> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// One progress line for a marker as it arrives (None for markers not worth a line).
pub fn progress_line(label: &str, marker: &str) -> Option<String> {
    let words: Vec<&str> = marker.strip_prefix(MARK)?.split_whitespace().collect();
    match words.as_slice() {
        ["KERNEL", release] => Some(format!("[{label}] booted {release}")),
        ["END", "facts", ..] => None,
        ["END", _, name, rest @ ..] => {
            let piece = Piece {
                kind: String::new(),
                name: name.to_string(),
                output: String::new(),
                rc: field(rest, "rc="),
                secs: field(rest, "secs="),
            };
            Some(format!(
                "[{label}] {name} ... {} ({:.1} s)",
                piece.outcome(),
                piece.secs.unwrap_or(0.0)
            ))
        }
        _ => None,
    }
}

/// The matrix, the probes output of each kernel, and the output of everything that
/// did not pass.
pub fn print(runs: &[KernelRun]) {
    print_probes(runs);
    print_failures(runs);
    print_matrix(runs);
}

fn print_probes(runs: &[KernelRun]) {
    for run in runs {
        let r = &run.results;
        let name = r.release.as_deref().unwrap_or(&run.package);
        for (what, piece) in [("calitrace probes", &r.probes), ("kernel facts", &r.facts)] {
            println!("\n=== {} ({name}): {what} ===", run.label);
            match piece {
                Some(p) => print!("{}", p.output),
                None => println!("(not run)"),
            }
        }
    }
}

fn print_failures(runs: &[KernelRun]) {
    for run in runs {
        for piece in run.results.probes.iter().chain(&run.results.tests) {
            let outcome = piece.outcome();
            if matches!(outcome, Outcome::Pass | Outcome::Ignored) {
                continue;
            }
            println!(
                "\n=== {} {} {}: {outcome} (rc {}, {:.1} s) ===",
                run.label,
                piece.kind,
                piece.name,
                piece.rc.map_or("none".into(), |r| r.to_string()),
                piece.secs.unwrap_or(0.0)
            );
            print_tail(&piece.output, &run.results_log);
        }
        if !run.results.done {
            let why = if run.timed_out {
                format!("ran out of time after {:.0} s", run.wall.as_secs_f64())
            } else {
                "stopped before the end of the suite".into()
            };
            println!("\n=== {}: the VM {why} ===", run.label);
            let console = std::fs::read_to_string(&run.console_log).unwrap_or_default();
            println!("console ({}), last lines:", run.console_log.display());
            print_tail(&console, &run.console_log);
        }
    }
}

fn print_tail(text: &str, log: &std::path::Path) {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(MAX_FAILURE_LINES);
    if skip > 0 {
        println!("... ({skip} earlier lines in {})", log.display());
    }
    for l in &lines[skip..] {
        println!("{l}");
    }
}

fn print_matrix(runs: &[KernelRun]) {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        for t in &run.results.tests {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(16);
    println!("\n=== kernel matrix ===");
    print!("{:width$}", "test");
    for run in runs {
        print!("  {:>10}", run.label);
    }
    println!();
    print!("{:width$}", "calitrace probes");
    for run in runs {
        let o = run.results.probes.as_ref().map(Piece::outcome);
        print!("  {:>10}", o.map_or("-".into(), |o| o.to_string()));
    }
    println!();
    for name in &names {
        print!("{name:width$}");
        for run in runs {
            let o = run.outcome_of(name);
            print!("  {:>10}", o.map_or("-".into(), |o| o.to_string()));
        }
        println!();
    }
    for run in runs {
        println!(
            "{}: {} passed, {} failed, {} timed out, {} unfinished{}; {:.0} s in the VM ({})",
            run.label,
            run.count(Outcome::Pass),
            run.count(Outcome::Fail),
            run.count(Outcome::Timeout),
            run.count(Outcome::Unfinished),
            if run.results.done {
                ""
            } else {
                ", suite incomplete"
            },
            run.wall.as_secs_f64(),
            run.results_log.display()
        );
    }
}
