//! Two x_tables extensions in every Calico ruleset, decoded for both
//! backends (`iptables-nft` keeps them as xt expressions too): the
//! `conntrack --ctstate` match and the `MARK --set-xmark` target, written as
//! `iptables -S` writes them and as `nft list` translates them.

use crate::kernel::bytes::{u16_at, u32_at};

/// `--ctstate` of a `conntrack` match that tests nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CtState {
    pub invert: bool,
    /// XT_CONNTRACK_STATE_* bits.
    pub states: u16,
}

/// The states in the order both `iptables -S` and nft's translation list
/// them, with their `xt_conntrack` bits.
const STATES: [(u16, &str); 5] = [
    (1 << 0, "invalid"),
    (1 << 3, "new"),
    (1 << 2, "related"),
    (1 << 1, "established"),
    (1 << 4, "untracked"),
];
/// `match_flags` / `invert_flags` bit of `--ctstate`.
const XT_CONNTRACK_STATE: u16 = 1;
// struct xt_conntrack_mtinfo{1,2,3}: eight addresses and masks (128 bytes),
// expires (8), l4proto and four ports (10), then these.
const MATCH_FLAGS: usize = 146;
const INVERT_FLAGS: usize = 148;
const STATE_MASK: usize = 150;

impl CtState {
    /// From a `conntrack` match's data (revision `rev`); `None` when it
    /// tests more than the state, or states these names do not cover.
    pub(crate) fn decode(rev: u8, data: &[u8]) -> Option<CtState> {
        if u16_at(data, MATCH_FLAGS)? != XT_CONNTRACK_STATE {
            return None;
        }
        let states = match rev {
            1 => u16::from(*data.get(STATE_MASK)?),
            2 | 3 => u16_at(data, STATE_MASK)?,
            _ => return None,
        };
        let known: u16 = STATES.iter().map(|(b, _)| b).sum();
        if states == 0 || states & !known != 0 {
            return None;
        }
        let invert = u16_at(data, INVERT_FLAGS)? & XT_CONNTRACK_STATE != 0;
        Some(CtState { invert, states })
    }

    fn names(self) -> Vec<&'static str> {
        STATES
            .iter()
            .filter(|(b, _)| self.states & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    /// `-m conntrack ! --ctstate RELATED,ESTABLISHED` (after `-m conntrack`).
    pub(crate) fn iptables_args(self) -> String {
        let not = if self.invert { "! " } else { "" };
        format!("{not}--ctstate {}", self.names().join(",").to_uppercase())
    }

    /// `ct state related,established`, `ct state ! invalid` (nft's own
    /// translation, `!` included).
    pub(crate) fn nft_text(self) -> String {
        let not = if self.invert { "! " } else { "" };
        format!("ct state {not}{}", self.names().join(","))
    }
}

/// `--set-xmark MARK/MASK` of a `MARK` target (revision 2, what every
/// iptables since 1.4 writes): the mask's bits cleared, then the mark's
/// bits flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetMark {
    pub mark: u32,
    pub mask: u32,
}

impl SetMark {
    pub(crate) fn decode(rev: u8, data: &[u8]) -> Option<SetMark> {
        (rev == 2).then_some(())?;
        Some(SetMark {
            mark: u32_at(data, 0)?,
            mask: u32_at(data, 4)?,
        })
    }

    /// `--set-xmark 0x10000/0x10000`, as `iptables -S` writes any form.
    pub(crate) fn iptables_args(self) -> String {
        format!("--set-xmark {:#x}/{:#x}", self.mark, self.mask)
    }

    /// `meta mark set mark or 0x10000`: nft's translation of the target.
    pub(crate) fn nft_text(self) -> String {
        let SetMark { mark, mask } = self;
        let value = if mask == u32::MAX {
            format!("{mark:#x}")
        } else if mark == 0 {
            format!("mark and {:#x}", !mask)
        } else if mark == mask {
            format!("mark or {mark:#x}")
        } else if mask == 0 {
            format!("mark xor {mark:#x}")
        } else {
            format!("mark and {:#x} xor {mark:#x}", !mask)
        };
        format!("meta mark set {value}")
    }
}

/// What a REJECT sends back: the x_tables target's `with` (IPv4's
/// `ipt_reject_with` or IPv6's `ip6t_reject_with`), or nf_tables' own
/// `reject` expression (type and ICMP code), in one form for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectWith {
    Icmp(u8),
    Icmpv6(u8),
    /// nf_tables' family-independent codes (`icmpx`), inet and bridge.
    Icmpx(u8),
    TcpReset,
}

/// ICMP unreachable codes and their names (nft's, iptables' with `icmp-`).
const ICMP: [(u8, &str, &str); 7] = [
    (0, "net-unreachable", "icmp-net-unreachable"),
    (1, "host-unreachable", "icmp-host-unreachable"),
    (2, "prot-unreachable", "icmp-proto-unreachable"),
    (3, "port-unreachable", "icmp-port-unreachable"),
    (9, "net-prohibited", "icmp-net-prohibited"),
    (10, "host-prohibited", "icmp-host-prohibited"),
    (13, "admin-prohibited", "icmp-admin-prohibited"),
];
const ICMPV6: [(u8, &str, &str); 6] = [
    (0, "no-route", "icmp6-no-route"),
    (1, "admin-prohibited", "icmp6-adm-prohibited"),
    (3, "addr-unreachable", "icmp6-addr-unreachable"),
    (4, "port-unreachable", "icmp6-port-unreachable"),
    (5, "policy-fail", "icmp6-policy-fail"),
    (6, "reject-route", "icmp6-reject-route"),
];
const ICMPX: [(u8, &str); 4] = [
    (0, "no-route"),
    (1, "port-unreachable"),
    (2, "host-unreachable"),
    (3, "admin-prohibited"),
];

impl RejectWith {
    /// From a REJECT target's data: `with` is the first u32, an enum whose
    /// order differs between IPv4 and IPv6.
    pub(crate) fn from_target(ipv6: bool, data: &[u8]) -> Option<RejectWith> {
        let with = u32_at(data, 0)?;
        Some(if ipv6 {
            match with {
                0 => RejectWith::Icmpv6(0),
                1 => RejectWith::Icmpv6(1),
                3 => RejectWith::Icmpv6(3),
                4 => RejectWith::Icmpv6(4),
                6 => RejectWith::TcpReset,
                7 => RejectWith::Icmpv6(5),
                8 => RejectWith::Icmpv6(6),
                _ => return None,
            }
        } else {
            match with {
                0..=3 => RejectWith::Icmp(with as u8),
                5 => RejectWith::Icmp(9),
                6 => RejectWith::Icmp(10),
                7 => RejectWith::TcpReset,
                8 => RejectWith::Icmp(13),
                _ => return None,
            }
        })
    }

    /// From an nf_tables `reject` expression (NFTA_REJECT_TYPE, ICMP_CODE)
    /// in a rule for `ipv6` packets.
    pub(crate) fn from_expr(ty: u32, code: u8, ipv6: bool) -> Option<RejectWith> {
        Some(match ty {
            0 if ipv6 => RejectWith::Icmpv6(code),
            0 => RejectWith::Icmp(code),
            1 => RejectWith::TcpReset,
            2 => RejectWith::Icmpx(code),
            _ => return None,
        })
    }

    /// What the sender is told: `icmp host-prohibited`, `tcp reset`, ...
    pub(crate) fn told(self) -> String {
        match self {
            RejectWith::TcpReset => "tcp reset".into(),
            RejectWith::Icmp(c) => format!("icmp {}", name(&ICMP, c)),
            RejectWith::Icmpv6(c) => format!("icmpv6 {}", name(&ICMPV6, c)),
            RejectWith::Icmpx(c) => {
                let n = ICMPX
                    .iter()
                    .find(|(k, _)| *k == c)
                    .map(|(_, n)| n.to_string());
                format!("icmpx {}", n.unwrap_or_else(|| c.to_string()))
            }
        }
    }

    /// `reject`, `reject with icmp type host-prohibited`, as nft 1.0 lists
    /// it (the default, port unreachable, without `with`).
    pub(crate) fn nft_text(self) -> String {
        let default = matches!(
            self,
            RejectWith::Icmp(3) | RejectWith::Icmpv6(4) | RejectWith::Icmpx(1)
        );
        if default {
            return "reject".into();
        }
        match self {
            RejectWith::TcpReset => "reject with tcp reset".into(),
            other => {
                let told = other.told();
                let (kind, code) = told.split_once(' ').unwrap_or((&told, ""));
                format!("reject with {kind} type {code}")
            }
        }
    }

    /// `--reject-with icmp-host-prohibited`, as `iptables -S` writes it.
    pub(crate) fn iptables_args(self) -> String {
        let with = match self {
            RejectWith::TcpReset => "tcp-reset".to_string(),
            RejectWith::Icmp(c) => iptables_name(&ICMP, c),
            RejectWith::Icmpv6(c) | RejectWith::Icmpx(c) => iptables_name(&ICMPV6, c),
        };
        format!("--reject-with {with}")
    }
}

fn name(table: &[(u8, &str, &str)], code: u8) -> String {
    table
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or_else(|| code.to_string(), |(_, n, _)| n.to_string())
}

fn iptables_name(table: &[(u8, &str, &str)], code: u8) -> String {
    table
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or_else(|| code.to_string(), |(_, _, n)| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `conntrack` match's data (revision 3 layout) testing `states`.
    pub(crate) fn conntrack(flags: u16, invert: u16, states: u16) -> Vec<u8> {
        let mut d = vec![0u8; 160];
        d[MATCH_FLAGS..MATCH_FLAGS + 2].copy_from_slice(&flags.to_ne_bytes());
        d[INVERT_FLAGS..INVERT_FLAGS + 2].copy_from_slice(&invert.to_ne_bytes());
        d[STATE_MASK..STATE_MASK + 2].copy_from_slice(&states.to_ne_bytes());
        d
    }

    #[test]
    fn conntrack_states_as_iptables_and_nft_write_them() {
        // RELATED,ESTABLISHED as iptables 1.8.9 stores it.
        let c = CtState::decode(3, &conntrack(1, 0, 0b110)).unwrap();
        assert_eq!(c.iptables_args(), "--ctstate RELATED,ESTABLISHED");
        assert_eq!(c.nft_text(), "ct state related,established");
        let all = CtState::decode(3, &conntrack(1, 0, 0b11111)).unwrap();
        assert_eq!(
            all.nft_text(),
            "ct state invalid,new,related,established,untracked"
        );
        let not = CtState::decode(2, &conntrack(1, 1, 0b1)).unwrap();
        assert_eq!(not.iptables_args(), "! --ctstate INVALID");
        assert_eq!(not.nft_text(), "ct state ! invalid");
        // Revision 1 has an 8-bit state mask, the status mask after it.
        let mut r1 = conntrack(1, 0, 0b1000);
        r1[STATE_MASK + 1] = 0xff;
        assert_eq!(CtState::decode(1, &r1).unwrap().nft_text(), "ct state new");
    }

    #[test]
    fn conntrack_matches_testing_more_are_left_alone() {
        assert_eq!(
            CtState::decode(3, &conntrack(1 | 2, 0, 0b10)),
            None,
            "status too"
        );
        assert_eq!(CtState::decode(3, &conntrack(1, 0, 1 << 5)), None, "SNAT");
        assert_eq!(CtState::decode(3, &conntrack(1, 0, 0)), None);
        assert_eq!(CtState::decode(0, &conntrack(1, 0, 2)), None);
        assert_eq!(CtState::decode(3, &[0; 100]), None, "short");
    }

    #[test]
    fn mark_targets_as_iptables_and_nft_write_them() {
        let m = |mark: u32, mask: u32| {
            let mut d = mark.to_ne_bytes().to_vec();
            d.extend_from_slice(&mask.to_ne_bytes());
            SetMark::decode(2, &d).unwrap()
        };
        // What `nft list` printed for these iptables-nft rules.
        assert_eq!(
            m(0, 0xe0000).nft_text(),
            "meta mark set mark and 0xfff1ffff"
        );
        assert_eq!(
            m(0x10000, 0x10000).nft_text(),
            "meta mark set mark or 0x10000"
        );
        assert_eq!(m(0, u32::MAX).nft_text(), "meta mark set 0x0");
        assert_eq!(m(0x10, u32::MAX).nft_text(), "meta mark set 0x10");
        assert_eq!(
            m(0x40000, 0xc0000).nft_text(),
            "meta mark set mark and 0xfff3ffff xor 0x40000"
        );
        assert_eq!(m(0x10, 0).nft_text(), "meta mark set mark xor 0x10");
        assert_eq!(m(0x4, 0x4).iptables_args(), "--set-xmark 0x4/0x4");
        assert_eq!(SetMark::decode(1, &[0; 8]), None);
        assert_eq!(SetMark::decode(2, &[0; 6]), None);
    }

    #[test]
    fn rejects_read_as_iptables_and_nft_write_them_and_say_what_was_told() {
        let host = RejectWith::from_target(false, &6u32.to_ne_bytes()).unwrap();
        assert_eq!(host.iptables_args(), "--reject-with icmp-host-prohibited");
        assert_eq!(host.nft_text(), "reject with icmp type host-prohibited");
        assert_eq!(host.told(), "icmp host-prohibited");
        let adm6 = RejectWith::from_target(true, &1u32.to_ne_bytes()).unwrap();
        assert_eq!(adm6.iptables_args(), "--reject-with icmp6-adm-prohibited");
        assert_eq!(adm6.nft_text(), "reject with icmpv6 type admin-prohibited");
        let x = RejectWith::from_expr(2, 3, false).unwrap();
        assert_eq!(x.nft_text(), "reject with icmpx type admin-prohibited");
        assert_eq!(
            RejectWith::from_expr(2, 1, false).unwrap().nft_text(),
            "reject"
        );
        assert_eq!(
            RejectWith::from_expr(1, 0, true).unwrap().told(),
            "tcp reset"
        );
    }
}
