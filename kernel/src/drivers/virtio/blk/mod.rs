//! virtio-blk (VirtIO 1.2 §5.2): one queue per CPU, MSI-X completion
//! interrupts routed to the queue's CPU, blocking and split submit/wait I/O
//! on caller-owned DMA buffers.
//!
//! A thread submits on the queue of the CPU it runs on (pinned for the
//! duration of the submission), the device's completion interrupt arrives
//! on that same CPU, and the handler hands each finished request to the
//! `Completion` its submitter sleeps on. Requests are pooled per queue; the
//! pool is the queue's depth limit, so `add` never meets a full ring. A
//! request goes back to the pool as soon as the device finishes it (its
//! outcome waits in the `Completion`), so submitters holding requests they
//! have not waited for cannot starve each other of requests.

mod request;
mod reset;

use super::bringup::{
    self, BringUpError, ConfigFields, DeviceConfig, Failed, Queue, QueueInterrupt, QueueLimits,
    QueueSpec, Running, VirtioDevice, VirtioDriver,
};
use super::hal::KernelHal;
use super::pci::QueueNotifier;
use crate::arch::interrupts::{InterruptFrame, IrqHandler};
use crate::mm::dma::DmaBuffer;
use crate::sched::WaitQueue;
use crate::sync::{IrqSpinLock, PreemptGuard};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
pub use request::{Completion, Operation, Request};
use vireo_virtio::{Features, SplitQueue, UsedLenPolicy};

/// Bytes per sector: always 512 in virtio-blk (§5.2.6).
pub const SECTOR_BYTES: u64 = 512;
/// Descriptors per queue.
const QUEUE_SIZE: u16 = 128;
/// How long a waiter polls for its completion before sleeping.
const POLL_US: u64 = 30;
/// Requests in flight per queue at most: every request is one indirect
/// descriptor.
const REQUESTS_PER_QUEUE: usize = 64;
/// Requests made at start-up: the whole pool. A pool that grew on demand
/// made the driver's memory footprint depend on which CPU a burst of
/// submissions ran on, so a frame count taken before and after a workload
/// could not tell a leak from growth; making 64 one-page requests per queue
/// costs well under a millisecond of boot.
const INITIAL_REQUESTS: usize = REQUESTS_PER_QUEUE;

/// Device feature bits (§5.2.3).
mod feature {
    pub const RO: u64 = 1 << 5;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
    pub const MQ: u64 = 1 << 12;
}

/// Device configuration offsets (§5.2.4, `struct virtio_blk_config`).
mod config {
    pub const CAPACITY: usize = 0;
    pub const BLK_SIZE: usize = 20;
    pub const NUM_QUEUES: usize = 34;
}

/// virtio-blk as bring-up sees it: features, configuration, queues.
struct BlkDriver;

impl VirtioDriver for BlkDriver {
    const NAME: &'static str = "virtio-blk";
    const DEVICE_ID: u16 = 2;
    /// Each request is one indirect descriptor, which is what lets the
    /// request pool bound a queue's depth (§2.7.5.3).
    const REQUIRED: Features = Features::INDIRECT_DESC;
    const OPTIONAL: Features = Features::EVENT_IDX.union(Features::RING_RESET).union(
        Features::from_bits_retain(feature::RO | feature::BLK_SIZE | feature::FLUSH | feature::MQ),
    );
    const ON_INTERRUPT: Option<IrqHandler> = Some(on_completion_interrupt);
    type Config = BlkConfig;
    type Buffers = Box<Request>;

    /// One queue per CPU, as far as the device, MSI-X and queue count go,
    /// each interrupting the CPU it serves (on a shared line, all of them
    /// interrupt the first queue's CPU).
    fn queues(config: &BlkConfig, _: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        let cpus = u16::try_from(limits.online_cpus).unwrap_or(u16::MAX);
        let count = cpus
            .min(config.device_queues)
            .min(limits.device_queues)
            .min(limits.interrupting_queues())
            .max(1);
        (0..count)
            .map(|index| QueueSpec {
                index,
                size: QUEUE_SIZE,
                indirect_max: 3,
                interrupt: QueueInterrupt::OnCpu(u32::from(index)),
                // Clamp: the status byte, not the used length, says whether a
                // request worked, and devices that count the readable header
                // in the length (why Linux reverted its core length check,
                // f124034faa91) should not cost us the disk.
                used_len: UsedLenPolicy::Clamp,
            })
            .collect()
    }
}

/// What the driver takes from `struct virtio_blk_config`.
struct BlkConfig {
    capacity_sectors: u64,
    block_bytes: u32,
    device_queues: u16,
}

impl DeviceConfig for BlkConfig {
    fn read(fields: &mut ConfigFields<'_>, features: Features) -> Result<Self, BringUpError> {
        let has = |bit: u64| features.bits() & bit != 0;
        let capacity_sectors = fields.u64(config::CAPACITY)?;
        let block_size = if has(feature::BLK_SIZE) { fields.u32(config::BLK_SIZE)? } else { 512 };
        // A nonsense block size (not a power of two ≥ 512) is ignored.
        let block_bytes =
            if block_size.is_power_of_two() && block_size >= 512 { block_size } else { 512 };
        let device_queues =
            if has(feature::MQ) { fields.u16(config::NUM_QUEUES)?.max(1) } else { 1 };
        Ok(Self { capacity_sectors, block_bytes, device_queues })
    }
}

/// A queue's first requests (the pool grows on demand up to its cap).
#[allow(clippy::vec_box)]
fn initial_pool() -> Result<Vec<Box<Request>>, vireo_virtio::Error> {
    let mut pool = Vec::with_capacity(REQUESTS_PER_QUEUE);
    for _ in 0..INITIAL_REQUESTS {
        pool.push(Request::new()?);
    }
    Ok(pool)
}

/// Why a block operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkError {
    /// The range is not whole sectors, is empty, exceeds the buffer, or
    /// runs past the end of the disk.
    BadRange,
    /// The device is read-only.
    ReadOnly,
    /// The device answered `VIRTIO_BLK_S_IOERR`.
    Io,
    /// The device does not support the operation.
    Unsupported,
    /// The device broke the ring protocol; the driver stopped using it.
    DeviceFailed,
    /// A queue reset took the request back before the device ran it;
    /// nothing was transferred. Submitting it again is safe.
    Cancelled,
}

struct BlkQueue {
    queue: SplitQueue<KernelHal, Box<Request>>,
    notifier: QueueNotifier,
    /// The MSI-X entry the queue interrupts through (a queue reset clears
    /// the device's copy; the restart programs it again).
    msix_entry: u16,
    /// Boxed: a request travels through the ring as an 8-byte owner.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<Request>>,
    /// Requests this queue owns in all (pooled or out).
    requests_made: usize,
}

impl BlkQueue {
    /// A free request: from the pool, or a new one while under the cap.
    fn take_request(&mut self) -> Option<Box<Request>> {
        if let Some(request) = self.pool.pop() {
            return Some(request);
        }
        if self.requests_made == REQUESTS_PER_QUEUE {
            return None;
        }
        let request = Request::new().ok()?;
        self.requests_made += 1;
        Some(request)
    }
}

struct QueueSlot {
    state: IrqSpinLock<BlkQueue>,
    /// Threads waiting for a free request.
    space: WaitQueue,
}

/// A virtio-blk device.
pub struct BlkDevice {
    queues: Vec<QueueSlot>,
    capacity_sectors: u64,
    block_bytes: u32,
    is_read_only: bool,
    has_flush: bool,
    /// Every queue interrupts on the same vector (one shared line): an
    /// interrupt may be for any of them.
    is_vector_shared: bool,
    /// `VIRTIO_F_RING_RESET` was negotiated: [`BlkDevice::reset_queue`].
    has_queue_reset: bool,
    failed: AtomicBool,
    /// Transport, MSI-X table and vectors, owned for the device's lifetime.
    /// Lock order: a queue's `state`, then the transport.
    virtio: VirtioDevice,
}

static DEVICE: spin::Once<Option<BlkDevice>> = spin::Once::new();
static FIRST_VECTOR: AtomicU8 = AtomicU8::new(0);

/// Finds and starts the first virtio-blk device; later calls return it.
pub fn init() -> Option<&'static BlkDevice> {
    DEVICE
        .call_once(|| match BlkDevice::probe() {
            Ok(device) => {
                log::info!(
                    "virtio-blk: {} MiB, {} queues{}{}",
                    (device.capacity_sectors * SECTOR_BYTES) >> 20,
                    device.queues.len(),
                    if device.is_read_only { ", read-only" } else { "" },
                    if device.has_flush { ", flush" } else { "" }
                );
                Some(device)
            }
            Err(error) => {
                log::warn!("virtio-blk: not available: {error}");
                None
            }
        })
        .as_ref()
}

/// The device started by `init`, if any.
pub fn device() -> Option<&'static BlkDevice> {
    DEVICE.get().and_then(Option::as_ref)
}

impl BlkDevice {
    fn probe() -> Result<Self, Failed> {
        let Running { device, features, config, queues } = bringup::probe::<BlkDriver>()?;
        let has = |bit: u64| features.bits() & bit != 0;
        // Every queue interrupts (`BlkDriver::queues`), on consecutive vectors.
        let first_vector = queues.first().and_then(|queue| queue.vector);
        let pools: Result<Vec<_>, _> = queues.iter().map(|_| initial_pool()).collect();
        let (Some(first_vector), Ok(pools)) = (first_vector, pools) else {
            let rings = queues.into_iter().map(|queue| queue.ring).collect();
            return Err(device.fail(rings, BringUpError::Driver("no memory for requests")));
        };
        FIRST_VECTOR.store(first_vector, Ordering::Release);
        let is_vector_shared =
            queues.len() > 1 && queues.iter().all(|queue| queue.vector == Some(first_vector));
        let queues = queues
            .into_iter()
            .zip(pools)
            .map(|(Queue { ring, notifier, msix_entry, .. }, pool)| QueueSlot {
                state: IrqSpinLock::new(BlkQueue {
                    queue: ring,
                    notifier,
                    // Every queue interrupts, so every queue has an entry.
                    msix_entry: msix_entry.unwrap_or(super::pci::NO_VECTOR),
                    pool,
                    requests_made: INITIAL_REQUESTS,
                }),
                space: WaitQueue::new(),
            })
            .collect();
        Ok(Self {
            queues,
            capacity_sectors: config.capacity_sectors,
            block_bytes: config.block_bytes,
            is_read_only: has(feature::RO),
            has_flush: has(feature::FLUSH),
            is_vector_shared,
            has_queue_reset: features.contains(Features::RING_RESET),
            failed: AtomicBool::new(false),
            virtio: device,
        })
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// The device's preferred block size in bytes.
    pub fn block_bytes(&self) -> u32 {
        self.block_bytes
    }

    /// Number of request queues (one per CPU, as far as the device allows).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Whether the device refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.is_read_only
    }

    /// A snapshot of queue `index`'s ring counters.
    pub fn queue_stats(&self, index: usize) -> Option<vireo_virtio::QueueStats> {
        self.queues.get(index).map(|slot| slot.state.lock().queue.stats())
    }

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
        if let Err(error) = self.check(operation, sector, buffer.as_ref(), len_bytes) {
            return Err((error, buffer));
        }
        let mut buffer = buffer;
        loop {
            let pinned = PreemptGuard::new();
            let queue_index = pinned.cpu_id() as usize % self.queues.len();
            let slot = &self.queues[queue_index];
            let mut state = slot.state.lock();
            let Some(mut request) = state.take_request() else {
                drop(state);
                drop(pinned);
                // All requests of this queue are out: wait for one back.
                slot.space.wait_until(|| !slot.state.lock().pool.is_empty());
                continue;
            };
            request.prepare(operation, sector, buffer.take(), len_bytes as u32);
            let completion = request.completion.clone();
            if let Err(rejected) = state.queue.add(request) {
                // Only a broken ring refuses: the pool bounds the depth.
                let mut request = rejected.buffers;
                let data = request.take_data();
                state.pool.push(request);
                self.failed.store(true, Ordering::Release);
                return Err((BlkError::DeviceFailed, data));
            }
            match state.queue.should_notify() {
                Ok(true) => state.notifier.notify(),
                Ok(false) => {}
                Err(_) => self.failed.store(true, Ordering::Release),
            }
            return Ok(Pending { device: self, queue_index, completion });
        }
    }

    fn check(
        &self,
        operation: Operation,
        sector: u64,
        buffer: Option<&DmaBuffer>,
        len_bytes: usize,
    ) -> Result<(), BlkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(BlkError::DeviceFailed);
        }
        if operation == Operation::Flush {
            return if self.has_flush { Ok(()) } else { Err(BlkError::Unsupported) };
        }
        if operation == Operation::Write && self.is_read_only {
            return Err(BlkError::ReadOnly);
        }
        let buffer_bytes = buffer.map_or(0, DmaBuffer::len_bytes);
        let sectors = len_bytes as u64 / SECTOR_BYTES;
        let whole = len_bytes > 0 && (len_bytes as u64).is_multiple_of(SECTOR_BYTES);
        let fits = len_bytes <= buffer_bytes && len_bytes <= u32::MAX as usize;
        let on_disk = sector.checked_add(sectors).is_some_and(|end| end <= self.capacity_sectors);
        if whole && fits && on_disk { Ok(()) } else { Err(BlkError::BadRange) }
    }

    /// Reads `len_bytes` from sector `sector` into `buffer`.
    ///
    /// # Errors
    /// As [`BlkDevice::submit`] and [`Pending::wait`]; the buffer comes back
    /// with the error when the device did not keep it.
    pub fn read(
        &'static self,
        sector: u64,
        buffer: DmaBuffer,
        len_bytes: usize,
    ) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        self.submit(Operation::Read, sector, Some(buffer), len_bytes)?.wait_for_buffer()
    }

    /// Writes `len_bytes` from `buffer` to sector `sector`.
    ///
    /// # Errors
    /// As [`BlkDevice::read`].
    pub fn write(
        &'static self,
        sector: u64,
        buffer: DmaBuffer,
        len_bytes: usize,
    ) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        self.submit(Operation::Write, sector, Some(buffer), len_bytes)?.wait_for_buffer()
    }

    /// Makes earlier writes durable.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without `VIRTIO_BLK_F_FLUSH`, or a device error.
    pub fn flush(&'static self) -> Result<(), BlkError> {
        let pending = self.submit(Operation::Flush, 0, None, 0).map_err(|(error, _)| error)?;
        pending.wait().0
    }

    /// Takes every finished request off queue `index` (interrupt context).
    fn complete(&self, index: usize) {
        let Some(slot) = self.queues.get(index) else {
            return;
        };
        let freed = {
            let mut state = slot.state.lock();
            let mut freed = 0;
            loop {
                loop {
                    match state.queue.pop_used() {
                        Ok(Some(used)) => freed += state.recycle(used.buffers),
                        Ok(None) => break,
                        Err(error) => {
                            // §2.7: the device broke the protocol. Its requests
                            // stay with the broken queue (the device may still
                            // write them); new ones are refused.
                            if !self.failed.swap(true, Ordering::AcqRel) {
                                log::error!("virtio-blk: queue {index}: {error}; device disabled");
                            }
                            break;
                        }
                    }
                }
                // §2.7.14: re-enable, then recheck for completions that raced in.
                match state.queue.enable_interrupts() {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => break,
                }
            }
            freed
        };
        slot.wake_submitters(freed);
    }
}

impl BlkQueue {
    /// Hands a finished request's outcome to its submitter and puts the
    /// request back in the pool at once; returns 1 (requests freed).
    fn recycle(&mut self, mut request: Box<Request>) -> usize {
        request.finish();
        self.pool.push(request);
        1
    }
}

impl QueueSlot {
    /// Wakes up to `freed` submitters waiting for a request. Call without
    /// the queue's lock: their wait condition takes it.
    fn wake_submitters(&self, freed: usize) {
        for _ in 0..freed {
            if !self.space.wake_one() {
                break;
            }
        }
    }
}

/// A submitted request.
#[must_use = "the buffer comes back only through wait"]
pub struct Pending {
    device: &'static BlkDevice,
    queue_index: usize,
    completion: Arc<Completion>,
}

impl Pending {
    /// Blocks until the device finishes; returns the outcome and the data
    /// buffer.
    pub fn wait(self) -> (Result<(), BlkError>, Option<DmaBuffer>) {
        // Hybrid polling: a request usually comes back within tens of
        // microseconds, less than a sleep/wake-up round trip costs; poll
        // the queue briefly, then sleep on the completion interrupt.
        let deadline =
            crate::platform::time::rdtsc() + crate::platform::time::tsc_hz() / 1_000_000 * POLL_US;
        while !self.completion.is_done() && crate::platform::time::rdtsc() < deadline {
            self.device.complete(self.queue_index);
            core::hint::spin_loop();
        }
        let outcome = self.completion.wait();
        let result = match outcome.status {
            _ if outcome.cancelled => Err(BlkError::Cancelled),
            request::STATUS_OK => Ok(()),
            request::STATUS_UNSUPP => Err(BlkError::Unsupported),
            request::STATUS_IOERR => Err(BlkError::Io),
            // A value the spec does not define: not a success either.
            _ => Err(BlkError::Io),
        };
        (result, outcome.data)
    }

    fn wait_for_buffer(self) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        match self.wait() {
            (Ok(()), Some(buffer)) => Ok(buffer),
            (Ok(()), None) => Err((BlkError::DeviceFailed, None)),
            (Err(error), buffer) => Err((error, buffer)),
        }
    }
}

fn on_completion_interrupt(frame: &mut InterruptFrame) {
    let first = FIRST_VECTOR.load(Ordering::Acquire);
    if let Some(device) = device() {
        if device.is_vector_shared {
            // §4.2.3.3: one notification for every active queue.
            for index in 0..device.queues.len() {
                device.complete(index);
            }
        } else {
            device.complete(usize::from((frame.vector as u8).wrapping_sub(first)));
        }
    }
    crate::platform::apic::lapic::eoi();
}

mod reset_tests;
mod tests;
