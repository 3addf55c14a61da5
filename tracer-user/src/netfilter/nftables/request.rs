//! nf_tables requests over nfnetlink: the ruleset generation and the dumps of
//! tables, chains and rules.

use std::io;

use super::message::NFGENMSG_LEN;
use crate::kernel::netlink::{Socket, header};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_NEWGEN: u16 = 15;
pub(super) const NFT_MSG_GETGEN: u16 = 16;

pub(super) const NLM_F_ACK: u16 = 4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;

/// Sends a request and collects the payloads of its replies of type `want`
/// until DONE (dumps) or the ACK. An interrupted dump (the ruleset changed
/// meanwhile) is `ErrorKind::Interrupted`.
pub(super) fn request(
    sock: &Socket,
    msg_type: u16,
    flags: u16,
    want: u16,
) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut interrupted = false;
    sock.request(&request_message(msg_type, flags), false, |msg| {
        interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
        if msg.ty == nft_type(want) {
            out.push(msg.payload.to_vec());
        }
    })?;
    if interrupted {
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "dump interrupted",
        ))
    } else {
        Ok(out)
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// nlmsghdr + nfgenmsg (all families, NFNETLINK_V0).
fn request_message(msg_type: u16, flags: u16) -> Vec<u8> {
    header(nft_type(msg_type), flags, &[0; NFGENMSG_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_nf_tables_subsystem() {
        let m = request_message(NFT_MSG_GETRULE, NLM_F_DUMP);
        assert_eq!(m.len(), 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (10 << 8) | 7);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_DUMP | 1);
        assert_eq!(&m[16..], &[0; 4]);
    }
}
