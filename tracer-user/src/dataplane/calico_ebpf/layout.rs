//! Felix's counters map as each Calico release lays it out
//! (`felix/bpf-gpl/reasons.h`, `felix/bpf/counters/counters.go`): one u64
//! per reason, indices that never move, new reasons appended. The map's
//! name carries a version (`cali_counters2` .. `cali_counters6`) and its
//! value size says how many reasons the running Felix counts.

/// One of Felix's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub index: usize,
    /// `enum calico_reason` without `CALI_REASON_`.
    pub name: &'static str,
    /// Felix's own words (`calico-node -bpf counters dump`).
    pub description: &'static str,
    /// Whether the packet was dropped when this counter moved.
    pub drop: bool,
}

const fn r(index: usize, name: &'static str, description: &'static str, drop: bool) -> Reason {
    Reason {
        index,
        name,
        description,
        drop,
    }
}

/// Every counter of the newest layout (v3.32.1+), in index order.
pub const REASONS: [Reason; 27] = [
    r(0, "TOTAL_PACKETS", "packets", false),
    r(1, "ACCEPTED_BY_FAILSAFE", "accepted by failsafe", false),
    r(2, "ACCEPTED_BY_POLICY", "accepted by policy", false),
    r(3, "BYPASS", "accepted by another program", false),
    r(4, "DROPPED_BY_POLICY", "dropped by policy", true),
    r(5, "SHORT", "dropped: too short packets", true),
    r(6, "CSUM_FAIL", "dropped: incorrect checksum", true),
    r(
        7,
        "IP_OPTIONS",
        "dropped: packets with unsupported IP options",
        true,
    ),
    r(8, "IP_MALFORMED", "dropped: malformed IP packets", true),
    r(9, "ENCAP_FAIL", "dropped: failed encapsulation", true),
    r(10, "DECAP_FAIL", "dropped: failed decapsulation", true),
    r(
        11,
        "UNAUTH_SOURCE",
        "dropped: packets with unknown source",
        true,
    ),
    r(
        12,
        "RT_UNKNOWN",
        "dropped: packets with unknown route",
        true,
    ),
    r(
        13,
        "BLACK_HOLE",
        "dropped: packets hitting blackhole route",
        true,
    ),
    r(
        14,
        "SOURCE_COLLISION",
        "packets hitting NAT source collision",
        false,
    ),
    r(
        15,
        "SOURCE_COLLISION_FAILED",
        "dropped: NAT source collision resolution failed",
        true,
    ),
    r(
        16,
        "CT_CREATE_FAILED",
        "dropped: failed to create conntrack",
        true,
    ),
    r(17, "REDIRECT", "redirect: plain", false),
    r(18, "REDIRECT_NEIGH", "redirect: neigh", false),
    r(19, "REDIRECT_PEER", "redirect: peer", false),
    r(
        20,
        "FRAG_WAIT",
        "dropped: fragment of yet incomplete packet",
        true,
    ),
    r(
        21,
        "FRAG_REORDER",
        "dropped: fragment out of order within host",
        true,
    ),
    r(
        22,
        "FRAG_UNSUPPORTED",
        "dropped: fragments not supported",
        true,
    ),
    r(23, "DROPPED_BY_QOS", "dropped: QoS control limit", true),
    r(24, "RESERVED1", "reserved", false),
    r(
        25,
        "MAGLEV_NO_BACKEND",
        "dropped: Maglev lookup found no backends for service IP",
        true,
    ),
    r(
        26,
        "NO_HOST_IP",
        "dropped: VXLAN encap when host IP unknown",
        true,
    ),
];

pub const POLICY: usize = 4;

/// The counters map a Felix pinned: its name and how many counters each
/// value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub map: String,
    pub counters: usize,
}

impl Layout {
    /// From the pinned map's name and value size; an error names what was
    /// expected.
    pub fn new(map: &str, value_size: usize) -> Result<Layout, String> {
        let counters = value_size / 8;
        if !value_size.is_multiple_of(8) || !(14..=REASONS.len()).contains(&counters) {
            return Err(format!(
                "{map} holds {value_size}-byte values; calitrace knows Felix's layouts of 14 to {} u64 counters (Calico 3.26 to 3.32.1+)",
                REASONS.len()
            ));
        }
        Ok(Layout {
            map: map.to_string(),
            counters,
        })
    }

    /// The Calico releases that lay the map out so.
    pub fn releases(&self) -> &'static str {
        match (self.map.as_str(), self.counters) {
            ("cali_counters2", 14) => "Calico 3.26-3.29",
            ("cali_counters3", 17) => "Calico 3.30",
            ("cali_counters5", 25) => "Calico 3.31",
            ("cali_counters6", 26) => "Calico 3.32.0",
            ("cali_counters6", 27) => "Calico 3.32.1 or later",
            _ => "a Calico release calitrace does not know (read by index)",
        }
    }

    /// The counters of this layout that count drops.
    pub fn drops(&self) -> impl Iterator<Item = &'static Reason> + '_ {
        REASONS[..self.counters].iter().filter(|r| r.drop)
    }
}

/// `cali_counters<N>` with the highest `N` among `names`: a Felix upgrade
/// leaves the older maps pinned.
pub fn newest_counters_map<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .filter_map(|n| {
            let v: u32 = n.strip_prefix("cali_counters")?.parse().ok()?;
            Some((v, n))
        })
        .max()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_is_known_by_its_name_and_size() {
        for (map, size, releases) in [
            ("cali_counters2", 112, "Calico 3.26-3.29"),
            ("cali_counters3", 136, "Calico 3.30"),
            ("cali_counters5", 200, "Calico 3.31"),
            ("cali_counters6", 208, "Calico 3.32.0"),
            ("cali_counters6", 216, "Calico 3.32.1 or later"),
        ] {
            assert_eq!(Layout::new(map, size).unwrap().releases(), releases);
        }
        let old = Layout::new("cali_counters2", 112).unwrap();
        assert!(old.drops().all(|r| r.index < 14));
        assert!(old.drops().any(|r| r.name == "UNAUTH_SOURCE"));
        assert!(!old.drops().any(|r| r.name == "CT_CREATE_FAILED"));
    }

    #[test]
    fn a_layout_calitrace_does_not_know_says_what_it_expected() {
        let e = Layout::new("cali_counters9", 240).unwrap_err();
        assert!(e.contains("240-byte") && e.contains("14 to 27"), "{e}");
        assert!(Layout::new("cali_counters6", 215).is_err());
    }

    #[test]
    fn the_newest_counters_map_wins() {
        let pinned = [
            "cali_v4_ct4",
            "cali_counters3",
            "cali_counters6",
            "cali_counters_old",
        ];
        assert_eq!(
            newest_counters_map(pinned.into_iter()),
            Some("cali_counters6")
        );
        assert_eq!(newest_counters_map(["cali_state4"].into_iter()), None);
    }

    #[test]
    fn indices_are_their_places() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(r.index, i);
        }
        assert_eq!(REASONS[POLICY].name, "DROPPED_BY_POLICY");
    }
}
