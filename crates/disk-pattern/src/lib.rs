//! What the disk of `blkcheck=host-image` holds, as a function of the seed:
//! one definition that the kernel's workload (kernel/src/checks) and the
//! host runner (xtask/src/blk_checks) both use, so they cannot disagree.
//! Every 4 KiB block is 512 little-endian words.
//! Before boot the runner stamps block `b` with [`stamp_word`]`(seed, b, j)`;
//! the kernel then overwrites the blocks of the extents [`plan`] selects
//! with [`written_word`]. Both are distinct per block and word, so a block
//! that landed at the wrong place, a torn write or a stale block is seen.

#![no_std]

/// Bytes per block.
pub const BLOCK_BYTES: usize = 4096;
/// Words (u64) per block.
pub const BLOCK_WORDS: usize = BLOCK_BYTES / 8;
/// Longest extent in blocks: also the largest single request.
pub const MAX_EXTENT_BLOCKS: u64 = 8;

/// Mixed into stamped words; word 0 of block `b` is `b ^ STAMP_KEY`.
pub const STAMP_KEY: u64 = 0x5354_414d_505f_4b45;
/// Mixed into written words; word 0 of block `b` is `b ^ WRITE_KEY`.
pub const WRITE_KEY: u64 = 0x5752_4954_455f_4b45;
const LENGTH_KEY: u64 = 0x4c45_4e47_5448_5f4b;
const SELECT_KEY: u64 = 0x5345_4c45_4354_5f4b;

/// splitmix64's finaliser: a bijection that scrambles every input bit.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn word(key: u64, seed: u64, block: u64, index: usize) -> u64 {
    // Word 0 names the block outright, so a dump shows where data came from.
    if index == 0 { block ^ key } else { mix(seed ^ key ^ (block << 9 | index as u64)) }
}

/// Word `index` of block `block` as the runner stamped it.
pub fn stamp_word(seed: u64, block: u64, index: usize) -> u64 {
    word(STAMP_KEY, seed, block, index)
}

/// Word `index` of block `block` as the kernel writes it.
pub fn written_word(seed: u64, block: u64, index: usize) -> u64 {
    word(WRITE_KEY, seed, block, index)
}

/// One run of blocks in the write plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Its position in the plan (CPU `n` of `c` writes those with
    /// `index % c == n`).
    pub index: u64,
    pub first_block: u64,
    pub blocks: u64,
    /// Whether the kernel writes it (else it keeps the stamp).
    pub is_written: bool,
}

/// The image cut into extents of 1 to 8 blocks, three in four of them
/// written: the same cut on both sides, from the seed alone.
pub fn plan(seed: u64, disk_blocks: u64) -> impl Iterator<Item = Extent> {
    let mut next_block = 0;
    (0u64..).map_while(move |index| {
        if next_block >= disk_blocks {
            return None;
        }
        let blocks =
            (1 + mix(seed ^ LENGTH_KEY ^ index) % MAX_EXTENT_BLOCKS).min(disk_blocks - next_block);
        let is_written = !mix(seed ^ SELECT_KEY ^ index).is_multiple_of(4);
        let extent = Extent { index, first_block: next_block, blocks, is_written };
        next_block += blocks;
        Some(extent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_values() {
        assert_eq!(stamp_word(7, 3, 0), 3 ^ STAMP_KEY);
        assert_eq!(stamp_word(7, 3, 5), 0x4eb1_1847_4e71_0e27);
        assert_eq!(written_word(7, 3, 5), 0xf01f_5266_18af_bf02);
        let mut first = plan(7, 1000);
        let (a, b) = (first.next().unwrap(), first.next().unwrap());
        assert_eq!((a.blocks, a.is_written), (2, true));
        assert_eq!((b.blocks, b.is_written), (7, false));
        assert_eq!(b.first_block, a.blocks);
    }

    #[test]
    fn the_plan_covers_the_disk_once() {
        let mut next = 0;
        for extent in plan(11, 5000) {
            assert_eq!(extent.first_block, next);
            assert!((1..=MAX_EXTENT_BLOCKS).contains(&extent.blocks));
            next += extent.blocks;
        }
        assert_eq!(next, 5000);
    }
}
