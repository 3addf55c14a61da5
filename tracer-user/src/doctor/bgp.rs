//! `bgp`: where Calico routes with BIRD, something must listen on TCP port
//! 179 and sessions to the other nodes must be established.

use std::net::IpAddr;

use super::{Check, CheckId, HostRoot, Inputs};

const BGP_PORT: u16 = 179;
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// One socket of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Socket {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: u8,
}

/// `0100007F:00B3` (IPv4) or 32 hex digits (IPv6), each 32-bit word in
/// host byte order, then the port.
fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

fn parse_tcp(table: &str) -> Vec<Socket> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Socket {
                local: endpoint(f.get(1)?)?,
                remote: endpoint(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            })
        })
        .collect()
}

/// Why BIRD is thought to be in use, or `None`; and the pid whose network
/// namespace holds its sockets.
fn bird(root: &HostRoot) -> (Option<String>, Option<u32>) {
    if let Some(p) = root.processes(&["bird", "bird6"]).first() {
        return (Some(format!("{} (pid {})", p.comm, p.pid)), Some(p.pid));
    }
    for p in root.processes(&["calico-node"]) {
        let Ok(env) = root.environ(p.pid) else {
            continue;
        };
        let backend = env
            .iter()
            .find(|(k, _)| k == "CALICO_NETWORKING_BACKEND")
            .map(|(_, v)| v.as_str());
        if backend == Some("bird") {
            return (
                Some(format!(
                    "CALICO_NETWORKING_BACKEND=bird (calico-node pid {})",
                    p.pid
                )),
                Some(p.pid),
            );
        }
    }
    (None, None)
}

pub(super) fn bgp(inputs: &Inputs) -> Check {
    let id = CheckId::Bgp;
    let root = &inputs.root;
    let (Some(why), pid) = bird(root) else {
        return Check::skip(
            id,
            "BIRD is not in use: no bird process, no calico-node with CALICO_NETWORKING_BACKEND=bird",
        );
    };
    let dir = pid.map_or("/proc/net".to_string(), |p| format!("/proc/{p}/net"));
    let tables: Vec<String> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| root.read(format!("{dir}/{t}")).ok())
        .collect();
    if tables.is_empty() {
        return Check::skip(
            id,
            format!("{}/tcp cannot be read", root.path(&dir).display()),
        )
        .evidence(why);
    }
    let sockets: Vec<Socket> = tables.iter().flat_map(|t| parse_tcp(t)).collect();
    let listening = sockets
        .iter()
        .any(|s| s.state == TCP_LISTEN && s.local.1 == BGP_PORT);
    let peers: Vec<String> = sockets
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED && (s.local.1 == BGP_PORT || s.remote.1 == BGP_PORT))
        .map(|s| s.remote.0.to_string())
        .collect();
    let evidence = format!(
        "BIRD: {why}; port {BGP_PORT} {}; established with: {}",
        if listening {
            "listening"
        } else {
            "not listening"
        },
        if peers.is_empty() {
            "none".to_string()
        } else {
            peers.join(", ")
        }
    );
    if !listening {
        return Check::fail(
            id,
            "BIRD is in use, but nothing listens on TCP port 179: no BGP session can come up",
        )
        .evidence(evidence)
        .hint("check calico-node's logs (bird, confd) and `calicoctl node status`");
    }
    if peers.is_empty() {
        return Check::warn(id, "BIRD listens on port 179 but has no established BGP session: routes to other nodes' pods are not learned")
            .evidence(evidence)
            .hint("`calicoctl node status` shows each peer's state; TCP port 179 must be open between the nodes");
    }
    Check::ok(id, format!("{} BGP session(s) established", peers.len())).evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::FakeRoot;
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    /// An IPv4 address and port as `/proc/net/tcp` writes them.
    fn hex(ip: [u8; 4], port: u16) -> String {
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip))
    }

    fn line(local: String, remote: String, state: u8) -> String {
        format!(
            "   0: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n"
        )
    }

    #[test]
    fn parses_proc_net_tcp() {
        let t = format!(
            "{HEADER}{}",
            line(hex([0, 0, 0, 0], 179), hex([0, 0, 0, 0], 0), TCP_LISTEN)
        );
        let s = parse_tcp(&t);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local, ("0.0.0.0".parse().unwrap(), 179));
        let v6 = endpoint("00000000000000000000000001000000:00B3").unwrap();
        assert_eq!(v6, ("::1".parse().unwrap(), 179));
        assert_eq!(endpoint("zz:1"), None);
    }

    #[test]
    fn bird_without_listener_fails_without_sessions_warns() {
        let f = FakeRoot::new();
        assert_eq!(bgp(&f.inputs()).status, Status::Skip);
        f.process(50, "bird", &[]);
        f.file("/proc/50/net/tcp", HEADER);
        let c = bgp(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let listen = line(hex([0, 0, 0, 0], 179), hex([0, 0, 0, 0], 0), TCP_LISTEN);
        f.file("/proc/50/net/tcp", &format!("{HEADER}{listen}"));
        assert_eq!(bgp(&f.inputs()).status, Status::Warn);
        let session = line(
            hex([192, 168, 1, 1], 179),
            hex([192, 168, 1, 2], 40000),
            TCP_ESTABLISHED,
        );
        f.file("/proc/50/net/tcp", &format!("{HEADER}{listen}{session}"));
        let c = bgp(&f.inputs());
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.evidence.ends_with("established with: 192.168.1.2"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn calico_networking_backend_bird_counts_as_bird() {
        let f = FakeRoot::new();
        f.process(60, "calico-node", &["CALICO_NETWORKING_BACKEND=vxlan"]);
        assert_eq!(bgp(&f.inputs()).status, Status::Skip);
        f.process(61, "calico-node", &["CALICO_NETWORKING_BACKEND=bird"]);
        let c = bgp(&f.inputs());
        assert_eq!(
            c.status,
            Status::Skip,
            "no tcp table under the fake root: {c:?}"
        );
        assert!(c.evidence.contains("CALICO_NETWORKING_BACKEND=bird"));
    }
}
