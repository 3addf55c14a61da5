//! Builds the eBPF object (crate `tracer-ebpf`) with the nightly toolchain and
//! bpf-linker, and leaves it in OUT_DIR for `include_bytes!`.
//! `cargo xtask` installs what this needs; set CALITRACE_EBPF_OBJECT to use a
//! prebuilt object instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join("tracer.bpf.o");
    println!("cargo:rerun-if-env-changed=CALITRACE_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("CALITRACE_EBPF_OBJECT") {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&prebuilt).display()
        );
        std::fs::copy(&prebuilt, &dest).expect("copy CALITRACE_EBPF_OBJECT");
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    for p in [
        "tracer-ebpf/src",
        "tracer-ebpf/Cargo.toml",
        "tracer-ebpf/Cargo.lock",
        "tracer-common/src",
        "tracer-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .arg("--manifest-path")
    .arg(root.join("tracer-ebpf/Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Cdebuginfo=2\x1f-Clink-arg=--btf",
    );
    for var in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustup to build the eBPF programs: {e}"));
    if !status.success() {
        panic!(
            "building the eBPF programs failed ({status}); `cargo xtask build` installs the nightly rust-src and bpf-linker they need"
        );
    }
    std::fs::copy(target_dir.join("bpfel-unknown-none/release/tracer"), &dest)
        .expect("copy eBPF object");
}
