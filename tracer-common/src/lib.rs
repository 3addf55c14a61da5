//! Types shared by the eBPF programs and the `calitrace` binary.
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! bytes into the ring buffer, userspace decodes them, and recordings store them
//! verbatim. Changing a layout is a recording format change.
#![no_std]

pub mod filter;

/// A `#[repr(u8)]` enum of codes the kernel side writes, and a module of
/// the same codes as `u8` constants (what the eBPF programs store): each
/// constant is its variant's value, so the two cannot drift apart, and the
/// user side decodes a byte with `from_u8` into a `match` that the compiler
/// checks for every variant.
macro_rules! wire_codes {
    ($(#[$m:meta])* $name:ident in $module:ident {
        $($(#[$vm:meta])* $variant:ident = $konst:ident = $val:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant = $val),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $($val => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        #[doc = concat!("[`", stringify!($name), "`] as `u8` constants.")]
        pub mod $module {
            $(pub const $konst: u8 = super::$name::$variant as u8;)+
        }
    };
}

wire_codes! {
    /// Kinds of [`Event`].
    Kind in kind {
        /// A packet seen by a tc classifier.
        Tc = TC = 1,
        /// A packet freed by `kfree_skb` (a drop).
        Drop = DROP = 2,
        /// A netfilter table's verdict on a packet ([`crate::NfEvent`]).
        Verdict = VERDICT = 3,
        /// A packet passing a netfilter link observation point
        /// ([`crate::NfEvent`] with `point` and `priority` set).
        Hook = HOOK = 4,
        /// An encapsulated packet seen by a tc classifier
        /// ([`crate::EncapEvent`]): `pkt` holds the inner packet, `outer`
        /// the headers around it.
        TcEncap = TC_ENCAP = 5,
    }
}

wire_codes! {
    /// Encapsulations the tc programs decode ([`OuterMeta::encap`]).
    EncapKind in encap {
        /// VXLAN: outer UDP to the VXLAN port, an 8-byte VXLAN header, then
        /// an Ethernet frame.
        Vxlan = VXLAN = 1,
        /// IP in IP (IPv4 protocol 4): the inner IPv4 header follows the
        /// outer one.
        Ipip = IPIP = 2,
    }
}

wire_codes! {
    /// Netfilter link observation points ([`NfEvent::point`],
    /// [`NfPoint::point`]).
    LinkPointKind in nf_point {
        /// The hook's first priority: the packet entered the hook.
        Entry = ENTRY = 1,
        /// Just after a table's (or base chain's) priority: the packet
        /// passed it. The link sits at that priority + 1.
        After = AFTER = 2,
        /// The hook's last priority: the packet left the hook accepted.
        Exit = EXIT = 3,
    }
}

wire_codes! {
    /// Netfilter backends in [`NfEvent::backend`].
    BackendKind in backend {
        Legacy = LEGACY = 1,
        Nft = NFT = 2,
    }
}

wire_codes! {
    /// Direction of a tc observation.
    Direction in dir {
        Ingress = INGRESS = 0,
        Egress = EGRESS = 1,
        /// Not a tc observation.
        None = NONE = 255,
    }
}

/// Layer 3 of a packet.
pub mod l3 {
    pub const NONE: u8 = 0;
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
    pub const ARP: u8 = 8;
}

/// IP protocol numbers used by the parsers.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Bits of [`PacketMeta::flags`].
pub mod pkt_flags {
    /// IPv4 "don't fragment".
    pub const DF: u8 = 1;
    /// The ports / ICMP fields are valid.
    pub const L4: u8 = 2;
    /// A TCP segment that carries no data: the IP length ends with its TCP
    /// header (pure ACK, FIN, RST).
    pub const TCP_NO_DATA: u8 = 4;
}

/// IP protocol number of IP in IP.
pub const IPPROTO_IPIP: u8 = 4;

/// What the parsers extract from one packet's headers.
///
/// Addresses are in network byte order; an IPv4 (or ARP) address uses the first
/// four bytes and leaves the rest zero. Ports and the IP ID are in host order.
/// For ICMP echo, `sport` holds the identifier and `dport` the sequence number.
/// For ARP, `src`/`dst` are the sender and target protocol addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PacketMeta {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub l3: u8,
    pub proto: u8,
    pub ttl: u8,
    pub flags: u8,
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub arp_op: u16,
    pub tcp_flags: u8,
    pub _pad: u8,
    /// IP total length (IPv6: payload length + 40), or the frame length for ARP.
    pub len: u32,
    pub _reserved: u32,
}

/// One event in the ring buffer. Fixed size for every kind, so that decoding is a
/// single unaligned read and recordings are a sequence of equal frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the caller that freed the skb (drops).
    pub location: u64,
    pub kind: u8,
    pub dir: u8,
    /// The CPU the program ran on (`bpf_get_smp_processor_id`): matches a
    /// drop to the per-CPU counters another program moved for it.
    pub cpu: u16,
    pub ifindex: u32,
    /// Inode number of the network namespace (0 when unknown).
    pub netns: u32,
    /// Raw `enum skb_drop_reason` value (drops).
    pub reason: u32,
    /// `skb->len`.
    pub skb_len: u32,
    pub mark: u32,
    pub pkt: PacketMeta,
}

pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

/// A netfilter event. With `ev.kind` [`kind::VERDICT`]: a verdict of one
/// netfilter table traversal (`ipt_do_table` or `nft_do_chain` returning),
/// from the exact fexit probes, `ev.reason` the verdict (NF_DROP = 0,
/// NF_ACCEPT = 1). With [`kind::HOOK`]: a packet passing a BPF netfilter link
/// observation point, `point` and `priority` say which; no backend, table or
/// chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfEvent {
    pub ev: Event,
    /// NF_INET_* hook number.
    pub hook: u8,
    /// NFPROTO_* family of the hook.
    pub pf: u8,
    /// [`backend`] (verdicts).
    pub backend: u8,
    /// [`nf_point`] (hook observations; 0 for verdicts).
    pub point: u8,
    /// Priority the observing link is attached at (hook observations).
    pub priority: i32,
    /// Table name, NUL-padded.
    pub table: [u8; 32],
    /// Chain name (nf_tables only), NUL-padded.
    pub chain: [u8; 32],
}

pub const NF_EVENT_SIZE: usize = core::mem::size_of::<NfEvent>();

/// The outer headers of an encapsulated packet, as parsed before its inner
/// packet. Addresses as in [`PacketMeta`]; ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OuterMeta {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// [`l3`] of the outer header.
    pub l3: u8,
    /// IP protocol of the outer header (UDP for VXLAN, 4 for IPIP).
    pub proto: u8,
    /// [`encap`].
    pub encap: u8,
    pub ttl: u8,
    /// Outer UDP ports (VXLAN); 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// Outer IP total length (IPv6: payload length + 40).
    pub len: u32,
    /// VXLAN network identifier (24 bits); 0 for IPIP.
    pub vni: u32,
}

impl OuterMeta {
    /// The outer headers of `outer` (the packet as first parsed).
    #[inline(always)]
    pub fn of(outer: &PacketMeta, encap: u8, vni: u32) -> OuterMeta {
        let udp = outer.proto == proto::UDP;
        OuterMeta {
            src: outer.src,
            dst: outer.dst,
            l3: outer.l3,
            proto: outer.proto,
            encap,
            ttl: outer.ttl,
            sport: if udp { outer.sport } else { 0 },
            dport: if udp { outer.dport } else { 0 },
            len: outer.len,
            vni,
        }
    }

    /// The outer headers as a packet of their own, for the FILTER: an
    /// encapsulated packet passes when its inner or its outer packet matches.
    #[inline(always)]
    pub fn packet(&self) -> PacketMeta {
        let udp = self.proto == proto::UDP;
        PacketMeta {
            src: self.src,
            dst: self.dst,
            l3: self.l3,
            proto: self.proto,
            ttl: self.ttl,
            flags: if udp { pkt_flags::L4 } else { 0 },
            sport: self.sport,
            dport: self.dport,
            len: self.len,
            ..PacketMeta::default()
        }
    }
}

/// An encapsulated packet seen by tc (`ev.kind` [`kind::TC_ENCAP`]): `ev` as
/// for any tc event, with `ev.pkt` the INNER packet, so that the packet is
/// recognised by the same key on the tunnel device, the uplink and the
/// other node; `outer` the headers it travelled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapEvent {
    pub ev: Event,
    pub outer: OuterMeta,
}

pub const ENCAP_EVENT_SIZE: usize = core::mem::size_of::<EncapEvent>();

// Kernel and userspace exchange these as raw bytes: no implicit padding.
const _: () = assert!(core::mem::size_of::<OuterMeta>() == 16 + 16 + 4 + 4 + 4 + 4);
const _: () = assert!(ENCAP_EVENT_SIZE == EVENT_SIZE + 48);

/// What one loaded copy of the netfilter link program reports as its
/// observation point (the value of its one-entry `NF_POINT` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfPoint {
    /// Priority the link is attached at.
    pub priority: i32,
    /// [`nf_point`].
    pub point: u8,
    pub _pad: [u8; 3],
}

/// Offsets for the netfilter fexit programs, from BTF. `u16::MAX` = absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfOffsets {
    /// `struct nft_pktinfo`: skb, and the hook state (`state`, or `xt.state` before 5.15).
    pub pktinfo_skb: u16,
    pub pktinfo_state: u16,
    /// `struct nft_chain`: table pointer and name pointer.
    pub chain_table: u16,
    pub chain_name: u16,
    /// `struct nft_table`: name pointer.
    pub table_name: u16,
    /// `struct nf_hook_state`: hook and pf (u8 each).
    pub state_hook: u16,
    pub state_pf: u16,
    /// `struct xt_table`: the inline name array.
    pub xt_table_name: u16,
    /// Argument layout of `ipt_do_table`: 0 = (priv, skb, state) since 5.16,
    /// 1 = (skb, state, table) before.
    pub ipt_layout: u16,
    pub _pad: [u16; 3],
}

impl NfOffsets {
    pub const UNSET: NfOffsets = NfOffsets {
        pktinfo_skb: u16::MAX,
        pktinfo_state: u16::MAX,
        chain_table: u16::MAX,
        chain_name: u16::MAX,
        table_name: u16::MAX,
        state_hook: u16::MAX,
        state_pf: u16::MAX,
        xt_table_name: u16::MAX,
        ipt_layout: 0,
        _pad: [0; 3],
    };
}

/// Per-probe counters kept in a per-CPU array, indexed by these constants.
pub mod counter {
    /// Packets the tc programs parsed (userspace reports these and
    /// [`TC_PREFILTERED`] together as the packets they saw).
    pub const TC_SEEN: u32 = 0;
    pub const TC_EMITTED: u32 = 1;
    pub const DROP_SEEN: u32 = 2;
    pub const DROP_EMITTED: u32 = 3;
    /// Ring buffer reservation failed: the event is lost.
    pub const LOST: u32 = 4;
    pub const VERDICT_SEEN: u32 = 5;
    pub const VERDICT_EMITTED: u32 = 6;
    /// Packets the netfilter link programs saw, and those that passed the filters.
    pub const HOOK_SEEN: u32 = 7;
    pub const HOOK_EMITTED: u32 = 8;
    /// Packets the tc programs turned away by their addresses alone, before
    /// parsing them (one counter per packet keeps the cost down).
    pub const TC_PREFILTERED: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Struct member offsets read from the running kernel's BTF at load time and
/// handed to the drop program as a global. `u16::MAX` in a field means "absent".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkbOffsets {
    pub skb_len: u16,
    pub skb_dev: u16,
    pub skb_sk: u16,
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    pub skb_protocol: u16,
    pub skb_mark: u16,
    pub dev_ifindex: u16,
    pub dev_nd_net: u16,
    pub sk_net: u16,
    pub net_ns_inum: u16,
    /// Position of the `reason` argument of the raw tracepoint, or `u16::MAX`
    /// on kernels without drop reasons.
    pub reason_arg: u16,
    pub _pad: [u16; 3],
}

impl SkbOffsets {
    pub const ABSENT: u16 = u16::MAX;
    pub const UNSET: SkbOffsets = SkbOffsets {
        skb_len: Self::ABSENT,
        skb_dev: Self::ABSENT,
        skb_sk: Self::ABSENT,
        skb_head: Self::ABSENT,
        skb_network_header: Self::ABSENT,
        skb_transport_header: Self::ABSENT,
        skb_protocol: Self::ABSENT,
        skb_mark: Self::ABSENT,
        dev_ifindex: Self::ABSENT,
        dev_nd_net: Self::ABSENT,
        sk_net: Self::ABSENT,
        net_ns_inum: Self::ABSENT,
        reason_arg: Self::ABSENT,
        _pad: [0; 3],
    };
}

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ty),*) => {$(
            // SAFETY: every type listed below is `#[repr(C)]`, contains only
            // integers and arrays of integers, and every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        super::Event,
        super::SkbOffsets,
        super::NfOffsets,
        super::NfPoint,
        super::filter::FilterProg,
        super::filter::EvalState
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<PacketMeta>(), 56);
        assert_eq!(EVENT_SIZE, 8 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 56);
        assert_eq!(core::mem::size_of::<SkbOffsets>(), 32);
        assert_eq!(NF_EVENT_SIZE, EVENT_SIZE + 8 + 64);
        assert_eq!(core::mem::size_of::<NfOffsets>(), 24);
        assert_eq!(core::mem::offset_of!(NfEvent, priority), EVENT_SIZE + 4);
        assert_eq!(core::mem::size_of::<NfPoint>(), 8);
        assert_eq!(core::mem::size_of::<OuterMeta>(), 48);
        assert_eq!(ENCAP_EVENT_SIZE, EVENT_SIZE + 48);
        assert_eq!(core::mem::offset_of!(EncapEvent, outer), EVENT_SIZE);
        assert_eq!(core::mem::offset_of!(OuterMeta, vni), 44);
    }

    #[test]
    fn outer_headers_filter_as_a_packet_of_their_own() {
        let mut outer = PacketMeta {
            l3: l3::IPV4,
            proto: proto::UDP,
            ttl: 64,
            flags: pkt_flags::L4 | pkt_flags::DF,
            sport: 40000,
            dport: 4789,
            ip_id: 9,
            len: 134,
            ..Default::default()
        };
        outer.src[..4].copy_from_slice(&[192, 168, 1, 1]);
        let o = OuterMeta::of(&outer, encap::VXLAN, 4096);
        assert_eq!((o.sport, o.dport, o.len, o.vni), (40000, 4789, 134, 4096));
        let p = o.packet();
        assert_eq!(
            (p.src, p.l3, p.proto, p.dport),
            (outer.src, l3::IPV4, proto::UDP, 4789)
        );
        assert_eq!(p.flags, pkt_flags::L4, "ports valid, nothing else claimed");
        outer.proto = IPPROTO_IPIP;
        let ipip = OuterMeta::of(&outer, encap::IPIP, 0);
        assert_eq!((ipip.sport, ipip.dport), (0, 0), "IPIP has no ports");
        assert_eq!(ipip.packet().flags, 0);
    }
}
