//! Drives the runner changes while the guest uses them, through QMP:
//! throttled to a standstill (`stall`) and grown (`resize`).

use super::pattern::{self, BLOCK_BYTES};
use super::{Outcome, buffer, fill, progress, sector_of, verify, wait_for_runner};
use crate::cmdline::BlkCheck;
use crate::drivers::virtio::blk::{self, BlkDevice, BlkError, Operation, Pending};
use crate::mm::dma::DmaBuffer;
use crate::platform::time::uptime_us;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Reads in flight while the drive stands still, one block each, of
/// blocks `STALL_STRIDE` apart (the runner stamped every block).
const STALLED_REQUESTS: u64 = 8;
const STALL_STRIDE: u64 = 8;
/// How far past its deadline a caller may come back: the reset, the
/// wake-up, a slow TCG host. Far below the runner's wait for the throttle
/// to be lifted, which is when a driver without deadlines returns.
const SLACK_MS: u64 = 5_000;
/// Blocks written after the recovery (xtask/src/blk_checks/checks.rs
/// checks them in the image), in writes of `RECOVERY_CHUNK` blocks.
const RECOVERY_FIRST_BLOCK: u64 = 1024;
const RECOVERY_BLOCKS: u64 = 32;
const RECOVERY_CHUNK: u64 = 4;
/// How long the runner gets to act on a progress line.
const RUNNER_US: u64 = 30_000_000;

/// How the stalled reads ended.
#[derive(Default)]
struct Tally {
    /// Finished by the device with the block's stamp: before the throttle
    /// bit, or drained by QEMU while the reset stopped the device.
    finished: usize,
    /// Of those, back before the deadline (the throttle let them through).
    early: usize,
    timed_out: usize,
    cancelled: usize,
    /// Milliseconds from the first submission to the first and the last
    /// caller's return.
    first_ms: u64,
    last_ms: u64,
}

/// Judges one stalled read of `block` that ended `ms` after the start.
fn judge(
    tally: &mut Tally,
    (block, ms, timeout_ms): (u64, u64, u64),
    outcome: (Result<(), BlkError>, Option<DmaBuffer>),
    seed: u64,
) -> Result<(), String> {
    if tally.finished + tally.timed_out + tally.cancelled == 0 {
        tally.first_ms = ms;
    }
    tally.last_ms = tally.last_ms.max(ms);
    match outcome {
        (Ok(()), Some(data)) => {
            // A success must be the device's real answer: the stamp.
            verify(data.as_slice(), block, 1, |b, i| pattern::stamp_word(seed, b, i))
                .map_err(|why| format!("a stalled read that ended Ok after {ms} ms: {why}"))?;
            tally.finished += 1;
            tally.early += usize::from(ms < timeout_ms);
        }
        (Ok(()), None) => return Err(format!("read of block {block} ended Ok without its buffer")),
        (Err(BlkError::Timeout), _) => tally.timed_out += 1,
        (Err(BlkError::Cancelled), _) => tally.cancelled += 1,
        (Err(error), _) => {
            return Err(format!(
                "read of block {block} ended {error:?} after {ms} ms, expected Timeout, \
                 Cancelled or its data"
            ));
        }
    }
    Ok(())
}

/// Submits the stalled reads and waits for each; how they ended.
fn stalled_reads(device: &'static BlkDevice, seed: u64, timeout_ms: u64) -> Result<Tally, String> {
    let started = uptime_us();
    let mut pending: Vec<(u64, Pending)> = Vec::new();
    for index in 0..STALLED_REQUESTS {
        let block = index * STALL_STRIDE;
        let data = buffer(1)?;
        match device.submit(Operation::Read, sector_of(block), Some(data), BLOCK_BYTES) {
            Ok(request) => pending.push((block, request)),
            Err((error, _)) => {
                return Err(format!("submit {index} on the stalled drive: {error:?}"));
            }
        }
    }
    let mut tally = Tally::default();
    for (block, request) in pending {
        let outcome = request.wait();
        let ms = (uptime_us() - started) / 1000;
        judge(&mut tally, (block, ms, timeout_ms), outcome, seed)?;
    }
    Ok(tally)
}

/// Frames free, plus those the driver holds back from a device it reset
/// (held, not leaked: kernel/src/drivers/virtio/blk/quarantine.rs), after
/// freeing what dropped requests left behind.
fn free_frames(device: &BlkDevice) -> u64 {
    device.release_abandoned();
    crate::mm::frame::stats().free + device.quarantined_frames()
}

/// Writes, flushes and reads back the recovery blocks.
fn after_recovery(device: &'static BlkDevice, seed: u64) -> Result<(), String> {
    let written = |block, index| pattern::written_word(seed, block, index);
    let bytes = (RECOVERY_CHUNK as usize) * BLOCK_BYTES;
    let mut data = buffer(RECOVERY_CHUNK)?;
    let last = RECOVERY_FIRST_BLOCK + RECOVERY_BLOCKS;
    for block in (RECOVERY_FIRST_BLOCK..last).step_by(RECOVERY_CHUNK as usize) {
        fill(data.as_mut_slice(), block, RECOVERY_CHUNK, written);
        data = device
            .write(sector_of(block), data, bytes)
            .map_err(|(error, _)| format!("write of block {block} after the stall: {error:?}"))?;
    }
    device.flush().map_err(|error| format!("flush after the stall: {error:?}"))?;
    for block in (RECOVERY_FIRST_BLOCK..last).step_by(RECOVERY_CHUNK as usize) {
        data.as_mut_slice().fill(0);
        data = device
            .read(sector_of(block), data, bytes)
            .map_err(|(error, _)| format!("read of block {block} after the stall: {error:?}"))?;
        verify(data.as_slice(), block, RECOVERY_CHUNK, written)?;
    }
    let mut one = buffer(1)?;
    for block in (0..STALLED_REQUESTS).map(|index| index * STALL_STRIDE) {
        one = device
            .read(sector_of(block), one, BLOCK_BYTES)
            .map_err(|(error, _)| format!("read of block {block} after the stall: {error:?}"))?;
        verify(one.as_slice(), block, 1, |b, i| pattern::stamp_word(seed, b, i))?;
    }
    Ok(())
}

/// `blkcheck=stall`: with the drive throttled to a byte a second, every
/// caller must come back by its deadline (plus the reset): `Timeout` or
/// `Cancelled`, or the block's real data when the device finished the read
/// (QEMU completes throttled requests while the reset drains the drive).
/// The driver must have reset the device, and once the runner lifts the
/// throttle, writes and reads must work again without a reboot.
pub fn stall(device: &'static BlkDevice, seed: u64) -> Outcome {
    let timeout_ms = blk::timeout_ms();
    let before = device.recovery_stats();
    progress(BlkCheck::Stall, "ready for the throttle");
    wait_for_runner("throttled", RUNNER_US)?;
    let frames_before = free_frames(device);
    let tally = stalled_reads(device, seed, timeout_ms)?;
    let stats = device.recovery_stats();
    let ended = format!(
        "{STALLED_REQUESTS} stalled reads came back after {}..{} ms (deadline {timeout_ms} ms): \
         {} with their data ({} before the deadline), {} Timeout, {} Cancelled; {} reset(s)",
        tally.first_ms,
        tally.last_ms,
        tally.finished,
        tally.early,
        tally.timed_out,
        tally.cancelled,
        stats.resets - before.resets
    );
    progress(BlkCheck::Stall, &format!("ended: {ended}"));
    if tally.last_ms > timeout_ms + SLACK_MS {
        return Err(format!("a caller waited past its deadline: {ended}"));
    }
    if tally.last_ms < timeout_ms {
        return Err(format!("the throttle did not stall the drive: {ended}"));
    }
    if stats.resets == before.resets || stats.failed {
        return Err(format!("the driver did not reset the device and keep it: {ended}"));
    }
    progress(BlkCheck::Stall, "timed out; lift the throttle");
    wait_for_runner("released", RUNNER_US)?;
    after_recovery(device, seed)?;
    if device.recovery_stats() != stats {
        return Err(String::from("the I/O after the recovery needed another reset"));
    }
    let frames_after = free_frames(device);
    if frames_after != frames_before {
        return Err(format!(
            "free (plus quarantined) frames {frames_before} before the stall, {frames_after} after"
        ));
    }
    Ok(format!(
        "{ended}; after the recovery {RECOVERY_BLOCKS} blocks written, flushed and read back, \
         the stalled blocks read again; free frames as before ({frames_after})"
    ))
}

/// `blkcheck=resize`: announces the capacity, waits up to 20 s for the
/// runner's `block_resize` to show through the config-change interrupt,
/// then reads the last sector of the new capacity.
pub fn resize(device: &'static BlkDevice) -> Outcome {
    let before = device.capacity_sectors();
    progress(BlkCheck::Resize, &format!("capacity {before} sectors; resize me"));
    let deadline = crate::platform::time::uptime_us() + 20_000_000;
    while device.capacity_sectors() == before {
        if crate::platform::time::uptime_us() > deadline {
            return Err(format!(
                "the capacity stayed {before} sectors for 20 s after the announcement"
            ));
        }
        crate::sched::timer::sleep_us(10_000);
    }
    let after = device.capacity_sectors();
    let data = buffer(1)?;
    device
        .read(after - 1, data, 512)
        .map_err(|(error, _)| format!("read of the new last sector {}: {error:?}", after - 1))?;
    Ok(format!("capacity {before} -> {after} sectors; the new last sector reads"))
}
