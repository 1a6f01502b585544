//! The disk image's contents for `blkcheck=host-image` (the shared
//! `vireo-disk-pattern` crate, which the runner uses too), and the kernel's
//! own random choices.

pub use vireo_disk_pattern::{
    BLOCK_BYTES, BLOCK_WORDS, MAX_EXTENT_BLOCKS, mix, plan, stamp_word, written_word,
};

/// xorshift64*: the kernel's own random choices (read offsets, write
/// order), which the runner does not need to know.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
