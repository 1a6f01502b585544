//! Stamping a check's image before boot and comparing it after, with the
//! block contents the kernel uses too (`vireo-disk-pattern`).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

pub use vireo_disk_pattern::{
    BLOCK_BYTES, BLOCK_WORDS, Extent, STAMP_KEY, WRITE_KEY, stamp_word, written_word,
};

/// The write plan (`vireo_disk_pattern::plan`), collected.
pub fn plan(seed: u64, disk_blocks: u64) -> Vec<Extent> {
    vireo_disk_pattern::plan(seed, disk_blocks).collect()
}

/// The bytes of block `block` made of `word`.
pub fn block_bytes(block: u64, word: impl Fn(u64, usize) -> u64) -> Vec<u8> {
    (0..BLOCK_WORDS).flat_map(|index| word(block, index).to_le_bytes()).collect()
}

/// Writes an image of `blocks` stamped blocks.
pub fn stamp_image(path: &Path, seed: u64, blocks: u64) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for block in 0..blocks {
        out.write_all(&block_bytes(block, |b, i| stamp_word(seed, b, i)))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    out.flush().map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Reads a whole image.
pub fn read_image(path: &Path) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(data)
}

/// What a block that differs from the expectation holds instead, as far
/// as its first word tells.
fn describe_block(seed: u64, blocks: u64, data: &[u8]) -> String {
    let first = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let word1 = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    if first ^ STAMP_KEY < blocks && word1 == stamp_word(seed, first ^ STAMP_KEY, 1) {
        format!("the stamp of block {}", first ^ STAMP_KEY)
    } else if first ^ WRITE_KEY < blocks && word1 == written_word(seed, first ^ WRITE_KEY, 1) {
        format!("the data written for block {}", first ^ WRITE_KEY)
    } else if data.iter().all(|&b| b == 0) {
        "zeroes".into()
    } else {
        format!("something else (first word {first:#018x})")
    }
}

/// Compares `image` block by block with what `expected_written(block)`
/// says: the written pattern where true, the stamp elsewhere. The first
/// difference, described.
pub fn compare(
    image: &[u8],
    seed: u64,
    blocks: u64,
    expected_written: impl Fn(u64) -> bool,
) -> Result<(), String> {
    if image.len() as u64 != blocks * BLOCK_BYTES as u64 {
        return Err(format!("the image is {} bytes, expected {}", image.len(), blocks * 4096));
    }
    for block in 0..blocks {
        let is_written = expected_written(block);
        let at = block as usize * BLOCK_BYTES;
        let data = &image[at..at + BLOCK_BYTES];
        let want = if is_written {
            block_bytes(block, |b, i| written_word(seed, b, i))
        } else {
            block_bytes(block, |b, i| stamp_word(seed, b, i))
        };
        if data != want.as_slice() {
            let byte = data.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "block {block} (byte {:#x} of the image) should hold {} but holds {}",
                at + byte,
                if is_written { "the data written for it" } else { "its stamp" },
                describe_block(seed, blocks, data)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_a_misplaced_lost_or_torn_block() {
        let (seed, blocks) = (5, 6);
        let written = |block: u64| block % 2 == 1;
        let mut image = Vec::new();
        for block in 0..blocks {
            image.extend(if written(block) {
                block_bytes(block, |b, i| written_word(seed, b, i))
            } else {
                block_bytes(block, |b, i| stamp_word(seed, b, i))
            });
        }
        assert_eq!(compare(&image, seed, blocks, written), Ok(()));
        let mut misplaced = image.clone();
        misplaced.copy_within(BLOCK_BYTES..2 * BLOCK_BYTES, 3 * BLOCK_BYTES);
        let why = compare(&misplaced, seed, blocks, written).unwrap_err();
        assert!(why.contains("block 3") && why.contains("written for block 1"), "{why}");
        let mut lost = image.clone();
        lost[5 * BLOCK_BYTES..].copy_from_slice(&block_bytes(5, |b, i| stamp_word(seed, b, i)));
        let why = compare(&lost, seed, blocks, written).unwrap_err();
        assert!(why.contains("the stamp of block 5"), "{why}");
        let mut torn = image;
        torn[BLOCK_BYTES + 100] ^= 1;
        let why = compare(&torn, seed, blocks, written).unwrap_err();
        assert!(why.contains("byte 0x1064"), "{why}");
    }
}
