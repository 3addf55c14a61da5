//! Kernel addresses to symbol names, from `/proc/kallsyms`.

use std::io::{BufRead, BufReader, Read};

#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    /// (address, name), sorted by address; text symbols only.
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> std::io::Result<Self> {
        Ok(Self::parse(std::fs::File::open("/proc/kallsyms")?))
    }

    pub fn parse(r: impl Read) -> Self {
        let mut syms = Vec::new();
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            if let Ok(a) = u64::from_str_radix(addr, 16)
                && a != 0
            {
                syms.push((a, name.to_string()));
            }
        }
        syms.sort_unstable_by_key(|s| s.0);
        Self { syms }
    }

    /// False when addresses are hidden (kptr_restrict) and nothing can be resolved.
    pub fn usable(&self) -> bool {
        !self.syms.is_empty()
    }

    /// The function containing `addr` and the offset into it.
    pub fn resolve(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let (start, name) = self.syms.get(i.checked_sub(1)?)?;
        Some((name.as_str(), addr - start))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.syms.iter().any(|s| s.1 == name)
    }

    /// Function name only, e.g. `nf_hook_slow`.
    pub fn name(&self, addr: u64) -> Option<&str> {
        self.resolve(addr).map(|(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ffffffff81000000 T _stext\n\
        ffffffff81a00000 t ip_forward\n\
        ffffffff81a00400 T nf_hook_slow\n\
        ffffffff81a00800 d some_data\n\
        ffffffff81a01000 T nft_do_chain\t[nf_tables]\n";

    #[test]
    fn resolves_inside_functions() {
        let k = Kallsyms::parse(SAMPLE.as_bytes());
        assert_eq!(k.resolve(0xffffffff81a00410), Some(("nf_hook_slow", 0x10)));
        assert_eq!(k.name(0xffffffff81a00000), Some("ip_forward"));
        assert_eq!(k.name(0xffffffff81a01234), Some("nft_do_chain"));
        assert_eq!(k.name(0x10), None);
    }

    #[test]
    fn hidden_addresses_are_unusable() {
        let k = Kallsyms::parse(
            "0000000000000000 T _stext\n0000000000000000 t ip_forward\n".as_bytes(),
        );
        assert!(!k.usable());
    }
}
