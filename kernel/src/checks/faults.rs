//! Drives that fail on purpose, prepared by the runner: QEMU's `blkdebug`
//! error injection (`eio`), a read-only drive (`readonly`), and a QEMU
//! killed right after a flush (`flush-durable`).

use super::pattern::{self, Random};
use super::{Outcome, buffer, disk_blocks, fill, progress, sector_of, verify};
use crate::cmdline::BlkCheck;
use crate::drivers::virtio::blk::{BlkDevice, BlkError};
use crate::mm::dma::DmaBuffer;
use alloc::format;
use alloc::string::String;

/// Blocks whose reads and writes the runner's blkdebug rules fail
/// (xtask/src/blk_checks/mod.rs, `EIO_READ_BLOCK` and `EIO_WRITE_BLOCK`);
/// the runner's rule also fails the first flush.
const EIO_READ_BLOCK: u64 = 256;
const EIO_WRITE_BLOCK: u64 = 512;
/// A block next to each that no rule touches.
const CLEAN_OFFSET: u64 = 8;

/// One step of a scripted sequence: what the driver answered must be `want`.
fn expect(step: &str, got: Result<(), BlkError>, want: Result<(), BlkError>) -> Result<(), String> {
    progress(BlkCheck::Eio, &format!("{step}: {got:?}"));
    if got == want { Ok(()) } else { Err(format!("{step}: got {got:?}, expected {want:?}")) }
}

/// Reads one block into `data`; the buffer comes back unless the device
/// kept it.
fn read_block(
    device: &'static BlkDevice,
    block: u64,
    data: &mut Option<DmaBuffer>,
) -> Result<(), BlkError> {
    let Some(buffer) = data.take() else { return Err(BlkError::DeviceFailed) };
    match device.read(sector_of(block), buffer, pattern::BLOCK_BYTES) {
        Ok(buffer) => {
            *data = Some(buffer);
            Ok(())
        }
        Err((error, buffer)) => {
            *data = buffer;
            Err(error)
        }
    }
}

fn write_block(
    device: &'static BlkDevice,
    block: u64,
    data: &mut Option<DmaBuffer>,
) -> Result<(), BlkError> {
    let Some(buffer) = data.take() else { return Err(BlkError::DeviceFailed) };
    match device.write(sector_of(block), buffer, pattern::BLOCK_BYTES) {
        Ok(buffer) => {
            *data = Some(buffer);
            Ok(())
        }
        Err((error, buffer)) => {
            *data = buffer;
            Err(error)
        }
    }
}

/// `blkcheck=eio`: every injected failure reaches the caller as
/// `BlkError::Io`, the buffer comes back, and the next request works.
pub fn eio(device: &'static BlkDevice, seed: u64) -> Outcome {
    let mut data = Some(buffer(1)?);
    let bad_read = EIO_READ_BLOCK;
    let good_read = EIO_READ_BLOCK + CLEAN_OFFSET;
    let bad_write = EIO_WRITE_BLOCK;
    let good_write = EIO_WRITE_BLOCK + CLEAN_OFFSET;
    expect(
        "read of the failing block",
        read_block(device, bad_read, &mut data),
        Err(BlkError::Io),
    )?;
    if data.is_none() {
        return Err(String::from("the failed read did not give the buffer back"));
    }
    expect("read of its neighbour", read_block(device, good_read, &mut data), Ok(()))?;
    let written = |block, index| pattern::written_word(seed, block, index);
    if let Some(buffer) = data.as_mut() {
        fill(buffer.as_mut_slice(), bad_write, 1, written);
    }
    expect(
        "write of the failing block",
        write_block(device, bad_write, &mut data),
        Err(BlkError::Io),
    )?;
    if let Some(buffer) = data.as_mut() {
        fill(buffer.as_mut_slice(), good_write, 1, written);
    }
    expect("write of its neighbour", write_block(device, good_write, &mut data), Ok(()))?;
    expect("first flush", device.flush(), Err(BlkError::Io))?;
    expect("second flush", device.flush(), Ok(()))?;
    expect(
        "read of the failing block again",
        read_block(device, bad_read, &mut data),
        Err(BlkError::Io),
    )?;
    expect(
        "read back of the written neighbour",
        read_block(device, good_write, &mut data),
        Ok(()),
    )?;
    let buffer = data.ok_or("the buffer was lost")?;
    verify(buffer.as_slice(), good_write, 1, written)?;
    Ok(String::from("3 injected failures seen as Io, every other request succeeded"))
}

/// `blkcheck=readonly`: the drive says RO, writes are refused with
/// `ReadOnly` (buffer handed back) and reads return the runner's stamp.
pub fn read_only(device: &'static BlkDevice, seed: u64) -> Outcome {
    if !device.is_read_only() {
        return Err(String::from("the device does not report VIRTIO_BLK_F_RO"));
    }
    let blocks = disk_blocks(device);
    let stamp = |block, index| pattern::stamp_word(seed, block, index);
    let mut data = Some(buffer(1)?);
    let mut random = Random(seed | 1);
    for round in 0..64 {
        let block = if round == 0 { 0 } else { random.below(blocks) };
        match write_block(device, block, &mut data) {
            Err(BlkError::ReadOnly) if data.is_some() => {}
            Err(BlkError::ReadOnly) => return Err(String::from("a refused write kept the buffer")),
            other => return Err(format!("write of block {block}: {other:?}, expected ReadOnly")),
        }
        read_block(device, block, &mut data)
            .map_err(|error| format!("read of block {block}: {error:?}"))?;
        let buffer = data.as_ref().ok_or("the buffer was lost")?;
        verify(buffer.as_slice(), block, 1, stamp)?;
    }
    match device.flush() {
        Ok(()) | Err(BlkError::Unsupported) => {}
        Err(error) => return Err(format!("flush of a read-only drive: {error:?}")),
    }
    Ok(String::from("64 writes refused with ReadOnly, 64 reads verified"))
}

/// Blocks `flush-durable` writes before it flushes.
const DURABLE_FIRST_BLOCK: u64 = 64;
const DURABLE_BLOCKS: u64 = 256;

/// `blkcheck=flush-durable`: writes `DURABLE_BLOCKS` blocks, flushes, says
/// so, and keeps writing elsewhere until the runner kills QEMU; the runner
/// then checks the flushed blocks in the image.
pub fn flush_durable(device: &'static BlkDevice, seed: u64) -> Outcome {
    let written = |block, index| pattern::written_word(seed, block, index);
    let mut data = buffer(4)?;
    let mut block = DURABLE_FIRST_BLOCK;
    while block < DURABLE_FIRST_BLOCK + DURABLE_BLOCKS {
        fill(data.as_mut_slice(), block, 4, written);
        data = device
            .write(sector_of(block), data, 4 * pattern::BLOCK_BYTES)
            .map_err(|(error, _)| format!("write of block {block}: {error:?}"))?;
        block += 4;
    }
    device.flush().map_err(|error| format!("flush: {error:?}"))?;
    progress(
        BlkCheck::FlushDurable,
        &format!("flushed {DURABLE_BLOCKS} blocks from block {DURABLE_FIRST_BLOCK}"),
    );
    // More writes after the acknowledged flush, which the kill may cut
    // short: they are not checked, but keep the device busy at the kill.
    let limit = disk_blocks(device).saturating_sub(4);
    let deadline = crate::platform::time::uptime_us() + 30_000_000;
    while crate::platform::time::uptime_us() < deadline {
        block = if block + 4 > limit { DURABLE_FIRST_BLOCK + DURABLE_BLOCKS } else { block + 4 };
        data = device
            .write(sector_of(block), data, 4 * pattern::BLOCK_BYTES)
            .map_err(|(error, _)| format!("write after the flush: {error:?}"))?;
    }
    Err(String::from("the runner did not kill QEMU within 30 s of the flush"))
}
