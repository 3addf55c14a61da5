//! The capability-based variant of the agents (deploy/components/capabilities):
//! calitrace run as root with only that component's capabilities (every
//! other one dropped from the bounding set, as the container runtime does)
//! attaches the same probes as with all of them, traces, and names a
//! netfilter drop with its hook and backend; with one of them missing it
//! says which.

use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::{Backend, Lab, Mode};
use serde_json::Value;

/// The capabilities the component adds, as its patch lists them.
fn component_capabilities() -> Vec<String> {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/components/capabilities/kustomization.yaml"
    );
    let k: Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let patch: Value = serde_saphyr::from_str(k["patches"][0]["patch"].as_str().unwrap()).unwrap();
    let ctx = &patch[0]["value"];
    assert_eq!(ctx["privileged"], false, "{ctx}");
    assert_eq!(ctx["capabilities"]["drop"][0], "ALL", "{ctx}");
    // `only` sets no_new_privs as the runtime does for it.
    assert_eq!(ctx["allowPrivilegeEscalation"], false, "{ctx}");
    ctx["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// `setpriv` keeping only `caps` (as Kubernetes names them) in the
/// bounding set (root's permitted and effective sets after exec), with
/// no_new_privs (`allowPrivilegeEscalation: false`).
fn only(caps: &[String]) -> Vec<String> {
    let keep: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    vec![
        "setpriv".into(),
        "--no-new-privs".into(),
        format!("--bounding-set=-all,{}", keep.join(",")),
    ]
}

fn in_netns<'a>(netns: &'a str, setpriv: &'a [String]) -> Vec<&'a str> {
    let mut p = vec!["ip", "netns", "exec", netns];
    p.extend(setpriv.iter().map(String::as_str));
    p
}

/// The `ok` lines of `calitrace probes`.
fn attached(f: &Finished) -> Vec<String> {
    f.stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("ok "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn with_the_components_capabilities_alone_it_traces_and_names_a_netfilter_drop() {
    let caps = component_capabilities();
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(1).netns.clone();
    let setpriv = only(&caps);

    let full = calitrace::run(Some(&node), &[], &["probes"], Duration::from_secs(60)).unwrap();
    let fewer = calitrace::run(
        None,
        &in_netns(&node, &setpriv),
        &["probes"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(fewer.status.success(), "{}\n{}", fewer.stdout, fewer.stderr);
    assert_eq!(
        attached(&fewer),
        attached(&full),
        "the same probes\n{}",
        fewer.stdout
    );

    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let mut t = Trace::start_plain(&in_netns(&node, &setpriv), &["-o", "json"]).unwrap();
    t.wait_for_stderr(
        "tracing on",
        calitrace::startup_limit(Duration::from_secs(60)),
    )
    .unwrap();
    assert!(!lab.ping(&a, &b.ip, 2));
    std::thread::sleep(Duration::from_millis(1500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    assert!(!d.is_empty(), "the drop is reported\n{}", f.dump());
    assert_eq!(d[0]["netfilter"]["hook"], "FORWARD", "{}", d[0]);
    assert_eq!(d[0]["netfilter"]["backend"], "legacy", "{}", d[0]);
    assert!(
        f.diagnoses().iter().any(|d| d["code"] == "NETFILTER_DROP"),
        "{}",
        f.dump()
    );
    calitrace::assert_nothing_attached_in(&lab, 1);
}

#[test]
fn without_net_admin_it_says_which_capability_is_missing() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = lab.node(0).netns.clone();
    let caps: Vec<String> = component_capabilities()
        .into_iter()
        .filter(|c| c != "NET_ADMIN")
        .collect();
    let f = calitrace::run(
        None,
        &in_netns(&node, &only(&caps)),
        &["-o", "json"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(f.stderr.contains("CAP_NET_ADMIN"), "{}", f.stderr);
}

/// What each capability of the component is for, as README's table says:
/// calitrace with that one left out, its probes and a short trace.
/// `cargo test -p calitrace-tests --test capabilities -- --ignored --nocapture`
#[test]
#[ignore]
fn readme_capture_each_capability_left_out() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(1).netns.clone();
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let all = component_capabilities();
    let full = calitrace::run(Some(&node), &[], &["probes"], Duration::from_secs(60)).unwrap();
    for left_out in &all {
        let caps: Vec<String> = all.iter().filter(|c| *c != left_out).cloned().collect();
        let setpriv = only(&caps);
        let probes = calitrace::run(
            None,
            &in_netns(&node, &setpriv),
            &["probes"],
            Duration::from_secs(60),
        )
        .unwrap();
        let lost: Vec<String> = attached(&full)
            .into_iter()
            .filter(|p| !attached(&probes).contains(p))
            .collect();
        let mut t = Trace::start_plain(&in_netns(&node, &setpriv), &["-o", "json"]).unwrap();
        let started = t.wait_for_stderr("tracing on", Duration::from_secs(60));
        let _ = lab.ping(&a, &b.ip, 1);
        std::thread::sleep(Duration::from_millis(1000));
        let f = t.stop().unwrap();
        let drops = f.drops();
        let d = Finished::between(&drops, &a.ip, &b.ip);
        println!(
            "without {left_out}: probes lost {lost:?}; tracing {}; drop {}; stderr: {}",
            if started.is_ok() { "on" } else { "never on" },
            d.first()
                .map(|d| format!("{} {}", d["reason"], d["netfilter"]))
                .unwrap_or_else(|| "not seen".into()),
            f.stderr
                .lines()
                .filter(|l| !l.contains("stats"))
                .take(4)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}
