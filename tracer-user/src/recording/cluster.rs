//! A cluster recording: every node's agent stream, stored as it arrived, so
//! that replay rebuilds the same merged view.
//!
//! ```text
//! file   := magic version:u16le header_len:u32le header_json frame*
//! magic  := "CALICLU\0"
//! header := {"nodes": [NAME, ...]}
//! frame  := kind:u8 len:u32le crc32:u32le payload[len]   (as in a node recording)
//! ```
//! Frame kinds: STREAM (node:u16le, then the next bytes of that node's
//! recording stream), GONE (node:u16le, then JSON: why its stream ended, or
//! null).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::format::{self, crc, encode_frame};

pub const MAGIC: &[u8; 8] = b"CALICLU\0";
pub const VERSION: u16 = 1;

mod kind {
    pub const STREAM: u8 = 1;
    pub const GONE: u8 = 2;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterHeader {
    pub nodes: Vec<String>,
}

/// Whether the file starts like a cluster recording.
pub fn is_cluster_recording(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == MAGIC
}

pub struct ClusterWriter {
    out: BufWriter<File>,
    buf: Vec<u8>,
}

impl ClusterWriter {
    pub fn create(path: &Path, header: &ClusterHeader) -> Result<ClusterWriter> {
        let file = super::writer::create_private(path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let json = serde_json::to_vec(header)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        Ok(ClusterWriter {
            out,
            buf: Vec::new(),
        })
    }

    fn frame(&mut self, kind: u8, node: usize, data: &[u8]) -> Result<()> {
        let mut payload = Vec::with_capacity(2 + data.len());
        payload.extend_from_slice(&(node as u16).to_le_bytes());
        payload.extend_from_slice(data);
        self.buf.clear();
        encode_frame(&mut self.buf, kind, &payload);
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    /// The next bytes of node `node`'s stream.
    pub fn stream(&mut self, node: usize, bytes: &[u8]) -> Result<()> {
        self.frame(kind::STREAM, node, bytes)
    }

    /// Node `node`'s stream ended, `why` where it was not a normal end.
    pub fn gone(&mut self, node: usize, why: Option<&str>) -> Result<()> {
        self.frame(kind::GONE, node, &serde_json::to_vec(&why)?)
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data().ok();
        Ok(())
    }
}

/// One node's part of a cluster recording.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStream {
    pub bytes: Vec<u8>,
    /// Why its stream ended, where it was not a normal end.
    pub gone: Option<Option<String>>,
}

/// Reads a cluster recording into each node's stream. A truncated end keeps
/// what came before (a cluster view stopped hard); a corrupt frame is an
/// error.
pub fn read(path: &Path) -> Result<(ClusterHeader, Vec<NodeStream>)> {
    let mut r = std::io::BufReader::new(
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut fixed = [0u8; 14];
    r.read_exact(&mut fixed)
        .with_context(|| format!("{}: too short to be a cluster recording", path.display()))?;
    if &fixed[..8] != MAGIC {
        bail!("{}: not a calitrace cluster recording", path.display());
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if version != VERSION {
        bail!(
            "{}: cluster recording version {version}, this calitrace reads {VERSION}",
            path.display()
        );
    }
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]);
    if len > format::MAX_HEADER {
        bail!("{}: corrupt header length {len}", path.display());
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)
        .with_context(|| format!("{}: the recording ends inside its header", path.display()))?;
    let header: ClusterHeader = serde_json::from_slice(&json)
        .with_context(|| format!("{}: corrupt header", path.display()))?;
    let mut nodes = vec![NodeStream::default(); header.nodes.len()];
    while let Some((kind, payload)) = next_frame(&mut r, path)? {
        let (node, data) = node_of(&payload, nodes.len(), path)?;
        match kind {
            kind::STREAM => nodes[node].bytes.extend_from_slice(data),
            kind::GONE => {
                nodes[node].gone = Some(serde_json::from_slice(data).unwrap_or(None));
            }
            k => bail!("{}: unknown frame kind {k}", path.display()),
        }
    }
    Ok((header, nodes))
}

/// The next frame, `None` at the end (or at a truncated last frame).
fn next_frame(r: &mut impl Read, path: &Path) -> Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; format::FRAME_OVERHEAD];
    if r.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let kind = head[0];
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let sum = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    if len > format::MAX_FRAME {
        bail!("{}: corrupt frame length {len}", path.display());
    }
    let mut payload = vec![0u8; len as usize];
    if r.read_exact(&mut payload).is_err() {
        return Ok(None);
    }
    if crc(kind, &payload) != sum {
        bail!("{}: corrupt frame (checksum)", path.display());
    }
    Ok(Some((kind, payload)))
}

fn node_of<'a>(payload: &'a [u8], nodes: usize, path: &Path) -> Result<(usize, &'a [u8])> {
    if payload.len() < 2 {
        bail!("{}: corrupt frame (no node)", path.display());
    }
    let node = u16::from_le_bytes([payload[0], payload[1]]) as usize;
    if node >= nodes {
        bail!(
            "{}: frame of node {node}, the header names {nodes}",
            path.display()
        );
    }
    Ok((node, &payload[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_come_back_per_node() {
        let dir = std::env::temp_dir().join(format!("calitrace-clu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.calitrace");
        let h = ClusterHeader {
            nodes: vec!["a".into(), "b".into()],
        };
        let mut w = ClusterWriter::create(&path, &h).unwrap();
        w.stream(0, b"hello ").unwrap();
        w.stream(1, b"other").unwrap();
        w.stream(0, b"world").unwrap();
        w.gone(1, Some("exit status 3")).unwrap();
        w.finish().unwrap();
        assert!(is_cluster_recording(&path));
        let (back, nodes) = read(&path).unwrap();
        assert_eq!(back, h);
        assert_eq!(nodes[0].bytes, b"hello world");
        assert_eq!(nodes[0].gone, None);
        assert_eq!(nodes[1].gone, Some(Some("exit status 3".into())));

        // Cut in the last frame: what came before stays.
        let all = std::fs::read(&path).unwrap();
        std::fs::write(&path, &all[..all.len() - 3]).unwrap();
        let (_, nodes) = read(&path).unwrap();
        assert_eq!(nodes[0].bytes, b"hello world");
        assert_eq!(nodes[1].gone, None);

        // A flipped byte inside a frame is refused.
        let mut bad = all.clone();
        let at = all.len() - 20;
        bad[at] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
