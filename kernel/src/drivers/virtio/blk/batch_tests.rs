//! A batch announces its requests once, when it ends, and never waits for
//! pool space with its own requests still unannounced.

use super::io_tests::{first_wrong, stamp};
use super::tests::{blk, filled, free_frames, on_cpu0, scratch, writable};
use super::{Operation, Pending, REQUESTS_PER_QUEUE, SECTOR_BYTES, timeout_ms};
use crate::ktest::TestFailure;
use crate::platform::time::{rdtsc, tsc_hz};
use crate::{check, check_eq, check_ok, ktest};
use alloc::format;
use alloc::vec::Vec;

const SECTOR: usize = SECTOR_BYTES as usize;

ktest!(
    fn a_batch_tells_the_device_once_and_its_requests_complete() {
        let device = writable()?;
        let first = scratch(device) + 512;
        const COUNT: u64 = 16;
        let outcome = on_cpu0(move || -> Result<u64, alloc::string::String> {
            let kicks = || device.queue_stats(0).map_or(0, |stats| stats.kicks);
            let before = kicks();
            let mut batch = device.batch();
            let mut writes = Vec::new();
            for sector in first..first + COUNT {
                let mut buffer = filled(0, 1);
                stamp(&mut buffer.as_mut_slice()[..SECTOR], sector, 0x6b);
                let pending = batch.submit(Operation::Write, sector, Some(buffer), SECTOR);
                writes.push(pending.map_err(|e| format!("write {sector}: {:?}", e.0))?);
            }
            batch.finish();
            let told = kicks() - before;
            for pending in writes {
                pending.wait().0.map_err(|e| format!("write: {e:?}"))?;
            }
            // Read them back in one more batch, in reverse order.
            let mut batch = device.batch();
            let mut reads = Vec::new();
            for sector in (first..first + COUNT).rev() {
                let pending = batch.submit(Operation::Read, sector, Some(filled(0, 1)), SECTOR);
                reads.push((sector, pending.map_err(|e| format!("read {sector}: {:?}", e.0))?));
            }
            drop(batch);
            for (sector, pending) in reads {
                let (result, buffer) = pending.wait();
                result.map_err(|e| format!("read {sector}: {e:?}"))?;
                let buffer = buffer.ok_or("read: no buffer back")?;
                if let Some(wrong) = first_wrong(&buffer.as_slice()[..SECTOR], sector, 0x6b) {
                    return Err(format!("sector {sector} read back sector {wrong}'s data"));
                }
            }
            Ok(told)
        })?;
        let told = check_ok!(outcome.map_err(TestFailure::new));
        // §2.7.13: one decision for the whole batch, so at most one kick.
        check!(told <= 1);
        Ok(())
    }
);

ktest!(
    fn a_batch_larger_than_the_pool_announces_before_it_waits_for_space() {
        let device = blk()?;
        let count = REQUESTS_PER_QUEUE + 16;
        let sector = scratch(device);
        let run = move || {
            let mut batch = device.batch();
            let mut pending: Vec<Pending> = Vec::with_capacity(count);
            let mut errors = Vec::new();
            // Past the pool's 64 requests each submission waits for one to
            // come back, which only happens if the device was told.
            for _ in 0..count {
                match batch.submit(Operation::Read, sector, Some(filled(0, 1)), SECTOR) {
                    Ok(request) => pending.push(request),
                    Err((error, _)) => errors.push(error),
                }
            }
            drop(batch);
            for request in pending {
                if let Err(error) = request.wait().0 {
                    errors.push(error);
                }
            }
            (count - errors.len(), errors)
        };
        // Once to grow the heap to what the test needs, so the second run's
        // frame count compares like with like.
        let _ = on_cpu0(run)?;
        let frames = free_frames(device);
        let started = rdtsc();
        let (ok, errors) = on_cpu0(run)?;
        let elapsed_ms = (rdtsc() - started) * 1000 / tsc_hz();
        check_eq!(errors, Vec::new());
        check_eq!(ok, count);
        // Well inside one deadline: nothing waited for a timeout to free it.
        check!(elapsed_ms < timeout_ms() / 2);
        check_eq!(free_frames(device), frames);
        Ok(())
    }
);
