//! `calitrace replay CLUSTER-FILE` and `calitrace replay A B ...`: the
//! cluster view again, from a cluster recording or from several single-node
//! recordings (made with `trace -w` on each node), merged as live.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::output::{self, Source};
use super::usage;
use crate::cli::ReplayArgs;
use crate::filter::Filter;
use crate::merge::Cluster;
use crate::merge::interleave::Interleave;
use crate::pipeline::Options;
use crate::recording::cluster;
use crate::recording::reader::{self, Reader};
use crate::views::{Control, Sink, Status};

/// One node's recorded stream, and how its agent ended if it did not end well.
struct Recorded {
    name: String,
    bytes: Vec<u8>,
    gone: Option<String>,
}

pub fn run(files: &[PathBuf], args: &ReplayArgs, filter: &Filter) -> Result<()> {
    let recorded = if files.len() == 1 {
        from_cluster_file(&files[0])?
    } else {
        from_node_files(files)?
    };
    let from = Source::MergedReplay { file: &files[0] };
    let output = output::choose(args.view.output, from)?;
    let names: Vec<String> = recorded.iter().map(|r| r.name.clone()).collect();
    let compiled = filter.compile().map_err(|e| usage(e.to_string()))?;
    let mut cluster = Cluster::new(
        &names,
        Options {
            packets: !args.view.drops_only,
            verdicts: args.view.verdicts,
            filter: (!filter.is_match_all()).then_some(compiled),
            ..Options::default()
        },
    );
    let mut sink = output::open_sink(output, from, args.view.all_drops)?;
    let mut out = Vec::new();
    let mut readers = Vec::new();
    let mut broken = Vec::new();
    for (n, r) in recorded.iter().enumerate() {
        match reader::from_reader(Cursor::new(r.bytes.clone())) {
            Ok((header, rd)) => {
                cluster.start(n, header, &mut out);
                readers.push(rd);
            }
            Err(e) => {
                broken.push((n, e.0));
                readers.push(empty_reader());
            }
        }
    }
    for (n, why) in broken {
        cluster.ended(n, Some(why), &mut out);
    }
    let mut streams = Interleave::new(readers);
    while let Some((n, item)) = streams.next(|n, ts| cluster.to_common(n, ts)) {
        cluster.item(n, item, &mut out);
        if out.len() > 4096 && !sink.records(&std::mem::take(&mut out))? {
            return Ok(());
        }
    }
    for (n, r) in recorded.iter().enumerate() {
        let why = streams.problems[n]
            .as_ref()
            .map(|p| p.to_string())
            .or_else(|| r.gone.clone());
        cluster.ended(n, why, &mut out);
    }
    cluster.finish(&mut out);
    sink.records(&out)?;
    sink.flush()?;
    wait_for_quit(sink.as_mut(), &cluster);
    Ok(())
}

/// A reader over an empty recording, for a node whose stream never began.
fn empty_reader() -> Reader<Cursor<Vec<u8>>> {
    let header = crate::recording::format::Header {
        calitrace_version: String::new(),
        kernel: String::new(),
        node: String::new(),
        start_realtime_ns: 0,
        start_monotonic_ns: 0,
        event_size: tracer_common::EVENT_SIZE as u32,
        filter: String::new(),
        interfaces: vec![],
        probes_attached: vec![],
        probes_unavailable: vec![],
        facts: Default::default(),
    };
    let mut bytes = Vec::new();
    let json = serde_json::to_vec(&header).expect("a header serializes");
    bytes.extend_from_slice(crate::recording::format::MAGIC);
    bytes.extend_from_slice(&crate::recording::format::VERSION.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    reader::from_reader(Cursor::new(bytes))
        .expect("an empty recording reads")
        .1
}

fn from_cluster_file(path: &Path) -> Result<Vec<Recorded>> {
    let (header, nodes) = cluster::read(path)?;
    Ok(header
        .nodes
        .into_iter()
        .zip(nodes)
        .map(|(name, s)| Recorded {
            name,
            bytes: s.bytes,
            gone: s.gone.flatten(),
        })
        .collect())
}

/// Single-node recordings, named by their node (by their file where two
/// nodes share a name).
fn from_node_files(files: &[PathBuf]) -> Result<Vec<Recorded>> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let (header, _) = reader::from_reader(Cursor::new(&bytes[..]))
            .map_err(|e| usage(format!("{}: {}", f.display(), e.0)))?;
        out.push(Recorded {
            name: header.node,
            bytes,
            gone: None,
        });
    }
    let names: Vec<String> = out.iter().map(|r| r.name.clone()).collect();
    for (r, f) in out.iter_mut().zip(files) {
        if names.iter().filter(|n| **n == r.name).count() > 1 {
            r.name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string());
        }
    }
    Ok(out)
}

/// The TUI stays on the finished replay until the user quits.
fn wait_for_quit(sink: &mut dyn Sink, cluster: &Cluster) {
    let status = Status {
        finished: true,
        nodes: cluster.nodes(),
        ..Status::default()
    };
    sink.status(&status);
    loop {
        match sink.control() {
            Some(Control::Quit) => return,
            Some(_) => {}
            None if !sink.interactive() => return,
            None => std::thread::sleep(std::time::Duration::from_millis(30)),
        }
    }
}
