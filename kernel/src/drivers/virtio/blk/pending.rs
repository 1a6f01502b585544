//! A submitted request and how its submitter waits for it: a short poll
//! (most requests come back within tens of microseconds, less than a
//! sleep/wake-up round trip), then a sleep until the completion interrupt
//! or the request's deadline, in slices so that a device the interrupt
//! handler found lying is noticed at once. A deadline that passes gets the
//! device reset (`recovery`), which finishes the request as
//! [`BlkError::Timeout`]. Dropping a `Pending` abandons the outcome: the
//! buffers are freed when the device (or a reset) gives them back.

use super::request::{self, Data, ID_BYTES, Outcome};
use super::{BlkDevice, BlkError, Completion};
use crate::mm::dma::DmaBuffer;
use crate::platform::time::{rdtsc, tsc_hz};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::Ordering;

/// How long a waiter polls for its completion before sleeping.
const POLL_US: u64 = 30;
/// Longest sleep between looks at the device's health.
const SLICE_US: u64 = 20_000;
/// Between polls of a queue that has no interrupt.
const POLLED_SLEEP_US: u64 = 20;

/// A submitted request.
#[must_use = "the buffer comes back only through wait"]
pub struct Pending {
    device: &'static BlkDevice,
    queue_index: usize,
    completion: Arc<Completion>,
    /// The device's reset generation when the request went in: a reset
    /// after it finished the request.
    generation: Cell<u32>,
    collected: bool,
}

impl Pending {
    pub(super) fn new(
        device: &'static BlkDevice,
        queue_index: usize,
        completion: Arc<Completion>,
        generation: u32,
    ) -> Self {
        Self {
            device,
            queue_index,
            completion,
            generation: Cell::new(generation),
            collected: false,
        }
    }

    /// The queue the request went to.
    pub(super) fn queue_index(&self) -> usize {
        self.queue_index
    }

    /// Whether the outcome is in (a later `wait` returns at once).
    pub fn is_done(&self) -> bool {
        self.completion.is_done()
    }

    /// Blocks until the device finishes or the deadline passes; returns the
    /// outcome and the data buffer (`None` only when the device failed and
    /// keeps it).
    pub fn wait(self) -> (Result<(), BlkError>, Option<DmaBuffer>) {
        let (result, data) = self.wait_data();
        (result, data.into_one())
    }

    /// As [`Pending::wait`], for a scatter-gather request: every buffer.
    pub fn wait_sg(self) -> (Result<(), BlkError>, Vec<DmaBuffer>) {
        let (result, data) = self.wait_data();
        (result, data.into_vec())
    }

    pub(super) fn wait_id(self) -> (Result<(), BlkError>, [u8; ID_BYTES]) {
        match self.wait_outcome() {
            Ok(outcome) => (result_of(&outcome), outcome.id),
            Err(error) => (Err(error), [0; ID_BYTES]),
        }
    }

    pub(super) fn wait_data(self) -> (Result<(), BlkError>, Data) {
        match self.wait_outcome() {
            Ok(outcome) => (result_of(&outcome), outcome.data),
            Err(error) => (Err(error), Data::None),
        }
    }

    pub(super) fn wait_for_buffer(self) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        match self.wait() {
            (Ok(()), Some(buffer)) => Ok(buffer),
            (Ok(()), None) => Err((BlkError::DeviceFailed, None)),
            (Err(error), buffer) => Err((error, buffer)),
        }
    }

    /// The outcome, or `DeviceFailed` when the device is given up with the
    /// request still in it (its buffers stay with the device).
    fn wait_outcome(mut self) -> Result<Outcome, BlkError> {
        self.collected = true;
        self.settle();
        match self.completion.take() {
            Some(outcome) => Ok(outcome),
            None => Err(BlkError::DeviceFailed),
        }
    }

    /// Polls queue `index` lock-free until one of `done` holds or `until`
    /// (TSC) passes, taking completions under the lock only when the
    /// device published some; whether one held.
    fn poll(device: &BlkDevice, index: usize, until: u64, done: impl Fn() -> bool) -> bool {
        let slot = &device.queues[index];
        device.quiet_for_polling(index);
        while !done() {
            // A queue found broken keeps looking "new" (its `used.idx` is
            // the device's lie, never the index a good pop ended at): stop
            // polling so the caller gets to the reset (the fuzzer found
            // this spin forever after a used-ring lie, seed 105).
            if device.health.reset_wanted() || device.health.is_failed() {
                return false;
            }
            if slot.has_news() {
                device.complete(index, false);
                continue;
            }
            slot.poll.empty_polls.fetch_add(1, Ordering::Relaxed);
            if rdtsc() >= until {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

    /// Returns once the outcome is in, or the device is given up.
    fn settle(&self) {
        // Already in (a QD32 reaper collects what `wait_any` saw finish):
        // no lock, no look at the queue.
        if self.completion.is_done() {
            return;
        }
        let device = self.device;
        let index = self.queue_index;
        let polled = device.is_polled(index);
        let ticks_per_us = tsc_hz() / 1_000_000;
        let poll_end = (rdtsc() + ticks_per_us * POLL_US).min(self.deadline());
        if Self::poll(device, index, poll_end, || self.completion.is_done()) {
            return;
        }
        let slot = &device.queues[index];
        // Counted before the lock that re-enables interrupts (see `poll`).
        slot.poll.sleepers.fetch_add(1, Ordering::AcqRel);
        device.complete(index, !polled);
        loop {
            if self.completion.is_done() || device.health.is_failed() {
                break;
            }
            let deadline = self.deadline();
            let now = rdtsc();
            if now >= deadline || device.health.reset_wanted() {
                let why = if now >= deadline {
                    "a request timed out"
                } else {
                    "the device broke the ring protocol"
                };
                device.health.recover(device, self.generation.get(), why);
                // That reset (or one another waiter ran) finished this
                // request; look again.
                self.generation.set(device.health.generation());
                continue;
            }
            let slice = if polled { POLLED_SLEEP_US } else { SLICE_US };
            let slice_end = deadline.min(now + ticks_per_us * slice);
            if polled {
                crate::sched::timer::sleep_until_tsc(slice_end);
                device.complete(index, false);
            } else {
                self.completion.wait_until(slice_end);
            }
        }
        slot.poll.sleepers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until any of `items`' requests (all submitted from this CPU,
    /// so on one queue) is finished and returns its position: polls them
    /// all, then sleeps on the first. Reaps whichever completes first, as a
    /// QD32 workload wants. `None` when `items` is empty.
    pub fn wait_any<T>(items: &[T], pending: impl Fn(&T) -> &Pending) -> Option<usize> {
        let first_done = || items.iter().position(|item| pending(item).is_done());
        if let Some(found) = first_done() {
            return Some(found);
        }
        let oldest = pending(items.first()?);
        let (device, index) = (oldest.device, oldest.queue_index);
        let until = (rdtsc() + tsc_hz() / 1_000_000 * POLL_US).min(oldest.deadline());
        if !Self::poll(device, index, until, || first_done().is_some()) {
            oldest.settle();
        }
        first_done()
    }

    /// When this request times out (its deadline, kept in the completion).
    fn deadline(&self) -> u64 {
        self.completion.deadline_tsc()
    }
}

impl Drop for Pending {
    /// Abandons an outcome nobody collected: the request itself is the
    /// queue's (it goes back to the pool when the device or a reset
    /// returns it), and its buffers are freed then.
    fn drop(&mut self) {
        if !self.collected {
            self.completion.abandon();
            // Nobody will poll for it: a poller may have left the queue's
            // interrupts off, and only the interrupt handler brings the
            // request back now (§2.7.14: re-enable, then recheck).
            if !self.completion.is_done() {
                self.device.complete(self.queue_index, !self.device.is_polled(self.queue_index));
            }
        }
    }
}

/// What a finished request means for its caller.
fn result_of(outcome: &Outcome) -> Result<(), BlkError> {
    match outcome.status {
        _ if outcome.taken_back.is_some() => Err(outcome.taken_back.unwrap_or(BlkError::Cancelled)),
        request::STATUS_OK => Ok(()),
        request::STATUS_UNSUPP => Err(BlkError::Unsupported),
        request::STATUS_IOERR => Err(BlkError::Io),
        // A value the spec does not define: not a success either.
        _ => Err(BlkError::Io),
    }
}
