//! One virtio-blk request (VirtIO 1.2 §5.2.6): a 16-byte header the device
//! reads, the data, and a status byte the device writes.
//!
//! Header and status live in a small DMA page owned by the request; the
//! data is the caller's `DmaBuffer`, moved into the request for as long as
//! the device may touch it. Requests are pooled per queue and reused, so the
//! I/O path allocates nothing.

use super::super::hal::KernelHal;
use crate::mm::dma::DmaBuffer;
use crate::sched::WaitQueue;
use crate::sync::IrqSpinLock;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use vireo_virtio::{Dma, DmaBuffers, Segment};

/// Request types (§5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Operation {
    /// `VIRTIO_BLK_T_IN`: read from the device.
    Read = 0,
    /// `VIRTIO_BLK_T_OUT`: write to the device.
    Write = 1,
    /// `VIRTIO_BLK_T_FLUSH`: make earlier writes durable.
    Flush = 4,
}

/// Status byte values (§5.2.6).
pub const STATUS_OK: u8 = 0;
/// The device could not complete the request.
pub const STATUS_IOERR: u8 = 1;
/// The device does not support the request type.
pub const STATUS_UNSUPP: u8 = 2;

const HEADER_BYTES: u32 = 16;
/// The status byte sits after the header in the request's own page.
const STATUS_OFFSET: usize = 64;

/// What a finished request leaves for the thread that submitted it.
pub struct Outcome {
    /// The status byte the device wrote (0xff if it wrote none).
    pub status: u8,
    /// A queue reset took the request back before the device ran it.
    pub cancelled: bool,
    /// The data buffer, no longer the device's.
    pub data: Option<DmaBuffer>,
}

/// Where a finished request's outcome waits for its submitter.
pub struct Completion {
    done: AtomicBool,
    outcome: IrqSpinLock<Option<Outcome>>,
    waiters: WaitQueue,
}

impl Completion {
    fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            outcome: IrqSpinLock::new(None),
            waiters: WaitQueue::new(),
        }
    }

    /// Hands an outcome to the submitter (interrupt context).
    fn complete(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome);
        // Release: the stored outcome is visible to whoever sees `done`.
        self.done.store(true, Ordering::Release);
        self.waiters.wake_all();
    }

    /// Whether the outcome is in.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks until the outcome is in, and takes it.
    pub fn wait(&self) -> Outcome {
        self.waiters.wait_until(|| self.done.load(Ordering::Acquire));
        self.done.store(false, Ordering::Relaxed);
        self.outcome.lock().take().expect("completion signalled without an outcome")
    }
}

/// A pooled request.
pub struct Request {
    /// Header at 0, status at `STATUS_OFFSET`.
    control: Dma<KernelHal>,
    data: Option<DmaBuffer>,
    data_len: u32,
    operation: Operation,
    /// Taken back by a queue reset instead of completed by the device.
    cancelled: bool,
    /// Shared with the submitter while the request is out.
    pub completion: Arc<Completion>,
}

impl Request {
    /// A fresh request with its control page.
    ///
    /// # Errors
    /// `vireo_virtio::Error::DmaAlloc` when memory is short.
    pub fn new() -> Result<Box<Self>, vireo_virtio::Error> {
        Ok(Box::new(Self {
            control: Dma::new(KernelHal, 1)?,
            data: None,
            data_len: 0,
            operation: Operation::Flush,
            cancelled: false,
            completion: Arc::new(Completion::new()),
        }))
    }

    /// Prepares the request; `data` (at least `data_len` bytes) moves in.
    pub fn prepare(
        &mut self,
        operation: Operation,
        sector: u64,
        data: Option<DmaBuffer>,
        data_len: u32,
    ) {
        let header = self.control.as_mut_slice();
        header[0..4].copy_from_slice(&(operation as u32).to_le_bytes());
        header[4..8].fill(0);
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        // Anything but OK until the device says otherwise.
        header[STATUS_OFFSET] = 0xff;
        // A submitter that has not collected the last outcome still holds
        // the old completion: this use gets its own.
        match Arc::get_mut(&mut self.completion) {
            Some(completion) => {
                *completion.done.get_mut() = false;
                completion.outcome.lock().take();
            }
            None => self.completion = Arc::new(Completion::new()),
        }
        self.operation = operation;
        self.data = data;
        self.data_len = data_len;
        self.cancelled = false;
    }

    /// Hands the outcome of the finished (or cancelled) request to its
    /// submitter. The request itself is free for reuse at once — the
    /// caller puts it back in the pool — so submitters that hold requests
    /// they have not waited for yet never starve each other of requests.
    pub fn finish(&mut self) {
        let outcome =
            Outcome { status: self.status(), cancelled: self.cancelled, data: self.take_data() };
        self.completion.complete(outcome);
    }

    /// Records that a queue reset took the request back unrun.
    pub fn mark_cancelled(&mut self) {
        self.cancelled = true;
    }

    /// The status byte the device wrote.
    pub fn status(&self) -> u8 {
        self.control.as_slice()[STATUS_OFFSET]
    }

    /// Takes the data buffer back out.
    pub fn take_data(&mut self) -> Option<DmaBuffer> {
        self.data_len = 0;
        self.data.take()
    }

    fn has_data(&self) -> bool {
        self.data.is_some() && self.data_len > 0
    }
}

// SAFETY: every segment lies in memory the request owns exclusively: its
// control page (header, status) and the moved-in `DmaBuffer`, whose length
// was checked against `data_len` by the submitter. Neither moves while the
// boxed request is in a queue, and the layout only changes in `prepare`,
// which needs `&mut` the queue never hands out.
unsafe impl DmaBuffers for Request {
    fn segment_count(&self) -> usize {
        if self.has_data() { 3 } else { 2 }
    }

    fn readable_count(&self) -> usize {
        // §5.2.6: the header is device-readable; write data too.
        if self.operation == Operation::Write && self.has_data() { 2 } else { 1 }
    }

    fn segment(&self, index: usize) -> Segment {
        let control = self.control.paddr();
        let status = Segment { addr: control + STATUS_OFFSET as u64, len: 1 };
        match (index, &self.data) {
            (0, _) => Segment { addr: control, len: HEADER_BYTES },
            (1, Some(data)) if self.data_len > 0 => {
                Segment { addr: data.phys().as_u64(), len: self.data_len }
            }
            _ => status,
        }
    }
}
