//! Builds the stand-in for Felix's eBPF programs (crate `tests/felix-standin`)
//! with the nightly toolchain and bpf-linker, the way tracer-user/build.rs
//! builds tracer-ebpf, and leaves it in OUT_DIR/felix-standin.bpf.o for
//! `include_bytes!` (see src/felix.rs). Set CALITRACE_STANDIN_OBJECT to use a
//! prebuilt object instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join("felix-standin.bpf.o");
    println!("cargo:rerun-if-env-changed=CALITRACE_STANDIN_OBJECT");
    if let Some(prebuilt) = env::var_os("CALITRACE_STANDIN_OBJECT") {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&prebuilt).display()
        );
        std::fs::copy(&prebuilt, &dest).expect("copy CALITRACE_STANDIN_OBJECT");
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let crate_dir = manifest_dir.join("felix-standin");
    for p in ["src", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
        println!("cargo:rerun-if-changed={}", crate_dir.join(p).display());
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
    .arg(crate_dir.join("Cargo.toml"))
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
        .unwrap_or_else(|e| panic!("cannot run rustup to build the Felix stand-in: {e}"));
    if !status.success() {
        panic!(
            "building the Felix stand-in's eBPF programs failed ({status}); `cargo xtask build` installs the nightly rust-src and bpf-linker they need"
        );
    }
    std::fs::copy(
        target_dir.join("bpfel-unknown-none/release/felix-standin"),
        &dest,
    )
    .expect("copy the Felix stand-in's eBPF object");
}
