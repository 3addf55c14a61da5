//! `--output json`: one JSON object per line.

use std::io::Write;

use super::View;
use crate::model::Record;

pub struct JsonView<W: Write> {
    out: W,
}

impl<W: Write> JsonView<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> View for JsonView<W> {
    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        match r {
            Record::Packet(p) => super::json_packet::write_packet(&mut self.out, p)?,
            _ => serde_json::to_writer(&mut self.out, r)?,
        }
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Stage, fixtures};

    #[test]
    fn drop_lines_carry_the_contract_fields() {
        let rec = Record::Drop(fixtures::ping_drop(
            Stage::Netfilter,
            "NETFILTER_DROP",
            Some(fixtures::legacy_forward()),
        ));
        let mut buf = Vec::new();
        JsonView::new(&mut buf).record(&rec).unwrap();
        let line = String::from_utf8(buf).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for f in [
            "ts_ns", "netns", "ifname", "src", "dst", "proto", "sport", "dport", "reason",
            "location", "stage",
        ] {
            assert!(v.get(f).is_some(), "missing {f} in {line}");
        }
        assert_eq!(v["type"], "drop");
        assert_eq!(v["sport"], serde_json::Value::Null);
        assert_eq!(v["stage"], "netfilter");
        assert_eq!(v["netfilter"]["backend"], "legacy");
        assert_eq!(v["netfilter"]["attribution"], "inferred");
        assert_eq!(v["netfilter"]["hook"], "FORWARD");
        assert_eq!(v["proto"], "icmp");
        assert!(v["netfilter"].get("table").is_some() && v["netfilter"].get("rule").is_some());
    }
}
