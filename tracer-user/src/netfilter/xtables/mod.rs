//! x_tables (`iptables-legacy`, `ip6tables-legacy`): the tables as the kernel
//! hands them to iptables, through `IPT_SO_GET_INFO` / `IPT_SO_GET_ENTRIES` on
//! a raw socket (`socket`): a blob of entries (`entry`) decoded into
//! [`Table`]s (`table`) whose rules read like `iptables -S` (`rule`).

mod entry;
mod rule;
mod socket;
mod table;
#[cfg(test)]
mod tests;
mod verdict;

use std::io;

use entry::{IPV4, IPV6, Layout};
use socket::{raw_socket, read_table};
use table::parse_table;
pub(crate) use verdict::target_verdict;

use super::inventory::{Inventory, Table};

/// Adds every x_tables table of this thread's network namespace, IPv4 and IPv6.
pub(crate) fn read_into(inv: &mut Inventory) {
    let sources = [
        (
            &IPV4,
            "iptables",
            "ip_tables_names",
            libc::AF_INET,
            libc::SOL_IP,
        ),
        (
            &IPV6,
            "ip6tables",
            "ip6_tables_names",
            libc::AF_INET6,
            libc::SOL_IPV6,
        ),
    ];
    for (layout, what, names_file, af, level) in sources {
        match read_family(layout, names_file, af, level) {
            Ok((tables, errors)) => {
                inv.tables.extend(tables);
                inv.errors
                    .extend(errors.into_iter().map(|e| format!("x_tables: {what} {e}")));
            }
            Err(e) => inv.errors.push(format!("x_tables: {what}: {e}")),
        }
    }
}

/// The tables of one family. Only tables listed in `/proc/net/ip{,6}_tables_names`
/// are asked for: asking for any other would make the kernel create it in
/// this namespace, with hooks, which a read-only inventory must not do.
fn read_family(
    layout: &Layout,
    names_file: &str,
    af: libc::c_int,
    level: libc::c_int,
) -> io::Result<(Vec<Table>, Vec<String>)> {
    // thread-self: /proc/self/net is the namespace of the main thread.
    let names = match std::fs::read_to_string(format!("/proc/thread-self/net/{names_file}")) {
        Ok(s) => s,
        // No such file: ip{,6}_tables is not loaded, so there is no table.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(e),
    };
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok((vec![], vec![]));
    }
    let sock = raw_socket(af)?;
    let (mut tables, mut errors) = (Vec::new(), Vec::new());
    for name in names {
        match read_table(&sock, level, name) {
            Ok(Some((info, blob))) => match parse_table(layout, name, &info, &blob) {
                Ok(t) => tables.push(t),
                Err(e) => errors.push(format!("{name}: {e}")),
            },
            Ok(None) => {}
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Ok((tables, errors))
}
