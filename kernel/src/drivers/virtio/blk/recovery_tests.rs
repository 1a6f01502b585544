//! Never a hung caller: deadlines, device resets, recovery, dropped
//! `Pending`s and frame accounting, against QEMU's device.
//!
//! A stall is made without a hostile device: a request added to the ring
//! but never notified (`submit_unkicked`) is never seen by an idle QEMU
//! device, so it is still in flight at its deadline (a short one, set for
//! the test and restored after).

use super::io_tests::{first_wrong, stamp};
use super::tests::{blk, filled, free_frames, on_cpu0, scratch, writable};
use super::{BlkDevice, BlkError, Operation, SECTOR_BYTES, set_timeout_ms, timeout_ms};
use crate::mm::dma::DmaBuffer;
use crate::sched::{Placement, spawn};
use crate::sync::SpinLock;
use crate::{check, check_eq, check_ok, ktest};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Deadline the stall tests use.
const SHORT_MS: u64 = 100;

/// Sets a short deadline for the duration of a test.
struct ShortTimeout(u64);

impl ShortTimeout {
    fn new(ms: u64) -> Self {
        let old = timeout_ms();
        set_timeout_ms(ms);
        Self(old)
    }
}

impl Drop for ShortTimeout {
    fn drop(&mut self) {
        set_timeout_ms(self.0);
    }
}

/// Skips the test when the device served a request it was never notified
/// of (a backend that polls its rings, like the hostile device's storm):
/// then nothing stalled, and there is no deadline to test.
fn served_anyway<T>(result: &Result<(), BlkError>) -> Result<(), crate::ktest::TestFailure> {
    if result.is_ok() {
        return Err(crate::ktest::skip(
            "the device served a request it was never notified of (it polls its rings): nothing stalled",
        )
        .unwrap_err());
    }
    let _ = core::marker::PhantomData::<T>;
    Ok(())
}

fn canary(byte: u8) -> DmaBuffer {
    filled(byte, 1)
}

/// Every queue idle with its whole pool back.
fn all_requests_home(device: &BlkDevice) -> bool {
    device.release_abandoned();
    device.queues.iter().all(|slot| {
        let state = slot.state.lock();
        state.queue.in_flight() == 0 && state.pool.len() == state.requests_made
    })
}

fn stamped(first: u64, seed: u8) -> DmaBuffer {
    let mut buffer = filled(0, 1);
    stamp(&mut buffer.as_mut_slice()[..512], first, seed);
    buffer
}

ktest!(
    fn a_stalled_request_fails_with_timeout_at_its_deadline() {
        let device = blk()?;
        let _short = ShortTimeout::new(SHORT_MS);
        let resets = device.recovery_stats().resets;
        let sector = scratch(device);
        let held = device.quarantined_frames();
        let given = canary(0x5a);
        let given_at = given.phys();
        let (result, buffer, waited_us) = on_cpu0(move || {
            let start = crate::platform::time::uptime_us();
            let pending = device.submit_unkicked(Operation::Read, sector, given, 512);
            match pending {
                Ok(pending) => {
                    let (result, buffer) = pending.wait();
                    (result, buffer, crate::platform::time::uptime_us() - start)
                }
                Err((error, buffer)) => (Err(error), buffer, 0),
            }
        })?;
        served_anyway::<()>(&result)?;
        check_eq!(result, Err(BlkError::Timeout));
        check!(waited_us >= SHORT_MS * 1000, "gave up after {} us", waited_us);
        check!(waited_us < SHORT_MS * 1000 + 2_000_000, "gave up only after {} us", waited_us);
        // Handed back after the reset, never read into (the device never saw it),
        // as a copy: the page the device was given stays quarantined.
        let buffer = check_ok!(buffer.ok_or("no buffer back"));
        check!(buffer.as_slice().iter().all(|&b| b == 0x5a), "the buffer changed");
        check!(buffer.phys() != given_at, "the page the device was given came back");
        check_eq!(device.quarantined_frames(), held + 1);
        check_eq!(device.recovery_stats().resets, resets + 1);
        check!(!device.recovery_stats().failed);
        Ok(())
    }
);

ktest!(
    fn io_works_again_after_a_timeout_and_sees_the_same_disk() {
        let device = writable()?;
        let sector = scratch(device) + 8;
        check_ok!(device.write(sector, stamped(sector, 0x71), 512).map_err(|e| e.0));
        {
            let _short = ShortTimeout::new(SHORT_MS);
            let result = on_cpu0(move || {
                device
                    .submit_unkicked(Operation::Read, sector, canary(0), 512)
                    .map(|p| p.wait().0)
                    .map_err(|e| e.0)
            })?;
            served_anyway::<()>(&check_ok!(result))?;
            check_eq!(result, Ok(Err(BlkError::Timeout)));
        }
        // Every queue works after the re-initialisation.
        // (A failure is reported, not asserted: a panic in the thread would
        // take the kernel down when a lying device fails the read.)
        for cpu in 0..crate::smp::online_cpus() as u32 {
            let good = Arc::new(SpinLock::new(false));
            let seen = good.clone();
            let thread = spawn("blk-after", Placement::Pinned(cpu), move || {
                let read = device.read(sector, filled(0, 1), 512);
                *seen.lock() =
                    read.is_ok_and(|b| first_wrong(&b.as_slice()[..512], sector, 0x71).is_none());
            });
            thread.map_err(|_| crate::ktest::TestFailure::new("spawn".into()))?.join();
            check!(*good.lock(), "the read on CPU {} failed or read other data", cpu);
        }
        check!(all_requests_home(device));
        Ok(())
    }
);

ktest!(
    fn a_reset_cancels_the_requests_still_before_their_deadline() {
        let device = blk()?;
        let _short = ShortTimeout::new(SHORT_MS);
        let sector = scratch(device);
        let outcomes = on_cpu0(move || {
            let late =
                device.submit_unkicked(Operation::Read, sector, canary(1), 512).map_err(|e| e.0)?;
            crate::sched::timer::sleep_us(SHORT_MS * 1000 + 10_000);
            // Submitted after the first one's deadline: still within its own.
            let set = set_timeout_ms(10_000);
            let early =
                device.submit_unkicked(Operation::Read, sector, canary(2), 512).map_err(|e| e.0);
            set_timeout_ms(SHORT_MS);
            let early = early?;
            let first = late.wait();
            let second = early.wait();
            let _ = set;
            Ok::<_, BlkError>((
                first.0,
                first.1.map(|b| b.as_slice()[0]),
                second.0,
                second.1.map(|b| b.as_slice()[0]),
            ))
        })?;
        let (first, _, second, _) = check_ok!(outcomes);
        served_anyway::<()>(&first)?;
        served_anyway::<()>(&second)?;
        check_eq!(
            outcomes,
            Ok((Err(BlkError::Timeout), Some(1), Err(BlkError::Cancelled), Some(2)))
        );
        check!(all_requests_home(device));
        Ok(())
    }
);

ktest!(
    fn reset_device_cancels_what_is_in_flight_and_keeps_data() {
        let device = writable()?;
        let sector = scratch(device) + 16;
        check_ok!(device.write(sector, stamped(sector, 0x72), 512).map_err(|e| e.0));
        let outcome = on_cpu0(move || {
            let pending =
                device.submit_unkicked(Operation::Read, sector, canary(3), 512).map_err(|e| e.0)?;
            device.reset_device()?;
            check_done(&pending)?;
            Ok::<_, BlkError>(pending.wait())
        })?;
        let (result, buffer) = check_ok!(outcome);
        served_anyway::<()>(&result)?;
        check_eq!(result, Err(BlkError::Cancelled));
        check!(buffer.is_some_and(|b| b.as_slice().iter().all(|&x| x == 3)));
        let read = check_ok!(device.read(sector, filled(0, 1), 512).map_err(|e| e.0));
        check_eq!(first_wrong(&read.as_slice()[..512], sector, 0x72), None);
        Ok(())
    }
);

/// The reset finished the request (it does not wait for it).
fn check_done(pending: &super::Pending) -> Result<(), BlkError> {
    if pending.is_done() { Ok(()) } else { Err(BlkError::DeviceFailed) }
}

ktest!(
    fn a_reset_with_nothing_in_flight_leaves_the_device_working() {
        let device = writable()?;
        let resets = device.recovery_stats().resets;
        check_ok!(device.reset_device());
        check_ok!(device.reset_device());
        check_eq!(device.recovery_stats().resets, resets + 2);
        let sector = scratch(device) + 24;
        check_ok!(device.write(sector, stamped(sector, 0x73), 512).map_err(|e| e.0));
        let read = check_ok!(device.read(sector, filled(0, 1), 512).map_err(|e| e.0));
        check_eq!(first_wrong(&read.as_slice()[..512], sector, 0x73), None);
        if device.has(super::feature::FLUSH) {
            check_ok!(device.flush());
        }
        Ok(())
    }
);

ktest!(
    fn a_reported_protocol_violation_resets_before_the_next_request() {
        let device = writable()?;
        let resets = device.recovery_stats().resets;
        device.health.protocol_violation(0, vireo_virtio::Error::DeviceIdOutOfRange);
        let sector = scratch(device) + 32;
        check_ok!(device.write(sector, stamped(sector, 0x74), 512).map_err(|e| e.0));
        check_eq!(device.recovery_stats().resets, resets + 1);
        check!(!device.health.reset_wanted());
        let read = check_ok!(device.read(sector, filled(0, 1), 512).map_err(|e| e.0));
        check_eq!(first_wrong(&read.as_slice()[..512], sector, 0x74), None);
        Ok(())
    }
);

ktest!(
    fn a_dropped_pending_frees_its_buffer_once_the_device_is_done() {
        let device = blk()?;
        let sector = scratch(device);
        // Warm up (the heap may grow on first use), then count.
        drop(device.submit(Operation::Read, sector, Some(filled(0, 4)), 16384).map_err(|e| e.0));
        crate::sched::timer::sleep_us(20_000);
        let before = free_frames(device);
        for _ in 0..8 {
            let pending = device.submit(Operation::Read, sector, Some(filled(0, 4)), 16384);
            drop(check_ok!(pending.map_err(|e| e.0)));
        }
        let deadline = crate::platform::time::uptime_us() + 2_000_000;
        while !all_requests_home(device) {
            check!(crate::platform::time::uptime_us() < deadline, "requests never came back");
            crate::sched::timer::sleep_us(1000);
        }
        check_eq!(free_frames(device), before);
        device.release_abandoned();
        Ok(())
    }
);

ktest!(
    fn more_dropped_pendings_than_the_pool_never_wedge_the_queue() {
        let device = blk()?;
        let sector = scratch(device);
        let done = on_cpu0(move || {
            // Three pools' worth, all from one CPU's queue.
            for _ in 0..3 * super::REQUESTS_PER_QUEUE {
                if let Ok(pending) = device.submit(Operation::Read, sector, Some(filled(0, 1)), 512)
                {
                    drop(pending);
                }
            }
            device.read(sector, filled(0, 1), 512).is_ok()
        })?;
        check!(done, "a read after the dropped requests failed");
        let deadline = crate::platform::time::uptime_us() + 2_000_000;
        while !all_requests_home(device) {
            check!(crate::platform::time::uptime_us() < deadline, "requests never came back");
            crate::sched::timer::sleep_us(1000);
        }
        device.release_abandoned();
        Ok(())
    }
);

ktest!(
    fn a_dropped_stalled_request_comes_back_through_the_reset() {
        let device = blk()?;
        let sector = scratch(device);
        on_cpu0(move || drop(device.submit_unkicked(Operation::Read, sector, canary(9), 512)))?;
        if all_requests_home(device) {
            return crate::ktest::skip("the device served a request it was never notified of");
        }
        check_ok!(device.reset_device());
        check!(all_requests_home(device), "the reset did not take it back");
        device.release_abandoned();
        Ok(())
    }
);

ktest!(
    fn a_timeout_and_its_recovery_leak_no_frame() {
        let device = blk()?;
        let _short = ShortTimeout::new(SHORT_MS);
        let sector = scratch(device);
        let stall = move || {
            let pending = device.submit_unkicked(Operation::Read, sector, filled(0, 2), 8192);
            pending.map(|p| p.wait().0).map_err(|e| e.0)
        };
        // Warm-up: the first recovery may grow the heap.
        let warm_up = check_ok!(on_cpu0(stall)?);
        served_anyway::<()>(&warm_up)?;
        let before = free_frames(device);
        let counted = check_ok!(on_cpu0(stall)?);
        served_anyway::<()>(&counted)?;
        check_eq!(counted, Err(BlkError::Timeout));
        check_eq!(free_frames(device), before);
        check!(all_requests_home(device));
        Ok(())
    }
);

ktest!(
    fn a_waiter_on_another_cpu_is_failed_by_the_reset_too() {
        let device = blk()?;
        if crate::smp::online_cpus() < 2 || device.queue_count() < 2 {
            return crate::ktest::skip("needs two CPUs with a queue each");
        }
        let _short = ShortTimeout::new(SHORT_MS);
        let sector = scratch(device);
        // CPU 1's request is in flight, within its deadline, when CPU 0's
        // times out and resets the device.
        let outcome = Arc::new(SpinLock::new(None));
        let slot = outcome.clone();
        let other = spawn("blk-other", Placement::Pinned(1), move || {
            set_timeout_ms(5_000);
            let pending = device.submit_unkicked(Operation::Read, sector, canary(4), 512);
            set_timeout_ms(SHORT_MS);
            *slot.lock() = Some(pending.map(|p| p.wait().0).map_err(|e| e.0));
        });
        let other = other.map_err(|_| crate::ktest::TestFailure::new("spawn".into()))?;
        crate::sched::timer::sleep_us(5_000);
        let mine = on_cpu0(move || {
            device
                .submit_unkicked(Operation::Read, sector, canary(5), 512)
                .map(|p| p.wait().0)
                .map_err(|e| e.0)
        })?;
        other.join();
        served_anyway::<()>(&check_ok!(mine))?;
        check_eq!(mine, Ok(Err(BlkError::Timeout)));
        let theirs = outcome.lock().take();
        // QEMU may serve the other CPU's un-notified request before the
        // reset (it polls its rings after I/O): then nothing was in flight.
        if let Some(Ok(result)) = &theirs {
            served_anyway::<()>(result)?;
        }
        check_eq!(theirs, Some(Ok(Err(BlkError::Cancelled))));
        Ok(())
    }
);

ktest!(
    fn the_timeout_is_clamped_to_its_range() {
        let old = timeout_ms();
        check_eq!(set_timeout_ms(0), 1);
        check_eq!(set_timeout_ms(u64::MAX), 600_000);
        check_eq!(set_timeout_ms(old), old);
        check_eq!(super::DEFAULT_TIMEOUT_MS, 5_000);
        Ok(())
    }
);

ktest!(
    fn frames_are_equal_before_and_after_verified_io() {
        let device = writable()?;
        let first = scratch(device) + 40;
        let round = move |seed: u8| -> Result<(), String> {
            for sector in first..first + 16 {
                device
                    .write(sector, stamped(sector, seed), 512)
                    .map_err(|e| alloc::format!("{:?}", e.0))?;
            }
            let read = device
                .read(first, filled(0, 2), 16 * SECTOR_BYTES as usize)
                .map_err(|e| alloc::format!("{:?}", e.0))?;
            match first_wrong(read.as_slice(), first, seed) {
                None => Ok(()),
                Some(sector) => Err(alloc::format!("sector {sector} wrong")),
            }
        };
        round(0x75).map_err(crate::ktest::TestFailure::new)?;
        let before = free_frames(device);
        round(0x76).map_err(crate::ktest::TestFailure::new)?;
        check_eq!(free_frames(device), before);
        let _: Vec<u8> = Vec::new();
        Ok(())
    }
);

ktest!(
    fn a_used_index_lie_seen_while_polling_resets_instead_of_spinning() {
        // The fuzzer's find (seed 105): a waiter polling a queue whose
        // `used.idx` the device had pushed past the requests in flight saw
        // "news" forever and never reached the reset. Here the test plays
        // the device: one request the device never hears of, then a lie.
        let device = blk()?;
        let resets = device.recovery_stats().resets;
        let sector = scratch(device);
        let (result, waited_us) = on_cpu0(move || {
            let start = crate::platform::time::uptime_us();
            let pending = match device.submit_unkicked(Operation::Read, sector, canary(0x3c), 512) {
                Ok(pending) => pending,
                Err((error, _)) => return (Err(error), 0),
            };
            let used = &device.queues[0].used_idx;
            used.forge(used.load().wrapping_add(100));
            let (result, _) = pending.wait();
            (result, crate::platform::time::uptime_us() - start)
        })?;
        served_anyway::<()>(&result)?;
        check!(result.is_err(), "the lie went unnoticed: {:?}", result);
        // Far inside the deadline: the lie, not the clock, ended the wait.
        check!(waited_us < timeout_ms() * 1000 / 2, "gave up only after {} us", waited_us);
        check_eq!(device.recovery_stats().resets, resets + 1);
        let read = device.read(sector, filled(0, 1), 512).map(|_| ()).map_err(|e| e.0);
        check_eq!(read, Ok(()));
        Ok(())
    }
);
