//! [`FakeTransport`]: a virtio device in the test's own thread, behind the
//! crate's [`Transport`] trait, serving its queues synchronously when
//! notified (like a trapping doorbell write).

use std::boxed::Box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use super::device::{DeviceError, DeviceModel, DeviceQueue};
use super::memory::DeviceMemory;
use crate::features::Features;
use crate::hal::PhysAddr;
use crate::reset::DeviceId;
use crate::transport::{
    DeviceStatus, InterruptStatus, NO_VECTOR, Notifier, QueueNotifiers, Transport,
};
use crate::{Error, Result};

/// Ids no real bus address produces (one per fake device).
static NEXT_ID: AtomicU64 = AtomicU64::new(0xfa4e << 48);

#[derive(Default)]
struct QueueRegs {
    max_size: u16,
    ring: Option<DeviceQueue>,
    vector: u16,
    notifications: u64,
    interrupts: u64,
}

struct Device {
    model: Box<dyn DeviceModel>,
    memory: DeviceMemory,
    status: u8,
    driver_features: u64,
    queues: Vec<QueueRegs>,
    config: Vec<u8>,
    generation: u32,
    config_vector: u16,
    msix_entries: u16,
    isr: u8,
    serves_on_notify: bool,
    reset_stuck: bool,
    queue_reset: bool,
    errors: Vec<(u16, DeviceError)>,
}

impl Device {
    fn process(&mut self, queue: u16) {
        self.queues[usize::from(queue)].notifications += 1;
        if self.serves_on_notify {
            self.serve(queue);
        }
    }

    fn serve(&mut self, queue: u16) {
        let event_idx = self.driver_features & Features::EVENT_IDX.bits() != 0;
        let regs = &mut self.queues[usize::from(queue)];
        let Some(ring) = regs.ring.as_mut() else { return };
        match ring.process(queue, &self.memory, &mut *self.model, event_idx) {
            Ok(pass) if pass.interrupt => {
                regs.interrupts += 1;
                self.isr |= InterruptStatus::QUEUE.bits() as u8;
            }
            Ok(_) => {}
            Err(e) => {
                // A real device stops and asks for a reset (§2.1.2).
                regs.ring = None;
                self.errors.push((queue, e));
                self.status |= DeviceStatus::DEVICE_NEEDS_RESET.bits();
                self.isr |= InterruptStatus::CONFIG.bits() as u8;
            }
        }
    }
}

/// A fake virtio device: a [`DeviceModel`] behind the crate's
/// [`Transport`], with a PCI-like register set (per-queue reset, optional
/// MSI-X vectors) and a config space. Clones drive the same device.
///
/// It serves a queue when notified, synchronously, through the device
/// side of the split ring in the `fake` module; with
/// [`FakeTransport::set_serves_on_notify`] off, the test drives the device
/// by hand ([`FakeTransport::serve`], or raw ring access at
/// [`FakeTransport::queue_addresses`]).
#[derive(Clone)]
pub struct FakeTransport {
    device: Arc<Mutex<Device>>,
    id: DeviceId,
}

impl core::fmt::Debug for FakeTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeTransport").field("id", &self.id).finish_non_exhaustive()
    }
}

impl FakeTransport {
    /// A device running `model` over `memory` (from [`super::FakeHal`] or
    /// [`super::BounceHal`]) with one queue per entry of `queue_sizes` (the
    /// largest size each accepts).
    pub fn new(
        memory: &DeviceMemory,
        model: impl DeviceModel + 'static,
        queue_sizes: &[u16],
    ) -> Self {
        let queues = queue_sizes
            .iter()
            .map(|&max_size| QueueRegs { max_size, vector: NO_VECTOR, ..QueueRegs::default() })
            .collect();
        let device = Device {
            model: Box::new(model),
            memory: memory.clone(),
            status: 0,
            driver_features: 0,
            queues,
            config: Vec::new(),
            generation: 0,
            config_vector: NO_VECTOR,
            msix_entries: 0,
            isr: 0,
            serves_on_notify: true,
            reset_stuck: false,
            queue_reset: true,
            errors: Vec::new(),
        };
        let id = DeviceId::new(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        Self { device: Arc::new(Mutex::new(device)), id }
    }

    fn lock(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the device-specific configuration and bumps the generation
    /// counter (§2.5.1), as a device changing its configuration does.
    pub fn set_config(&self, bytes: &[u8]) {
        let mut d = self.lock();
        d.config = bytes.to_vec();
        d.generation = d.generation.wrapping_add(1);
        d.isr |= InterruptStatus::CONFIG.bits() as u8;
    }

    /// Gives the device `entries` MSI-X table entries (0, the default:
    /// none, only [`NO_VECTOR`] is accepted).
    pub fn set_msix_entries(&self, entries: u16) {
        self.lock().msix_entries = entries;
    }

    /// Whether the device offers per-queue reset (default: yes).
    pub fn set_queue_reset(&self, available: bool) {
        self.lock().queue_reset = available;
    }

    /// Makes the device never finish a reset (device or queue): a device
    /// the driver must assume is still doing DMA.
    pub fn set_reset_stuck(&self, stuck: bool) {
        self.lock().reset_stuck = stuck;
    }

    /// Whether a notification serves the queue at once (default: yes).
    pub fn set_serves_on_notify(&self, serves: bool) {
        self.lock().serves_on_notify = serves;
    }

    /// Serves queue `queue` now, as if the device got round to it.
    pub fn serve(&self, queue: u16) {
        self.lock().serve(queue);
    }

    /// `(size, descriptors, driver area, device area)` of queue `queue`, if
    /// it is programmed.
    pub fn queue_addresses(&self, queue: u16) -> Option<(u16, PhysAddr, PhysAddr, PhysAddr)> {
        self.lock().queues.get(usize::from(queue))?.ring.as_ref().map(DeviceQueue::addresses)
    }

    /// Notifications queue `queue` received.
    pub fn notifications(&self, queue: u16) -> u64 {
        self.lock().queues[usize::from(queue)].notifications
    }

    /// Used-buffer interrupts queue `queue` raised.
    pub fn interrupts(&self, queue: u16) -> u64 {
        self.lock().queues[usize::from(queue)].interrupts
    }

    /// Requests the model is holding on queue `queue` ([`super::Reply::Hold`]).
    pub fn held(&self, queue: u16) -> usize {
        let d = self.lock();
        d.queues[usize::from(queue)].ring.as_ref().map_or(0, |r| r.held.len())
    }

    /// The MSI-X entry queue `queue` signals (or [`NO_VECTOR`]).
    pub fn queue_vector(&self, queue: u16) -> u16 {
        self.lock().queues[usize::from(queue)].vector
    }

    /// Why the device stopped serving a queue, for each time it did.
    pub fn errors(&self) -> Vec<(u16, DeviceError)> {
        self.lock().errors.clone()
    }
}

// SAFETY: 1. the id is drawn once per device and shared only by clones of
// this transport; 2. a reset (unless `set_reset_stuck`) drops every
// `DeviceQueue`, so no ring or buffer is accessed again until `queue_set`;
// 3. a queue reset drops that queue's `DeviceQueue`; 4. `queue_set` keeps
// exactly the addresses given, and only `DeviceQueue` accesses memory;
// 5. `reset` is the provided one.
unsafe impl Transport for FakeTransport {
    fn device_id(&self) -> DeviceId {
        self.id
    }
    fn read_device_features(&mut self) -> u64 {
        self.lock().model.features()
    }
    fn write_driver_features(&mut self, features: u64) {
        self.lock().driver_features = features;
    }
    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.lock().queues.get(usize::from(queue)).map_or(0, |q| q.max_size)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.lock().queues.get(usize::from(queue)).is_some_and(|q| q.ring.is_some())
    }
    unsafe fn queue_set(&mut self, queue: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        if let Some(q) = self.lock().queues.get_mut(usize::from(queue)) {
            q.ring = Some(DeviceQueue::new(size, d, a, u));
        }
    }
    fn queue_unset(&mut self, _queue: u16) {
        // Like PCI: queue_enable cannot be cleared; only a reset stops it.
    }
    fn notify(&mut self, queue: u16) {
        self.lock().process(queue);
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.lock().status)
    }
    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = self.lock();
        if status.is_empty() {
            if d.reset_stuck {
                return;
            }
            d.queues.iter_mut().for_each(|q| (q.ring, q.vector) = (None, NO_VECTOR));
            (d.driver_features, d.isr, d.config_vector) = (0, 0, NO_VECTOR);
            d.model.reset();
        }
        d.status = status.bits();
    }
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> Result {
        let d = self.lock();
        let end = offset.checked_add(buf.len()).ok_or(Error::ConfigOutOfRange)?;
        buf.copy_from_slice(d.config.get(offset..end).ok_or(Error::ConfigOutOfRange)?);
        Ok(())
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> Result {
        let mut d = self.lock();
        let end = offset.checked_add(data.len()).ok_or(Error::ConfigOutOfRange)?;
        d.config.get_mut(offset..end).ok_or(Error::ConfigOutOfRange)?.copy_from_slice(data);
        Ok(())
    }
    fn config_generation(&self) -> u32 {
        self.lock().generation
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::from_bits_truncate(u32::from(core::mem::take(&mut self.lock().isr)))
    }
    fn set_config_vector(&mut self, entry: u16) -> Result {
        let mut d = self.lock();
        d.config_vector = if entry < d.msix_entries { entry } else { NO_VECTOR };
        vector_kept(entry, d.config_vector, d.msix_entries)
    }
    fn set_queue_vector(&mut self, queue: u16, entry: u16) -> Result {
        let mut d = self.lock();
        let entries = d.msix_entries;
        let q = d.queues.get_mut(usize::from(queue)).ok_or(Error::QueueUnavailable)?;
        q.vector = if entry < entries { entry } else { NO_VECTOR };
        vector_kept(entry, q.vector, entries)
    }
    fn has_queue_reset(&self) -> bool {
        self.lock().queue_reset
    }
    fn start_queue_reset(&mut self, queue: u16) {
        let mut d = self.lock();
        if d.reset_stuck {
            return;
        }
        if let Some(q) = d.queues.get_mut(usize::from(queue)) {
            (q.ring, q.vector) = (None, NO_VECTOR);
        }
    }
    fn queue_reset_done(&mut self, queue: u16) -> bool {
        let d = self.lock();
        !d.reset_stuck && d.queues.get(usize::from(queue)).is_some_and(|q| q.ring.is_none())
    }
}

/// §4.1.5.1.2: the device reads back what it kept.
fn vector_kept(asked: u16, kept: u16, entries: u16) -> Result {
    match (asked == kept, entries) {
        (true, _) => Ok(()),
        (false, 0) => Err(Error::VectorsUnsupported),
        (false, _) => Err(Error::VectorRefused),
    }
}

/// Rings one fake queue's doorbell, from any thread.
#[derive(Clone)]
pub struct FakeNotifier {
    device: Arc<Mutex<Device>>,
    queue: u16,
}

impl core::fmt::Debug for FakeNotifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeNotifier").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl Notifier for FakeNotifier {
    fn queue(&self) -> u16 {
        self.queue
    }
    fn notify(&self) {
        self.device.lock().unwrap_or_else(|e| e.into_inner()).process(self.queue);
    }
}

impl QueueNotifiers for FakeTransport {
    type Notifier = FakeNotifier;
    fn notifier(&mut self, queue: u16) -> Result<FakeNotifier> {
        if usize::from(queue) >= self.lock().queues.len() {
            return Err(Error::QueueUnavailable);
        }
        Ok(FakeNotifier { device: self.device.clone(), queue })
    }
}
