//! Data tests that would catch a driver ignoring the sector, the length or
//! the buffer order: every sector gets its own pattern (its number and a
//! seed), and every read is compared sector by sector.

use super::tests::{blk, filled, scratch, writable};
use super::{BlkDevice, BlkError, Data, MAX_DATA_SEGMENTS, Operation, Request, SECTOR_BYTES};
use crate::mm::dma::DmaBuffer;
use crate::sched::{Placement, spawn};
use crate::smp::online_cpus;
use crate::{check, check_eq, check_ok, ktest};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

const SECTOR: usize = SECTOR_BYTES as usize;

/// The byte at `offset` of sector `sector` after a stamp with `seed`:
/// differs between neighbouring sectors and along the sector.
pub(super) fn stamp_byte(sector: u64, seed: u8, offset: usize) -> u8 {
    let mixed = sector.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
    (mixed as u8) ^ seed ^ (offset as u8).wrapping_mul(7) ^ ((sector >> 8) as u8)
}

/// Fills `bytes` with the stamps of the sectors from `first`.
pub(super) fn stamp(bytes: &mut [u8], first: u64, seed: u8) {
    for (index, chunk) in bytes.chunks_mut(SECTOR).enumerate() {
        let sector = first + index as u64;
        for (offset, byte) in chunk.iter_mut().enumerate() {
            *byte = stamp_byte(sector, seed, offset);
        }
    }
}

/// The first sector of `bytes` (from sector `first`) that is not stamped.
pub(super) fn first_wrong(bytes: &[u8], first: u64, seed: u8) -> Option<u64> {
    bytes.chunks(SECTOR).enumerate().find_map(|(index, chunk)| {
        let sector = first + index as u64;
        let ok = chunk.iter().enumerate().all(|(offset, &b)| b == stamp_byte(sector, seed, offset));
        (!ok).then_some(sector)
    })
}

fn stamped(first: u64, sectors: usize, seed: u8) -> DmaBuffer {
    let pages = (sectors * SECTOR).div_ceil(4096) as u64;
    let mut buffer = filled(0, pages);
    stamp(&mut buffer.as_mut_slice()[..sectors * SECTOR], first, seed);
    buffer
}

fn fail(message: String) -> crate::ktest::TestFailure {
    crate::ktest::TestFailure::new(message)
}

/// Writes each of `count` sectors from `first` on its own.
fn write_each(device: &'static BlkDevice, first: u64, count: u64, seed: u8) -> Result<(), String> {
    for sector in first..first + count {
        device
            .write(sector, stamped(sector, 1, seed), SECTOR)
            .map_err(|e| format!("write {sector}: {:?}", e.0))?;
    }
    Ok(())
}

ktest!(
    fn each_of_many_sectors_reads_back_its_own_pattern() {
        let device = writable()?;
        let first = scratch(device);
        write_each(device, first, 64, 0x31).map_err(fail)?;
        // Read each one on its own, in another order than written.
        for step in 0..64u64 {
            let sector = first + (step * 37) % 64;
            let read = check_ok!(device.read(sector, filled(0, 1), SECTOR).map_err(|e| e.0));
            check_eq!(first_wrong(&read.as_slice()[..SECTOR], sector, 0x31), None);
        }
        Ok(())
    }
);

ktest!(
    fn one_large_read_returns_every_sector_in_place() {
        let device = writable()?;
        let first = scratch(device) + 64;
        write_each(device, first, 64, 0x32).map_err(fail)?;
        let read = check_ok!(device.read(first, filled(0, 8), 64 * SECTOR).map_err(|e| e.0));
        check_eq!(first_wrong(&read.as_slice()[..64 * SECTOR], first, 0x32), None);
        Ok(())
    }
);

ktest!(
    fn one_large_write_lands_in_every_sector() {
        let device = writable()?;
        let first = scratch(device) + 128;
        check_ok!(device.write(first, stamped(first, 64, 0x33), 64 * SECTOR).map_err(|e| e.0));
        for sector in first..first + 64 {
            let read = check_ok!(device.read(sector, filled(0, 1), SECTOR).map_err(|e| e.0));
            check_eq!(first_wrong(&read.as_slice()[..SECTOR], sector, 0x33), None);
        }
        Ok(())
    }
);

ktest!(
    fn a_write_changes_its_sectors_and_not_their_neighbours() {
        let device = writable()?;
        let first = scratch(device) + 192;
        write_each(device, first, 3, 0x34).map_err(fail)?;
        check_ok!(device.write(first + 1, stamped(first + 1, 1, 0x35), SECTOR).map_err(|e| e.0));
        let read = check_ok!(device.read(first, filled(0, 1), 3 * SECTOR).map_err(|e| e.0));
        let bytes = read.as_slice();
        check_eq!(first_wrong(&bytes[..SECTOR], first, 0x34), None);
        check_eq!(first_wrong(&bytes[SECTOR..2 * SECTOR], first + 1, 0x35), None);
        check_eq!(first_wrong(&bytes[2 * SECTOR..3 * SECTOR], first + 2, 0x34), None);
        Ok(())
    }
);

ktest!(
    fn the_last_sector_of_the_disk_reads_and_writes() {
        let device = writable()?;
        let last = device.capacity_sectors() - 1;
        check_ok!(device.write(last, stamped(last, 1, 0x36), SECTOR).map_err(|e| e.0));
        let read = check_ok!(device.read(last, filled(0, 1), SECTOR).map_err(|e| e.0));
        check_eq!(first_wrong(&read.as_slice()[..SECTOR], last, 0x36), None);
        check_eq!(
            device.read(last, filled(0, 1), 2 * SECTOR).map_err(|e| e.0).err(),
            Some(BlkError::BadRange)
        );
        Ok(())
    }
);

ktest!(
    fn thirty_two_in_flight_reads_each_return_their_own_sectors() {
        let device = writable()?;
        let first = scratch(device) + 256;
        check_ok!(device.write(first, stamped(first, 256, 0x37), 256 * SECTOR).map_err(|e| e.0));
        let mut pending = Vec::new();
        for index in 0..32u64 {
            let sector = first + index * 8;
            let submitted = device.submit(Operation::Read, sector, Some(filled(0xee, 1)), 4096);
            pending.push((sector, check_ok!(submitted.map_err(|e| e.0))));
        }
        // Waited for in reverse: completions may come in any order.
        while let Some((sector, request)) = pending.pop() {
            let (result, buffer) = request.wait();
            check_ok!(result);
            let buffer = check_ok!(buffer.ok_or("no buffer"));
            check_eq!(first_wrong(buffer.as_slice(), sector, 0x37), None);
        }
        Ok(())
    }
);

ktest!(
    fn every_cpu_writes_and_verifies_its_own_area_at_once() {
        let device = writable()?;
        let errors = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..online_cpus() as u32)
            .map(|cpu| {
                let errors = errors.clone();
                spawn("blk-stamp", Placement::Pinned(cpu), move || {
                    let first = scratch(device) + 512 + 64 * u64::from(cpu);
                    let seed = 0x40 + cpu as u8;
                    for round in 0..4u64 {
                        let sector = first + round * 16;
                        let ok = device
                            .write(sector, stamped(sector, 16, seed), 16 * SECTOR)
                            .is_ok()
                            && device.read(sector, filled(0, 2), 16 * SECTOR).is_ok_and(|b| {
                                first_wrong(&b.as_slice()[..16 * SECTOR], sector, seed).is_none()
                            });
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn failed")
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        check_eq!(errors.load(Ordering::Relaxed), 0);
        Ok(())
    }
);

/// `count` one-page buffers stamped as sectors from `first`, in order.
fn stamped_pages(first: u64, count: usize, seed: u8) -> Vec<DmaBuffer> {
    (0..count).map(|i| stamped(first + 8 * i as u64, 8, seed)).collect()
}

ktest!(
    fn a_scatter_gather_read_fills_each_buffer_in_order() {
        let device = writable()?;
        let first = scratch(device) + 768;
        check_ok!(device.write(first, stamped(first, 32, 0x51), 32 * SECTOR).map_err(|e| e.0));
        let buffers: Vec<_> = (0..4).map(|_| filled(0, 1)).collect();
        let pending =
            check_ok!(device.submit_sg(Operation::Read, first, buffers, 16384).map_err(|e| e.0));
        let (result, buffers) = pending.wait_sg();
        check_ok!(result);
        check_eq!(buffers.len(), 4);
        for (index, buffer) in buffers.iter().enumerate() {
            check_eq!(first_wrong(buffer.as_slice(), first + 8 * index as u64, 0x51), None);
        }
        Ok(())
    }
);

ktest!(
    fn a_scatter_gather_write_takes_each_buffer_in_order() {
        let device = writable()?;
        let first = scratch(device) + 800;
        let buffers = stamped_pages(first, 4, 0x52);
        let pending =
            check_ok!(device.submit_sg(Operation::Write, first, buffers, 16384).map_err(|e| e.0));
        let (result, buffers) = pending.wait_sg();
        check_ok!(result);
        check_eq!(buffers.len(), 4);
        let read = check_ok!(device.read(first, filled(0, 4), 16384).map_err(|e| e.0));
        check_eq!(first_wrong(read.as_slice(), first, 0x52), None);
        Ok(())
    }
);

ktest!(
    fn a_scatter_gather_transfer_may_end_inside_its_last_buffer() {
        let device = writable()?;
        let first = scratch(device) + 832;
        check_ok!(device.write(first, stamped(first, 24, 0x53), 24 * SECTOR).map_err(|e| e.0));
        // 2.5 pages: the third buffer's second half stays untouched.
        let buffers: Vec<_> = (0..3).map(|_| filled(0xcc, 1)).collect();
        let pending =
            check_ok!(device.submit_sg(Operation::Read, first, buffers, 10240).map_err(|e| e.0));
        let (result, buffers) = pending.wait_sg();
        check_ok!(result);
        check_eq!(first_wrong(buffers[0].as_slice(), first, 0x53), None);
        check_eq!(first_wrong(buffers[1].as_slice(), first + 8, 0x53), None);
        check_eq!(first_wrong(&buffers[2].as_slice()[..2048], first + 16, 0x53), None);
        check!(buffers[2].as_slice()[2048..].iter().all(|&b| b == 0xcc), "read past the transfer");
        Ok(())
    }
);

ktest!(
    fn a_scatter_gather_request_of_many_buffers_works_at_the_segment_limit() {
        let device = writable()?;
        let count = (device.config().seg_max as usize).min(MAX_DATA_SEGMENTS).min(32);
        let first = scratch(device) + 1024;
        let buffers = stamped_pages(first, count, 0x54);
        let bytes = (count * 4096) as u64;
        let pending =
            check_ok!(device.submit_sg(Operation::Write, first, buffers, bytes).map_err(|e| e.0));
        check_ok!(pending.wait_sg().0);
        let buffers: Vec<_> = (0..count).map(|_| filled(0, 1)).collect();
        let pending =
            check_ok!(device.submit_sg(Operation::Read, first, buffers, bytes).map_err(|e| e.0));
        let (result, buffers) = pending.wait_sg();
        check_ok!(result);
        for (index, buffer) in buffers.iter().enumerate() {
            check_eq!(first_wrong(buffer.as_slice(), first + 8 * index as u64, 0x54), None);
        }
        Ok(())
    }
);

ktest!(
    fn more_segments_than_a_request_takes_are_refused_with_every_buffer_back() {
        let device = blk()?;
        let count = (device.config().seg_max as usize).min(MAX_DATA_SEGMENTS) + 1;
        let buffers: Vec<_> = (0..count).map(|_| filled(0, 1)).collect();
        let first = scratch(device);
        match device.submit_sg(Operation::Read, first, buffers, (count * 4096) as u64) {
            Err((BlkError::BadRange, back)) => check_eq!(back.len(), count),
            other => return Err(fail(format!("{:?}", other.map(|_| ()).map_err(|e| e.0)))),
        }
        Ok(())
    }
);

ktest!(
    fn a_scatter_gather_range_longer_than_its_buffers_is_refused() {
        let device = blk()?;
        let buffers: Vec<_> = (0..2).map(|_| filled(0, 1)).collect();
        let result = device.submit_sg(Operation::Read, scratch(device), buffers, 3 * 4096);
        check_eq!(result.map(|_| ()).map_err(|e| (e.0, e.1.len())), Err((BlkError::BadRange, 2)));
        Ok(())
    }
);

/// The descriptors `prepare` lays out for `data` under `limits`:
/// (length of each data segment).
fn layout(data: Data, span: (u64, u64), limits: (u32, usize)) -> Result<Vec<u32>, String> {
    let mut request = Request::new().map_err(|e| format!("{e}"))?;
    request
        .prepare(Operation::Read, 0, data, span, limits, (0, 0))
        .map_err(|_| String::from("too many segments"))?;
    use vireo_virtio::DmaBuffers;
    let count = request.segment_count();
    let lengths = (1..count - 1).map(|i| request.segment(i).len).collect();
    drop(request.take_all_data());
    Ok(lengths)
}

ktest!(
    fn segments_are_cut_at_size_max() {
        let data = Data::One(filled(0, 4));
        check_eq!(layout(data, (0, 16384), (4096, 32)), Ok(alloc::vec![4096, 4096, 4096, 4096]));
        let data = Data::One(filled(0, 4));
        check_eq!(layout(data, (0, 10240), (8192, 32)), Ok(alloc::vec![8192, 2048]));
        Ok(())
    }
);

ktest!(
    fn a_layout_needing_more_than_seg_max_segments_is_refused() {
        let data = Data::One(filled(0, 4));
        check_eq!(layout(data, (0, 16384), (4096, 3)), Err(String::from("too many segments")));
        Ok(())
    }
);

ktest!(
    fn a_span_skips_into_the_buffers() {
        let data = Data::Many(alloc::vec![filled(0, 1), filled(0, 2)]);
        // Skip 6 KiB (all of the first buffer, 2 KiB of the second), take 4 KiB.
        check_eq!(layout(data, (6144, 4096), (1 << 20, 32)), Ok(alloc::vec![4096]));
        Ok(())
    }
);

ktest!(
    fn bad_lengths_are_refused_before_the_device_sees_them() {
        let device = blk()?;
        let first = scratch(device);
        for len in [1usize, 511, 513, 4095] {
            let result = device.submit(Operation::Read, first, Some(filled(0, 1)), len);
            check_eq!(
                result.map(|_| ()).map_err(|e| (e.0, e.1.is_some())),
                Err((BlkError::BadRange, true))
            );
        }
        let result = device.submit(Operation::Read, first, None, 512);
        check_eq!(result.map(|_| ()).map_err(|e| e.0), Err(BlkError::BadRange));
        let result = device.submit(Operation::Read, u64::MAX, Some(filled(0, 1)), 512);
        check_eq!(result.map(|_| ()).map_err(|e| e.0), Err(BlkError::BadRange));
        Ok(())
    }
);

ktest!(
    fn io_not_in_whole_blocks_is_refused_as_unaligned() {
        let device = blk()?;
        let block = u64::from(device.block_bytes());
        if block == SECTOR_BYTES {
            return crate::ktest::skip("the device's block size is 512: every sector is aligned");
        }
        let first = scratch(device);
        let result = device.read(first + 1, filled(0, 16), block as usize);
        check_eq!(
            result.map(|_| ()).map_err(|e| (e.0, e.1.is_some())),
            Err((BlkError::Unaligned, true))
        );
        let result = device.read(first, filled(0, 16), SECTOR);
        check_eq!(
            result.map(|_| ()).map_err(|e| (e.0, e.1.is_some())),
            Err((BlkError::Unaligned, true))
        );
        check_ok!(device.read(first, filled(0, 16), block as usize).map_err(|e| e.0));
        Ok(())
    }
);

ktest!(
    fn a_read_only_drive_refuses_writes_and_serves_reads() {
        let device = blk()?;
        if !device.is_read_only() {
            return crate::ktest::skip("the drive is writable (VIRTIO_BLK_F_RO not offered)");
        }
        let first = scratch(device);
        let result = device.write(first, filled(0, 1), SECTOR);
        check_eq!(
            result.map(|_| ()).map_err(|e| (e.0, e.1.is_some())),
            Err((BlkError::ReadOnly, true))
        );
        check_eq!(device.write_zeroes(first, 8, false), Err(BlkError::ReadOnly));
        check_eq!(device.discard(first, 8), Err(BlkError::ReadOnly));
        check_ok!(device.read(first, filled(0, 1), SECTOR).map_err(|e| e.0));
        Ok(())
    }
);
