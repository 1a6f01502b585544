//! `blkcheck=4k`: a drive whose logical blocks are 4096 bytes
//! (`VIRTIO_BLK_F_BLK_SIZE`, VirtIO 1.2 §5.2.4). The driver must refuse
//! I/O that is whole 512-byte sectors but not whole blocks with
//! [`BlkError::Unaligned`] (§5.2.5: the driver should not submit it), and
//! aligned I/O must land where its sector says: sector numbers stay in
//! 512-byte units whatever the block size (§5.2.6). The runner stamped
//! every 4 KiB block of the image and checks it afterwards: the refused
//! writes left no trace and the accepted ones are at byte `sector * 512`.

use super::pattern::{self, BLOCK_BYTES, Random};
use super::{Outcome, buffer, disk_blocks, fill, sector_of, verify};
use crate::drivers::virtio::blk::{BlkDevice, BlkError};
use crate::mm::dma::DmaBuffer;
use alloc::format;
use alloc::string::String;

/// The block size the runner gives the drive.
const DEVICE_BLOCK_BYTES: u32 = 4096;
/// Blocks written (first block, blocks); the runner's list is the same
/// (xtask/src/blk_checks/four_k.rs), plus the disk's last block.
pub const WRITTEN: [(u64, u64); 2] = [(300, 1), (512, 4)];
/// Random aligned reads of the stamp.
const READS: usize = 64;

/// Requests that are whole sectors but not whole 4096-byte blocks:
/// (is a write, sector, bytes, why it is unaligned). The writes aim at
/// blocks the runner finds stamped afterwards.
const REFUSED: [(bool, u64, usize, &str); 6] = [
    (false, 1, 4096, "sector 1"),
    (false, 8, 512, "one sector"),
    (false, 8, 4096 + 512, "nine sectors"),
    (true, 4, 4096, "sector 4"),
    (true, 16, 2048, "four sectors"),
    (true, 8 * 301 + 7, 4096, "sector 7 of block 301"),
];

/// Submits one request of `bytes` at `sector`; the buffer comes back in
/// both cases (`None` only if the driver kept it).
fn transfer(
    device: &'static BlkDevice,
    is_write: bool,
    sector: u64,
    data: DmaBuffer,
    bytes: usize,
) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
    if is_write { device.write(sector, data, bytes) } else { device.read(sector, data, bytes) }
}

/// Every unaligned request is refused with `Unaligned`, buffer back.
fn refused(device: &'static BlkDevice, seed: u64) -> Result<(), String> {
    for (is_write, sector, bytes, why) in REFUSED {
        let mut data = buffer(2)?;
        fill(data.as_mut_slice(), sector / 8, 2, |b, i| pattern::written_word(seed, b, i));
        let what = if is_write { "write" } else { "read" };
        match transfer(device, is_write, sector, data, bytes) {
            Err((BlkError::Unaligned, Some(_))) => {}
            Err((BlkError::Unaligned, None)) => {
                return Err(format!("the refused {what} ({why}) kept the buffer"));
            }
            Ok(_) => {
                return Err(format!(
                    "a {what} of {bytes} bytes at sector {sector} ({why}) was accepted"
                ));
            }
            Err((error, _)) => {
                return Err(format!(
                    "a {what} of {bytes} bytes at sector {sector} ({why}): {error:?}, \
                     expected Unaligned"
                ));
            }
        }
    }
    Ok(())
}

/// Aligned reads of 1..=4 blocks at random places, the stamp verified.
fn reads(device: &'static BlkDevice, seed: u64) -> Result<(), String> {
    let blocks = disk_blocks(device);
    let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut data = buffer(4)?;
    for round in 0..READS {
        let count = 1 + random.below(4);
        let first = if round == 0 { blocks - count } else { random.below(blocks - count) };
        data.as_mut_slice().fill(0);
        data = device
            .read(sector_of(first), data, count as usize * BLOCK_BYTES)
            .map_err(|(error, _)| format!("read of {count} blocks at block {first}: {error:?}"))?;
        verify(data.as_slice(), first, count, |b, i| pattern::stamp_word(seed, b, i))?;
    }
    Ok(())
}

/// Writes the `WRITTEN` extents and the last block, flushes, reads back.
fn writes(device: &'static BlkDevice, seed: u64) -> Result<(), String> {
    let written = |block, index| pattern::written_word(seed, block, index);
    let last = (disk_blocks(device) - 1, 1);
    let mut data = buffer(4)?;
    for (first, count) in WRITTEN.into_iter().chain([last]) {
        let bytes = count as usize * BLOCK_BYTES;
        fill(data.as_mut_slice(), first, count, written);
        data = device
            .write(sector_of(first), data, bytes)
            .map_err(|(error, _)| format!("write of {count} blocks at block {first}: {error:?}"))?;
    }
    device.flush().map_err(|error| format!("flush: {error:?}"))?;
    for (first, count) in WRITTEN.into_iter().chain([last]) {
        data.as_mut_slice().fill(0);
        data = device
            .read(sector_of(first), data, count as usize * BLOCK_BYTES)
            .map_err(|(error, _)| format!("read back of block {first}: {error:?}"))?;
        verify(data.as_slice(), first, count, written)?;
    }
    Ok(())
}

pub fn run(device: &'static BlkDevice, seed: u64) -> Outcome {
    let block_bytes = device.block_bytes();
    if block_bytes != DEVICE_BLOCK_BYTES {
        return Err(format!("the device reports {block_bytes}-byte blocks, expected 4096"));
    }
    refused(device, seed)?;
    reads(device, seed)?;
    writes(device, seed)?;
    // Refusals again after the device has done work: the check is not a
    // first-request accident.
    refused(device, seed)?;
    Ok(format!(
        "block size {block_bytes}: {} unaligned requests refused with Unaligned (twice), \
         {READS} aligned reads verified, {} extents written, flushed and read back",
        REFUSED.len(),
        WRITTEN.len() + 1
    ))
}
