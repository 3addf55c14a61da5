//! Shared by the tests that run the eBPF programs' parsing code in userspace
//! (`ebpf_parse.rs` here, `tracer-user/tests/ebpf_prefilter.rs`).

#![allow(dead_code)]

/// Packet bytes, read as `bpf_skb_load_bytes` (or a tc program's direct
/// reads of linear data) would: `None` past the end.
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn read_at<T: Copy>(&self, off: usize) -> Option<T> {
        let end = off.checked_add(std::mem::size_of::<T>())?;
        let b = self.0.get(off..end)?;
        // SAFETY: T is a byte array here; the length was checked.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
    }
}

/// A small deterministic generator for randomized tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}
