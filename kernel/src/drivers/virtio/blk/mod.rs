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

use super::hal::KernelHal;
use super::pci::{NO_VECTOR, QueueNotifier, VirtioPci};
use crate::arch::interrupts::{self, InterruptFrame};
use crate::mm::dma::DmaBuffer;
use crate::pci::msix::MsiX;
use crate::sched::WaitQueue;
use crate::smp::percpu;
use crate::sync::{IrqSpinLock, PreemptGuard};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
pub use request::{Completion, Operation, Request};
use vireo_virtio::{DeviceStatus, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy};

/// Bytes per sector: always 512 in virtio-blk (§5.2.6).
pub const SECTOR_BYTES: u64 = 512;
/// Descriptors per queue.
const QUEUE_SIZE: u16 = 128;
/// How long a waiter polls for its completion before sleeping.
const POLL_US: u64 = 30;
/// Requests in flight per queue at most: every request is one indirect
/// descriptor.
const REQUESTS_PER_QUEUE: usize = 64;
/// Requests made at start-up; the pool grows on demand up to the maximum,
/// so boot does not pay for depth nobody uses.
const INITIAL_REQUESTS: usize = 4;

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
    /// `VIRTIO_F_RING_RESET` was negotiated: [`BlkDevice::reset_queue`].
    has_queue_reset: bool,
    failed: AtomicBool,
    /// The transport stays alive (and owned) for the device's lifetime.
    /// Lock order: a queue's `state`, then this.
    transport: IrqSpinLock<VirtioPci>,
    _msix: MsiX,
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
                log::warn!("virtio-blk: not available: {error:?}");
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
    fn probe() -> Result<Self, &'static str> {
        let function = crate::pci::find(0x1af4, 0x1042).next().ok_or("no device")?;
        let mut transport = VirtioPci::new(function).map_err(|_| "unusable transport")?;
        let msix = MsiX::new(function).map_err(|_| "no MSI-X")?;
        let wanted = Features::INDIRECT_DESC
            | Features::EVENT_IDX
            | Features::RING_RESET
            | Features::from_bits_retain(
                feature::RO | feature::BLK_SIZE | feature::FLUSH | feature::MQ,
            );
        let features = vireo_virtio::negotiate_features(&mut transport, wanted)
            .map_err(|_| "feature negotiation failed")?;
        let has = |bit: u64| features.bits() & bit != 0;
        let read_config = |transport: &mut VirtioPci, offset: usize, bytes: &mut [u8]| {
            transport.read_config(offset, bytes).map_err(|_| "config out of range")
        };
        let mut capacity = [0u8; 8];
        read_config(&mut transport, config::CAPACITY, &mut capacity)?;
        let mut block_bytes = 512u32;
        if has(feature::BLK_SIZE) {
            let mut bytes = [0u8; 4];
            read_config(&mut transport, config::BLK_SIZE, &mut bytes)?;
            // A nonsense block size (not a power of two ≥ 512) is ignored.
            let size = u32::from_le_bytes(bytes);
            if size.is_power_of_two() && size >= 512 {
                block_bytes = size;
            }
        }
        let mut device_queues = 1u16;
        if has(feature::MQ) {
            let mut bytes = [0u8; 2];
            read_config(&mut transport, config::NUM_QUEUES, &mut bytes)?;
            device_queues = u16::from_le_bytes(bytes).max(1);
        }
        // One queue per CPU, as far as the device, MSI-X and queue count go.
        let cpus = crate::smp::online_cpus() as u16;
        let count =
            cpus.min(device_queues).min(transport.num_queues()).min(msix.table_size() - 1).max(1);
        let first_vector = interrupts::allocate_irq_vectors(count as u8, on_completion_interrupt)
            .map_err(|_| "no interrupt vectors")?;
        FIRST_VECTOR.store(first_vector, Ordering::Release);
        if !transport.set_config_msix_vector(NO_VECTOR) {
            return Err("device refused to silence config interrupts");
        }
        let mut queues = Vec::with_capacity(usize::from(count));
        for index in 0..count {
            let cpu = percpu::cpu(usize::from(index)).ok_or("queue without a CPU")?;
            let apic_id = cpu.apic_id.load(Ordering::Relaxed);
            msix.route(index + 1, first_vector + index as u8, apic_id)
                .map_err(|_| "MSI-X route")?;
            if !transport.set_queue_msix_vector(index, index + 1) {
                return Err("device refused a queue MSI-X vector");
            }
            // Clamp: the status byte, not the used length, says whether a
            // request worked, and devices that count the readable header
            // in the length (why Linux reverted its core length check,
            // f124034faa91) should not cost us the disk.
            let config = QueueConfig {
                index,
                size: QUEUE_SIZE,
                features,
                indirect_max: 3,
                used_len: UsedLenPolicy::Clamp,
            };
            let queue = SplitQueue::new(&KernelHal, &mut transport, config)
                .map_err(|_| "queue setup failed")?;
            let notifier = transport.queue_notifier(index).ok_or("bad notify offset")?;
            let mut pool = Vec::with_capacity(REQUESTS_PER_QUEUE);
            for _ in 0..INITIAL_REQUESTS {
                pool.push(Request::new().map_err(|_| "no memory for requests")?);
            }
            queues.push(QueueSlot {
                state: IrqSpinLock::new(BlkQueue {
                    queue,
                    notifier,
                    pool,
                    requests_made: INITIAL_REQUESTS,
                }),
                space: WaitQueue::new(),
            });
        }
        msix.enable().map_err(|_| "MSI-X enable")?;
        let status = transport.status();
        transport.set_status(status | DeviceStatus::DRIVER_OK);
        Ok(Self {
            queues,
            capacity_sectors: u64::from_le_bytes(capacity),
            block_bytes,
            is_read_only: has(feature::RO),
            has_flush: has(feature::FLUSH),
            has_queue_reset: features.contains(Features::RING_RESET),
            failed: AtomicBool::new(false),
            transport: IrqSpinLock::new(transport),
            _msix: msix,
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
        let deadline = crate::time::rdtsc() + crate::time::tsc_hz() / 1_000_000 * POLL_US;
        while !self.completion.is_done() && crate::time::rdtsc() < deadline {
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
        device.complete(usize::from((frame.vector as u8).wrapping_sub(first)));
    }
    crate::arch::apic::lapic::eoi();
}

mod reset_tests;
mod tests;
