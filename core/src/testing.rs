//! Helpers for tests of this crate and of the hosts. Not for production: ids from
//! [`SequenceRandom`] are predictable.

use crate::channel::RandomSource;

/// A deterministic [`RandomSource`] (SplitMix64), so tests see the same ids on every run.
#[derive(Debug, Clone)]
pub struct SequenceRandom {
    state: u64,
}

impl SequenceRandom {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for SequenceRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
