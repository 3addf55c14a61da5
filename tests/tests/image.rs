//! The container image of `cargo xtask image` (`cargo xtask test` builds it
//! first and passes it as `CALITRACE_IMAGE`): unpacked as the OCI layout it
//! is (index.json -> manifest -> config and the one layer), its content
//! checked, and its `calitrace` run in a lab node: `probes`, a short `agent`
//! whose stdout is a recording stream, and `standby` until SIGTERM.

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

/// The archive unpacked in a directory of its own (removed on drop).
struct Unpacked {
    dir: PathBuf,
    index: Value,
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
        let dir =
            std::env::temp_dir().join(format!("calitrace-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("layout")).unwrap();
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let mut u = Unpacked {
            dir,
            index: Value::Null,
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
        let manifest = u.blob_json(&manifests[0]);
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
