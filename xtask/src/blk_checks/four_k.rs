//! `blk-4k`: the drive's logical and physical blocks are 4096 bytes
//! (`logical_block_size=4096` on the virtio-blk device, so `blk_size` is
//! 4096, VirtIO 1.2 §5.2.4). The kernel (kernel/src/checks/four_k.rs)
//! checks that I/O of whole sectors but not whole blocks is refused with
//! `BlkError::Unaligned` and that aligned reads return the stamp; here the
//! image must hold the kernel's aligned writes at byte `sector * 512`
//! (sectors stay 512-byte units, §5.2.6) and nothing of the refused ones.

use std::time::Duration;

use super::pattern::{self, BLOCK_BYTES};
use super::{Env, raw_drive};

/// 16 MiB of 4 KiB blocks.
const BLOCKS: u64 = 16 * 256;
/// kernel/src/checks/four_k.rs `WRITTEN` (first block, blocks); the kernel
/// also writes the last block.
const WRITTEN: [(u64, u64); 2] = [(300, 1), (512, 4)];
/// What the `-device` of the drive gets on top of the standard options.
pub const DEVICE_OPTIONS: &str = ",logical_block_size=4096,physical_block_size=4096";

/// Whether the kernel wrote `block`.
fn is_written(block: u64) -> bool {
    block == BLOCKS - 1
        || WRITTEN.iter().any(|&(first, count)| (first..first + count).contains(&block))
}

pub fn run(env: &mut Env) -> Result<String, String> {
    let seed = env.seed;
    let image = env.path("img");
    pattern::stamp_image(&image, seed, BLOCKS)?;
    let cmdline = format!("blkcheck=4k blkcheck.seed={seed}");
    let mut guest = env.boot_with(&cmdline, &raw_drive(&image, ""), false, DEVICE_OPTIONS)?;
    let summary = guest.verdict("4k", Duration::from_secs(60))?;
    guest.finish(Duration::from_secs(10))?;
    let data = pattern::read_image(&image)?;
    pattern::compare(&data, seed, BLOCKS, is_written)?;
    let written: u64 = WRITTEN.iter().map(|&(_, count)| count).sum::<u64>() + 1;
    Ok(format!(
        "kernel: {summary}; the image holds the {written} written blocks at sector * 512 \
         ({} bytes a block) and nothing else changed",
        BLOCK_BYTES
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_blocks_are_the_kernels() {
        let written: Vec<u64> = (0..BLOCKS).filter(|&b| is_written(b)).collect();
        assert_eq!(written, [300, 512, 513, 514, 515, BLOCKS - 1]);
    }
}
