//! Corrupted copies of good kernel messages, for the decoders' tests that
//! garbage never makes them panic.

/// `count` copies of `good`, each with `flips` bytes overwritten at
/// pseudo-random places (xorshift32 from `seed`: every run is the same).
pub(crate) fn corrupted(
    good: &[u8],
    mut seed: u32,
    count: usize,
    flips: usize,
) -> impl Iterator<Item = Vec<u8>> {
    (0..count).map(move |_| {
        let mut m = good.to_vec();
        for _ in 0..flips {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let i = seed as usize % m.len();
            m[i] = (seed >> 24) as u8;
        }
        m
    })
}
