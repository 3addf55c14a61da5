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
}
