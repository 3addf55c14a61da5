//! What calitrace needs from the running kernel's BTF: struct member offsets for
//! the programs, drop-reason names, tracepoint signatures, and the BTF ids of
//! the functions the exact netfilter probes trace.
//!
//! Besides vmlinux this reads the split BTF of the netfilter modules that are
//! loaded (kernel 5.11+): distribution kernels build `nft_do_chain` and
//! `ipt_do_table`, and the structs they take, as modules.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use btf_rs::{Backend, Btf, Type};
use tracer_common::{NfOffsets, SkbOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const BTF_DIR: &str = "/sys/kernel/btf";

/// Modules whose BTF is read when they are loaded: the netfilter table walkers
/// and the structs their probes read.
pub const NF_MODULES: [&str; 4] = ["nf_tables", "x_tables", "ip_tables", "ip6_tables"];

pub struct KernelBtf {
    btf: Btf,
    /// (module name, its split BTF on top of vmlinux's).
    modules: Vec<(String, Btf)>,
}

/// Where a traceable kernel function's type is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionBtf {
    /// The module whose BTF holds it, or None for vmlinux.
    pub module: Option<String>,
    /// Its BTF id (ids of a module's split BTF follow vmlinux's).
    pub id: u32,
}

impl KernelBtf {
    /// vmlinux's BTF and that of the loaded netfilter modules.
    pub fn load() -> Result<Self> {
        let mut k = Self::from_file(VMLINUX_BTF)?;
        for m in NF_MODULES {
            let path = Path::new(BTF_DIR).join(m);
            if path.exists()
                && let Ok(b) = Btf::from_split_file(&path, &k.btf)
            {
                k.modules.push((m.to_string(), b));
            }
        }
        Ok(k)
    }

    pub fn from_file(path: &str) -> Result<Self> {
        // Mapped where the kernel allows mmap of its BTF (6.16+): parsing all
        // of vmlinux's BTF up front takes ~30 MiB, which would be the
        // process's peak RSS. Lookups are fewer than a hundred.
        let btf = Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .with_context(|| format!("cannot read kernel BTF from {path}"))?;
        Ok(Self {
            btf,
            modules: Vec::new(),
        })
    }

    /// Names of the modules whose BTF was read.
    pub fn modules(&self) -> Vec<&str> {
        self.modules.iter().map(|(m, _)| m.as_str()).collect()
    }

    /// vmlinux first, then each module (a module's BTF resolves vmlinux's too).
    fn views(&self) -> impl Iterator<Item = (Option<&str>, View<'_>)> {
        std::iter::once((None, View(&self.btf))).chain(
            self.modules
                .iter()
                .map(|(m, b)| (Some(m.as_str()), View(b))),
        )
    }

    /// Offset of a dotted path of members, e.g. `("net", "ns.inum")`, in
    /// vmlinux's BTF or else in a module's.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Option<u32> {
        self.views().find_map(|(_, v)| v.offset_of(strukt, path))
    }

    /// The BTF id of function `name`, in vmlinux or a module.
    pub fn function(&self, name: &str) -> Option<FunctionBtf> {
        self.views().find_map(|(module, v)| {
            let ids = v.0.resolve_ids_by_name(name).ok()?;
            ids.into_iter()
                .find(|&id| matches!(v.0.resolve_type_by_id(id), Ok(Type::Func(_))))
                .map(|id| FunctionBtf {
                    module: module.map(str::to_string),
                    id,
                })
        })
    }

    /// Whether the kernel's BTF has a function of that name.
    pub fn has_function(&self, name: &str) -> bool {
        self.function(name).is_some()
    }

    /// Parameter names of a kernel function.
    pub fn function_params(&self, name: &str) -> Vec<String> {
        self.views()
            .map(|(_, v)| v.function_params(name))
            .find(|p| !p.is_empty())
            .unwrap_or_default()
    }

    pub fn skb_offsets(&self) -> SkbOffsets {
        let o = |s: &str, p: &str| {
            self.offset_of(s, p)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(SkbOffsets::ABSENT)
        };
        SkbOffsets {
            skb_len: o("sk_buff", "len"),
            skb_dev: o("sk_buff", "dev"),
            skb_sk: o("sk_buff", "sk"),
            skb_head: o("sk_buff", "head"),
            skb_network_header: o("sk_buff", "network_header"),
            skb_transport_header: o("sk_buff", "transport_header"),
            skb_protocol: o("sk_buff", "protocol"),
            skb_mark: o("sk_buff", "mark"),
            dev_ifindex: o("net_device", "ifindex"),
            dev_nd_net: o("net_device", "nd_net.net"),
            sk_net: o("sock", "__sk_common.skc_net.net"),
            net_ns_inum: o("net", "ns.inum"),
            reason_arg: match self.tracepoint_args("kfree_skb") {
                Some(n) if n >= 3 => 2,
                _ => SkbOffsets::ABSENT,
            },
            _pad: [0; 3],
        }
    }

    pub fn nf_offsets(&self) -> NfOffsets {
        let o = |s: &str, p: &str| {
            self.offset_of(s, p)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(u16::MAX)
        };
        let state = match o("nft_pktinfo", "state") {
            u16::MAX => o("nft_pktinfo", "xt.state"),
            v => v,
        };
        NfOffsets {
            pktinfo_skb: o("nft_pktinfo", "skb"),
            pktinfo_state: state,
            chain_table: o("nft_chain", "table"),
            chain_name: o("nft_chain", "name"),
            table_name: o("nft_table", "name"),
            state_hook: o("nf_hook_state", "hook"),
            state_pf: o("nf_hook_state", "pf"),
            xt_table_name: o("xt_table", "name"),
            ipt_layout: match self
                .function_params("ipt_do_table")
                .first()
                .map(String::as_str)
            {
                Some("skb") => 1,
                _ => 0,
            },
            _pad: [0; 3],
        }
    }

    /// Values and names of `enum skb_drop_reason`, without the
    /// `SKB_DROP_REASON_` prefix. Empty on kernels without drop reasons.
    pub fn drop_reasons(&self) -> BTreeMap<u32, String> {
        let mut out = BTreeMap::new();
        let Ok(types) = self.btf.resolve_types_by_name("skb_drop_reason") else {
            return out;
        };
        for t in types {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if let Ok(name) = self.btf.resolve_name(m) {
                        let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name);
                        out.insert(m.val(), short.to_string());
                    }
                }
            }
        }
        out
    }

    /// Number of arguments of a raw tracepoint, from `btf_trace_<name>`
    /// (a pointer to a prototype whose first parameter is the BPF context).
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let v = View(&self.btf);
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?;
        let t = v.strip(types.into_iter().next()?)?;
        let Type::Ptr(p) = t else { return None };
        match self.btf.resolve_chained_type(&p).ok()? {
            Type::FuncProto(fp) => Some(fp.parameters.len().saturating_sub(1)),
            _ => None,
        }
    }
}

/// Lookups within one BTF (vmlinux's, or a module's on top of it).
#[derive(Clone, Copy)]
struct View<'a>(&'a Btf);

impl View<'_> {
    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.0
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
    }

    /// Peels typedefs and qualifiers off a type.
    fn strip(&self, mut t: Type) -> Option<Type> {
        for _ in 0..16 {
            match t {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    t = self.0.resolve_chained_type(t.as_btf_type()?).ok()?;
                }
                other => return Some(other),
            }
        }
        None
    }

    /// Byte offset of `member` in a struct/union, looking through anonymous
    /// members (the kernel wraps many fields in unnamed unions and structs).
    fn member_in(&self, st: &btf_rs::Struct, member: &str) -> Option<(u32, Type)> {
        for m in &st.members {
            let name = self.0.resolve_name(m).unwrap_or_default();
            let ty = self
                .0
                .resolve_chained_type(m)
                .ok()
                .and_then(|t| self.strip(t));
            if name == member {
                return Some((m.bit_offset() / 8, ty?));
            }
            if name.is_empty()
                && let Some(Type::Struct(inner) | Type::Union(inner)) = ty
                && let Some((off, t)) = self.member_in(&inner, member)
            {
                return Some((m.bit_offset() / 8 + off, t));
            }
        }
        None
    }

    fn offset_of(&self, strukt: &str, path: &str) -> Option<u32> {
        let mut st = self.find_struct(strukt)?;
        let mut total = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, ty) = self.member_in(&st, part)?;
            total += off;
            if parts.peek().is_some() {
                st = match ty {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => return None,
                };
            }
        }
        Some(total)
    }

    fn function_params(&self, name: &str) -> Vec<String> {
        let Ok(types) = self.0.resolve_types_by_name(name) else {
            return Vec::new();
        };
        for t in types {
            if let Type::Func(f) = t
                && let Ok(Type::FuncProto(fp)) = self.0.resolve_chained_type(&f)
            {
                return fp
                    .parameters
                    .iter()
                    .map(|p| self.0.resolve_name(p).unwrap_or_default())
                    .collect();
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Option<KernelBtf> {
        std::path::Path::new(VMLINUX_BTF)
            .exists()
            .then(|| KernelBtf::load().unwrap())
    }

    #[test]
    fn offsets_of_the_running_kernel_are_plausible() {
        let Some(k) = kernel() else { return };
        let o = k.skb_offsets();
        for (name, v) in [
            ("len", o.skb_len),
            ("dev", o.skb_dev),
            ("head", o.skb_head),
            ("network_header", o.skb_network_header),
            ("protocol", o.skb_protocol),
            ("ifindex", o.dev_ifindex),
            ("nd_net", o.dev_nd_net),
            ("skc_net", o.sk_net),
            ("ns.inum", o.net_ns_inum),
        ] {
            assert_ne!(v, SkbOffsets::ABSENT, "{name} not found in BTF");
        }
        // sk_buff starts with the next/prev/dev union: dev is within the first 24 bytes.
        assert!(o.skb_dev < 24, "dev at {}", o.skb_dev);
        assert!(o.skb_head > o.skb_len);
    }

    #[test]
    fn drop_reason_names_come_from_btf() {
        let Some(k) = kernel() else { return };
        let r = k.drop_reasons();
        assert_eq!(r.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
        assert!(r.values().any(|n| n == "NETFILTER_DROP"));
        assert!(r.values().any(|n| n == "IP_RPFILTER"));
        assert_eq!(k.tracepoint_args("kfree_skb"), Some(4));
        assert!(k.has_function("nf_hook_slow"));
        let f = k.function("nft_do_chain").expect("nft_do_chain in BTF");
        assert!(f.id > 0);
        assert!(!k.has_function("no_such_function_calitrace"));
        assert_eq!(k.function_params("nft_do_chain"), ["pkt", "priv"]);
        let nf = k.nf_offsets();
        assert_eq!(nf.ipt_layout, 0, "6.x: ipt_do_table(priv, skb, state)");
        assert_eq!(nf.pktinfo_skb, 0);
        assert_eq!(nf.state_hook, 0);
        assert_eq!(nf.state_pf, 1);
        for v in [
            nf.pktinfo_state,
            nf.chain_table,
            nf.chain_name,
            nf.table_name,
            nf.xt_table_name,
        ] {
            assert_ne!(v, u16::MAX, "{nf:?}");
        }
    }
}
