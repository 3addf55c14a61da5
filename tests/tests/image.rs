//! The container image of `cargo xtask image` (`cargo xtask test` builds it
//! first and passes it as `CALITRACE_IMAGE`): unpacked as the OCI layout it
//! is (index.json -> the image index -> each architecture's manifest ->
//! config and the one layer), its content checked, and its amd64 `calitrace`
//! run in a lab node: `probes`, a short `agent` whose stdout is a recording
//! stream, and `standby` until SIGTERM. The arm64 binary runs under
//! qemu-user: `--version`, `replay` and `doctor` say what amd64's say.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calitrace_tests::standby::until_signal;
use calitrace_tests::{Lab, Mode};
use serde_json::Value;
use tracer_user::recording::reader::{self, Item};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const BINARY: &str = "usr/bin/calitrace";

fn archive() -> PathBuf {
    let path = std::env::var_os("CALITRACE_IMAGE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/calitrace-oci.tar"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask image` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// The archive unpacked in a directory of its own (removed on drop), one
/// architecture's image of it in `rootfs`.
struct Unpacked {
    dir: PathBuf,
    index: Value,
    /// The image index the archive's index points to.
    images: Value,
    config: Value,
    /// What the layer puts in the container's root.
    layer_entries: Vec<String>,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Unpacked {
    fn new(name: &str) -> Unpacked {
        Unpacked::of(name, "amd64")
    }

    fn of(name: &str, arch: &str) -> Unpacked {
        let dir =
            std::env::temp_dir().join(format!("calitrace-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("layout")).unwrap();
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let mut u = Unpacked {
            dir,
            index: Value::Null,
            images: Value::Null,
            config: Value::Null,
            layer_entries: Vec::new(),
        };
        sh(Command::new("tar")
            .arg("-xf")
            .arg(archive())
            .arg("-C")
            .arg(u.layout()));
        let layout = u.json_file(&u.layout().join("oci-layout"));
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        u.index = u.json_file(&u.layout().join("index.json"));
        let manifests = u.index["manifests"]
            .as_array()
            .expect("index.json manifests");
        assert_eq!(manifests.len(), 1, "{}", u.index);
        assert_eq!(
            manifests[0]["mediaType"], "application/vnd.oci.image.index.v1+json",
            "{}",
            u.index
        );
        u.images = u.blob_json(&manifests[0]);
        let mine = u.images["manifests"]
            .as_array()
            .expect("the image index's manifests")
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} image in {}", u.images))
            .clone();
        let manifest = u.blob_json(&mine);
        u.config = u.blob_json(&manifest["config"]);
        let layers = manifest["layers"].as_array().expect("manifest layers");
        assert_eq!(layers.len(), 1, "one layer: {manifest}");
        let layer = u.blob(&layers[0]);
        let gzip = layers[0]["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("+gzip"));
        let z = if gzip { "z" } else { "" };
        let list = sh(Command::new("tar").arg(format!("-t{z}f")).arg(&layer));
        u.layer_entries = list
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .collect();
        sh(Command::new("tar")
            .arg(format!("-x{z}f"))
            .arg(&layer)
            .arg("-C")
            .arg(u.rootfs()));
        u
    }

    fn layout(&self) -> PathBuf {
        self.dir.join("layout")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn binary(&self) -> PathBuf {
        self.rootfs().join(BINARY)
    }

    fn json_file(&self, path: &Path) -> Value {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The blob a descriptor points to, its digest and size checked.
    fn blob(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().expect("descriptor digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let path = self.layout().join("blobs/sha256").join(hex);
        let sum = sh(Command::new("sha256sum").arg(&path));
        assert_eq!(
            sum.split_whitespace().next(),
            Some(hex),
            "{}",
            path.display()
        );
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(Some(size), descriptor["size"].as_u64(), "{digest}");
        path
    }

    fn blob_json(&self, descriptor: &Value) -> Value {
        self.json_file(&self.blob(descriptor))
    }
}

/// Whether an ELF executable asks for a dynamic loader (a PT_INTERP header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let h = phoff + i * phentsize;
        u32::from_le_bytes(elf[h..h + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn archive_is_an_oci_image_of_the_static_binary_alone() {
    let u = Unpacked::new("layout");
    let ref_name = &u.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"];
    assert_eq!(ref_name, &format!("calitrace:{VERSION}"), "{}", u.index);
    let mut platforms: Vec<String> = u.images["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{}", u.images);
    let config = &u.config["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/calitrace"]),
        "{config}"
    );
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/usr/bin"]),
        "{config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        VERSION
    );
    assert_eq!(u.config["os"], "linux");
    assert_eq!(u.config["architecture"], "amd64");
    let mut files: Vec<&str> = u.layer_entries.iter().map(String::as_str).collect();
    files.sort();
    assert_eq!(files, ["usr", "usr/bin", BINARY], "nothing but the binary");
    let elf = std::fs::read(u.binary()).unwrap();
    assert!(!has_interpreter(&elf), "the binary must be static");
    // With nothing else in its root, it starts.
    let out = sh(Command::new("chroot")
        .arg(u.rootfs())
        .args(["/usr/bin/calitrace", "--version"]));
    assert_eq!(out.trim(), format!("calitrace {VERSION}"));
}

#[test]
fn image_binary_reports_probes_and_streams_as_an_agent_in_a_lab_node() {
    let u = Unpacked::new("agent");
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = lab.node(0).netns.clone();
    let probes = Command::new("ip")
        .args(["netns", "exec", &node])
        .arg(u.binary())
        .arg("probes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probes.stdout);
    assert!(
        probes.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&probes.stderr)
    );
    assert!(text.contains("kfree_skb"), "{text}");

    let mut agent = Command::new("ip")
        .args(["netns", "exec", &node])
        .arg(u.binary())
        .args(["agent", "--duration", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = agent.stdout.take().unwrap();
    let stream = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut stderr = agent.stderr.take().unwrap();
    let messages = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Traffic through the node while it traces (it starts in well under 2 s).
    std::thread::sleep(Duration::from_millis(800));
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(lab.ping(a, &b.ip, 3), "pod to pod ping");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let messages = messages.join().unwrap();
    assert!(status.success(), "{status}: {messages}");
    let bytes = stream.join().unwrap().unwrap();
    let (header, mut r) =
        reader::from_reader(&bytes[..]).unwrap_or_else(|e| panic!("{e}: {messages}"));
    assert_eq!(header.calitrace_version, VERSION);
    assert!(
        header.interfaces.contains(&a.cali),
        "{:?}",
        header.interfaces
    );
    let (mut inputs, mut ended) = (0, false);
    while let Some(item) = r.next_item().unwrap_or_else(|p| panic!("{p}")) {
        match item {
            Item::Input(_) => inputs += 1,
            Item::End(_) => ended = true,
            Item::Fact(_) => {}
        }
    }
    assert!(ended, "the stream ends with its end frame");
    assert!(
        inputs >= 6,
        "three pings each way through {}: {inputs} events",
        a.cali
    );
}

#[test]
fn image_binary_stands_by_until_sigterm() {
    let u = Unpacked::new("standby");
    let lab = Lab::new(Mode::Direct).unwrap();
    let s = until_signal(
        &u.binary(),
        &lab.node(0).netns,
        &["--host-root", "/"],
        libc::SIGTERM,
    )
    .unwrap();
    assert_eq!(s.status.code(), Some(0), "{s:?}");
    assert!(s.stdout.contains("ip_forward"), "{s:?}");
}

/// ELF's e_machine.
fn machine(elf: &[u8]) -> u16 {
    u16::from_le_bytes(elf[0x12..0x14].try_into().unwrap())
}

/// `BIN ARGS` (through `qemu-aarch64-static` when `qemu`) in `netns`.
fn run_in(netns: &str, qemu: bool, bin: &Path, args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]);
    if qemu {
        c.arg("qemu-aarch64-static");
    }
    let out = c.arg(bin).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_arm64_image_runs_replay_and_doctor_as_the_amd64_one() {
    let arm = Unpacked::of("arm64", "arm64");
    let amd = Unpacked::new("amd64");
    assert_eq!(arm.config["architecture"], "arm64");
    assert_eq!(arm.config["os"], "linux");
    assert_eq!(
        arm.config["config"]["Entrypoint"],
        amd.config["config"]["Entrypoint"]
    );
    let elf = std::fs::read(arm.binary()).unwrap();
    assert_eq!(machine(&elf), 183, "EM_AARCH64");
    assert!(!has_interpreter(&elf), "the binary must be static");
    let lab = Lab::new(Mode::Direct).unwrap();
    let node = lab.node(0).netns.clone();
    let (ok, version, err) = run_in(&node, true, &arm.binary(), &["--version"]);
    assert!(ok, "{err}");
    assert_eq!(version.trim(), format!("calitrace {VERSION}"));

    // A recording of pod traffic, made live by the amd64 binary, replayed
    // by both.
    let rec = arm.dir.join("pings.calitrace");
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let mut trace = Command::new("ip")
        .args(["netns", "exec", &node])
        .arg(amd.binary())
        .args(["-o", "json", "--duration", "3", "-w"])
        .arg(&rec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(lab.ping(&a, &b.ip, 2));
    assert!(trace.wait().unwrap().success());
    let rec = rec.to_str().unwrap();
    let (ok, on_arm, err) = run_in(&node, true, &arm.binary(), &["replay", rec, "-o", "json"]);
    assert!(ok, "{err}");
    let (_, on_amd, _) = run_in(&node, false, &amd.binary(), &["replay", rec, "-o", "json"]);
    assert!(on_amd.contains(&a.ip), "{on_amd}");
    assert_eq!(on_arm, on_amd, "replay on arm64 says what it says on amd64");

    // doctor on a root of the test's making: IPv4 forwarding off there.
    let root = arm.dir.join("fake-root");
    std::fs::create_dir_all(root.join("proc/sys/net/ipv4")).unwrap();
    std::fs::write(root.join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
    let args = [
        "doctor",
        "-o",
        "json",
        "--host-root",
        root.to_str().unwrap(),
    ];
    let (_, arm_doctor, err) = run_in(&node, true, &arm.binary(), &args);
    let (_, amd_doctor, _) = run_in(&node, false, &amd.binary(), &args);
    assert!(
        arm_doctor.contains("\"id\":\"ip_forward\""),
        "{arm_doctor}{err}"
    );
    // qemu-user passes rtnetlink through but no NETLINK_NETFILTER socket:
    // under it (not on an arm64 node) doctor cannot list nf_tables, and
    // says so; that is the one difference allowed.
    let qemu_only = "; not read: nf_tables: Protocol not supported (os error 93)";
    assert_eq!(
        arm_doctor.replace(qemu_only, ""),
        amd_doctor,
        "doctor on arm64 says what it says on amd64"
    );
}
