//! The nets a filter needs one of a packet's addresses to be in
//! ([`QuickNets`]), so that the tc programs can turn other packets away
//! before parsing them.

use tracer_common::filter::{QUICK_NETS, QuickNets, op};

use super::ast::{Expr, Net, Prim};

/// The quick nets of `expr`: none (`len == 0`) unless every IP packet that
/// `expr` matches has its source or destination in one of them.
pub(super) fn quick_nets(expr: Option<&Expr>) -> QuickNets {
    let mut q = QuickNets::NONE;
    if let Some(nets) = expr.and_then(required_nets) {
        q.len = nets.len() as u32;
        for (slot, net) in q.nets.iter_mut().zip(&nets) {
            *slot = net.insn(op::SRC_NET);
        }
    }
    q
}

/// Nets of which a packet matching `e` has an address in at least one;
/// `None` where `e` can match a packet with any addresses (ports, protocols,
/// `not`), or it takes more than [`QUICK_NETS`] nets to say.
fn required_nets(e: &Expr) -> Option<Vec<Net>> {
    match e {
        Expr::Prim(Prim::Host(_, n) | Prim::Net(_, n), _) => Some(vec![n.masked()]),
        Expr::Prim(..) | Expr::Not(_) => None,
        // Either side's nets hold for both; the fewer, the cheaper.
        Expr::And(a, b) => match (required_nets(a), required_nets(b)) {
            (Some(x), Some(y)) => Some(if y.len() < x.len() { y } else { x }),
            (x, y) => x.or(y),
        },
        Expr::Or(a, b) => {
            let mut nets = required_nets(a)?;
            for n in required_nets(b)? {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
            (nets.len() <= QUICK_NETS).then_some(nets)
        }
    }
}
