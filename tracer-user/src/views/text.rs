//! `--output text`: one readable line per record.

use std::io::Write;
use std::net::IpAddr;

use super::View;
use crate::model::{Diagnosis, DropRecord, Endpoint, Journey, PodRef, Record, StepKind, path_line};

pub struct TextView<W: Write> {
    out: W,
    first_ts: Option<u64>,
    /// The namespace traced in (from the start record): interfaces of
    /// others are a pod's.
    node_netns: Option<u32>,
}

impl<W: Write> TextView<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            first_ts: None,
            node_netns: None,
        }
    }
}

/// `[backend legacy, table filter, hook FORWARD; inferred]`
/// `DROP <flow> <packet> at <place> [<kernel>; <table facts>; <how known>]`,
/// then the way it came (the model's journey, implied points in brackets).
fn drop_line(d: &DropRecord, clock: &str, node_netns: Option<u32>) -> String {
    let journey = Journey::of_drop(d);
    let place = journey
        .drop
        .as_ref()
        .expect("a drop's journey has its place");
    let mut s = format!(
        "{clock} {} {} {} at {} [{}",
        place.verb(),
        d.flow,
        d.detail,
        place.label(),
        place.kernel()
    );
    if let Some(nf) = &d.netfilter {
        s.push_str(&format!("; {}; {}", nf.facts(), nf.attribution));
    }
    s.push(']');
    if let Some(b) = d.benign {
        s.push_str(&format!(" [benign {b}: {}]", b.what()));
    }
    if !d.journey.is_empty() {
        let mut steps = journey.steps(node_netns);
        steps.retain(|s| s.kind != StepKind::Failed);
        s.push_str(&format!(" after {}", path_line(&steps)));
    }
    s
}

pub fn format(r: &Record, clock: &str, node_netns: Option<u32>) -> String {
    match r {
        Record::Start(s) => format!(
            "calitrace on {} (kernel {}), netns {}: {} interface(s) [{}], filter: {}",
            s.node,
            s.kernel,
            s.netns,
            s.interfaces.len(),
            s.interfaces.join(" "),
            if s.filter.is_empty() {
                "none"
            } else {
                &s.filter
            }
        ),
        Record::Packet(p) => {
            let mut line = format!(
                "{clock} {:<14} {:<7} {} {}",
                p.ifname.as_deref().unwrap_or("?"),
                p.dir.as_str(),
                p.flow,
                p.detail
            );
            if let Some(o) = &p.outer {
                line.push_str(&format!(" in {o}"));
            }
            line
        }
        Record::Drop(d) => drop_line(d, clock, node_netns),
        Record::Verdict(v) => format!(
            "{clock} VERDICT {} {}: {} {} {} {}: {}",
            v.flow,
            v.detail,
            v.netfilter.backend.map_or("?", |b| b.as_str()),
            v.netfilter.table.as_deref().unwrap_or("?"),
            v.netfilter.chain.as_deref().unwrap_or(""),
            v.netfilter.hook.map_or("?", |h| h.as_str()),
            v.verdict
        ),
        Record::Diagnosis(d) => format!(
            "DIAGNOSIS {} (x{}): {}{}\n    hint: {}",
            d.code,
            d.count,
            d.summary,
            diagnosis_pods(d),
            d.hint
        ),
        Record::Stats(s) => {
            let ev: Vec<String> = s.events.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let un: Vec<String> = s
                .probes_unavailable
                .iter()
                .map(|u| format!("{} ({})", u.name, u.reason))
                .collect();
            let traced = s
                .interfaces
                .map(|n| format!(", {n} interface(s) traced"))
                .unwrap_or_default();
            let benign = if s.benign.is_empty() {
                String::new()
            } else {
                let b: Vec<String> = s.benign.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(", benign drops {}", b.join(" "))
            };
            format!(
                "stats: {:.1}s, events {}, lost {}{benign}, {} probe(s) attached{traced}, unavailable: {}",
                s.duration_s,
                ev.join(" "),
                s.lost,
                s.probes_attached.len(),
                if un.is_empty() {
                    "none".into()
                } else {
                    un.join("; ")
                }
            )
        }
    }
}

impl<W: Write> View for TextView<W> {
    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        if let Record::Start(s) = r {
            self.node_netns = Some(s.netns);
        }
        let clock = r.ts_ns().map_or_else(String::new, |ts| {
            crate::time::relative(ts, *self.first_ts.get_or_insert(ts))
        });
        let node = match r {
            Record::Start(_) => None,
            _ => r.node(),
        };
        match node {
            Some(n) => writeln!(self.out, "{n} {}", format(r, &clock, self.node_netns)),
            None => writeln!(self.out, "{}", format(r, &clock, self.node_netns)),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A flow diagnosis's pods, where known (the summary names addresses).
fn diagnosis_pods(d: &Diagnosis) -> String {
    if d.src_pod.is_none() && d.dst_pod.is_none() {
        return String::new();
    }
    fn end(addr: Option<IpAddr>, pod: Option<&PodRef>) -> Endpoint<'_> {
        Endpoint {
            addr,
            port: None,
            pod,
        }
    }
    format!(
        "\n    pods: {} > {}",
        end(d.src, d.src_pod.as_ref()),
        end(d.dst, d.dst_pod.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{POD_A, POD_B, icmp_flow, ping_detail, vxlan_outer};
    use crate::model::{Dir, PacketRecord};

    fn lines(records: &[Record]) -> Vec<String> {
        let mut buf = Vec::new();
        let mut v = TextView::new(&mut buf);
        for r in records {
            v.record(r).unwrap();
        }
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn flow_diagnoses_name_their_pods_where_known() {
        let pod = |n: &str| PodRef {
            namespace: "shop".into(),
            name: n.into(),
        };
        let mut d = Diagnosis {
            summary: "10.244.1.10 > 10.244.2.10 never arrived".into(),
            hint: "look".into(),
            src: Some(POD_A.parse().unwrap()),
            dst: Some(POD_B.parse().unwrap()),
            ..Diagnosis::default()
        };
        assert_eq!(lines(&[Record::Diagnosis(d.clone())]).len(), 2);
        d.src_pod = Some(pod("frontend-0"));
        d.dst_pod = Some(pod("backend-0"));
        let l = lines(&[Record::Diagnosis(d)]);
        assert_eq!(
            l[1],
            format!("    pods: {POD_A} (shop/frontend-0) > {POD_B} (shop/backend-0)")
        );
        assert!(l[2].starts_with("    hint:"), "{l:?}");
    }

    #[test]
    fn benign_drops_are_marked_and_hidden_unless_asked() {
        use crate::model::fixtures::ping_drop;
        use crate::model::{Benign, Stage, Stats};
        use crate::views::HideBenign;
        let mut benign = ping_drop(Stage::Other, "NO_TX_TARGET", None);
        benign.benign = Some(Benign::LinkLocal);
        let real = ping_drop(Stage::Other, "NO_TX_TARGET", None);
        let mut stats = Stats::default();
        stats.benign.insert("NO_TX_TARGET".into(), 1);
        let records = [
            Record::Drop(benign),
            Record::Drop(real),
            Record::Stats(stats),
        ];
        let all = lines(&records);
        assert!(
            all[0].ends_with("[benign link_local: link-local or multicast housekeeping]"),
            "{}",
            all[0]
        );
        assert!(!all[1].contains("benign"), "{}", all[1]);
        assert!(
            all[2].contains("lost 0, benign drops NO_TX_TARGET=1,"),
            "{}",
            all[2]
        );
        /// Keeps what it is shown.
        struct Kept(std::rc::Rc<std::cell::RefCell<Vec<Record>>>);
        impl View for Kept {
            fn record(&mut self, r: &Record) -> std::io::Result<()> {
                self.0.borrow_mut().push(r.clone());
                Ok(())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let kept = std::rc::Rc::default();
        let mut hidden = HideBenign(Box::new(Kept(std::rc::Rc::clone(&kept))));
        for r in &records {
            hidden.record(r).unwrap();
        }
        assert_eq!(
            *kept.borrow(),
            records[1..],
            "the benign drop is left out, nothing else"
        );
    }

    #[test]
    fn cluster_lines_name_their_node_and_the_tunnel() {
        let mut packet = Record::Packet(PacketRecord {
            node: None,
            ts_ns: 2_000_000_000,
            netns: 1,
            ifname: Some("eth0".into()),
            dir: Dir::Egress,
            flow: icmp_flow(POD_A, POD_B),
            detail: ping_detail(),
            outer: Some(vxlan_outer()),
        });
        let single = lines(std::slice::from_ref(&packet));
        assert_eq!(
            single,
            [
                "[   0.000000] eth0           egress  10.244.1.10 > 10.244.2.10 icmp ttl 63 len 84 in VXLAN 192.168.7.1 > 192.168.7.2:4789 vni 4096 len 134"
            ]
        );
        packet.set_node("node-a");
        assert!(lines(&[packet])[0].starts_with("node-a [   0.000000] eth0"));
    }

    #[test]
    fn a_drop_line_says_where_how_it_is_known_and_the_way_it_came() {
        use crate::model::fixtures::{iface_hop, legacy_forward, ping_drop};
        use crate::model::{Family, Hook, Hop, LinkPoint, NetfilterInfo, Stage};
        let link = |hook, point| Hop {
            netfilter: Some(NetfilterInfo {
                hook: Some(hook),
                family: Some(Family::Ipv4),
                ..Default::default()
            }),
            dir: Dir::Netfilter,
            ifname: None,
            point: Some(point),
            ..iface_hop("cali1a2b3c4d", Dir::Ingress)
        };
        let mut nf = legacy_forward();
        nf.table = Some("filter".into());
        nf.chain = Some("FORWARD".into());
        nf.rule = Some("policy DROP".into());
        let mut d = ping_drop(Stage::Netfilter, "NETFILTER_DROP", Some(nf));
        d.ifname = Some("cali1a2b3c4d".into());
        d.journey = vec![
            iface_hop("cali1a2b3c4d", Dir::Ingress),
            link(Hook::Prerouting, LinkPoint::Entry),
            link(Hook::Prerouting, LinkPoint::Exit),
            link(Hook::Forward, LinkPoint::Entry),
        ];
        let line = &lines(&[Record::Drop(d)])[0];
        let (place, rest) = line.split_once(" [").unwrap();
        assert!(
            place.ends_with("ttl 63 len 84 at FORWARD (legacy filter: DROP, rule policy DROP)"),
            "{line}"
        );
        let (facts, path) = rest.split_once("] after ").unwrap();
        assert_eq!(
            facts,
            "NETFILTER_DROP in nf_hook_slow (stage netfilter), dev cali1a2b3c4d; \
             backend legacy, table filter, chain FORWARD, hook FORWARD, rule policy DROP; inferred"
        );
        assert_eq!(
            path,
            "cali1a2b3c4d ingress -> PREROUTING entry -> PREROUTING exit -> \
             [route lookup] -> FORWARD entry"
        );
    }
}
