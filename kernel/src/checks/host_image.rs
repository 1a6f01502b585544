//! `blkcheck=host-image`: the runner stamped every 4 KiB block of the
//! image (pattern.rs); every CPU reads random runs of blocks at once and
//! verifies them, then every CPU writes its share of the write plan at
//! once, in random order; one flush, and the runner compares the image
//! byte for byte with what the seed says it must hold.
//!
//! Requests are 1 to 8 blocks (4 to 32 KiB) from one buffer each.
//! TODO(issue 9, scatter-gather): once `BlkDevice` takes several buffers
//! per request, split each run over 2-3 buffers so reads and writes are
//! multi-segment too.

use super::pattern::{self, MAX_EXTENT_BLOCKS, Random};
use super::{Outcome, buffer, disk_blocks, fill, on_every_cpu, sector_of, verify};
use crate::drivers::virtio::blk::BlkDevice;
use alloc::format;
use alloc::vec::Vec;

/// Random reads per CPU.
pub const READS_PER_CPU: u64 = 2000;
/// The plan must write at least this much in all (issue 9).
const MIN_WRITTEN_BYTES: u64 = 64 << 20;

pub fn run(device: &'static BlkDevice, seed: u64) -> Outcome {
    let blocks = disk_blocks(device);
    if blocks < 4 * MAX_EXTENT_BLOCKS {
        return Err(format!("the disk has {blocks} blocks: too small"));
    }
    let planned: u64 = pattern::plan(seed, blocks).filter(|e| e.is_written).map(|e| e.blocks).sum();
    if planned * (pattern::BLOCK_BYTES as u64) < MIN_WRITTEN_BYTES {
        return Err(format!("the plan writes only {planned} blocks: the disk is too small"));
    }
    let started = crate::platform::time::uptime_us();
    let reads = on_every_cpu(move |cpu| read_and_verify(device, seed, blocks, cpu))?;
    let read_us = crate::platform::time::uptime_us() - started;
    let cpus = crate::smp::online_cpus() as u64;
    let writes = on_every_cpu(move |cpu| write_share(device, seed, blocks, u64::from(cpu), cpus))?;
    device.flush().map_err(|error| format!("flush after the writes: {error:?}"))?;
    let write_us = crate::platform::time::uptime_us() - started - read_us;
    Ok(format!(
        "reads verified [{}] in {} ms; wrote [{}] in {} ms ({} MiB), flushed",
        reads.join(", "),
        read_us / 1000,
        writes.join(", "),
        write_us / 1000,
        (planned * pattern::BLOCK_BYTES as u64) >> 20
    ))
}

/// `READS_PER_CPU` reads of 1 to 8 blocks at random places, each checked
/// against the stamp.
fn read_and_verify(device: &'static BlkDevice, seed: u64, blocks: u64, cpu: u32) -> Outcome {
    let mut random = Random(pattern::mix(seed ^ 0x5245_4144 ^ u64::from(cpu)) | 1);
    let mut data = buffer(MAX_EXTENT_BLOCKS)?;
    let mut blocks_read = 0;
    for _ in 0..READS_PER_CPU {
        let count = 1 + random.below(MAX_EXTENT_BLOCKS);
        let first = random.below(blocks - count + 1);
        let bytes = (count as usize) * pattern::BLOCK_BYTES;
        data = device
            .read(sector_of(first), data, bytes)
            .map_err(|(error, _)| format!("read of blocks {first}..+{count}: {error:?}"))?;
        verify(data.as_slice(), first, count, |block, index| {
            pattern::stamp_word(seed, block, index)
        })?;
        blocks_read += count;
    }
    Ok(format!("{READS_PER_CPU} reads/{blocks_read} blocks"))
}

/// Writes the plan's written extents with `index % cpus == cpu`, in a
/// random order.
fn write_share(device: &'static BlkDevice, seed: u64, blocks: u64, cpu: u64, cpus: u64) -> Outcome {
    let mut share: Vec<(u64, u64)> = pattern::plan(seed, blocks)
        .filter(|extent| extent.is_written && extent.index % cpus == cpu)
        .map(|extent| (extent.first_block, extent.blocks))
        .collect();
    let mut random = Random(pattern::mix(seed ^ 0x5752_4954 ^ cpu) | 1);
    for at in (1..share.len()).rev() {
        share.swap(at, random.below(at as u64 + 1) as usize);
    }
    let mut data = buffer(MAX_EXTENT_BLOCKS)?;
    let mut written = 0;
    for &(first, count) in &share {
        fill(data.as_mut_slice(), first, count, |block, index| {
            pattern::written_word(seed, block, index)
        });
        let bytes = (count as usize) * pattern::BLOCK_BYTES;
        data = device
            .write(sector_of(first), data, bytes)
            .map_err(|(error, _)| format!("write of blocks {first}..+{count}: {error:?}"))?;
        written += count;
    }
    Ok(format!("{} writes/{written} blocks", share.len()))
}
