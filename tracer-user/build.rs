//! Builds the eBPF object (crate `tracer-ebpf`) with the nightly toolchain and
//! bpf-linker, and leaves it in OUT_DIR/tracer.bpf.o for `include_bytes!`.
//! `cargo xtask` installs what this needs; set CALITRACE_EBPF_OBJECT to use a
//! prebuilt object instead.

include!("../tracer-ebpf/build_object.rs");

fn main() {
    let manifest_dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let watch: Vec<_> = [
        "tracer-ebpf/src",
        "tracer-ebpf/Cargo.toml",
        "tracer-ebpf/Cargo.lock",
        "tracer-ebpf/build_object.rs",
        "tracer-common/src",
        "tracer-common/Cargo.toml",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    build_ebpf_object(
        &root.join("tracer-ebpf"),
        "tracer",
        "tracer.bpf.o",
        "CALITRACE_EBPF_OBJECT",
        &watch,
        "the eBPF programs",
    );
}
