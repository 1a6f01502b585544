//! Never a hung caller: deadlines, and resetting a device that stalls or
//! lies (VirtIO 1.2 §2.4: after a reset the device uses no buffer it was
//! given).
//!
//! Every request gets a deadline when it is submitted (the default
//! [`DEFAULT_TIMEOUT_MS`], or the kernel command line's `blk.timeout_ms=`).
//! A waiter whose deadline passes, a submitter that saw no request come
//! back for a whole timeout, or a waiter told that the interrupt handler
//! found the ring protocol broken (§2.7) calls [`Health::recover`]. One
//! recovery runs at a time; it:
//! 1. logs once why;
//! 2. takes every queue's lock (no completion, no submission meanwhile)
//!    and resets the device, bounded;
//! 3. with the reset proven, takes what the device finished off each used
//!    ring (those outcomes are real), reclaims the rest against the proof
//!    and finishes each as [`BlkError::Timeout`] if its deadline passed,
//!    else [`BlkError::Cancelled`]: only now do the buffers go back, as
//!    copies (`quarantine`: a device that had to be reset may break the
//!    reset's promise too, so the pages it was given stay with the driver);
//! 4. initialises the device again (same features, queue and
//!    configuration vectors, zeroed rings, the chosen cache mode) and
//!    re-reads its configuration.
//!
//! A reset that does not complete leaves every buffer with the device
//! (waiters get [`BlkError::DeviceFailed`] without their buffers) and the
//! device failed, said once. So does a device that cannot be initialised
//! again, or one that needed [`MAX_FRUITLESS_RESETS`] resets in a row
//! without finishing a single request in between.

use super::{BlkDevice, BlkError, BlkQueue, quarantine};
use crate::drivers::virtio::pci::NO_VECTOR;
use crate::platform::time::{rdtsc, tsc_hz};
use crate::sync::IrqSpinLockGuard;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Deadline of a request unless the command line says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Shortest and longest deadline a user may set.
const TIMEOUT_MS_RANGE: core::ops::RangeInclusive<u64> = 1..=600_000;
/// Resets in a row, with no request finished between them, before the
/// device is given up.
pub const MAX_FRUITLESS_RESETS: u32 = 8;

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT_MS);

/// The deadline requests get from now on, in milliseconds.
pub fn timeout_ms() -> u64 {
    TIMEOUT_MS.load(Ordering::Relaxed)
}

/// Sets the deadline of requests submitted from now on (clamped to
/// 1 ms – 10 min); returns what was set.
pub fn set_timeout_ms(ms: u64) -> u64 {
    let ms = ms.clamp(*TIMEOUT_MS_RANGE.start(), *TIMEOUT_MS_RANGE.end());
    TIMEOUT_MS.store(ms, Ordering::Relaxed);
    ms
}

/// A deadline one timeout from now (TSC).
pub(super) fn deadline_from_now() -> u64 {
    rdtsc() + timeout_ms() * (tsc_hz() / 1000)
}

/// How the device is doing.
#[derive(Default)]
pub(super) struct Health {
    /// Resets done: a request submitted in generation g was finished by
    /// the reset that ended it.
    generation: AtomicU32,
    /// The interrupt handler found the ring protocol broken.
    reset_wanted: AtomicBool,
    /// A recovery is running.
    recovering: AtomicBool,
    /// Given up for good.
    failed: AtomicBool,
    /// Resets since a request last finished.
    fruitless: AtomicU32,
    /// Counters: resets, requests timed out, requests cancelled by resets.
    resets: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
}

/// What a recovery counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Device resets done.
    pub resets: u64,
    /// Requests failed with [`BlkError::Timeout`].
    pub timeouts: u64,
    /// Requests failed with [`BlkError::Cancelled`] by those resets.
    pub cancelled: u64,
    /// The device is given up.
    pub failed: bool,
}

impl Health {
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn reset_wanted(&self) -> bool {
        self.reset_wanted.load(Ordering::Acquire)
    }

    /// Asks for a reset at the next look (thread context does it).
    pub fn needs_reset(&self) {
        self.reset_wanted.store(true, Ordering::Release);
    }

    /// The interrupt handler (or a poller) found queue `index` broken.
    pub fn protocol_violation(&self, index: usize, error: vireo_virtio::Error) {
        if !self.reset_wanted.swap(true, Ordering::AcqRel) {
            log::error!("virtio-blk: queue {index}: {error}; resetting the device");
        }
    }

    /// A request finished: the device works.
    pub fn progress(&self) {
        if self.fruitless.load(Ordering::Relaxed) != 0 {
            self.fruitless.store(0, Ordering::Relaxed);
        }
    }

    /// Runs a pending reset request (protocol violation) before a submission.
    pub fn recover_if_needed(&self, device: &BlkDevice) {
        if self.reset_wanted() && !self.is_failed() {
            self.recover(device, self.generation(), "the device broke the ring protocol");
        }
    }

    /// Resets and re-initialises the device unless a reset already
    /// happened since generation `seen` (or one is running: then waits a
    /// little for it).
    pub fn recover(&self, device: &BlkDevice, seen: u32, why: &str) {
        if self
            .recovering
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            crate::sched::timer::sleep_us(1000);
            return;
        }
        if self.generation() == seen && !self.is_failed() {
            self.recover_locked(device, why);
        }
        self.recovering.store(false, Ordering::Release);
        for slot in &device.queues {
            slot.space.wake_all();
        }
    }

    fn recover_locked(&self, device: &BlkDevice, why: &str) {
        let fruitless = self.fruitless.fetch_add(1, Ordering::AcqRel) + 1;
        if fruitless > MAX_FRUITLESS_RESETS {
            self.give_up(device, "it finished no request across resets");
            return;
        }
        log::error!("virtio-blk: {why}; resetting the device (timeout {} ms)", timeout_ms());
        self.resets.fetch_add(1, Ordering::Relaxed);
        let mut states: Vec<IrqSpinLockGuard<'_, BlkQueue>> =
            device.queues.iter().map(|slot| slot.state.lock()).collect();
        let outcome = match device.virtio.reset() {
            Ok(proof) => {
                let now = rdtsc();
                for state in states.iter_mut() {
                    // The used ring no longer changes: what the device
                    // finished is real (a broken ring refuses; reclaim
                    // takes those back too).
                    while let Ok(Some(used)) = state.queue.pop_used() {
                        state.recycle(used.buffers);
                    }
                    let mut taken = Vec::new();
                    if state.queue.reclaim(&proof, |_, request| taken.push(request)).is_err() {
                        log::error!("virtio-blk: a queue refused the reset proof");
                    }
                    for mut request in taken {
                        let why = if now >= request.completion.deadline_tsc() {
                            self.timeouts.fetch_add(1, Ordering::Relaxed);
                            BlkError::Timeout
                        } else {
                            self.cancelled.fetch_add(1, Ordering::Relaxed);
                            BlkError::Cancelled
                        };
                        request.mark_taken_back(why);
                        device.quarantine_data(&mut request);
                        state.recycle(request);
                    }
                }
                self.reinitialise(device, &mut states)
            }
            Err(error) => Err(alloc::format!("the reset did not complete ({error})")),
        };
        self.reset_wanted.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Unlocked in reverse: each lock restores the interrupt state from
        // before it was taken, so the first one taken must go last.
        while let Some(state) = states.pop() {
            drop(state);
        }
        let held = device.quarantined_frames();
        let outcome = outcome.and_then(|()| {
            if held > quarantine::MAX_FRAMES {
                Err(alloc::format!("it kept {held} frames it may still write across resets"))
            } else {
                Ok(())
            }
        });
        match outcome {
            Ok(()) => {
                device.reread_config();
                if let Some(mode) = device.chosen_cache_mode() {
                    let _ = device.write_cache_mode(mode);
                }
                log::warn!("virtio-blk: device reset and running again");
            }
            Err(reason) => self.give_up(device, &reason),
        }
    }

    /// §3.1.1 again, queue by queue, then DRIVER_OK.
    fn reinitialise(
        &self,
        device: &BlkDevice,
        states: &mut [IrqSpinLockGuard<'_, BlkQueue>],
    ) -> Result<(), alloc::string::String> {
        device.virtio.renegotiate(device.features).map_err(|e| alloc::format!("{e:?}"))?;
        for state in states.iter_mut() {
            let entry = (state.msix_entry != NO_VECTOR).then_some(state.msix_entry);
            device
                .virtio
                .restart_queue(&mut state.queue, entry)
                .map_err(|e| alloc::format!("{e:?}"))?;
            if device.queues[usize::from(state.queue.queue_index())].polled {
                let _ = state.queue.disable_interrupts();
            }
        }
        device.virtio.driver_ok();
        Ok(())
    }

    fn give_up(&self, device: &BlkDevice, reason: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            log::error!("virtio-blk: {reason}; device disabled");
        }
        for slot in &device.queues {
            slot.space.wake_all();
        }
    }

    pub fn stats(&self) -> RecoveryStats {
        RecoveryStats {
            resets: self.resets.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.is_failed(),
        }
    }
}

impl BlkDevice {
    /// Resets, timeouts and cancellations so far, and whether the device
    /// is given up.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.health.stats()
    }

    /// Resets the device as a timeout would (for tests and the shell):
    /// every request in flight comes back `Cancelled` (or `Timeout` past
    /// its deadline), and the device runs again.
    pub fn reset_device(&self) -> Result<(), BlkError> {
        self.health.recover(self, self.health.generation(), "reset asked for");
        if self.health.is_failed() { Err(BlkError::DeviceFailed) } else { Ok(()) }
    }
}
