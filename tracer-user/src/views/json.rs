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
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Attribution, Backend, Detail, DropRecord, Flow, Hook, NetfilterInfo, Proto, Stage,
    };

    #[test]
    fn drop_lines_carry_the_contract_fields() {
        let rec = Record::Drop(DropRecord {
            ts_ns: 5,
            netns: 4026531840,
            ifname: Some("eth0".into()),
            flow: Flow {
                src: Some("10.244.1.10".into()),
                dst: Some("10.244.2.10".into()),
                proto: Some(Proto::Icmp),
                sport: None,
                dport: None,
            },
            reason: "NETFILTER_DROP".into(),
            reason_from_location: false,
            location: Some("nf_hook_slow".into()),
            stage: Stage::Netfilter,
            netfilter: Some(NetfilterInfo {
                backend: Some(Backend::Legacy),
                table: None,
                chain: None,
                hook: Some(Hook::Forward),
                rule: None,
                attribution: Attribution::Inferred,
                ..Default::default()
            }),
            detail: Detail {
                ttl: Some(63),
                ip_id: Some(1),
                len: 84,
                icmp: None,
                arp: None,
            },
            pod: None,
            journey: vec![],
        });
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
