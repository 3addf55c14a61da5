//! ARP requests seen arriving on an interface, waiting for the reply that
//! should leave on the same interface (proxy ARP for Calico's 169.254.1.1).

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    pub ifindex: u32,
    pub target: Ipv4Addr,
    pub sender: Ipv4Addr,
    pub requests: u64,
    pub first_ts: u64,
    pub last_ts: u64,
}

#[derive(Default)]
pub struct ArpWatch {
    pending: HashMap<(u32, Ipv4Addr), Unanswered>,
    window_ns: u64,
}

impl ArpWatch {
    pub fn new(window_ns: u64) -> Self {
        Self {
            pending: HashMap::new(),
            window_ns,
        }
    }

    /// An ARP request for `target` arrived on `ifindex`.
    pub fn request(&mut self, ts: u64, ifindex: u32, sender: Ipv4Addr, target: Ipv4Addr) {
        if sender == target {
            return; // gratuitous ARP expects no answer
        }
        let e = self.pending.entry((ifindex, target)).or_insert(Unanswered {
            ifindex,
            target,
            sender,
            requests: 0,
            first_ts: ts,
            last_ts: ts,
        });
        e.requests += 1;
        e.last_ts = ts;
    }

    /// An ARP reply claiming `sender` left on `ifindex`: requests for it there are answered.
    pub fn reply(&mut self, ifindex: u32, sender: Ipv4Addr) {
        self.pending.remove(&(ifindex, sender));
    }

    /// Requests older than the window without a reply, removed from the watch.
    pub fn expired(&mut self, now: u64) -> Vec<Unanswered> {
        let window = self.window_ns;
        let mut out: Vec<Unanswered> = Vec::new();
        self.pending.retain(|_, u| {
            if now.saturating_sub(u.first_ts) >= window {
                out.push(u.clone());
                false
            } else {
                true
            }
        });
        out.sort_by_key(|u| (u.first_ts, u.ifindex));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
    const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);

    #[test]
    fn answered_requests_are_forgotten() {
        let mut w = ArpWatch::new(1_000);
        w.request(0, 5, POD, GW);
        w.reply(5, GW);
        assert!(w.expired(10_000).is_empty());
    }

    #[test]
    fn a_reply_on_another_interface_does_not_count() {
        let mut w = ArpWatch::new(1_000);
        w.request(0, 5, POD, GW);
        w.request(400, 5, POD, GW);
        w.reply(6, GW);
        assert!(w.expired(999).is_empty(), "still inside the window");
        let u = w.expired(1_000);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].ifindex, u[0].target, u[0].requests, u[0].last_ts),
            (5, GW, 2, 400)
        );
        assert!(w.expired(5_000).is_empty(), "reported once");
    }

    #[test]
    fn gratuitous_arp_is_ignored() {
        let mut w = ArpWatch::new(1);
        w.request(0, 5, POD, POD);
        assert!(w.expired(100).is_empty());
    }
}
