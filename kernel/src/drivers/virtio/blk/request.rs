//! One virtio-blk request (VirtIO 1.2 §5.2.6): a 16-byte header the device
//! reads, the data, and a status byte the device writes.
//!
//! Header, status, the discard/write-zeroes range and the GET_ID answer
//! live in a small DMA page owned by the request; the data are the
//! caller's `DmaBuffer`s, moved into the request for as long as the device
//! may touch them, each cut into descriptors of at most `size_max` bytes
//! (§5.2.4: `size_max` bounds one segment, `seg_max` their number). Requests
//! are pooled per queue and reused, so the I/O path allocates nothing.

use super::super::hal::KernelHal;
use super::BlkError;
use crate::mm::dma::DmaBuffer;
use crate::sched::WaitQueue;
use crate::sync::IrqSpinLock;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vireo_virtio::{Dma, DmaBuffers, Segment};

/// Request types (§5.2.6), by the name the driver has always used.
pub use vireo_virtio::device::blk::Kind as Operation;
use vireo_virtio::device::blk::{
    DataSegment, HEADER_BYTES, RANGE_BYTES, RangeSegment, RequestHeader, STATUS_NOT_WRITTEN,
    Status, lay_out,
};
pub use vireo_virtio::device::blk::{ID_BYTES, TooManySegments};

/// Status byte values (§5.2.6).
pub const STATUS_OK: u8 = Status::Ok as u8;
/// The device could not complete the request.
pub const STATUS_IOERR: u8 = Status::IoErr as u8;
/// The device does not support the request type.
pub const STATUS_UNSUPP: u8 = Status::Unsupported as u8;

/// The discard/write-zeroes range sits after the header in the request's
/// own page.
const RANGE_OFFSET: usize = 32;
/// Then the status byte.
const STATUS_OFFSET: usize = 64;
/// Where GET_ID's answer goes.
const ID_OFFSET: usize = 128;
/// Data descriptors one request may have at most (the queue's indirect
/// tables are sized for this plus header and status).
pub const MAX_DATA_SEGMENTS: usize = 32;

/// The caller's data buffers while a request has them.
#[derive(Default)]
pub enum Data {
    /// No data (flush, discard, write zeroes, GET_ID).
    #[default]
    None,
    /// One buffer: the common case, no allocation.
    One(DmaBuffer),
    /// Several buffers, in transfer order (scatter-gather).
    Many(Vec<DmaBuffer>),
}

impl Data {
    /// The buffers, in order.
    pub fn buffers(&self) -> &[DmaBuffer] {
        match self {
            Data::None => &[],
            Data::One(buffer) => core::slice::from_ref(buffer),
            Data::Many(buffers) => buffers,
        }
    }

    /// The single buffer of a one-buffer request (else the first, if any).
    pub fn into_one(self) -> Option<DmaBuffer> {
        match self {
            Data::None => None,
            Data::One(buffer) => Some(buffer),
            Data::Many(buffers) => buffers.into_iter().next(),
        }
    }

    /// Every buffer.
    pub fn into_vec(self) -> Vec<DmaBuffer> {
        match self {
            Data::None => Vec::new(),
            Data::One(buffer) => alloc::vec![buffer],
            Data::Many(buffers) => buffers,
        }
    }
}

/// What a finished request leaves for the thread that submitted it.
pub struct Outcome {
    /// The status byte the device wrote (0xff if it wrote none).
    pub status: u8,
    /// Set when the driver took the request back instead of the device
    /// finishing it (a reset): why.
    pub taken_back: Option<BlkError>,
    /// The data buffers, no longer the device's.
    pub data: Data,
    /// GET_ID's answer.
    pub id: [u8; ID_BYTES],
}

/// The outcome slot and whether anyone will collect it.
#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    /// The submitter dropped its `Pending`.
    abandoned: bool,
}

/// Where a finished request's outcome waits for its submitter.
pub struct Completion {
    done: AtomicBool,
    /// When the submitter gives up on the request (TSC).
    deadline: AtomicU64,
    slot: IrqSpinLock<Slot>,
    waiters: WaitQueue,
}

impl Completion {
    fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            deadline: AtomicU64::new(u64::MAX),
            slot: IrqSpinLock::new(Slot::default()),
            waiters: WaitQueue::new(),
        }
    }

    /// Hands an outcome to the submitter (interrupt context). An abandoned
    /// one stays here too: freeing DMA memory in an interrupt could meet
    /// the frame allocator's lock held by the interrupted thread; it is
    /// freed in thread context (`Request::release_abandoned`, or the
    /// request's next use).
    fn complete(&self, outcome: Outcome) {
        self.slot.lock().outcome = Some(outcome);
        // Release: the stored outcome is visible to whoever sees `done`.
        self.done.store(true, Ordering::Release);
        self.waiters.wake_all();
    }

    /// The request's deadline (TSC).
    pub fn deadline_tsc(&self) -> u64 {
        self.deadline.load(Ordering::Acquire)
    }

    /// Sets the request's deadline (TSC).
    pub fn set_deadline(&self, deadline_tsc: u64) {
        self.deadline.store(deadline_tsc, Ordering::Release);
    }

    /// Whether the outcome is in.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Sleeps until the outcome is in or the TSC reaches `deadline_tsc`;
    /// whether it is in.
    pub fn wait_until(&self, deadline_tsc: u64) -> bool {
        self.waiters.wait_until_deadline(deadline_tsc, || self.done.load(Ordering::Acquire))
    }

    /// Takes the outcome, once it is in.
    pub fn take(&self) -> Option<Outcome> {
        if !self.is_done() {
            return None;
        }
        self.slot.lock().outcome.take()
    }

    /// Nobody will collect the outcome (thread context): drop it now if it
    /// is in; otherwise it is dropped after it arrives, in thread context.
    pub fn abandon(&self) {
        let outcome = {
            let mut slot = self.slot.lock();
            slot.abandoned = true;
            slot.outcome.take()
        };
        drop(outcome);
    }
}

/// A pooled request.
pub struct Request {
    /// Header at 0, range at `RANGE_OFFSET`, status at `STATUS_OFFSET`,
    /// GET_ID answer at `ID_OFFSET`.
    control: Dma<KernelHal>,
    data: Data,
    /// Data descriptors.
    segments: [DataSegment; MAX_DATA_SEGMENTS],
    segment_count: u8,
    operation: Operation,
    /// Taken back by a reset instead of finished by the device: why.
    taken_back: Option<BlkError>,
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
            data: Data::None,
            segments: [DataSegment::default(); MAX_DATA_SEGMENTS],
            segment_count: 0,
            operation: Operation::Flush,
            taken_back: None,
            completion: Arc::new(Completion::new()),
        }))
    }

    /// Prepares a request for `operation` at `sector`: `data` moves in and
    /// the bytes `span` names are cut into descriptors of at most
    /// `size_max` bytes, at most `seg_max` of them; `range` is the
    /// discard/write-zeroes `(sectors, flags)`.
    ///
    /// # Errors
    /// [`TooManySegments`] (with the data handed back) when the data need
    /// more descriptors than allowed.
    pub fn prepare(
        &mut self,
        operation: Operation,
        sector: u64,
        data: Data,
        span: (u64, u64),
        limits: (u32, usize),
        range: (u32, u32),
    ) -> Result<(), (TooManySegments, Data)> {
        // `span`: (bytes of the data to skip, bytes to transfer after them).
        let (size_max, seg_max) = limits;
        let slots = &mut self.segments[..seg_max.min(MAX_DATA_SEGMENTS)];
        let lengths = data.buffers().iter().map(|buffer| buffer.len_bytes() as u64);
        let count = match lay_out(lengths, span, size_max, slots) {
            Ok(count) => count,
            Err(error) => return Err((error, data)),
        };
        self.segment_count = count as u8;
        let control = self.control.as_mut_slice();
        control[..HEADER_BYTES].copy_from_slice(&RequestHeader::new(operation, sector).to_bytes());
        // §5.2.6: discard and write zeroes carry their range in the data.
        let range = RangeSegment { sector, sectors: range.0, flags: range.1 };
        control[RANGE_OFFSET..RANGE_OFFSET + RANGE_BYTES].copy_from_slice(&range.to_bytes());
        control[ID_OFFSET..ID_OFFSET + ID_BYTES].fill(0);
        // Anything but OK until the device says otherwise.
        control[STATUS_OFFSET] = STATUS_NOT_WRITTEN;
        // A submitter that has not collected the last outcome still holds
        // the old completion: this use gets its own.
        match Arc::get_mut(&mut self.completion) {
            Some(completion) => {
                *completion.done.get_mut() = false;
                *completion.slot.get_mut() = Slot::default();
            }
            None => self.completion = Arc::new(Completion::new()),
        }
        self.operation = operation;
        self.data = data;
        self.taken_back = None;
        Ok(())
    }

    /// Hands the outcome of the finished (or taken back) request to its
    /// submitter. The request itself is free for reuse at once — the
    /// caller puts it back in the pool — so submitters that hold requests
    /// they have not waited for yet never starve each other of requests.
    pub fn finish(&mut self) {
        let mut id = [0; ID_BYTES];
        id.copy_from_slice(&self.control.as_slice()[ID_OFFSET..ID_OFFSET + ID_BYTES]);
        let outcome = Outcome {
            status: self.status(),
            taken_back: self.taken_back,
            data: self.take_all_data(),
            id,
        };
        self.completion.complete(outcome);
    }

    /// The outcome of a finished request whose submitter is gone (dropped
    /// its `Pending`), to be freed by the caller in thread context.
    pub fn release_abandoned(&mut self) -> Option<Outcome> {
        Arc::get_mut(&mut self.completion)
            .and_then(|completion| completion.slot.get_mut().outcome.take())
    }

    /// Records that a reset took the request back unfinished, and why.
    pub fn mark_taken_back(&mut self, why: BlkError) {
        self.taken_back = Some(why);
    }

    /// Records that a queue reset took the request back unrun.
    pub fn mark_cancelled(&mut self) {
        self.mark_taken_back(BlkError::Cancelled);
    }

    /// The status byte the device wrote.
    pub fn status(&self) -> u8 {
        self.control.as_slice()[STATUS_OFFSET]
    }

    /// Takes the data buffers back out.
    pub fn take_data(&mut self) -> Option<DmaBuffer> {
        self.take_all_data().into_one()
    }

    /// Puts data back into a request that was taken back unfinished (the
    /// quarantine's copies), for its submitter; the descriptors still name
    /// the original buffers, and the request is never resubmitted as is.
    pub fn restore_data(&mut self, data: Data) {
        self.data = data;
    }

    /// Takes every data buffer back out.
    pub fn take_all_data(&mut self) -> Data {
        self.segment_count = 0;
        core::mem::take(&mut self.data)
    }

    fn has_range(&self) -> bool {
        self.operation.has_range()
    }

    fn has_id(&self) -> bool {
        self.operation == Operation::GetId
    }

    /// Descriptors between header and status.
    fn middle_count(&self) -> usize {
        usize::from(self.segment_count) + usize::from(self.has_range()) + usize::from(self.has_id())
    }
}

// SAFETY: every segment lies in memory the request owns exclusively: its
// control page (header, range, status, id) and the moved-in `DmaBuffer`s,
// each descriptor within its buffer (`prepare` cut them from the buffers'
// own lengths). Neither moves while the boxed request is in a queue, and
// the layout only changes in `prepare`, which needs `&mut` the queue never
// hands out.
unsafe impl DmaBuffers for Request {
    fn segment_count(&self) -> usize {
        2 + self.middle_count()
    }

    fn readable_count(&self) -> usize {
        // §5.2.6: the header is device-readable; write data and the
        // discard/write-zeroes range too.
        match self.operation {
            Operation::Write => 1 + usize::from(self.segment_count),
            Operation::Discard | Operation::WriteZeroes => 2,
            _ => 1,
        }
    }

    fn segment(&self, index: usize) -> Segment {
        let control = self.control.paddr();
        let middle = self.middle_count();
        if index == 0 {
            return Segment { addr: control, len: HEADER_BYTES as u32 };
        }
        if index > middle {
            return Segment { addr: control + STATUS_OFFSET as u64, len: 1 };
        }
        if self.has_range() {
            return Segment { addr: control + RANGE_OFFSET as u64, len: RANGE_BYTES as u32 };
        }
        if self.has_id() {
            return Segment { addr: control + ID_OFFSET as u64, len: ID_BYTES as u32 };
        }
        let DataSegment { buffer, offset, len } = self.segments[index - 1];
        let base = self.data.buffers()[usize::from(buffer)].phys().as_u64();
        Segment { addr: base + u64::from(offset), len }
    }
}
