//! Reading what a guest wrote to its results port (see tests/vm/suite.sh for the
//! markers) and printing the matrix: one row per test, one column per kernel.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Start of every marker line.
pub const MARK: &str = "@@CALITRACE-VM ";
/// Start of the line a test prints when it skips (`calitrace_tests::kernel::SKIP_MARK`).
const SKIP_MARK: &str = "SKIP ";
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Passed by returning early: this kernel lacks what it tests (it said why in a
    /// `SKIP <test>: <why>` line).
    Skipped,
    Ignored,
    Fail,
    Timeout,
    /// Started, never ended: the VM died or ran out of time.
    Unfinished,
}

impl Outcome {
    /// Nothing went wrong: it passed, skipped or was ignored.
    pub fn is_good(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Skipped | Outcome::Ignored)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.pad(match self {
            Outcome::Pass => "ok",
            Outcome::Skipped => "skipped",
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
            Some(0) if self.skip_reason().is_some() => Outcome::Skipped,
            Some(0) => Outcome::Pass,
            Some(_) => Outcome::Fail,
        }
    }
}

impl Piece {
    /// What a skipped test said (`<test>: <why>`), from its `SKIP <test>: <why>`
    /// line (`calitrace_tests::kernel::must_skip` prints it); under `--nocapture` libtest may have printed `test NAME ... ` in front.
    pub fn skip_reason(&self) -> Option<&str> {
        self.output.lines().find_map(|line| {
            let line = line.trim_end();
            let after_libtest = line
                .strip_prefix("test ")
                .and_then(|rest| rest.split_once(" ... "))
                .map_or(line, |(_, printed)| printed);
            let skip = after_libtest.strip_prefix(SKIP_MARK)?;
            let (test, _why) = skip.split_once(": ")?;
            (!test.contains(' ')).then_some(skip)
        })
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
            && r.tests.iter().all(|t| t.outcome().is_good())
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

/// Reads the results port line by line as it arrives (see tests/vm/suite.sh for the
/// markers), and says in one line what each finished piece came to.
pub struct Reader {
    label: String,
    results: Results,
    /// The piece between its BEGIN and END markers.
    open: Option<Piece>,
}

impl Reader {
    /// `label`: the kernel, for the progress lines.
    pub fn new(label: &str) -> Reader {
        Reader {
            label: label.to_string(),
            results: Results::default(),
            open: None,
        }
    }

    /// Takes one line of the port; returns a progress line when it booted the kernel
    /// or finished a test.
    pub fn feed(&mut self, line: &str) -> Option<String> {
        let Some(marker) = line.strip_prefix(MARK) else {
            if let Some(p) = &mut self.open {
                p.output.push_str(line);
                p.output.push('\n');
            }
            return None;
        };
        let words: Vec<&str> = marker.split_whitespace().collect();
        match words.as_slice() {
            ["KERNEL", release, ..] => {
                self.results.release = Some(release.to_string());
                Some(format!("[{}] booted {release}", self.label))
            }
            ["BEGIN", kind, name, ..] => {
                self.close();
                self.open = Some(Piece {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    output: String::new(),
                    rc: None,
                    secs: None,
                });
                None
            }
            ["END", _, _, rest @ ..] => {
                let mut p = self.open.take()?;
                p.rc = field(rest, "rc=");
                p.secs = field(rest, "secs=");
                let line = (p.kind != "facts").then(|| {
                    format!(
                        "[{}] {} ... {} ({:.1} s)",
                        self.label,
                        p.name,
                        p.outcome(),
                        p.secs.unwrap_or(0.0)
                    )
                });
                self.keep(p);
                line
            }
            ["DONE", ..] => {
                self.results.done = true;
                None
            }
            _ => None,
        }
    }

    /// Everything read; a piece still open never finished.
    pub fn finish(mut self) -> Results {
        self.close();
        self.results
    }

    fn close(&mut self) {
        if let Some(p) = self.open.take() {
            self.keep(p);
        }
    }

    fn keep(&mut self, piece: Piece) {
        match piece.kind.as_str() {
            "probes" => self.results.probes = Some(piece),
            "facts" => self.results.facts = Some(piece),
            _ => self.results.tests.push(piece),
        }
    }
}

/// Reads a whole results port.
pub fn parse(port: &str) -> Results {
    let mut reader = Reader::new("");
    for line in port.lines() {
        reader.feed(line);
    }
    reader.finish()
}

fn field<T: std::str::FromStr>(words: &[&str], key: &str) -> Option<T> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// The matrix, the probes output of each kernel, and the output of everything that
/// did not pass.
pub fn print(runs: &[KernelRun]) {
    print_probes(runs);
    print_failures(runs);
    print_skips(runs);
    print_matrix(runs);
}

/// Why each skipped test skipped, as it said.
fn print_skips(runs: &[KernelRun]) {
    for run in runs {
        let skips: Vec<&str> = run
            .results
            .tests
            .iter()
            .filter(|t| t.outcome() == Outcome::Skipped)
            .filter_map(Piece::skip_reason)
            .collect();
        if skips.is_empty() {
            continue;
        }
        println!(
            "\n=== {}: skipped, this kernel lacks what they test ===",
            run.label
        );
        for why in skips {
            println!("{why}");
        }
    }
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
            if outcome.is_good() {
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
            "{}: {} passed, {} skipped, {} failed, {} timed out, {} unfinished{}; {:.0} s in the VM ({})",
            run.label,
            run.count(Outcome::Pass),
            run.count(Outcome::Skipped),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A results port as tests/vm/suite.sh writes it (tests run with `--nocapture`).
    const PORT: &str = "\
noise before the first marker
@@CALITRACE-VM KERNEL 5.10.0-32-cloud-amd64
@@CALITRACE-VM BEGIN probes probes
netfilter attribution: inferred (...)
@@CALITRACE-VM END probes probes rc=0 secs=6.2
@@CALITRACE-VM BEGIN facts facts
TCX (tcx_link_attach): no
@@CALITRACE-VM END facts facts rc=0 secs=0
@@CALITRACE-VM BEGIN test nf_links::probes_report_the_links_or_why_not

running 1 test
test probes_report_the_links_or_why_not ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 26 filtered out; finished in 9.10s
@@CALITRACE-VM END test nf_links::probes_report_the_links_or_why_not rc=0 secs=9.4
@@CALITRACE-VM BEGIN test nf_links::links_go_away_when_calitrace_is_killed

running 1 test
test links_go_away_when_calitrace_is_killed ... SKIP links_go_away_when_calitrace_is_killed: kernel 5.10.0-32-cloud-amd64 has no BPF netfilter links (6.4+, `bpf_nf_link_attach`)
ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 26 filtered out; finished in 0.01s
@@CALITRACE-VM END test nf_links::links_go_away_when_calitrace_is_killed rc=0 secs=0.3
@@CALITRACE-VM BEGIN test lab_selftest::slow

running 1 test
test slow ... ignored

test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.00s
@@CALITRACE-VM END test lab_selftest::slow rc=0 secs=0.1
@@CALITRACE-VM BEGIN test netfilter::legacy_rule_drop
SKIP is only a word here: no test name follows it
thread 'legacy_rule_drop' panicked
@@CALITRACE-VM END test netfilter::legacy_rule_drop rc=101 secs=20.0
@@CALITRACE-VM BEGIN test netfilter::hangs
@@CALITRACE-VM END test netfilter::hangs rc=124 secs=300.0
@@CALITRACE-VM BEGIN test recording::replay
running 1 test
";

    #[test]
    fn outcomes_count_skips_apart_from_passes() {
        let r = parse(PORT);
        assert_eq!(r.release.as_deref(), Some("5.10.0-32-cloud-amd64"));
        assert!(!r.done, "no DONE marker");
        assert_eq!(r.probes.as_ref().and_then(|p| p.rc), Some(0));
        assert_eq!(
            r.facts.as_ref().unwrap().output,
            "TCX (tcx_link_attach): no\n"
        );
        let outcomes: Vec<(&str, Outcome)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (
                    "nf_links::probes_report_the_links_or_why_not",
                    Outcome::Pass
                ),
                (
                    "nf_links::links_go_away_when_calitrace_is_killed",
                    Outcome::Skipped
                ),
                ("lab_selftest::slow", Outcome::Ignored),
                ("netfilter::legacy_rule_drop", Outcome::Fail),
                ("netfilter::hangs", Outcome::Timeout),
                ("recording::replay", Outcome::Unfinished),
            ]
        );
        assert_eq!(
            r.tests[1].skip_reason(),
            Some(
                "links_go_away_when_calitrace_is_killed: kernel 5.10.0-32-cloud-amd64 has no BPF netfilter links (6.4+, `bpf_nf_link_attach`)"
            )
        );
        assert_eq!(r.tests[0].skip_reason(), None);
        assert_eq!(r.tests[3].skip_reason(), None, "no test name after SKIP");

        let run = KernelRun {
            label: "5.10".into(),
            package: String::new(),
            results: r,
            timed_out: false,
            wall: Duration::ZERO,
            results_log: PathBuf::new(),
            console_log: PathBuf::new(),
        };
        let counts = [Outcome::Pass, Outcome::Skipped, Outcome::Fail].map(|o| run.count(o));
        assert_eq!(counts, [1, 1, 1]);
        assert!(!run.ok());
    }

    #[test]
    fn a_skip_line_of_its_own_counts_too() {
        let piece = Piece {
            kind: "test".into(),
            name: "x".into(),
            output: "running 1 test\nSKIP x: kernel 6.1 has no y\r\ntest x ... ok\n".into(),
            rc: Some(0),
            secs: Some(1.0),
        };
        assert_eq!(piece.outcome(), Outcome::Skipped);
        assert_eq!(piece.skip_reason(), Some("x: kernel 6.1 has no y"));
    }

    #[test]
    fn progress_lines_as_the_port_arrives() {
        let mut reader = Reader::new("5.10");
        let lines: Vec<String> = PORT.lines().filter_map(|l| reader.feed(l)).collect();
        assert_eq!(
            lines,
            [
                "[5.10] booted 5.10.0-32-cloud-amd64",
                "[5.10] probes ... ok (6.2 s)",
                "[5.10] nf_links::probes_report_the_links_or_why_not ... ok (9.4 s)",
                "[5.10] nf_links::links_go_away_when_calitrace_is_killed ... skipped (0.3 s)",
                "[5.10] lab_selftest::slow ... ignored (0.1 s)",
                "[5.10] netfilter::legacy_rule_drop ... FAIL (20.0 s)",
                "[5.10] netfilter::hangs ... TIMEOUT (300.0 s)",
            ]
        );
        assert_eq!(reader.finish().tests.len(), 6);
    }
}
