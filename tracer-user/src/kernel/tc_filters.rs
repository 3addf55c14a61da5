//! The BPF filters of an interface's clsact hooks over rtnetlink: listed
//! with their program's name and id, and deleted one at a time (what a
//! SIGKILLed calitrace attached with `--tc-attach netlink` leaves behind).

use std::io;

use super::bytes::{cstr, u32_at};
use super::netlink::{NLM_F_ACK, Socket, TCA_KIND, attrs, dump, header, push_attr};

const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;

/// One BPF filter at a clsact hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub ifindex: u32,
    pub ingress: bool,
    pub handle: u32,
    /// `tcm_info`: the priority (high 16 bits) and protocol.
    pub info: u32,
    /// The program's name as the attacher gave it (`tc_ingress`,
    /// libbpf's `cali_tc_preambl:[1234]`).
    pub name: String,
    pub prog_id: Option<u32>,
}

/// struct tcmsg { u8 family, u8 pad1, u16 pad2, i32 ifindex, u32 handle, u32 parent, u32 info }
fn tcmsg(ifindex: u32, handle: u32, ingress: bool, info: u32) -> Vec<u8> {
    let parent = if ingress {
        CLSACT_INGRESS
    } else {
        CLSACT_EGRESS
    };
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&handle.to_ne_bytes());
    body.extend_from_slice(&parent.to_ne_bytes());
    body.extend_from_slice(&info.to_ne_bytes());
    body
}

/// The BPF filters at `ifindex`'s clsact ingress (or egress) hook. No
/// clsact qdisc: none.
pub fn list(ifindex: u32, ingress: bool) -> io::Result<Vec<TcFilter>> {
    let body = tcmsg(ifindex, 0, ingress, 0);
    let filters = dump(RTM_GETTFILTER, &body, RTM_NEWTFILTER, |payload| {
        let opts = attrs(payload.get(20..)?)
            .find(|(t, _)| *t == TCA_OPTIONS)?
            .1;
        let name = attrs(opts).find(|(t, _)| *t == TCA_BPF_NAME)?.1;
        let prog_id = attrs(opts)
            .find(|(t, _)| *t == TCA_BPF_ID)
            .and_then(|(_, v)| u32_at(v, 0));
        Some(TcFilter {
            ifindex,
            ingress,
            handle: u32_at(payload, 8)?,
            info: u32_at(payload, 16)?,
            name: cstr(name),
            prog_id,
        })
    });
    match filters {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// The names of the programs at a clsact hook.
pub fn names(ifindex: u32, ingress: bool) -> io::Result<Vec<String>> {
    Ok(list(ifindex, ingress)?
        .into_iter()
        .map(|f| f.name)
        .collect())
}

/// Deletes one filter (the clsact qdisc stays: others may use it).
pub fn delete(f: &TcFilter) -> io::Result<()> {
    let mut body = tcmsg(f.ifindex, f.handle, f.ingress, f.info);
    push_attr(&mut body, TCA_KIND, b"bpf\0");
    Socket::open()?.request(&header(RTM_DELTFILTER, NLM_F_ACK, &body), false, |_| {})
}
