//! virtio-blk (VirtIO 1.2 §5.2): one queue per CPU, MSI-X completion
//! interrupts routed to the queue's CPU, blocking and split submit/wait I/O
//! on caller-owned DMA buffers, every request with a deadline.
//!
//! A thread submits on the queue of the CPU it runs on (pinned for the
//! duration of the submission), the device's completion interrupt arrives
//! on that same CPU, and the handler hands each finished request to the
//! `Completion` its submitter sleeps on. Requests are pooled per queue; the
//! pool is the queue's depth limit, so `add` never meets a full ring. A
//! request goes back to the pool as soon as the device finishes it (its
//! outcome waits in the `Completion`), so submitters holding requests they
//! have not waited for cannot starve each other of requests.
//!
//! Nobody waits forever (`recovery`): a request not finished by its
//! deadline, or a device that breaks the ring protocol, gets the device
//! reset, every request in flight failed, and the device initialised
//! again.

mod batch;
mod config;
mod pending;
mod poll;
mod quarantine;
mod recovery;
mod request;
mod reset;
mod submit;

use super::bringup::{
    self, BringUpError, Failed, Queue, QueueInterrupt, QueueLimits, QueueSpec, Running,
    VirtioDevice, VirtioDriver,
};
use super::hal::KernelHal;
use super::pci::QueueNotifier;
use crate::arch::interrupts::{InterruptFrame, IrqHandler};
use crate::mm::dma::DmaBuffer;
use crate::sched::WaitQueue;
use crate::sync::IrqSpinLock;
use alloc::boxed::Box;
use alloc::vec::Vec;
pub use config::{BlkConfig, CacheMode, feature};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
pub use pending::Pending;
pub use poll::BlkCounters;
pub use recovery::{DEFAULT_TIMEOUT_MS, set_timeout_ms, timeout_ms};
pub use request::{Completion, Data, ID_BYTES, MAX_DATA_SEGMENTS, Operation, Request};
use vireo_virtio::{Features, SplitQueue, UsedLenPolicy};

pub use vireo_virtio::device::blk::SECTOR_BYTES;
/// Descriptors per queue.
const QUEUE_SIZE: u16 = 128;
/// Requests in flight per queue at most: every request is one indirect
/// descriptor.
const REQUESTS_PER_QUEUE: usize = 64;
/// Requests made at start-up: the whole pool. A pool that grew on demand
/// made the driver's memory footprint depend on which CPU a burst of
/// submissions ran on, so a frame count taken before and after a workload
/// could not tell a leak from growth; making 64 one-page requests per queue
/// costs well under a millisecond of boot.
const INITIAL_REQUESTS: usize = REQUESTS_PER_QUEUE;

/// virtio-blk as bring-up sees it: features, configuration, queues.
struct BlkDriver;

impl VirtioDriver for BlkDriver {
    const NAME: &'static str = "virtio-blk";
    const DEVICE_ID: u16 = 2;
    /// Each request is one indirect descriptor, which is what lets the
    /// request pool bound a queue's depth (§2.7.5.3).
    const REQUIRED: Features = Features::INDIRECT_DESC;
    const OPTIONAL: Features = Features::EVENT_IDX
        .union(Features::RING_RESET)
        .union(Features::from_bits_retain(feature::OPTIONAL));
    const ON_INTERRUPT: Option<IrqHandler> = Some(on_completion_interrupt);
    const ON_CONFIG_CHANGE: Option<fn()> = Some(on_config_change);
    type Config = BlkConfig;
    type Buffers = Box<Request>;

    /// One queue per CPU, as far as the device, MSI-X and queue count go,
    /// each interrupting the CPU it serves (on a shared line, all of them
    /// interrupt the first queue's CPU). Without any interrupt (a PCI
    /// function without MSI-X) one polled queue.
    fn queues(config: &BlkConfig, _: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        let cpus = u16::try_from(limits.online_cpus).unwrap_or(u16::MAX);
        let polled = limits.interrupting_queues() == 0;
        let count = cpus
            .min(config.device_queues)
            .min(limits.device_queues)
            .min(limits.interrupting_queues())
            .max(1);
        (0..count)
            .map(|index| QueueSpec {
                index,
                size: QUEUE_SIZE,
                indirect_max: 2 + MAX_DATA_SEGMENTS as u16,
                interrupt: if polled {
                    QueueInterrupt::Polled
                } else {
                    QueueInterrupt::OnCpu(u32::from(index))
                },
                // Clamp: the status byte, not the used length, says whether a
                // request worked, and devices that count the readable header
                // in the length (why Linux reverted its core length check,
                // f124034faa91) should not cost us the disk.
                used_len: UsedLenPolicy::Clamp,
            })
            .collect()
    }
}

/// A queue's requests.
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
    /// The range is not whole sectors, is empty, exceeds the buffers, runs
    /// past the end of the disk, or needs more segments than the device
    /// takes in one request.
    BadRange,
    /// Sector or length is not a multiple of the device's block size
    /// (`VIRTIO_BLK_F_BLK_SIZE`, §5.2.4).
    Unaligned,
    /// The device is read-only.
    ReadOnly,
    /// The device answered `VIRTIO_BLK_S_IOERR`.
    Io,
    /// The device does not support the operation (not negotiated, or it
    /// answered `VIRTIO_BLK_S_UNSUPP`).
    Unsupported,
    /// The request was not finished by its deadline: the device was reset
    /// and the request taken back (a write may be partly on the disk).
    Timeout,
    /// The device broke the ring protocol or would not come back after a
    /// reset; the driver stopped using it.
    DeviceFailed,
    /// A reset (of its queue, or of the device because another request
    /// timed out or the device lied) took the request back before it
    /// finished. Submitting it again is safe.
    Cancelled,
}

struct BlkQueue {
    queue: SplitQueue<KernelHal, Box<Request>>,
    notifier: QueueNotifier,
    /// The MSI-X entry the queue interrupts through (a reset clears the
    /// device's copy; the restart programs it again); `NO_VECTOR` on a
    /// shared line or when polled.
    msix_entry: u16,
    /// Boxed: a request travels through the ring as an 8-byte owner.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<Request>>,
    /// Requests this queue owns in all (pooled or out).
    requests_made: usize,
}

impl BlkQueue {
    /// A free request from the pool.
    fn take_request(&mut self) -> Option<Box<Request>> {
        self.pool.pop()
    }

    /// Hands a finished request's outcome to its submitter and puts the
    /// request back in the pool at once; returns 1 (requests freed).
    fn recycle(&mut self, mut request: Box<Request>) -> usize {
        request.finish();
        self.pool.push(request);
        1
    }
}

struct QueueSlot {
    state: IrqSpinLock<BlkQueue>,
    /// Threads waiting for a free request.
    space: WaitQueue,
    /// Completion interrupts this queue took, per CPU that took them.
    interrupts: Box<[AtomicU64]>,
    /// The queue has no interrupt: waiters poll it.
    polled: bool,
    /// The device's used index, read without the lock.
    used_idx: poll::UsedIndex,
    /// Lock-free polling state.
    poll: poll::PollState,
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

/// A virtio-blk device.
pub struct BlkDevice {
    queues: Vec<QueueSlot>,
    features: Features,
    /// What the configuration said, re-read on a configuration change and
    /// after a reset.
    config: IrqSpinLock<BlkConfig>,
    capacity_sectors: AtomicU64,
    /// A configuration-change interrupt arrived since the last read.
    config_stale: AtomicBool,
    /// The cache mode the user chose, restored after a reset.
    chosen_cache_mode: IrqSpinLock<Option<CacheMode>>,
    /// Buffers of requests a reset took back (`quarantine`).
    quarantine: IrqSpinLock<quarantine::Quarantine>,
    /// Every queue interrupts on the same vector (one shared line): an
    /// interrupt may be for any of them.
    is_vector_shared: bool,
    /// `VIRTIO_F_RING_RESET` was negotiated: [`BlkDevice::reset_queue`].
    has_queue_reset: bool,
    /// Health: see `recovery`.
    health: recovery::Health,
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
                    "virtio-blk: {} MiB, {} queues{}, block {} bytes, features {}",
                    (device.capacity_sectors() * SECTOR_BYTES) >> 20,
                    device.queues.len(),
                    if device.queues.iter().any(|slot| slot.polled) { " (polled)" } else { "" },
                    device.block_bytes(),
                    device.feature_names().join(",")
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
        let first_vector = queues.first().and_then(|queue| queue.vector);
        let pools: Result<Vec<_>, _> = queues.iter().map(|_| initial_pool()).collect();
        let Ok(pools) = pools else {
            let rings = queues.into_iter().map(|queue| queue.ring).collect();
            return Err(device.fail(rings, BringUpError::Driver("no memory for requests")));
        };
        FIRST_VECTOR.store(first_vector.unwrap_or(0), Ordering::Release);
        let is_vector_shared = queues.len() > 1
            && first_vector.is_some()
            && queues.iter().all(|queue| queue.vector == first_vector);
        let cpus = crate::smp::online_cpus();
        let queues = queues
            .into_iter()
            .zip(pools)
            .map(|(Queue { ring, notifier, msix_entry, vector }, pool)| QueueSlot {
                used_idx: poll::UsedIndex::of(&ring),
                poll: poll::PollState::default(),
                state: IrqSpinLock::new(BlkQueue {
                    queue: ring,
                    notifier,
                    msix_entry: msix_entry.unwrap_or(super::pci::NO_VECTOR),
                    pool,
                    requests_made: INITIAL_REQUESTS,
                }),
                space: WaitQueue::new(),
                interrupts: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
                polled: vector.is_none(),
            })
            .collect();
        Ok(Self {
            queues,
            features,
            capacity_sectors: AtomicU64::new(config.capacity_sectors),
            config: IrqSpinLock::new(config),
            config_stale: AtomicBool::new(false),
            chosen_cache_mode: IrqSpinLock::new(None),
            quarantine: IrqSpinLock::new(quarantine::Quarantine::default()),
            is_vector_shared,
            has_queue_reset: features.contains(Features::RING_RESET),
            health: recovery::Health::default(),
            virtio: device,
        })
    }

    /// Whether the device offered and the driver accepted `bit` (§5.2.3).
    pub fn has(&self, bit: u64) -> bool {
        self.features.bits() & bit != 0
    }

    /// The negotiated features (transport and device bits).
    pub fn features(&self) -> Features {
        self.features
    }

    /// Disk size in 512-byte sectors (re-read after a configuration change:
    /// QEMU's `block_resize`).
    pub fn capacity_sectors(&self) -> u64 {
        if self.config_stale.swap(false, Ordering::AcqRel) {
            self.reread_config();
        }
        self.capacity_sectors.load(Ordering::Acquire)
    }

    /// Configuration-change interrupts seen so far.
    pub fn config_changes(&self) -> u64 {
        self.virtio.config_changes()
    }

    /// The device's block size in bytes (`blk_size`, 512 without
    /// `VIRTIO_BLK_F_BLK_SIZE`); I/O must be aligned to it.
    pub fn block_bytes(&self) -> u32 {
        self.config.lock().block_bytes
    }

    /// Number of request queues (one per CPU, as far as the device allows).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Whether the device refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.has(feature::RO)
    }

    /// A snapshot of queue `index`'s ring counters.
    pub fn queue_stats(&self, index: usize) -> Option<vireo_virtio::QueueStats> {
        self.queues.get(index).map(|slot| slot.state.lock().queue.stats())
    }

    /// Completion interrupts queue `queue` took on CPU `cpu`.
    pub fn interrupts_taken(&self, queue: usize, cpu: usize) -> u64 {
        let slot = self.queues.get(queue);
        slot.and_then(|slot| slot.interrupts.get(cpu)).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Frees the buffers of finished requests whose `Pending` was dropped
    /// (kept until now: see `Completion::complete`); returns how many.
    pub fn release_abandoned(&self) -> usize {
        let mut released = Vec::new();
        for (index, slot) in self.queues.iter().enumerate() {
            if slot.polled {
                // Nobody else reaps a polled queue's abandoned requests.
                self.complete(index, false);
            }
            let mut state = slot.state.lock();
            released
                .extend(state.pool.iter_mut().filter_map(|request| request.release_abandoned()));
        }
        // Freed with no queue lock held.
        released.len()
    }

    /// Whether queue `queue` is polled (no interrupt to wait for).
    pub fn is_polled(&self, queue: usize) -> bool {
        self.queues.get(queue).is_some_and(|slot| slot.polled)
    }

    /// Reads `len_bytes` from sector `sector` into `buffer`; a transfer
    /// longer than one request may carry is split into several.
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
        self.transfer(Operation::Read, sector, buffer, len_bytes)
    }

    /// Writes `len_bytes` from `buffer` to sector `sector` (split as
    /// [`BlkDevice::read`]).
    ///
    /// # Errors
    /// As [`BlkDevice::read`].
    pub fn write(
        &'static self,
        sector: u64,
        buffer: DmaBuffer,
        len_bytes: usize,
    ) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        self.transfer(Operation::Write, sector, buffer, len_bytes)
    }

    /// Makes earlier writes durable.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without `VIRTIO_BLK_F_FLUSH`, or a device error.
    pub fn flush(&'static self) -> Result<(), BlkError> {
        let pending = self.submit(Operation::Flush, 0, None, 0).map_err(|(error, _)| error)?;
        pending.wait().0
    }

    /// Takes every finished request off queue `index`; with `rearm`, turns
    /// interrupts back on and rechecks (§2.7.14), as the interrupt handler
    /// must; a poller leaves them off.
    fn complete(&self, index: usize, rearm: bool) {
        let Some(slot) = self.queues.get(index) else {
            return;
        };
        let freed = {
            let mut state = slot.state.lock();
            let mut freed = 0;
            loop {
                loop {
                    // Read before the pop that finds nothing: everything up
                    // to it has then been taken (see `poll`).
                    let published = slot.used_idx.load();
                    match state.queue.pop_used() {
                        Ok(Some(used)) => freed += state.recycle(used.buffers),
                        Ok(None) => {
                            slot.poll.seen_used.store(published, Ordering::Relaxed);
                            break;
                        }
                        Err(error) => {
                            // §2.7: the device broke the protocol. Its requests
                            // stay with the broken queue (the device may still
                            // write them) until a reset proves it stopped.
                            self.health.protocol_violation(index, error);
                            break;
                        }
                    }
                }
                if !rearm {
                    break;
                }
                match state.queue.enable_interrupts() {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => break,
                }
            }
            freed
        };
        if freed > 0 {
            self.health.progress();
        }
        slot.wake_submitters(freed);
    }
}

fn on_completion_interrupt(frame: &mut InterruptFrame) {
    let first = FIRST_VECTOR.load(Ordering::Acquire);
    if let Some(device) = device() {
        let cpu = crate::arch::percpu::cpu_id() as usize;
        let count = |index: usize| {
            if let Some(n) = device.queues.get(index).and_then(|slot| slot.interrupts.get(cpu)) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        };
        if device.is_vector_shared {
            // §4.2.3.3: one notification for every active queue.
            for index in 0..device.queues.len() {
                count(index);
                device.complete(index, true);
            }
        } else {
            let index = usize::from((frame.vector as u8).wrapping_sub(first));
            count(index);
            device.complete(index, true);
        }
    }
    crate::platform::apic::lapic::eoi();
}

/// The device changed its configuration (e.g. `block_resize`): read it
/// again at the next look, in thread context.
fn on_config_change() {
    if let Some(device) = device() {
        device.config_stale.store(true, Ordering::Release);
    }
}

mod batch_tests;
mod feature_tests;
mod io_tests;
mod recovery_tests;
mod reset_tests;
mod tests;
