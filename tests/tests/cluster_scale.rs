//! A client that cannot keep up: one CPU merging 16 agents whose streams
//! come as fast as they can be read (recorded streams, not paced by their
//! traffic). The nodes' readers are kept within the journey window of the
//! slowest, so no packet between nodes goes unjudged because one node was
//! read far ahead of another, and every drop stays its receiving node's.

use std::time::Duration;

use calitrace_tests::calitrace;
use calitrace_tests::fleet;

const NODES: usize = 16;
const PER_NODE: usize = 30_000;

#[test]
fn a_starved_client_misjudges_nothing() {
    let dir = std::env::temp_dir().join(format!("calitrace-starved-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = fleet::events(NODES, PER_NODE, 11);
    let dropped: usize = events
        .iter()
        .map(|e| {
            e.iter()
                .filter(|e| e.kind == tracer_common::kind::DROP)
                .count()
        })
        .sum();
    let mut args: Vec<String> = ["cluster", "--drops-only", "-o", "json"]
        .map(String::from)
        .to_vec();
    for (i, e) in events.iter().enumerate() {
        let path = dir.join(format!("{i}.stream"));
        std::fs::write(&path, fleet::stream(i, e).unwrap()).unwrap();
        args.push("--node".into());
        // The agent's words after the command: a comment to `sh`.
        args.push(format!("{}=cat {} #", fleet::name(i), path.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The whole client on one CPU: its 16 readers, their node pipelines and
    // the merge share it.
    let f = calitrace::run(
        None,
        &["taskset", "-c", "0"],
        &args,
        Duration::from_secs(180),
    )
    .expect("calitrace cluster runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(f.status.success(), "{}\n{}", f.stderr, f.stdout);
    assert!(
        !f.stderr.contains("not judged"),
        "packets between nodes went unjudged:\n{}",
        f.stderr
    );
    let underlay: Vec<_> = f
        .diagnoses()
        .into_iter()
        .filter(|d| {
            d["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("UNDERLAY"))
        })
        .collect();
    assert!(
        underlay.is_empty(),
        "no packet was lost between nodes: {underlay:?}"
    );
    let drops = f.drops();
    assert_eq!(drops.len(), dropped, "every drop is reported once");
    let at_receiver = drops
        .iter()
        .filter(|d| {
            let journey = d["journey"].as_array().map(Vec::len).unwrap_or(0);
            // The sender's cali* and uplink, then the receiver's uplink.
            journey >= 3
        })
        .count();
    let short: Vec<String> = drops
        .iter()
        .filter(|d| d["journey"].as_array().map(Vec::len).unwrap_or(0) < 3)
        .map(|d| format!("{} at {}: {}", d["node"], d["ts_ns"], d["journey"]))
        .collect();
    assert_eq!(
        at_receiver,
        drops.len(),
        "each drop's journey has the sender's points before the receiver's: {short:#?}"
    );
}
