//! The contract's JSON lines, byte for byte: a fixed mix of synthetic
//! events (flows, drops at netfilter, routing and the TTL, ARP answered
//! and not) through the pipeline and the JSON and text views, compared
//! with the lines committed in `tests/golden/`. A change to the domain's
//! types, the journeys or the views must leave them as they are; a change
//! of the contract itself (documented in the README's JSON section) writes
//! them anew with `CALITRACE_BLESS=1`.

use std::path::PathBuf;

use calitrace_tests::synth::{self, Gen, Shape};
use tracer_user::facts::Environment;
use tracer_user::pipeline::{Options, Pipeline};
use tracer_user::views::View;
use tracer_user::views::json::JsonView;
use tracer_user::views::text::TextView;

/// The records of the mix: 4,000 events of 200 flows, one packet in 25
/// dropped, an ARP exchange every 50 packets, flows replaced as they go.
fn records() -> Vec<tracer_user::model::Record> {
    let mut g = Gen::new(Shape {
        flows: 200,
        step_ns: 50_000,
        drop_every: 25,
        arp_every: 50,
        churn_per_s: 2_000,
    });
    let mut p = Pipeline::new(Environment::replay(synth::facts()), Options::default());
    let mut out = Vec::new();
    for _ in 0..4_000 {
        p.process(&g.next_input(), &mut out);
    }
    p.finish(&mut out);
    out
}

fn through(view: &mut dyn View, records: &[tracer_user::model::Record]) {
    for r in records {
        view.record(r).unwrap();
    }
    view.flush().unwrap();
}

fn golden(name: &str, got: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("CALITRACE_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if got != want.as_slice() {
        let got = String::from_utf8_lossy(got);
        let want = String::from_utf8_lossy(&want);
        let (n, (g, w)) = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (g, w))| g != w)
            .unwrap_or((0, ("(lengths differ)", "")));
        panic!(
            "{name} changed ({} lines now, {} committed); first difference, line {}:\n  now:  {g}\n  was:  {w}",
            got.lines().count(),
            want.lines().count(),
            n + 1
        );
    }
}

#[test]
fn the_json_lines_are_as_committed() {
    let records = records();
    assert!(records.len() > 1_000, "{}", records.len());
    let mut buf = Vec::new();
    through(&mut JsonView::new(&mut buf), &records);
    let text = String::from_utf8_lossy(&buf);
    for kind in [
        "\"type\":\"packet\"",
        "\"type\":\"drop\"",
        "\"type\":\"diagnosis\"",
    ] {
        assert!(text.contains(kind), "the mix has {kind}");
    }
    golden("pipeline.jsonl", &buf);
}

#[test]
fn the_drop_lines_of_the_text_view_are_as_committed() {
    let records = records();
    let mut buf = Vec::new();
    through(&mut TextView::new(&mut buf), &records);
    let drops: String = String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| l.contains(" DROP ") || l.starts_with("DIAGNOSIS"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!drops.is_empty());
    golden("text-drops.txt", drops.as_bytes());
}
