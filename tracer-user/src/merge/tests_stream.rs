//! The merge fed as `calitrace cluster` feeds it: each node's agent stream
//! read, and its stage run, by [`read_staged`], the way a reading thread
//! does; the same records as with the stages inside the merge.

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracer_common::{Event, dir, kind};

use super::Cluster;
use super::stage::{Batches, FromNode, Staged, read_staged};
use super::tests::{CALI, ETH0, MS, NETNS, diagnoses, header, ping, tc, tick};
use crate::events::Input;
use crate::facts::Fact;
use crate::model::{Code, Record};
use crate::pipeline::Options;
use crate::recording::format::{End, Header};
use crate::recording::reader::Item;
use crate::recording::writer::Recorder;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The agent stream of a node's items (facts go with the input after them).
fn stream_of(h: &Header, items: &[Item]) -> Vec<u8> {
    let out = Shared::default();
    let mut rec = Recorder::stream(Box::new(out.clone()), h, Duration::from_secs(3600)).unwrap();
    let mut facts = Vec::new();
    for item in items {
        match item {
            Item::Fact(f) => facts.push(f.clone()),
            Item::Input(i) => rec.record(&std::mem::take(&mut facts), i).unwrap(),
            Item::End(_) => {}
        }
    }
    rec.finish(&End::default()).unwrap();
    out.0.lock().unwrap().clone()
}

/// 300 pings from A to B (more than a batch of the stream), every tenth
/// lost between the nodes, the last dropped by B's netfilter; B lost
/// events once.
fn items() -> [Vec<Item>; 2] {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    b.push(Item::Fact(Fact::Symbol {
        addr: 0xffff_0000,
        name: "nf_hook_slow".into(),
    }));
    for seq in 0..300u16 {
        let (ts, p) = (u64::from(seq) * 2 * MS, ping(0, seq, 84));
        a.push(tc(0, ts, CALI, dir::INGRESS, p));
        a.push(tc(0, ts + 10_000, ETH0, dir::EGRESS, p));
        if seq % 10 != 3 {
            b.push(tc(1, ts + 50_000, ETH0, dir::INGRESS, p));
        }
    }
    b.push(Item::Input(Input::Event(Event {
        ts_ns: 600 * MS,
        kind: kind::DROP,
        reason: 5,
        location: 0xffff_0000,
        ifindex: ETH0,
        netns: NETNS[1],
        pkt: ping(0, 299, 84),
        ..Default::default()
    })));
    // Long after the sends: they are still judged.
    b.push(Item::Fact(Fact::Lost {
        ts_ns: 2_900 * MS,
        lost: 2,
    }));
    a.push(tick(3_000 * MS));
    b.push(tick(3_000 * MS));
    [a, b]
}

fn headers() -> [Header; 2] {
    let mut b = header(1, false, &["eth0", "cali1"]);
    b.facts.reasons.insert(5, "NETFILTER_DROP".into());
    [header(0, false, &["eth0", "cali1"]), b]
}

fn names() -> [String; 2] {
    ["node-a".to_string(), "node-b".to_string()]
}

/// Node A's stream, then node B's, with the stages inside the merge.
fn inside(opts: &Options) -> Vec<Record> {
    let mut c = Cluster::new(&names(), opts.clone());
    let mut out = Vec::new();
    for (n, h) in headers().into_iter().enumerate() {
        c.start(n, h, &mut out);
    }
    for (n, items) in items().into_iter().enumerate() {
        for item in items {
            c.item(n, item, &mut out);
        }
        c.ended(n, None, &mut out);
    }
    c.finish(&mut out);
    out
}

/// The same streams, each read as a reading thread reads it.
fn beside(opts: &Options) -> Vec<Record> {
    let mut c = Cluster::new(&names(), opts.clone());
    let (stage_opts, batches) = (c.stage_options(), Batches::default());
    let read: Vec<Vec<FromNode>> = headers()
        .iter()
        .zip(items())
        .map(|(h, items)| {
            let mut got = Vec::new();
            read_staged(
                Cursor::new(stream_of(h, &items)),
                &stage_opts,
                &batches,
                // Read one after the other: each alone at its gate.
                crate::merge::gate::Gate::new(1).seat(0),
                |m| {
                    got.push(m);
                    true
                },
            );
            got
        })
        .collect();
    let mut out = Vec::new();
    let mut staged_batches = 0;
    for (n, msgs) in read.iter().enumerate() {
        if let Some(FromNode::Start(h)) = msgs.first() {
            c.start_staged(n, (**h).clone(), &mut out);
        }
    }
    for (n, msgs) in read.into_iter().enumerate() {
        for m in msgs {
            match m {
                FromNode::Start(_) => {}
                FromNode::Staged(mut items) => {
                    staged_batches += 1;
                    assert!(items.len() < 1024, "{} staged at once", items.len());
                    c.staged(n, items.drain(..), &mut out);
                    batches.put(items);
                }
                FromNode::Ended(why) => c.ended(n, why, &mut out),
            }
        }
    }
    assert!(staged_batches > 2, "the streams came in several batches");
    c.finish(&mut out);
    out
}

#[test]
fn stages_on_the_reading_threads_give_the_same_records() {
    for packets in [false, true] {
        let opts = Options {
            packets,
            ..Options::default()
        };
        let (a, b) = (inside(&opts), beside(&opts));
        let codes: Vec<Code> = diagnoses(&a).iter().map(|d| d.code).collect();
        assert!(
            codes.contains(&Code::UnderlayDrop) && codes.contains(&Code::NetfilterDrop),
            "{codes:?}"
        );
        let drop = a.iter().find_map(|r| match r {
            Record::Drop(d) => Some(d),
            _ => None,
        });
        assert_eq!(drop.map(|d| d.journey.len()), Some(3), "{drop:#?}");
        assert_eq!(a, b, "packets shown: {packets}");
    }
}

#[test]
fn a_staged_item_stays_small() {
    // Batches of them cross to the merging thread, and wait there.
    assert!(std::mem::size_of::<Staged>() <= 128);
}
