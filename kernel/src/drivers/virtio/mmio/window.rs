//! The kernel's side of virtio-mmio: each window the platform lists
//! (`platform::virtio_mmio`) mapped uncached once, probed with the crate's
//! [`MmioTransport`], and handed out as a [`RegisterWindow`]; the queue
//! notifiers and the interrupt acknowledgement a running device needs
//! without its transport.

use super::MmioError;
use crate::drivers::virtio::notifier::QueueNotifier;
use crate::drivers::virtio::window::KernelWindow;
use crate::mm::mmio;
use crate::platform::virtio_mmio::{self as slots, Slot};
use alloc::vec::Vec;
use vireo_virtio::transport::mmio::{MmioTransport, acknowledge_interrupt, reg};
use vireo_virtio::{DeviceId, InterruptStatus, Transport};

/// Tags a virtio-mmio device id (its physical base) so that it never equals
/// a virtio-pci one (a packed PCI address, below 2^32). One device per base,
/// and `devices` maps each base once and hands out copies of that window, so
/// the id names the device as `Transport::device_id` requires.
const MMIO_DEVICE_ID_TAG: u64 = 1 << 63;

fn device_id(window: &KernelWindow) -> DeviceId {
    DeviceId::new(MMIO_DEVICE_ID_TAG | window.region().phys().as_u64())
}

/// The kernel's virtio-mmio transport: the crate's, over a kernel window.
pub type KernelMmio = MmioTransport<KernelWindow>;

/// Queues probed at most when counting them: a device that offers every
/// index cannot make the count loop for long. QEMU's limit
/// (`VIRTIO_QUEUE_MAX`) is the same.
pub const MAX_QUEUES: u16 = 1024;

/// Queues the device has: the indices from 0 whose `QueueNumMax` is nonzero
/// (virtio-mmio has no queue count register, §4.2.2), at most
/// [`MAX_QUEUES`].
pub fn num_queues(transport: &mut KernelMmio) -> u16 {
    (0..MAX_QUEUES).find(|&queue| transport.max_queue_size(queue) == 0).unwrap_or(MAX_QUEUES)
}

/// A notifier for `queue`: `QueueNotify` takes any queue's index without a
/// select (§4.2.3.4), so notifiers of one device may ring at once.
/// (`None` cannot happen: `MmioTransport::new` checked that the window
/// holds the control registers.)
pub fn queue_notifier(transport: &KernelMmio, queue: u16) -> Option<QueueNotifier> {
    let address = transport.window().register(reg::QUEUE_NOTIFY, 4)?;
    // SAFETY: `QueueNotify` is an aligned u32 register inside the window
    // (checked just now), which stays mapped.
    Some(unsafe { QueueNotifier::new_u32(address, queue) })
}

/// The handle a shared-line interrupt handler acknowledges with.
pub fn interrupt_ack(transport: &KernelMmio) -> InterruptAck {
    InterruptAck { window: *transport.window() }
}

/// Reads and acknowledges one device's interrupt causes from its handler
/// (the line stays asserted until then, §4.2.3.3).
#[derive(Debug, Clone, Copy)]
pub struct InterruptAck {
    window: KernelWindow,
}

impl InterruptAck {
    /// The causes, now acknowledged.
    pub fn acknowledge(&self) -> InterruptStatus {
        acknowledge_interrupt(&self.window)
    }
}

/// A window that holds a version-2 virtio device.
#[derive(Debug, Clone, Copy)]
pub struct MmioDevice {
    /// Where the platform said it is.
    pub slot: Slot,
    /// The virtio device type it reported (§5).
    pub device_type: u32,
    window: KernelWindow,
}

impl MmioDevice {
    /// Its transport (a new handle on the same registers each time).
    ///
    /// # Errors
    /// [`MmioError`] if the window stopped holding a version-2 device.
    pub fn transport(&self) -> Result<KernelMmio, MmioError> {
        MmioTransport::new(self.window, device_id(&self.window))
    }
}

static DEVICES: spin::Once<Vec<MmioDevice>> = spin::Once::new();

/// Maps and probes every window the platform lists, once; later calls
/// return the same list. Empty slots (device id 0) are passed over in
/// silence (§4.2.2.2); legacy and non-virtio windows are logged.
pub fn devices() -> &'static [MmioDevice] {
    DEVICES.call_once(|| {
        let mut found = Vec::new();
        for &slot in slots::slots() {
            let phys = slot.phys.as_u64();
            let region = match mmio::map(slot.phys, slot.len_bytes) {
                Ok(region) => region,
                Err(error) => {
                    log::error!("virtio-mmio: {phys:#x}: cannot map: {error:?}");
                    continue;
                }
            };
            let window = KernelWindow::new(region);
            match MmioTransport::new(window, device_id(&window)) {
                Ok(transport) => {
                    log::info!(
                        "virtio-mmio: {phys:#x} (from {:?}): device type {}, vendor {:#x}, GSI {:?}",
                        slot.origin,
                        transport.device_type(),
                        transport.vendor(),
                        slot.interrupt.map(|irq| irq.gsi)
                    );
                    found.push(MmioDevice { slot, device_type: transport.device_type(), window });
                }
                Err(MmioError::NoDevice) => {}
                Err(MmioError::UnsupportedVersion(1)) => log::warn!(
                    "virtio-mmio: {phys:#x}: legacy device (version 1) skipped: vireo drives \
                     virtio-mmio version 2 only (VirtIO 1.2 §4.2; QEMU: -global \
                     virtio-mmio.force-legacy=false)"
                ),
                Err(error) => log::warn!("virtio-mmio: {phys:#x}: not a usable device: {error:?}"),
            }
        }
        found
    })
}
