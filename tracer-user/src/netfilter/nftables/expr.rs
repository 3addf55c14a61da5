//! A rule's expressions back into the text `nft list` prints. A small
//! register tracker remembers what each load left where, so that a later
//! `cmp` prints as `ip saddr 10.0.0.0/8` (see [`super::compare`]); the
//! protocol tests nft adds for a header it loads (`meta l4proto tcp` before
//! `tcp dport`, `meta nfproto ipv4` before `ip saddr` in an inet table) are
//! left out as nft leaves them out. `iptables-nft` keeps what it cannot
//! translate as xtables `match` / `target` expressions: `-m comment` becomes
//! the rule's comment, `conntrack --ctstate` and `MARK` are written as nft
//! translates them, others as `xt match "NAME"`.

use std::collections::HashMap;

use super::compare::{Cmp, Operand, comparison_text, range_text};
use super::message::{
    NFTA_DATA_VALUE, attr, counters, data_verdict, string_attr, u32_attr, value_attr,
};
use super::value::{Kind, base_name, verdict_text};
use crate::kernel::netlink::attrs;
use crate::netfilter::inventory::{Counters, Family, Rule, Verdict};
use crate::netfilter::text::proto_name;
use crate::netfilter::xt_ext::{CtState, RejectWith, SetMark};
use crate::netfilter::xtables::target_verdict;

const NFT_REG_VERDICT: u32 = 0;

/// Turns a rule's expressions into text, verdict, counters and comment.
pub(super) struct Decoder {
    family: Family,
    regs: HashMap<u32, Operand>,
    parts: Vec<String>,
    verdict: Option<Verdict>,
    counters: Option<Counters>,
    /// What a `reject` (or an xt REJECT target) sends back.
    reject_with: Option<RejectWith>,
    pub(super) comment: Option<String>,
    /// Transport protocol the rule compared earlier, to name ports `tcp dport`.
    l4: Option<String>,
    /// For inet tables: the layer 3 protocol the rule compared earlier.
    l3: Option<Family>,
    /// Where in `parts` the `meta l4proto` / `meta nfproto` test is that a
    /// later load of that header makes implied (and nft leaves out).
    l4_test: Option<usize>,
    l3_test: Option<usize>,
    /// The last part was `NAME >= VALUE`: a `<=` on the same makes a range.
    at_least: Option<(String, Kind, Vec<u8>)>,
}

impl Decoder {
    pub(super) fn new(family: Family) -> Self {
        Decoder {
            family,
            regs: HashMap::new(),
            parts: vec![],
            verdict: None,
            counters: None,
            reject_with: None,
            comment: None,
            l4: None,
            l3: None,
            l4_test: None,
            l3_test: None,
            at_least: None,
        }
    }

    fn load(&mut self, dreg: Option<u32>, name: String, kind: Kind) {
        if let Some(r) = dreg {
            self.regs.insert(r, Operand::loaded(name, kind));
        }
    }

    /// Leaves out a protocol test that a header load has made implied.
    fn implied(&mut self, test: Option<usize>) {
        if let Some(part) = test.and_then(|i| self.parts.get_mut(i)) {
            part.clear();
        }
    }

    fn terminal(&mut self, text: &str, verdict: Verdict) {
        self.parts.push(text.to_string());
        self.verdict = Some(verdict);
    }

    pub(super) fn expression(&mut self, name: &str, d: &[u8]) {
        if name != "cmp" {
            self.at_least = None;
        }
        match name {
            "payload" => self.payload(d),
            "meta" => self.meta(d),
            "ct" => self.ct(d),
            "cmp" => self.cmp(d),
            "range" => self.range(d),
            "bitwise" => self.bitwise(d),
            "lookup" => self.lookup(d),
            "immediate" => self.immediate(d),
            "counter" => {
                self.counters = counters(d);
                self.parts.push("counter".into());
            }
            "match" => self.xt_match(d),
            "target" => self.xt_target(d),
            "reject" => {
                // NFTA_REJECT_TYPE 1 (be32), NFTA_REJECT_ICMP_CODE 2 (u8)
                let code = attr(attrs(d), 2)
                    .and_then(|c| c.first().copied())
                    .unwrap_or(0);
                self.reject_with = u32_attr(d, 1).and_then(|ty| {
                    RejectWith::from_expr(ty, code, self.network() == Some(Family::Ipv6))
                });
                let text = self
                    .reject_with
                    .map_or_else(|| "reject".to_string(), RejectWith::nft_text);
                self.terminal(&text, Verdict::Reject)
            }
            "queue" => self.terminal("queue", Verdict::Queue),
            "nat" => {
                // NFTA_NAT_TYPE: NFT_NAT_SNAT 0, NFT_NAT_DNAT 1
                let kind = if u32_attr(d, 1) == Some(1) {
                    "dnat"
                } else {
                    "snat"
                };
                self.terminal(kind, Verdict::Other(kind.into()));
            }
            "masq" => self.terminal("masquerade", Verdict::Other("masquerade".into())),
            "redir" => self.terminal("redirect", Verdict::Other("redirect".into())),
            "tproxy" => self.terminal("tproxy", Verdict::Other("tproxy".into())),
            other => self.parts.push(other.to_string()),
        }
    }

    fn network(&self) -> Option<Family> {
        match self.family {
            Family::Ipv4 | Family::Ipv6 => Some(self.family),
            _ => self.l3,
        }
    }

    fn payload(&mut self, d: &[u8]) {
        // NFTA_PAYLOAD_DREG 1, BASE 2, OFFSET 3, LEN 4, SREG 5
        let (base, off, len) = (
            u32_attr(d, 2).unwrap_or(u32::MAX),
            u32_attr(d, 3).unwrap_or(0),
            u32_attr(d, 4).unwrap_or(0),
        );
        if u32_attr(d, 5).is_some() {
            self.parts.push(format!("@{base},{off},{len} set"));
            return;
        }
        let test = match base {
            1 => self.l3_test.take(),
            2 => self.l4_test.take(),
            _ => None,
        };
        self.implied(test);
        let arp = self.family == Family::Arp;
        let v4 = !arp
            && (self.network() == Some(Family::Ipv4) || (self.network().is_none() && len <= 4));
        let tcp = self.l4.as_deref() == Some("tcp");
        let (name, kind) = match (base, off, len) {
            // Ethernet/IPv4 ARP: operation, then sender and target MAC and IP.
            (1, 6, 2) if arp => ("arp operation".into(), Kind::ArpOp),
            (1, 8, 6) if arp => ("arp saddr ether".into(), Kind::Ether),
            (1, 14, 4) if arp => ("arp saddr ip".into(), Kind::Ipv4),
            (1, 18, 6) if arp => ("arp daddr ether".into(), Kind::Ether),
            (1, 24, 4) if arp => ("arp daddr ip".into(), Kind::Ipv4),
            (1, 12, 1..=4) if v4 => ("ip saddr".into(), Kind::Ipv4),
            (1, 16, 1..=4) if v4 => ("ip daddr".into(), Kind::Ipv4),
            (1, 9, 1) if v4 => ("ip protocol".into(), Kind::Proto),
            (1, 8, 1..=16) if !v4 => ("ip6 saddr".into(), Kind::Ipv6),
            (1, 24, 1..=16) if !v4 => ("ip6 daddr".into(), Kind::Ipv6),
            (1, 6, 1) if !v4 => ("ip6 nexthdr".into(), Kind::Proto),
            (2, 0, 2) => (self.transport("sport"), Kind::Port),
            (2, 2, 2) => (self.transport("dport"), Kind::Port),
            (2, 13, 1) if tcp => ("tcp flags".into(), Kind::TcpFlags),
            (0, 12, 2) => ("ether type".into(), Kind::Bytes),
            _ => {
                let bits = |n: u32| u64::from(n) * 8;
                (
                    format!("@{},{},{}", base_name(base), bits(off), bits(len)),
                    Kind::Bytes,
                )
            }
        };
        self.load(u32_attr(d, 1), name, kind);
    }

    /// `tcp dport`, or `th dport` before any transport protocol was compared.
    fn transport(&self, field: &str) -> String {
        format!("{} {field}", self.l4.as_deref().unwrap_or("th"))
    }

    fn meta(&mut self, d: &[u8]) {
        // NFTA_META_DREG 1, KEY 2, SREG 3
        let key = u32_attr(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            1 => ("protocol", Kind::Bytes),
            3 => ("mark", Kind::Mark),
            4 => ("iif", Kind::Number),
            5 => ("oif", Kind::Number),
            6 => ("iifname", Kind::Iface),
            7 => ("oifname", Kind::Iface),
            15 => ("nfproto", Kind::NfProto),
            16 => ("l4proto", Kind::Proto),
            19 => ("pkttype", Kind::Bytes),
            _ => ("", Kind::Bytes),
        };
        // nft leaves out "meta" for interfaces.
        let name = match key {
            4..=7 => name.to_string(),
            _ if name.is_empty() => format!("meta {key}"),
            _ => format!("meta {name}"),
        };
        self.load_or_set(d, (1, 3), name, kind);
    }

    fn ct(&mut self, d: &[u8]) {
        // NFTA_CT_DREG 1, KEY 2, DIRECTION 3, SREG 4
        let key = u32_attr(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            0 => ("state", Kind::CtState),
            1 => ("direction", Kind::Bytes),
            2 => ("status", Kind::Number),
            3 => ("mark", Kind::Mark),
            _ => ("", Kind::Bytes),
        };
        let name = if name.is_empty() {
            format!("ct {key}")
        } else {
            format!("ct {name}")
        };
        self.load_or_set(d, (1, 4), name, kind);
    }

    /// A `meta` or `ct` key: loaded into the register of attribute `dreg`,
    /// or, when the expression has a source register (attribute `sreg`), the
    /// statement `NAME set VALUE`.
    fn load_or_set(&mut self, d: &[u8], (dreg, sreg): (u16, u16), name: String, kind: Kind) {
        if let Some(sreg) = u32_attr(d, sreg) {
            let value = self
                .regs
                .get(&sreg)
                .map(|o| format!(" {}", o.value_text(kind)))
                .unwrap_or_default();
            self.parts.push(format!("{name} set{value}"));
            return;
        }
        self.load(u32_attr(d, dreg), name, kind);
    }

    fn cmp(&mut self, d: &[u8]) {
        // NFTA_CMP_SREG 1, OP 2, DATA 3
        let at_least = self.at_least.take();
        let Some(lhs) = u32_attr(d, 1).and_then(|r| self.regs.get(&r)).cloned() else {
            self.parts.push("cmp".into());
            return;
        };
        let value = value_attr(d, 3).unwrap_or_default();
        let op = Cmp::from_kernel(u32_attr(d, 2).unwrap_or(0));
        match op {
            Cmp::Eq => self.remember_protocols(&lhs, &value),
            // `>= A` then `<= B` on the same value: nft's `A-B`.
            Cmp::Le if lhs.mask.is_none() => {
                if let Some((name, kind, from)) = at_least.filter(|(n, ..)| *n == lhs.name)
                    && let Some(last) = self.parts.last_mut()
                {
                    *last = range_text(&name, kind, Cmp::Eq, &from, &value);
                    return;
                }
            }
            Cmp::Ge if lhs.mask.is_none() => {
                self.at_least = Some((lhs.name.clone(), lhs.kind, value.clone()));
            }
            _ => {}
        }
        self.parts.push(comparison_text(&lhs, op, &value));
    }

    /// `tcp dport != 1-1024` (NFTA_RANGE_SREG 1, OP 2, FROM_DATA 3, TO_DATA 4).
    fn range(&mut self, d: &[u8]) {
        let Some(lhs) = u32_attr(d, 1).and_then(|r| self.regs.get(&r)).cloned() else {
            self.parts.push("range".into());
            return;
        };
        let (from, to) = (value_attr(d, 3), value_attr(d, 4));
        let op = if u32_attr(d, 2) == Some(1) {
            Cmp::Ne
        } else {
            Cmp::Eq
        };
        let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
        self.parts
            .push(range_text(&lhs.name, lhs.kind, op, &from, &to));
    }

    /// The protocols a rule tested, to name the headers it loads later, and
    /// where the tests nft adds for such loads are.
    fn remember_protocols(&mut self, lhs: &Operand, value: &[u8]) {
        let at = self.parts.len();
        match lhs.kind {
            Kind::Proto if value.len() == 1 => {
                self.l4 = Some(proto_name(value[0]));
                self.l4_test = (lhs.name == "meta l4proto").then_some(at);
            }
            Kind::NfProto if value.len() == 1 => {
                self.l3 = Family::from_nfproto(value[0]);
                self.l3_test = (lhs.name == "meta nfproto").then_some(at);
            }
            _ => {}
        }
    }

    fn bitwise(&mut self, d: &[u8]) {
        // NFTA_BITWISE_SREG 1, DREG 2, LEN 3, MASK 4, XOR 5
        let (Some(sreg), Some(dreg)) = (u32_attr(d, 1), u32_attr(d, 2)) else {
            return;
        };
        match self.regs.get(&sreg).cloned() {
            Some(mut op) => {
                op.mask = value_attr(d, 4);
                op.xor = value_attr(d, 5);
                self.regs.insert(dreg, op);
            }
            None => self.parts.push("bitwise".into()),
        }
    }

    fn lookup(&mut self, d: &[u8]) {
        // NFTA_LOOKUP_SET 1, SREG 2, DREG 3, FLAGS 5 (NFT_LOOKUP_F_INV 1)
        let set = string_attr(d, 1).unwrap_or_default();
        let lhs = u32_attr(d, 2)
            .and_then(|r| self.regs.get(&r))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "?".into());
        match u32_attr(d, 3) {
            Some(NFT_REG_VERDICT) => {
                self.parts.push(format!("{lhs} vmap @{set}"));
                self.verdict = Some(Verdict::Other(format!("vmap @{set}")));
            }
            Some(dreg) => {
                self.parts.push(format!("{lhs} map @{set}"));
                self.regs.remove(&dreg);
            }
            None => {
                let not = if u32_attr(d, 5).unwrap_or(0) & 1 != 0 {
                    "!= "
                } else {
                    ""
                };
                self.parts.push(format!("{lhs} {not}@{set}"));
            }
        }
    }

    fn immediate(&mut self, d: &[u8]) {
        // NFTA_IMMEDIATE_DREG 1, DATA 2
        let dreg = u32_attr(d, 1);
        let data = attr(attrs(d), 2).unwrap_or(&[]);
        if dreg == Some(NFT_REG_VERDICT) {
            if let Some(v) = data_verdict(data) {
                self.parts.push(verdict_text(&v));
                self.verdict = Some(v);
            }
        } else if let Some(r) = dreg {
            let value = attr(attrs(data), NFTA_DATA_VALUE).unwrap_or(&[]);
            self.regs.insert(r, Operand::immediate(value.to_vec()));
        }
    }

    /// `iptables-nft`'s untranslated matches; `comment` carries `-m comment`.
    fn xt_match(&mut self, d: &[u8]) {
        // NFTA_MATCH_NAME 1, REV 2, INFO 3
        let name = string_attr(d, 1).unwrap_or_default();
        let (rev, info) = xt_rev_and_info(d);
        match name.as_str() {
            // struct xt_comment_info { char comment[256]; }
            "comment" => self.comment = string_attr(d, 3),
            "conntrack" if let Some(c) = CtState::decode(rev, info) => {
                self.parts.push(c.nft_text());
            }
            _ => self.parts.push(format!("xt match {name:?}")),
        }
    }

    /// `iptables-nft`'s untranslated targets (NFTA_TARGET_NAME 1, REV 2,
    /// INFO 3).
    fn xt_target(&mut self, d: &[u8]) {
        let name = string_attr(d, 1).unwrap_or_default();
        let (rev, info) = xt_rev_and_info(d);
        let ipv6 = self.network() == Some(Family::Ipv6);
        if let Some(r) = RejectWith::from_target(ipv6, info).filter(|_| name == "REJECT") {
            self.reject_with = Some(r);
            self.parts.push(r.nft_text());
        } else {
            match SetMark::decode(rev, info).filter(|_| name == "MARK") {
                Some(m) => self.parts.push(m.nft_text()),
                None => self.parts.push(format!("xt target {name:?}")),
            }
        }
        if let Some(v) = target_verdict(&name) {
            self.verdict = Some(v);
        }
    }

    pub(super) fn finish(mut self, id: String) -> Rule {
        if let Some(c) = &self.comment {
            self.parts.push(format!("comment {c:?}"));
        }
        self.parts.retain(|p| !p.is_empty());
        Rule {
            id,
            text: self.parts.join(" "),
            verdict: self.verdict,
            comment: self.comment,
            counters: self.counters,
            reject_with: self.reject_with.map(RejectWith::told),
        }
    }
}

/// The revision and data of an xt match or target expression.
fn xt_rev_and_info(d: &[u8]) -> (u8, &[u8]) {
    let rev = u32_attr(d, 2).unwrap_or(0);
    (
        u8::try_from(rev).unwrap_or(u8::MAX),
        attr(attrs(d), 3).unwrap_or(&[]),
    )
}
