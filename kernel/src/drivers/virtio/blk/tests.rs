//! virtio-blk driver tests against QEMU's disk (the runner's 64 MiB image;
//! the last 1 MiB is scratch space for tests).

use super::{BlkError, Operation, SECTOR_BYTES, device};
use crate::mm::dma::DmaBuffer;
use crate::sched::{Placement, spawn};
use crate::smp::online_cpus;
use crate::sync::IrqSpinLock;
use crate::{check, check_eq, check_ok, ktest};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

pub(super) fn blk() -> Result<&'static super::BlkDevice, crate::ktest::TestFailure> {
    let skip = || crate::ktest::skip("no virtio-blk device (the runner adds one)").unwrap_err();
    let device = device().ok_or_else(skip)?;
    // A disk too small for the scratch area is a failure, not a skip: the
    // runner's disk is 64 MiB, so a tiny one is a device that lies.
    let sectors = device.capacity_sectors();
    if sectors < 4096 {
        let message = alloc::format!("the disk has {sectors} sectors; the tests need 4096");
        return Err(crate::ktest::TestFailure::new(message));
    }
    Ok(device)
}

/// The device, if writes are allowed (else the test is skipped).
pub(super) fn writable() -> Result<&'static super::BlkDevice, crate::ktest::TestFailure> {
    let device = blk()?;
    if device.is_read_only() {
        return Err(crate::ktest::skip("the drive is read-only").unwrap_err());
    }
    if device.recovery_stats().failed {
        return Err(crate::ktest::TestFailure::new("the device was given up".into()));
    }
    Ok(device)
}

/// Frames free now, after freeing what dropped requests left behind,
/// plus those a reset quarantined (held, not leaked: see `quarantine`).
pub(super) fn free_frames(device: &super::BlkDevice) -> u64 {
    device.release_abandoned();
    crate::mm::frame::stats().free + device.quarantined_frames()
}

/// Runs `f` pinned to CPU 0 (one queue, nobody else kicking it).
pub(super) fn on_cpu0<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, crate::ktest::TestFailure> {
    let result = Arc::new(IrqSpinLock::new(None));
    let slot = result.clone();
    let thread = spawn("blk-cpu0", Placement::Pinned(0), move || *slot.lock() = Some(f()));
    thread.map_err(|_| crate::ktest::TestFailure::new("spawn failed".into()))?.join();
    let value = result.lock().take();
    value.ok_or_else(|| crate::ktest::TestFailure::new("test thread vanished".into()))
}

/// First sector of the scratch area.
pub(super) fn scratch(device: &super::BlkDevice) -> u64 {
    device.capacity_sectors() - 2048
}

pub(super) fn filled(byte: u8, pages: u64) -> DmaBuffer {
    let mut buffer = DmaBuffer::new(pages).expect("no DMA memory for a test buffer");
    buffer.as_mut_slice().fill(byte);
    buffer
}

ktest!(
    fn device_is_up_with_a_queue_per_cpu() {
        let device = blk()?;
        // One queue per CPU, as far as the device's queues go.
        let device_queues = usize::from(device.config().device_queues);
        if device.is_polled(0) {
            // No MSI-X and no line: one polled queue.
            check_eq!(device.queue_count(), 1);
        } else {
            check_eq!(device.queue_count(), online_cpus().min(device_queues));
        }
        check!(device.block_bytes() >= 512 && device.block_bytes().is_power_of_two());
        check!(device.capacity_sectors() > 2048);
        Ok(())
    }
);

ktest!(
    fn write_then_read_back_many_sizes() {
        let device = writable()?;
        let base = scratch(device);
        for (index, sectors) in [1u64, 8, 64].into_iter().enumerate() {
            let bytes = (sectors * SECTOR_BYTES) as usize;
            let pattern = 0x40 + index as u8;
            let written = check_ok!(device.write(base, filled(pattern, 8), bytes).map_err(|e| e.0));
            drop(written);
            let read = check_ok!(device.read(base, filled(0, 8), bytes).map_err(|e| e.0));
            check!(
                read.as_slice()[..bytes].iter().all(|&b| b == pattern),
                "{} sectors differ",
                sectors
            );
            // Bytes past the transfer were not touched.
            check!(read.as_slice()[bytes..].iter().all(|&b| b == 0));
        }
        Ok(())
    }
);

ktest!(
    fn bad_ranges_are_refused_and_buffers_returned() {
        let device = blk()?;
        let end = device.capacity_sectors();
        for (sector, len) in [(0u64, 0usize), (0, 100), (end, 512), (end - 1, 1024), (0, 8192)] {
            match device.read(sector, filled(0, 1), len) {
                Err((BlkError::BadRange, Some(buffer))) => check_eq!(buffer.len_bytes(), 4096),
                other => {
                    return Err(crate::ktest::TestFailure::new(alloc::format!(
                        "sector {sector} len {len}: {:?}",
                        other.map(|b| b.len_bytes()).map_err(|e| e.0)
                    )));
                }
            }
        }
        Ok(())
    }
);

ktest!(
    fn flush_succeeds() {
        let device = blk()?;
        if !device.has(super::feature::FLUSH) {
            check_eq!(device.flush(), Err(BlkError::Unsupported));
            return crate::ktest::skip("no VIRTIO_BLK_F_FLUSH");
        }
        check_ok!(device.flush());
        Ok(())
    }
);

ktest!(
    fn every_cpu_completes_on_its_own_queue() {
        let device = blk()?;
        let before: Vec<u64> = (0..device.queue_count())
            .map(|q| device.queue_stats(q).map_or(0, |s| s.completions))
            .collect();
        let failures = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..online_cpus() as u32)
            .map(|cpu| {
                let failures = failures.clone();
                spawn("blk-cpu", Placement::Pinned(cpu), move || {
                    let Some(device) = super::device() else { return };
                    let sector = scratch(device) + 64 * u64::from(cpu);
                    for _ in 0..4 {
                        if device.read(sector, filled(0, 1), 4096).is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn failed")
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        check_eq!(failures.load(Ordering::Relaxed), 0);
        for (queue, old) in before.into_iter().enumerate() {
            let now = device.queue_stats(queue).map_or(0, |s| s.completions);
            // CPUs beyond the queues share them (cpu % queues).
            let users =
                (0..online_cpus()).filter(|cpu| cpu % device.queue_count() == queue).count();
            check!(
                now >= old + 4 * users as u64,
                "queue {} completed {} (was {})",
                queue,
                now,
                old
            );
        }
        Ok(())
    }
);

ktest!(
    fn thirty_two_requests_in_flight_complete() {
        let device = blk()?;
        let base = scratch(device);
        let mut pending = Vec::new();
        for index in 0..32u64 {
            let submitted =
                device.submit(Operation::Read, base + index * 8, Some(filled(0xee, 1)), 4096);
            pending.push(check_ok!(submitted.map_err(|e| e.0)));
        }
        let mut ok = 0;
        for request in pending {
            let (result, buffer) = request.wait();
            if result.is_ok()
                && buffer.is_some_and(|b| b.as_slice()[0] != 0xee || b.as_slice()[4095] != 0xee)
            {
                ok += 1;
            }
        }
        // The scratch area was written with 0x40.. patterns or zeroes, never 0xee.
        check_eq!(ok, 32);
        Ok(())
    }
);

ktest!(
    fn more_requests_than_the_pool_wait_for_space() {
        let device = blk()?;
        let base = scratch(device);
        // Twice the per-queue pool, all from one CPU: submitters must wait
        // for requests to come back instead of failing. They hand each
        // submitted request to one reaper at once: a submitter that kept its
        // own while it waited for space could wait for itself (preempted
        // mid-batch, four of them can hold the whole pool and all wait).
        const SUBMITTERS: u32 = 4;
        let handed_over = Arc::new(IrqSpinLock::new(VecDeque::new()));
        let finished = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicU32::new(0));
        let mut handles: Vec<_> = (0..u64::from(SUBMITTERS))
            .map(|worker| {
                let (handed_over, finished) = (handed_over.clone(), finished.clone());
                spawn("blk-deep", Placement::Pinned(0), move || {
                    let Some(device) = super::device() else { return };
                    for index in 0..32u64 {
                        let sector = base + (worker * 32 + index) % 2000;
                        let buffer = Some(filled(0, 1));
                        if let Ok(p) = device.submit(Operation::Read, sector, buffer, 512) {
                            handed_over.lock().push_back(p);
                        }
                    }
                    finished.fetch_add(1, Ordering::Release);
                })
                .expect("spawn failed")
            })
            .collect();
        let reaped = done.clone();
        let reaper = spawn("blk-reaper", Placement::Pinned(0), move || {
            loop {
                let all_submitted = finished.load(Ordering::Acquire) == SUBMITTERS;
                let next = handed_over.lock().pop_front();
                match next {
                    Some(p) => {
                        if p.wait().0.is_ok() {
                            reaped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None if all_submitted => break,
                    None => crate::sched::yield_now(),
                }
            }
        });
        handles.push(reaper.expect("spawn failed"));
        for handle in handles {
            handle.join();
        }
        check_eq!(done.load(Ordering::Relaxed), 128);
        Ok(())
    }
);
