//! The control queue's command path (VirtIO 1.2 §5.7.6): batches of
//! commands from a preallocated page pool, one notification per batch, and
//! answers matched to their caller by a per-command sequence number.
//!
//! Any number of callers may have batches in flight at once. Whoever polls
//! the used ring first sets answers meant for others aside (`answered`),
//! keyed by the sequence number written into the command's page when it was
//! queued. The queue's token (the descriptor head index) is not used for
//! matching: the ring reuses a head as soon as its answer is popped, so a
//! later batch can hold the same token as an answer still set aside.

use super::protocol::{self, Encoder, GpuError};
use super::{GpuDevice, GpuDeviceError};
use crate::drivers::virtio::hal::KernelHal;
use crate::drivers::virtio::pci::QueueNotifier;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vireo_virtio::{Dma, DmaChain, SplitQueue, Used};

/// Commands at the start of a page, the response after them.
pub(super) const RESPONSE_OFFSET: usize = 2048;
/// Room for the largest response (`RESP_OK_EDID`: 24 + 8 + 1024 bytes).
const RESPONSE_BYTES: usize = 1536;
/// The sequence number sits in the page's last 8 bytes, in no segment the
/// device is given: it cannot be overwritten by the device.
const SEQUENCE_OFFSET: usize = 4096 - 8;
/// Most commands sent as one batch.
pub const MAX_BATCH: usize = 4;
/// Command pages made at probe time: enough for several frames in flight
/// and a few other callers without allocating on the frame path.
pub(super) const POOL_PAGES: usize = 24;
/// A device that does not answer a command within this is declared broken.
const COMMAND_TIMEOUT_US: u64 = 2_000_000;
/// How long a waiter polls before it starts sleeping between polls: QEMU
/// answers small commands within tens of microseconds, a sleep costs a
/// timer interrupt and a context switch.
const SPIN_US: u64 = 40;
/// Longest sleep between two polls.
const MAX_SLEEP_US: u64 = 1_000;

pub(super) type Page = DmaChain<KernelHal, 2>;

/// The control queue and what belongs to it, under one spinlock.
pub(super) struct Control {
    pub(super) queue: SplitQueue<KernelHal, Page>,
    pub(super) notifier: QueueNotifier,
    /// Command pages not in flight.
    pub(super) pages: Vec<Page>,
    /// Answers popped by one caller that belong to another's batch.
    pub(super) answered: Vec<Used<Page>>,
    /// Sequence number of the next command queued.
    pub(super) next_sequence: u64,
}

/// Judges one answer of a batch: (index in the batch, response bytes,
/// written length, the fence the command carried).
pub(super) type ResponseCheck<'a> =
    dyn FnMut(usize, &[u8], u32, Option<u64>) -> Result<(), GpuDeviceError> + 'a;

/// Any command, type-erased so a batch can mix them.
pub trait EncodeRequest {
    /// Its code.
    fn command(&self) -> protocol::Command;
    /// Writes its body.
    fn encode(&self, out: &mut Encoder);
    /// Bytes its encoding needs beyond a page's command area (a long
    /// ATTACH_BACKING entry list); 0 for every fixed-size command.
    fn extra_bytes(&self) -> usize {
        0
    }
}

impl<R: protocol::GpuRequest> EncodeRequest for R {
    fn command(&self) -> protocol::Command {
        R::COMMAND
    }
    fn encode(&self, out: &mut Encoder) {
        self.encode_body(out);
    }
    fn extra_bytes(&self) -> usize {
        self.body_bytes().saturating_sub(RESPONSE_OFFSET - protocol::HEADER_BYTES)
    }
}

/// A queued batch: which sequence numbers answer it. Plain data; the
/// answers are collected by [`GpuDevice::wait`] or [`GpuDevice::try_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "collect the batch's answers to learn whether it worked"]
pub struct Batch {
    first: u64,
    count: u8,
    /// The fence the last command carries.
    fence: Option<u64>,
    /// Answers already collected (bit per command).
    collected: u8,
    /// The first error among the collected answers.
    error: Option<GpuDeviceError>,
}

impl Batch {
    fn owns(&self, sequence: u64) -> Option<usize> {
        let index = sequence.checked_sub(self.first)?;
        (index < u64::from(self.count)).then_some(index as usize)
    }

    fn is_complete(&self) -> bool {
        self.collected.count_ones() == u32::from(self.count)
    }
}

pub(super) fn sequence_of(page: &Page) -> u64 {
    let region = page.region();
    let bytes = &region[region.len() - 8..];
    u64::from_le_bytes(bytes.try_into().unwrap_or([0xff; 8]))
}

/// A page for `request`: a pooled one, or for an oversized command a fresh
/// region with the response after the command.
fn page_for(pool: &mut Vec<Page>, request: &dyn EncodeRequest) -> Result<Page, GpuDeviceError> {
    let extra = request.extra_bytes();
    if extra == 0
        && let Some(page) = pool.pop()
    {
        return Ok(page);
    }
    let pages = (SEQUENCE_OFFSET + 8 + extra).div_ceil(4096);
    let dma = Dma::new(KernelHal, pages).map_err(|_| GpuDeviceError::OutOfMemory)?;
    Ok(DmaChain::new(dma))
}

/// Where a page's response starts: after its command area.
fn response_offset(page: &Page) -> usize {
    page.region().len() - 4096 + RESPONSE_OFFSET
}

/// Writes `request` into `page` with `sequence`, clears the response header
/// (a stale answer from the page's last use must never pass for a new
/// one), and lays out its two segments.
pub(super) fn prepare(
    page: &mut Page,
    request: &dyn EncodeRequest,
    fence: Option<u64>,
    sequence: u64,
) -> Result<(), GpuDeviceError> {
    let response = response_offset(page);
    let bytes = page.region_mut();
    let command_len = {
        let mut encoder = Encoder::new(&mut bytes[..response], request.command(), fence);
        request.encode(&mut encoder);
        // A command longer than its page's command area is refused, never cut.
        encoder.finish().map_err(|_| GpuDeviceError::InvalidBatch)?
    };
    // The header is what says whether (and what) the device answered;
    // decoders read past it only as far as the written length reaches.
    bytes[response..response + protocol::HEADER_BYTES].fill(0);
    let end = bytes.len();
    bytes[end - 8..].copy_from_slice(&sequence.to_le_bytes());
    page.set_segments(&[(0, command_len)], &[(response, RESPONSE_BYTES)])
        .map_err(|_| GpuDeviceError::InvalidBatch)
}

impl GpuDevice {
    /// Queues `requests` as one batch, the last with a new fence when
    /// `fenced`, and notifies the device once (if it asks to be notified).
    /// Returns at once; collect with [`GpuDevice::wait`].
    ///
    /// # Errors
    /// [`GpuDeviceError::InvalidBatch`], lack of memory or queue space, or
    /// a broken queue. Nothing is left queued on error.
    pub fn submit(
        &self,
        requests: &[&dyn EncodeRequest],
        fenced: bool,
    ) -> Result<Batch, GpuDeviceError> {
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(GpuDeviceError::InvalidBatch);
        }
        if self.is_broken.load(Ordering::Acquire) {
            return Err(GpuDeviceError::QueueBroken);
        }
        let last = requests.len() - 1;
        let mut control = self.control.lock();
        if usize::from(control.queue.num_free()) < requests.len() {
            return Err(GpuDeviceError::QueueFull);
        }
        // Take every page before queueing anything, so a lack of memory
        // cannot leave half a batch with the device.
        let mut pages: [Option<Page>; MAX_BATCH] = Default::default();
        for (slot, request) in pages.iter_mut().zip(requests) {
            match page_for(&mut control.pages, *request) {
                Ok(page) => *slot = Some(page),
                Err(error) => {
                    control.pages.extend(pages.iter_mut().filter_map(Option::take));
                    return Err(error);
                }
            }
        }
        let fence = fenced.then(|| self.next_fence.fetch_add(1, Ordering::Relaxed));
        let first = control.next_sequence;
        for (index, request) in requests.iter().enumerate() {
            let mut page = pages[index].take().ok_or(GpuDeviceError::InvalidBatch)?;
            let command_fence = if index == last { fence } else { None };
            if let Err(error) = prepare(&mut page, *request, command_fence, first + index as u64) {
                control.pages.push(page);
                control.pages.extend(pages.iter_mut().filter_map(Option::take));
                if index == 0 {
                    return Err(error);
                }
                // Earlier commands are queued: send them and collect them
                // below like any batch, then report the error.
                return self.abandon_partial(control, first, index, error);
            }
            if let Err(rejected) = control.queue.add(page) {
                control.pages.push(rejected.buffers);
                control.pages.extend(pages.iter_mut().filter_map(Option::take));
                self.mark_broken();
                return self.abandon_partial(control, first, index, GpuDeviceError::QueueBroken);
            }
        }
        control.next_sequence = first + requests.len() as u64;
        self.notify_locked(&mut control)?;
        Ok(Batch { first, count: requests.len() as u8, fence, collected: 0, error: None })
    }

    /// The first `queued` commands of a batch went in, the rest did not:
    /// notify and collect those so none stays with the device unclaimed.
    fn abandon_partial(
        &self,
        mut control: crate::sync::SpinLockGuard<'_, Control>,
        first: u64,
        queued: usize,
        error: GpuDeviceError,
    ) -> Result<Batch, GpuDeviceError> {
        control.next_sequence = first + queued as u64;
        let _ = self.notify_locked(&mut control);
        drop(control);
        if queued > 0 {
            let batch =
                Batch { first, count: queued as u8, fence: None, collected: 0, error: None };
            let _ = self.wait(batch, &mut |_, _, _, _| Ok(()));
        }
        Err(error)
    }

    fn notify_locked(&self, control: &mut Control) -> Result<(), GpuDeviceError> {
        match control.queue.should_notify() {
            Ok(true) => {
                control.notifier.notify();
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(_) => {
                self.mark_broken();
                Err(GpuDeviceError::QueueBroken)
            }
        }
    }

    /// Collects what has arrived for `batch` without waiting; true once
    /// every answer is in (`check` has then seen each).
    ///
    /// # Errors
    /// A broken queue.
    pub(super) fn try_collect(
        &self,
        batch: &mut Batch,
        check: &mut ResponseCheck,
    ) -> Result<bool, GpuDeviceError> {
        let last = usize::from(batch.count).saturating_sub(1);
        while !batch.is_complete() {
            let next = {
                let mut control = self.control.lock();
                match control
                    .answered
                    .iter()
                    .position(|used| batch.owns(sequence_of(&used.buffers)).is_some())
                {
                    Some(position) => Some(control.answered.swap_remove(position)),
                    None => match control.queue.pop_used() {
                        Ok(Some(used)) if batch.owns(sequence_of(&used.buffers)).is_none() => {
                            // Someone else's: leave it for its waiter.
                            control.answered.push(used);
                            continue;
                        }
                        Ok(used) => used,
                        Err(_) => {
                            drop(control);
                            self.mark_broken();
                            return Err(GpuDeviceError::QueueBroken);
                        }
                    },
                }
            };
            let Some(used) = next else { return Ok(false) };
            let Some(index) = batch.owns(sequence_of(&used.buffers)) else { continue };
            let fence = if index == last { batch.fence } else { None };
            let checked = check(index, used.buffers.bytes(1), used.written_len, fence);
            if batch.collected & (1 << index) != 0 {
                // The same sequence twice cannot come from one page: a
                // device reusing a stale descriptor. Stop trusting it.
                self.mark_broken();
                return Err(GpuDeviceError::QueueBroken);
            }
            batch.collected |= 1 << index;
            if batch.error.is_none() {
                batch.error = checked.err();
            }
            self.recycle(used.buffers);
        }
        Ok(true)
    }

    fn recycle(&self, page: Page) {
        // Oversized pages (a long entry list) are freed, not pooled.
        if page.region().len() == 4096 {
            self.control.lock().pages.push(page);
        }
    }

    /// Waits for every answer of `batch` and checks each with `check`:
    /// polls for a short while, then sleeps between polls (when the caller
    /// may sleep), and gives up after two seconds.
    ///
    /// # Errors
    /// The first error among the answers, a timeout or a broken queue.
    pub(super) fn wait(
        &self,
        mut batch: Batch,
        check: &mut ResponseCheck,
    ) -> Result<(), GpuDeviceError> {
        let started = crate::platform::time::uptime_us();
        let mut sleep_us = 10;
        loop {
            if self.try_collect(&mut batch, check)? {
                return batch.error.map_or(Ok(()), Err);
            }
            let waited = crate::platform::time::uptime_us() - started;
            if waited > COMMAND_TIMEOUT_US {
                // The pages stay with the queue: the device may still write
                // them.
                self.is_broken.store(true, Ordering::Release);
                log::error!("virtio-gpu: no answer within 2 s; driver stopped");
                return Err(GpuDeviceError::Timeout);
            }
            if waited < SPIN_US || !crate::sync::can_sleep() {
                core::hint::spin_loop();
            } else {
                crate::sched::timer::sleep_us(sleep_us);
                sleep_us = (sleep_us * 2).min(MAX_SLEEP_US);
            }
        }
    }

    pub(super) fn mark_broken(&self) {
        if !self.is_broken.swap(true, Ordering::AcqRel) {
            log::error!("virtio-gpu: control queue broken by the device; driver stopped");
        }
    }
}

/// The check for commands answered with `OK_NODATA`.
pub(super) fn check_nodata(
    _: usize,
    bytes: &[u8],
    written: u32,
    fence: Option<u64>,
) -> Result<(), GpuDeviceError> {
    protocol::check_header(bytes, written, protocol::RESP_OK_NODATA, fence)
        .map_err(GpuDeviceError::Device)
}

impl From<GpuError> for GpuDeviceError {
    fn from(error: GpuError) -> Self {
        Self::Device(error)
    }
}

impl Batch {
    /// The first error among its answers (once complete).
    pub fn result(&self) -> Result<(), GpuDeviceError> {
        self.error.map_or(Ok(()), Err)
    }
}

impl GpuDevice {
    /// Whether the driver stopped using the device.
    pub fn is_broken(&self) -> bool {
        self.is_broken.load(Ordering::Acquire)
    }
}
