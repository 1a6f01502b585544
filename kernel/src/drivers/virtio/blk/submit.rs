//! Submitting requests: the checks every request passes before the
//! device sees it (range, block alignment §5.2.5, read-only, features),
//! then one pinned trip to the CPU's queue: a pooled request, `add`, and
//! a kick when the device asks for one (§2.7.13).

use super::{BlkDevice, BlkError, Data, Operation, Pending, recovery};

/// When the device hears of a submitted request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Notify {
    /// Decide at once (kick if the device asks for it, §2.7.13).
    Now,
    /// Later, once for many requests: a [`super::Batch`] decides when it
    /// ends. Before waiting for pool space the decision is taken at once,
    /// or a batch could wait for its own unannounced requests.
    Deferred,
    /// Never: the recovery tests' stalled device.
    Never,
}
use crate::mm::dma::DmaBuffer;
use crate::sync::PreemptGuard;
use alloc::vec::Vec;
use vireo_virtio::device::blk::{Transfer, TransferError, check_transfer};

impl BlkDevice {
    /// Starts a transfer of `len_bytes` between sector `sector` and `buffer`;
    /// the buffer belongs to the request until [`Pending::wait`] returns it.
    ///
    /// # Errors
    /// [`BlkError`] (with the buffer handed back) for bad ranges, writes to a
    /// read-only disk, or a failed device.
    pub fn submit(
        &'static self,
        operation: Operation,
        sector: u64,
        buffer: Option<DmaBuffer>,
        len_bytes: usize,
    ) -> Result<Pending, (BlkError, Option<DmaBuffer>)> {
        self.submit_one(operation, sector, buffer, len_bytes, Notify::Now)
    }

    /// Starts a scatter-gather transfer of `len_bytes` between sector
    /// `sector` and `buffers` in order (each cut into segments of at most
    /// `size_max` bytes, at most `seg_max` of them in all).
    ///
    /// # Errors
    /// As [`BlkDevice::submit`]; [`BlkError::BadRange`] when the buffers
    /// need more segments than the device takes.
    pub fn submit_sg(
        &'static self,
        operation: Operation,
        sector: u64,
        buffers: Vec<DmaBuffer>,
        len_bytes: u64,
    ) -> Result<Pending, (BlkError, Vec<DmaBuffer>)> {
        let data = Data::Many(buffers);
        self.submit_data(operation, sector, data, (0, len_bytes), (0, 0), Notify::Now)
            .map_err(|(error, data)| (error, data.into_vec()))
    }

    /// As [`BlkDevice::submit`], but the device is not told (no kick): an
    /// idle device never sees the request, so it stalls until its
    /// deadline. For the recovery tests.
    pub fn submit_unkicked(
        &'static self,
        operation: Operation,
        sector: u64,
        buffer: DmaBuffer,
        len_bytes: usize,
    ) -> Result<Pending, (BlkError, Option<DmaBuffer>)> {
        self.submit_one(operation, sector, Some(buffer), len_bytes, Notify::Never)
    }

    /// One request for the first `len_bytes` of `buffer` (if any).
    pub(super) fn submit_one(
        &'static self,
        operation: Operation,
        sector: u64,
        buffer: Option<DmaBuffer>,
        len_bytes: usize,
        notify: Notify,
    ) -> Result<Pending, (BlkError, Option<DmaBuffer>)> {
        let data = buffer.map_or(Data::None, Data::One);
        self.submit_data(operation, sector, data, (0, len_bytes as u64), (0, 0), notify)
            .map_err(|(error, data)| (error, data.into_one()))
    }

    /// Submits one request for the bytes `span` = (skip, length) of
    /// `data`; `range` is discard/write-zeroes' (sectors, flags); the
    /// device is told as `notify` says.
    pub(super) fn submit_data(
        &'static self,
        operation: Operation,
        sector: u64,
        data: Data,
        span: (u64, u64),
        range: (u32, u32),
        notify: Notify,
    ) -> Result<Pending, (BlkError, Data)> {
        if let Err(error) = self.check(operation, sector, &data, span, range.0) {
            return Err((error, data));
        }
        let limits = self.segment_limits();
        let mut data = data;
        loop {
            self.health.recover_if_needed(self);
            if self.health.is_failed() {
                return Err((BlkError::DeviceFailed, data));
            }
            let pinned = PreemptGuard::new();
            let queue_index = pinned.cpu_id() as usize % self.queues.len();
            let slot = &self.queues[queue_index];
            let mut state = slot.state.lock();
            let Some(mut request) = state.take_request() else {
                if notify == Notify::Deferred {
                    self.notify_if_asked(&mut state);
                }
                drop(state);
                drop(pinned);
                // All requests of this queue are out: wait for one back; no
                // request coming back for a whole timeout means the device
                // stalled (every one in flight is past its deadline).
                // Their completions must interrupt: a poller may have left
                // the queue's interrupts off (re-enable, then recheck).
                self.complete(queue_index, !slot.polled);
                if slot.polled {
                    // No interrupt will come: look again shortly (the
                    // waiters of those requests mind their deadlines).
                    crate::sched::timer::sleep_us(20);
                    continue;
                }
                let deadline = recovery::deadline_from_now();
                if !slot.space.wait_until_deadline(deadline, || !slot.state.lock().pool.is_empty())
                {
                    self.health.recover(
                        self,
                        self.health.generation(),
                        "no request came back for a whole timeout",
                    );
                }
                continue;
            };
            // The last user's abandoned outcome, if any: freed here, in
            // thread context (under the lock, but the frame allocator is
            // never used from interrupts).
            drop(request.release_abandoned());
            if let Err((_, rejected)) =
                request.prepare(operation, sector, data, span, limits, range)
            {
                state.pool.push(request);
                return Err((BlkError::BadRange, rejected));
            }
            request.completion.set_deadline(recovery::deadline_from_now());
            let completion = request.completion.clone();
            let generation = self.health.generation();
            if let Err(rejected) = state.queue.add(request) {
                // Only a broken ring refuses (the pool bounds the depth):
                // reset the device and try again.
                let mut request = rejected.buffers;
                data = request.take_all_data();
                state.pool.push(request);
                self.health.needs_reset();
                continue;
            }
            if notify == Notify::Now {
                self.notify_if_asked(&mut state);
            }
            return Ok(Pending::new(self, queue_index, completion, generation));
        }
    }

    /// (size_max, seg_max) for laying out a request's data.
    pub(super) fn segment_limits(&self) -> (u32, usize) {
        let config = self.config.lock();
        (config.size_max, config.seg_max as usize)
    }

    /// The checks of VirtIO 1.2 §5.2 a request passes before the device
    /// sees it (`device::blk::check_transfer`), after the device's health.
    pub(super) fn check(
        &self,
        operation: Operation,
        sector: u64,
        data: &Data,
        span: (u64, u64),
        range_sectors: u32,
    ) -> Result<(), BlkError> {
        if self.health.is_failed() {
            return Err(BlkError::DeviceFailed);
        }
        let (skip, len_bytes) = span;
        let held: u64 = data.buffers().iter().map(|b| b.len_bytes() as u64).sum();
        let len = match operation {
            Operation::Discard | Operation::WriteZeroes => u64::from(range_sectors),
            _ => len_bytes,
        };
        let transfer =
            Transfer { kind: operation, sector, len, buffer_bytes: held.saturating_sub(skip) };
        // Before the lock: after a configuration change `capacity_sectors`
        // re-reads the configuration under that same lock.
        let capacity = self.capacity_sectors();
        let config = self.config.lock();
        check_transfer(&transfer, self.features, &config, capacity).map_err(|error| match error {
            TransferError::ReadOnly => BlkError::ReadOnly,
            TransferError::Unsupported => BlkError::Unsupported,
            TransferError::BadRange => BlkError::BadRange,
            TransferError::Unaligned => BlkError::Unaligned,
        })
    }
}
