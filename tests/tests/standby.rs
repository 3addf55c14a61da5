//! `calitrace standby` in a lab node: the doctor's report on stdout, then
//! waiting until SIGTERM, SIGINT or SIGHUP, and exit 0 even when a check
//! failed (a DaemonSet's pod must not crash-loop on a broken node).

use calitrace_tests::standby::until_signal;
use calitrace_tests::{Lab, Mode, calitrace};

#[test]
fn standby_prints_the_doctor_then_waits_until_a_stop_signal() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = lab.node(1).netns.clone();
    lab.sysctl(&node, "net.ipv4.ip_forward", "0").unwrap();
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let s = until_signal(&calitrace::binary(), &node, &[], signal).unwrap();
        assert_eq!(s.status.code(), Some(0), "signal {signal}: {s:?}");
        assert!(s.exit_after.as_secs() < 2, "{s:?}");
        assert!(s.stdout.starts_with("calitrace standby: node "), "{s:?}");
        assert!(s.stdout.contains("✗ fail ip_forward"), "{s:?}");
        assert!(
            s.stdout
                .contains("calitrace: 1 check(s) failed: ip_forward"),
            "{s:?}"
        );
        assert!(s.stderr.contains("exiting"), "{s:?}");
    }
}

#[test]
fn standby_refuses_arguments_it_does_not_know() {
    let f = calitrace::run(
        None,
        &[],
        &["standby", "--duration", "1"],
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
}
