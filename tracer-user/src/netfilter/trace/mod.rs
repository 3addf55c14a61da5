//! nftables' own per-packet trace, which needs no kprobes: a table of
//! calitrace's own (`inet calitrace_<pid>`) sets `meta nftrace` on the packets
//! of the flows whose drops are being attributed, and the kernel then reports
//! every rule such a packet meets in every nf_tables table (firewalld's,
//! kube-proxy's, Calico's nftables dataplane, iptables-nft's) on the
//! NFNLGRP_NFTRACE netlink group, as `nft monitor trace` shows.
//!
//! The table exists only while drops are being attributed: it is made at the
//! first flow to trace and removed after [`IDLE`] without a new one, on every
//! exit, and by the kernel itself when calitrace's netlink socket closes
//! (a table owned by its socket, kernel 5.12+; SIGKILL included). On older
//! kernels a table left by a killed calitrace is swept at the next start.

mod message;
mod walks;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::kernel::netlink::{NLMSG_DONE, NLMSG_ERROR, error_code, messages};
use crate::kernel::syscall;
use crate::netfilter::Family;
use message::{BaseChain, Edit, NFPROTO_INET, NFT_TABLE_F_OWNER};
use walks::Walks;

/// A packet as the trace identifies it (what the tc programs key journeys on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
}

/// A table, and a chain of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPlace {
    pub family: Family,
    pub table: String,
    pub chain: String,
}

/// A traced packet that an nf_tables rule or chain policy dropped (a reject
/// is a drop here too: the rule says which it was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedDrop {
    pub packet: TracedPacket,
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// The base chain the table's walk began in, where the trace says.
    pub base_chain: Option<String>,
    /// The rule's handle; `None` when the chain's policy dropped.
    pub rule: Option<u64>,
    /// The packet's mark when it was dropped.
    pub mark: u32,
    /// Base chains of other tables (or hooks) that had accepted the packet.
    pub accepted_by: Vec<TracedPlace>,
}

/// How long the trace table stays without a new flow to trace.
pub const IDLE: Duration = Duration::from_secs(10);
/// Flows traced at once; the oldest gives way.
const MAX_FLOWS: usize = 32;
/// Before anything of the node's: raw is -300, conntrack -200.
const PRIORITY: i32 = -1000;
const CHAINS: [BaseChain; 2] = [
    BaseChain {
        name: "pre",
        hook: 0,
        priority: PRIORITY,
    },
    BaseChain {
        name: "out",
        hook: 3,
        priority: PRIORITY,
    },
];
const NFNLGRP_NFTRACE: u32 = 9;
const TABLE_PREFIX: &str = "calitrace_";

/// Whether a table is one calitrace made for tracing.
pub fn is_own_table(name: &str) -> bool {
    name.starts_with(TABLE_PREFIX)
}

/// The live trace: the table's socket (its owner), the trace subscription,
/// the flows traced, and the packets followed.
pub struct NfTracer {
    edit: OwnedFd,
    events: OwnedFd,
    table: String,
    installed: bool,
    owned: bool,
    flows: VecDeque<(IpAddr, IpAddr)>,
    walks: Walks,
    done: Vec<TracedDrop>,
    last_use: Instant,
    seq: u32,
    /// Trace messages the kernel could not queue (socket full).
    pub lost: u64,
}

impl NfTracer {
    /// Subscribes to the trace in this thread's network namespace and sweeps
    /// tables that killed calitraces left behind. Nothing is added yet.
    pub fn open() -> io::Result<NfTracer> {
        let mut t = NfTracer::subscribe()?;
        // Nothing to sweep is no reason not to trace.
        let _ = t.sweep();
        Ok(t)
    }

    /// Deletes the trace tables that killed calitraces left behind, and
    /// names them (`calitrace cleanup`).
    pub fn remove_left_behind() -> io::Result<Vec<String>> {
        NfTracer::subscribe()?.sweep()
    }

    fn subscribe() -> io::Result<NfTracer> {
        let events =
            syscall::netlink_subscriber(libc::NETLINK_NETFILTER, 1 << (NFNLGRP_NFTRACE - 1))?;
        let edit = syscall::netlink_subscriber(libc::NETLINK_NETFILTER, 0)?;
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        let t = NfTracer {
            edit,
            events,
            walks: Walks::new(&table),
            table,
            installed: false,
            owned: false,
            flows: VecDeque::new(),
            done: Vec::new(),
            last_use: Instant::now(),
            seq: 100,
            lost: 0,
        };
        Ok(t)
    }

    /// Whether this kernel and these privileges allow the trace (nothing
    /// is added to the ruleset, nothing swept).
    pub fn available() -> io::Result<()> {
        syscall::netlink_subscriber(libc::NETLINK_NETFILTER, 1 << (NFNLGRP_NFTRACE - 1)).map(drop)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Traces the packets from `src` to `dst` from now on; `false` when it
    /// was traced already.
    pub fn watch(&mut self, src: IpAddr, dst: IpAddr) -> io::Result<bool> {
        self.last_use = Instant::now();
        if self.flows.contains(&(src, dst)) {
            return Ok(false);
        }
        if self.flows.len() >= MAX_FLOWS {
            self.flows.pop_front();
            self.remove();
        }
        self.flows.push_back((src, dst));
        let result = if self.installed {
            let rules = self.rules(&[(src, dst)]);
            self.transact(&rules)
        } else {
            self.install()
        };
        if result.is_err() {
            self.flows.pop_back();
        }
        result.map(|_| true)
    }

    /// The table, its chains and every flow's rules in one transaction;
    /// owned by the socket where the kernel allows it.
    fn install(&mut self) -> io::Result<()> {
        let flows: Vec<_> = self.flows.iter().copied().collect();
        for flags in [NFT_TABLE_F_OWNER, 0] {
            let mut edits = vec![message::new_table(NFPROTO_INET, &self.table, flags)];
            edits.extend(CHAINS.map(|c| message::new_chain(NFPROTO_INET, &self.table, c)));
            edits.extend(self.rules(&flows));
            match self.transact(&edits) {
                Ok(()) => {
                    self.installed = true;
                    self.owned = flags != 0;
                    return Ok(());
                }
                // Before 5.12 the owner flag is unknown (EINVAL before 5.11's
                // flag check became EOPNOTSUPP).
                Err(e)
                    if flags != 0
                        && matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("nf_tables refused the trace table"))
    }

    fn rules(&self, flows: &[(IpAddr, IpAddr)]) -> Vec<Edit> {
        flows
            .iter()
            .filter(|(s, d)| s.is_ipv4() == d.is_ipv4())
            .flat_map(|&(s, d)| {
                CHAINS.map(|c| message::trace_rule(NFPROTO_INET, &self.table, c.name, s, d))
            })
            .collect()
    }

    /// Whether the table is owned by calitrace's socket (removed by the
    /// kernel whatever way calitrace ends).
    pub fn owned(&self) -> bool {
        self.owned
    }

    pub fn installed(&self) -> bool {
        self.installed
    }

    /// The drops traced since the last call, after reading every waiting
    /// trace message.
    pub fn drain(&mut self) -> Vec<TracedDrop> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match syscall::recv(self.events.as_fd(), &mut buf, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    for msg in messages(&buf[..n.min(buf.len())]).flatten() {
                        if let Some(ev) = message::trace_event(msg.ty, msg.payload) {
                            self.done.extend(self.walks.take(ev));
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.lost += 1,
                Err(_) => break,
            }
        }
        if !self.done.is_empty() {
            self.last_use = Instant::now();
        }
        std::mem::take(&mut self.done)
    }

    /// Removes the table once no flow needed tracing for [`IDLE`].
    pub fn expire(&mut self, now: Instant) {
        if self.installed && now.saturating_duration_since(self.last_use) >= IDLE {
            self.flows.clear();
            self.remove();
        }
    }

    fn remove(&mut self) {
        if self.installed {
            let _ = self.transact(&[message::delete_table(NFPROTO_INET, &self.table)]);
            self.installed = false;
        }
    }

    /// Sends one transaction and waits for each edit's answer; the first
    /// error is the transaction's (nf_tables then applies none of it).
    fn transact(&mut self, edits: &[Edit]) -> io::Result<()> {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(edits.len() as u32 + 2);
        syscall::send(self.edit.as_fd(), &message::batch(edits, first))?;
        let mut answered = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while answered < edits.len() {
            let n = syscall::recv(self.edit.as_fd(), &mut buf, libc::MSG_DONTWAIT)
                .map_err(|e| io::Error::other(format!("nf_tables gave no answer: {e}")))?;
            for msg in messages(&buf[..n.min(buf.len())]) {
                let msg = msg?;
                if msg.seq < first || msg.ty != NLMSG_ERROR {
                    continue;
                }
                match error_code(msg.payload) {
                    0 => answered += 1,
                    code => {
                        self.discard_answers();
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
            }
        }
        Ok(())
    }

    fn discard_answers(&self) {
        let mut buf = vec![0u8; 16 * 1024];
        while syscall::recv(self.edit.as_fd(), &mut buf, libc::MSG_DONTWAIT).is_ok() {}
    }

    /// Deletes `inet calitrace_<pid>` tables whose calitrace is gone (left
    /// by one killed on a kernel without owned tables).
    fn sweep(&mut self) -> io::Result<Vec<String>> {
        let seq = self.seq;
        self.seq += 1;
        syscall::send(self.edit.as_fd(), &message::list_tables(seq))?;
        let mut stale = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        'read: while let Ok(n) = syscall::recv(self.edit.as_fd(), &mut buf, libc::MSG_DONTWAIT) {
            for msg in messages(&buf[..n.min(buf.len())]).flatten() {
                if matches!(msg.ty, NLMSG_DONE | NLMSG_ERROR) {
                    break 'read;
                }
                if message::is_table_reply(msg.ty)
                    && let Some((NFPROTO_INET, name)) = message::table_of_reply(msg.payload)
                    && is_stale(&name)
                {
                    stale.push(name);
                }
            }
        }
        let mut removed = Vec::new();
        for name in stale {
            if self
                .transact(&[message::delete_table(NFPROTO_INET, &name)])
                .is_ok()
            {
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// A table of a calitrace that no longer runs.
fn is_stale(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(TABLE_PREFIX)
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() != "calitrace"
}

impl Drop for NfTracer {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tables_are_recognised_and_only_dead_ones_are_stale() {
        assert!(is_own_table("calitrace_42"));
        assert!(!is_own_table("calico"));
        assert!(!is_stale("calico"));
        assert!(!is_stale("calitrace_x"));
        assert!(!is_stale(&format!("calitrace_{}", std::process::id())));
        // No process has pid 4194304 (above pid_max's largest value).
        assert!(is_stale("calitrace_4194304"));
    }
}
