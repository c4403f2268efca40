//! A small deterministic PRNG (xorshift64*), for schedules that are a pure
//! function of a seed: the jepsen nemesis (`tests/jepsen/nemesis.rs`) and
//! the fault demo (`examples/demo_faults.rs`, which includes this file with
//! `#[path]`). Not for anything that must be unpredictable.

use std::time::Duration;

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeds that differ in any bit give unrelated streams (splitmix64).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// An independent stream for `stream` (one per client thread).
    pub fn fork(seed: u64, stream: u64) -> Rng {
        Rng::new(Rng::new(seed).0 ^ stream)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// A duration in `[lo, hi)` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}
