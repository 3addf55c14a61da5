use super::format::{End, Header};
use super::reader::{self, Item, Problem};
use super::writer::Recorder;
use crate::events::Input;
use crate::facts::{Fact, NodeFacts};
use tracer_common::{Event, kind, l3};

fn header() -> Header {
    Header {
        calitrace_version: "test".into(),
        kernel: "6.18".into(),
        node: "n".into(),
        start_realtime_ns: 1,
        start_monotonic_ns: 2,
        event_size: tracer_common::EVENT_SIZE as u32,
        filter: String::new(),
        interfaces: vec!["eth0".into()],
        probes_attached: vec![],
        probes_unavailable: vec![],
        facts: NodeFacts {
            netns: 7,
            ..Default::default()
        },
    }
}

fn event(i: u64) -> Event {
    let mut e = Event {
        ts_ns: 1000 + i,
        kind: kind::TC,
        ifindex: 2,
        netns: 7,
        ..Default::default()
    };
    e.pkt.l3 = l3::IPV4;
    e.pkt.ip_id = i as u16;
    e
}

/// A recording of `n` events with a fact and a tick in between, and its items.
fn sample(n: u64) -> (Vec<u8>, Vec<Item>) {
    let dir = std::env::temp_dir().join(format!(
        "calitrace-rec-{}-{n}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let path = dir.with_extension("rec");
    let mut rec = Recorder::create(&path, &header()).unwrap();
    let mut items = Vec::new();
    for i in 0..n {
        let facts = if i == 1 {
            vec![Fact::Symbol {
                addr: 5,
                name: "nf_hook_slow".into(),
            }]
        } else {
            vec![]
        };
        items.extend(facts.iter().cloned().map(Item::Fact));
        let input = if i % 3 == 2 {
            Input::Tick(5000 + i)
        } else {
            Input::Event(event(i))
        };
        rec.record(&facts, &input).unwrap();
        items.push(Item::Input(input));
    }
    let end = End {
        lost: 3,
        ..Default::default()
    };
    rec.finish(&end).unwrap();
    items.push(Item::End(end));
    let bytes = std::fs::read(&path).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "recordings are private");
    std::fs::remove_file(&path).unwrap();
    (bytes, items)
}

/// A recording's bytes, for other modules' tests.
pub(crate) fn sample_bytes(n: u64) -> Vec<u8> {
    sample(n).0
}

fn read_all(bytes: &[u8]) -> Result<(Vec<Item>, Option<Problem>), String> {
    let (_, mut r) = reader::from_reader(bytes).map_err(|e| e.0)?;
    let mut items = Vec::new();
    loop {
        match r.next_item() {
            Ok(Some(i)) => items.push(i),
            Ok(None) => return Ok((items, None)),
            Err(p) => return Ok((items, Some(p))),
        }
    }
}

#[test]
fn roundtrip() {
    let (bytes, items) = sample(20);
    let (read, problem) = read_all(&bytes).unwrap();
    assert_eq!(problem, None);
    assert_eq!(read, items);
}

#[test]
fn foreign_empty_and_other_versions_are_refused() {
    assert!(read_all(b"").unwrap_err().contains("empty"));
    assert!(
        read_all(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0")
            .unwrap_err()
            .contains("not a calitrace recording")
    );
    let (mut bytes, _) = sample(2);
    bytes[8] = 9;
    assert!(read_all(&bytes).unwrap_err().contains("version 9"));
}

#[test]
fn every_truncation_is_reported_never_a_panic() {
    let (bytes, items) = sample(12);
    let (_, r) = reader::from_reader(&bytes[..]).unwrap();
    let body_start = r.offset() as usize;
    for cut in 0..bytes.len() {
        match read_all(&bytes[..cut]) {
            Err(e) => assert!(
                cut < body_start,
                "header error past the header at {cut}: {e}"
            ),
            Ok((read, problem)) => {
                assert!(read.len() <= items.len());
                assert_eq!(read[..], items[..read.len()], "what was read is right");
                match problem {
                    None => {
                        assert!(cut == body_start || read.len() < items.len() || cut == bytes.len())
                    }
                    Some(Problem::Truncated { frames, .. }) => {
                        assert_eq!(frames as usize, read.len())
                    }
                    Some(p) => panic!("cut at {cut} reported as {p}"),
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_are_caught() {
    let (bytes, items) = sample(30);
    let (_, r) = reader::from_reader(&bytes[..]).unwrap();
    let body_start = r.offset() as usize;
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let mut b = bytes.clone();
        let pos = (rand() as usize) % b.len();
        b[pos] ^= 1 << (rand() % 8);
        match read_all(&b) {
            Err(_) => {} // header damage: one clear error
            Ok((read, problem)) => {
                if pos >= body_start {
                    assert!(problem.is_some(), "a flip at {pos} went unnoticed");
                    assert!(read.len() < items.len());
                    assert_eq!(
                        read[..],
                        items[..read.len()],
                        "frames before the damage are intact"
                    );
                }
            }
        }
    }
}

#[test]
fn link_points_roundtrip_and_version_1_files_still_read() {
    let path = std::env::temp_dir().join(format!("calitrace-rec-nf-{}.rec", std::process::id()));
    let mut rec = Recorder::create(&path, &header()).unwrap();
    let mut nf = tracer_common::NfEvent {
        hook: 2,
        pf: 2,
        point: tracer_common::nf_point::AFTER,
        priority: 1,
        ..Default::default()
    };
    nf.ev = event(1);
    nf.ev.kind = kind::HOOK;
    rec.record(&[], &Input::Verdict(nf)).unwrap();
    rec.finish(&End::default()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        super::format::VERSION,
        "written as the current version"
    );
    let (items, problem) = read_all(&bytes).unwrap();
    assert_eq!(problem, None);
    assert_eq!(items[0], Item::Input(Input::Verdict(nf)));
    // Version 1 and 2 files have the same frames (without link points, and
    // without encapsulated packets).
    for version in [1, 2] {
        bytes[8] = version;
        assert_eq!(read_all(&bytes).unwrap().0.len(), 2, "version {version}");
    }
}

fn encap_event(i: u64) -> tracer_common::EncapEvent {
    let mut e = tracer_common::EncapEvent {
        ev: event(i),
        outer: tracer_common::OuterMeta {
            l3: l3::IPV4,
            proto: tracer_common::proto::UDP,
            encap: tracer_common::encap::VXLAN,
            sport: 40000 + i as u16,
            dport: 4789,
            len: 134,
            vni: 4096,
            ..Default::default()
        },
    };
    e.ev.kind = kind::TC_ENCAP;
    e.outer.src[..4].copy_from_slice(&[192, 168, 7, 1]);
    e.outer.dst[..4].copy_from_slice(&[192, 168, 7, 2]);
    e
}

/// A recording of plain and encapsulated tc events, and its bytes.
fn encap_sample() -> (Vec<u8>, Vec<Item>) {
    let path = std::env::temp_dir().join(format!(
        "calitrace-rec-encap-{}-{:?}.rec",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut rec = Recorder::create(&path, &header()).unwrap();
    let mut items = Vec::new();
    for i in 0..6 {
        let input = if i % 2 == 0 {
            Input::Encap(encap_event(i))
        } else {
            Input::Event(event(i))
        };
        rec.record(&[], &input).unwrap();
        items.push(Item::Input(input));
    }
    rec.finish(&End::default()).unwrap();
    items.push(Item::End(End::default()));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (bytes, items)
}

#[test]
fn encapsulated_packets_roundtrip_in_their_own_frames() {
    let (bytes, items) = encap_sample();
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 4, "version 4");
    let (read, problem) = read_all(&bytes).unwrap();
    assert_eq!(problem, None);
    assert_eq!(read, items);
    let (_, r) = reader::from_reader(&bytes[..]).unwrap();
    let first = r.offset() as usize;
    assert_eq!(bytes[first], super::format::frame::ENCAP);
    assert_eq!(
        u32::from_le_bytes(bytes[first + 1..first + 5].try_into().unwrap()) as usize,
        tracer_common::ENCAP_EVENT_SIZE,
        "the raw EncapEvent"
    );
    // Every cut is reported as a cut, never a panic or a wrong item.
    for cut in first..bytes.len() {
        let (got, problem) = read_all(&bytes[..cut]).unwrap();
        assert_eq!(got[..], items[..got.len()], "cut at {cut}");
        assert!(
            matches!(problem, None | Some(Problem::Truncated { .. })),
            "cut at {cut}: {problem:?}"
        );
    }
}

#[test]
fn encap_frames_of_the_wrong_size_are_corrupt() {
    let (bytes, _) = encap_sample();
    let (_, r) = reader::from_reader(&bytes[..]).unwrap();
    let head = bytes[..r.offset() as usize].to_vec();
    let encap = crate::events::encode_encap(&encap_event(1)).to_vec();
    for payload in [
        &encap[..tracer_common::EVENT_SIZE],
        &encap[..encap.len() - 1],
        &[encap.clone(), vec![0]].concat()[..],
    ] {
        let mut b = head.clone();
        super::format::encode_frame(&mut b, super::format::frame::ENCAP, payload);
        let (items, problem) = read_all(&b).unwrap();
        assert!(items.is_empty());
        match problem {
            Some(Problem::Corrupt { why, .. }) => assert_eq!(
                why,
                format!("encap frame of {} bytes", payload.len()),
                "one clear error"
            ),
            p => panic!("{} bytes read as {p:?}", payload.len()),
        }
    }
}

#[test]
fn the_fuzz_seed_corpus_still_reads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/replay_reader");
    let (mut encapsulated, mut compressed) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        compressed += usize::from(bytes.get(8) == Some(&5));
        match read_all(&bytes) {
            // A seed cut short is cut in its header or in a frame; the
            // others read to their end.
            Err(e) => assert!(
                name.contains("truncated") && e.contains("ends inside"),
                "{name}: {e}"
            ),
            Ok((items, problem)) => {
                assert!(!items.is_empty(), "{name}");
                match problem {
                    None => assert!(!name.contains("truncated"), "{name}"),
                    Some(Problem::Truncated { .. }) => {
                        assert!(name.contains("truncated"), "{name}")
                    }
                    Some(p) => panic!("{name}: {p}"),
                }
                encapsulated += items
                    .iter()
                    .filter(|i| matches!(i, Item::Input(Input::Encap(_))))
                    .count();
            }
        }
    }
    assert!(encapsulated > 0, "a seed has encapsulated packets");
    assert!(compressed > 0, "a seed is an agent's compressed stream");
}

/// A writer others can read back: an agent's stdout, in a test.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same items as `sample`, as an agent streams them (compressed).
fn stream_sample(n: u64) -> (Vec<u8>, Vec<Item>) {
    let out = Shared::default();
    let mut rec = Recorder::stream(
        Box::new(out.clone()),
        &header(),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let mut items = Vec::new();
    for i in 0..n {
        let input = if i % 3 == 2 {
            Input::Tick(5000 + i)
        } else {
            Input::Event(event(i))
        };
        rec.record(&[], &input).unwrap();
        items.push(Item::Input(input));
        if i % 7 == 6 {
            rec.flush().unwrap(); // as every 200 ms: a zstd block
        }
    }
    rec.finish(&End::default()).unwrap();
    items.push(Item::End(End::default()));
    let bytes = out.0.lock().unwrap().clone();
    (bytes, items)
}

#[test]
fn agent_streams_are_compressed_and_read_back() {
    let (bytes, items) = stream_sample(3000);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 5);
    let (read, problem) = read_all(&bytes).unwrap();
    assert_eq!(problem, None);
    assert_eq!(read, items);
    let (plain, _) = sample(3000);
    assert!(
        bytes.len() * 4 < plain.len(),
        "{} compressed, {} plain",
        bytes.len(),
        plain.len()
    );
    // What is flushed can be read before the stream ends.
    let out = Shared::default();
    let mut rec =
        Recorder::stream(Box::new(out.clone()), &header(), std::time::Duration::ZERO).unwrap();
    rec.record(&[], &Input::Event(event(1))).unwrap();
    let so_far = out.0.lock().unwrap().clone();
    let (read, problem) = read_all(&so_far).unwrap();
    assert_eq!(read, [Item::Input(Input::Event(event(1)))]);
    assert!(
        matches!(problem, Some(Problem::Truncated { .. })),
        "{problem:?}"
    );
}

#[test]
fn cut_or_damaged_compressed_streams_are_reported_never_a_panic() {
    let (bytes, items) = stream_sample(60);
    let (_, r) = reader::from_reader(&bytes[..]).unwrap();
    assert!(r.compressed());
    let body_start = r.offset() as usize;
    for cut in body_start..bytes.len() {
        let (read, problem) = read_all(&bytes[..cut]).unwrap();
        assert_eq!(read[..], items[..read.len()], "what was read is right");
        // Cut in the zstd stream's last checksum: all frames, then the cut.
        assert!(
            problem.is_some() || cut == body_start,
            "cut at {cut}: {problem:?}"
        );
    }
    let mut noticed = 0;
    for pos in body_start..bytes.len() {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[pos] ^= 1 << bit;
            let (read, problem) = read_all(&b).unwrap();
            // zstd's checksum: damage never passes for a clean stream
            // (a flip in bits the decoder does not use changes nothing).
            if problem.is_none() {
                assert_eq!(read, items, "a flip at {pos} went unnoticed");
            } else {
                noticed += 1;
            }
        }
    }
    let flips = 3 * (bytes.len() - body_start);
    assert!(
        noticed * 10 > flips * 9,
        "{noticed} of {flips} flips noticed"
    );
}
