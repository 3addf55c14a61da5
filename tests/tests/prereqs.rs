//! The README's test command sets itself up: `cargo xtask test` checks its
//! Debian packages first (installing what is missing, or stopping with one
//! line naming it), so a fresh machine needs nothing installed by hand.
//! Run by that command, this test finds its check's word: every package
//! there.

use std::path::PathBuf;
use std::process::Command;

/// The xtask binary `cargo xtask test` was started from.
fn xtask() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug/xtask");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

#[test]
fn the_test_commands_packages_are_all_there_after_its_check() {
    let out = Command::new(xtask())
        .args(["prereqs", "test"])
        .output()
        .expect("xtask runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err.lines().last().unwrap_or_default();
    let present = line
        .strip_prefix("xtask: packages present: ")
        .unwrap_or_else(|| panic!("one line says the packages are there: {err}"));
    let names: Vec<&str> = present.split(", ").collect();
    for want in [
        "iproute2",
        "iptables",
        "nftables",
        "iputils-ping",
        "tshark",
        "tmux",
        "containerd",
        "buildah",
    ] {
        assert!(names.contains(&want), "{want} is checked: {line}");
    }
}
