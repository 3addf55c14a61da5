//! nf_tables rule text against `nft` itself: Calico-like rules made with
//! `iptables-nft` and native `nft` in a bare namespace of an empty lab, read
//! back with `Inventory::read()`, and each rule's text compared with what
//! `nft -a list ruleset` prints for the same handle. Needs root.
//!
//! One difference is deliberate: a rule `iptables-nft` stores with `-m
//! comment` keeps its `comment "..."`, which this nft (1.0.6) leaves out of
//! the listing. Everything else must be the same, operators included.

use std::collections::HashMap;

use calitrace_tests::Lab;
use tracer_user::netfilter::{Backend, Inventory};

/// Rules as Felix writes them with iptables-nft (comments, marks, conntrack,
/// interface wildcards, ports), each chain reached from FORWARD.
const IPTABLES_NFT: &str = r#"
iptables-nft -N cali-FORWARD
iptables-nft -N cali-from-hep-forward
iptables-nft -N cali-from-wl-dispatch
iptables-nft -A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
iptables-nft -A cali-FORWARD -m comment --comment "cali:vjrMJCRpqwy5oRoX" -j MARK --set-xmark 0x0/0xe0000
iptables-nft -A cali-FORWARD -m comment --comment "cali:A_sPAO0mcxbT9mOV" -m mark --mark 0x0/0x10000 -j cali-from-hep-forward
iptables-nft -A cali-FORWARD -i cali+ -m comment --comment "cali:8ZoYfO5HKXWbB3pk" -j cali-from-wl-dispatch
iptables-nft -A cali-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables-nft -A cali-FORWARD -m conntrack --ctstate INVALID -j DROP
iptables-nft -A cali-FORWARD -m conntrack ! --ctstate INVALID -j ACCEPT
iptables-nft -A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT
iptables-nft -A cali-FORWARD -m mark ! --mark 0x0/0x20000 -j DROP
iptables-nft -A cali-FORWARD -s 192.168.0.0/16 -p udp -m udp --dport 4789 -j ACCEPT
iptables-nft -A cali-FORWARD -p tcp -m tcp --dport 179 -j ACCEPT
iptables-nft -A cali-FORWARD ! -s 10.0.0.0/8 -p tcp ! --dport 80 -j DROP
iptables-nft -A cali-FORWARD -p 4 -j ACCEPT
iptables-nft -A cali-FORWARD -j MARK --set-xmark 0x10000/0x10000
iptables-nft -A cali-FORWARD -j MARK --set-xmark 0x40000/0xc0000
iptables-nft -A cali-FORWARD -o cali+ -d 10.244.0.0/16 -j DROP
iptables-nft -A cali-from-wl-dispatch -i cali1234567890a -g cali-from-hep-forward
iptables-nft -A cali-from-wl-dispatch -m comment --comment "Unknown interface" -j DROP
"#;

/// Rules in nft's own syntax, as Calico's nftables mode writes them and more.
const NFT: &str = r#"
table inet calico {
    set pods { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 } }
    chain filter-FORWARD {
        type filter hook forward priority 0; policy accept;
        ct state established,related accept
        ct state invalid drop
        ct state != established,related counter
        meta mark & 0x00020000 == 0x00000000 counter jump wl comment "cali:abc"
        meta mark & 0x00010000 != 0x00000000 accept
        meta mark set mark or 0x00010000
        meta mark set 0x10
        meta mark set mark and 0xfff1ffff
        meta mark set meta mark & 0xfff3ffff ^ 0x40000
        meta mark set meta mark ^ 0x40000
        iifname "cali*" ip saddr @pods counter accept
        iifname != "cali*" oifname "eth0" drop
        ip daddr != 10.244.0.0/16 drop
        udp dport 4789 ip saddr 192.168.0.0/16 accept
        tcp dport 1-1024 accept
        tcp dport != 1-1024 drop
        meta l4proto tcp accept
        ip protocol 4 accept
        ip protocol tcp tcp dport 22 drop
        meta l4proto ipv6-icmp accept
        ip6 nexthdr ipv6-icmp accept
        ip6 saddr fe80::/10 accept
        udp dport 53 ip6 daddr fd00::/8 drop
        ct mark 0x1 drop
        ct mark & 0xf == 0x1 drop
        meta mark 0x10 drop
        tcp flags syn drop
        tcp flags syn,ack drop
        tcp flags & (syn | ack) == syn drop
        tcp flags == syn drop
        ip saddr 10.0.0.1 drop comment "x y"
        reject
        return
    }
    chain wl {
        ip saddr 10.244.1.10 counter goto wl2
    }
    chain wl2 {
    }
}
"#;

/// The rule lines of `nft -a list ruleset`, by (family, table, chain,
/// handle): `counter packets N bytes M` as `counter`, spaces collapsed.
fn listed(ruleset: &str) -> HashMap<(String, String, String, String), String> {
    let mut out = HashMap::new();
    let (mut table, mut chain) = (None, None);
    for line in ruleset.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", family, name, "{", ..] => {
                table = Some((family.to_string(), name.to_string()))
            }
            ["chain", name, "{", ..] => chain = Some(name.to_string()),
            ["type", ..] | ["set", ..] | ["}"] | [] => {}
            _ => {
                let (Some((f, t)), Some(c)) = (&table, &chain) else {
                    continue;
                };
                let Some((rule, handle)) = line.rsplit_once(" # handle ") else {
                    continue;
                };
                let mut words: Vec<&str> = rule.split_whitespace().collect();
                while let Some(i) = words.iter().position(|w| *w == "packets") {
                    words.drain(i..i + 4); // packets N bytes M
                }
                let key = (f.clone(), t.clone(), c.clone(), handle.trim().to_string());
                out.insert(key, words.join(" "));
            }
        }
    }
    out
}

#[test]
fn rule_text_reads_as_nft_lists_it() {
    let mut lab = Lab::empty();
    let ns = lab.add_netns("nfttext").expect("netns");
    lab.sh(&ns, &format!("set -e\n{IPTABLES_NFT}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.sh(&ns, &format!("nft -f - <<'EOF'\n{NFT}\nEOF"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let nft = lab.sh(&ns, "nft -a list ruleset").unwrap();
    let want = listed(&nft);
    let inv = Lab::in_netns(&ns, Inventory::read).expect("entering the netns");
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);

    let mut compared = 0;
    let mut differ = Vec::new();
    for t in inv.tables.iter().filter(|t| t.backend == Backend::Nft) {
        for c in &t.chains {
            for r in &c.rules {
                let key = (
                    t.family.to_string(),
                    t.name.clone(),
                    c.name.clone(),
                    r.id.clone(),
                );
                let Some(line) = want.get(&key) else {
                    differ.push(format!("{key:?}: not listed by nft: {}", r.text));
                    continue;
                };
                compared += 1;
                // nft 1.0.6 leaves out an iptables-nft `-m comment`.
                let ours = match &r.comment {
                    Some(c) if !line.contains("comment \"") => {
                        let tail = format!(" comment {c:?}");
                        r.text.strip_suffix(&tail).unwrap_or(&r.text).to_string()
                    }
                    _ => r.text.clone(),
                };
                if ours != *line {
                    differ.push(format!(
                        "{} {} {} handle {}:\n  nft:       {line}\n  calitrace: {}",
                        key.0, key.1, key.2, key.3, r.text
                    ));
                }
            }
        }
    }
    assert_eq!(compared, want.len(), "every listed rule compared\n{nft}");
    assert!(compared >= 50, "{compared} rules\n{nft}");
    assert!(differ.is_empty(), "{}\n\n{nft}", differ.join("\n"));
}

/// The `-A CHAIN ...` lines of `iptables -S`, by chain, in order.
fn appended(save: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in save.lines() {
        if let Some(rest) = line.strip_prefix("-A ")
            && let Some((chain, rule)) = rest.split_once(' ')
        {
            out.entry(chain.to_string())
                .or_default()
                .push(rule.to_string());
        }
    }
    out
}

#[test]
fn legacy_rule_text_reads_as_iptables_writes_it() {
    let mut lab = Lab::empty();
    let ns = lab.add_netns("legacytext").expect("netns");
    let legacy = IPTABLES_NFT.replace("iptables-nft ", "iptables-legacy ");
    lab.sh(&ns, &format!("set -e\n{legacy}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let save = lab.sh(&ns, "iptables-legacy -S").unwrap();
    let want = appended(&save);
    let inv = Lab::in_netns(&ns, Inventory::read).expect("entering the netns");
    let mut compared = 0;
    let mut differ = Vec::new();
    for t in inv.tables.iter().filter(|t| t.backend == Backend::Legacy) {
        for c in &t.chains {
            let lines = want.get(&c.name).cloned().unwrap_or_default();
            assert_eq!(lines.len(), c.rules.len(), "chain {}\n{save}", c.name);
            for (r, line) in c.rules.iter().zip(&lines) {
                compared += 1;
                if r.text != *line {
                    differ.push(format!(
                        "{} #{}:\n  iptables:  {line}\n  calitrace: {}",
                        c.name, r.id, r.text
                    ));
                }
            }
        }
    }
    assert!(compared >= 18, "{compared} rules\n{save}");
    assert!(differ.is_empty(), "{}\n\n{save}", differ.join("\n"));
}
