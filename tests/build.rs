//! Builds the stand-in for Felix's eBPF programs (crate `tests/felix-standin`)
//! as tracer-user/build.rs builds tracer-ebpf, and leaves it in
//! OUT_DIR/felix-standin.bpf.o for `include_bytes!` (see src/felix.rs). Set
//! CALITRACE_STANDIN_OBJECT to use a prebuilt object instead.

include!("../tracer-ebpf/build_object.rs");

fn main() {
    let manifest_dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let crate_dir = manifest_dir.join("felix-standin");
    let mut watch: Vec<_> = ["src", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml"]
        .iter()
        .map(|p| crate_dir.join(p))
        .collect();
    watch.push(manifest_dir.join("../tracer-ebpf/build_object.rs"));
    build_ebpf_object(
        &crate_dir,
        "felix-standin",
        "felix-standin.bpf.o",
        "CALITRACE_STANDIN_OBJECT",
        &watch,
        "the Felix stand-in's eBPF programs",
    );
}
