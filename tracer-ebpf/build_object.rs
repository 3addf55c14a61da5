// Included by the build scripts of tracer-user (this crate's programs) and
// tests (the stand-in for Felix's programs): how an aya-ebpf crate of this
// repository becomes an object in OUT_DIR for `include_bytes!`.

/// Builds binary `bin` of the aya-ebpf crate in `crate_dir` with the nightly
/// toolchain and bpf-linker, and copies the object to `OUT_DIR/<object>`.
/// The environment variable `prebuilt` names an object to use instead;
/// `watch` are the paths whose change rebuilds it. `what` names it in errors.
fn build_ebpf_object(
    crate_dir: &std::path::Path,
    bin: &str,
    object: &str,
    prebuilt: &str,
    watch: &[std::path::PathBuf],
    what: &str,
) {
    use std::path::PathBuf;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join(object);
    println!("cargo:rerun-if-env-changed={prebuilt}");
    if let Some(path) = std::env::var_os(prebuilt) {
        println!("cargo:rerun-if-changed={}", PathBuf::from(&path).display());
        std::fs::copy(&path, &dest).unwrap_or_else(|e| panic!("copy {prebuilt}: {e}"));
        return;
    }
    for p in watch {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = std::process::Command::new("rustup");
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
        .unwrap_or_else(|e| panic!("cannot run rustup to build {what}: {e}"));
    if !status.success() {
        panic!(
            "building {what} failed ({status}); `cargo xtask build` installs the nightly rust-src and bpf-linker they need"
        );
    }
    std::fs::copy(
        target_dir.join("bpfel-unknown-none/release").join(bin),
        &dest,
    )
    .unwrap_or_else(|e| panic!("copy the object of {what}: {e}"));
}
