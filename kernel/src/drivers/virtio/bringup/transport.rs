//! What bring-up needs from a transport beyond the crate's [`Transport`]
//! (queue count, per-queue notifiers, MSI-X vector routing, the interrupt
//! acknowledgement of a shared line), and [`KernelTransport`]: the two real
//! transports behind one type, so a driver's device type does not depend
//! on the bus its device was found on. The bring-up tests wrap it to make
//! a real device misbehave.

use super::super::mmio::MmioError;
use super::super::mmio::window::{self as mmio_window, InterruptAck, KernelMmio};
use super::super::pci::{self, QueueNotifier, VirtioPci, VirtioPciError};
use vireo_virtio::{DeviceId, DeviceStatus, InterruptStatus, Transport};

/// A transport as bring-up drives it.
pub trait BringUpTransport: Transport {
    /// Number of queues the device offers.
    fn num_queues(&mut self) -> u16;
    /// A notifier for queue `queue`, if its notify register is inside the
    /// device's window (§4.1.4.4).
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier>;
    /// Routes configuration-change interrupts to MSI-X entry `entry` (or
    /// `NO_VECTOR`); whether the device kept it (§4.1.5.1.2). Always false
    /// without MSI-X.
    fn set_config_msix_vector(&mut self, entry: u16) -> bool;
    /// Routes queue `queue`'s interrupts to MSI-X entry `entry`; whether
    /// the device kept it. Always false without MSI-X.
    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool;
    /// How a handler on the device's interrupt line acknowledges it, for
    /// transports whose line stays asserted until then (virtio-mmio,
    /// §4.2.3.3); `None` where interrupts are messages (MSI-X).
    fn interrupt_ack(&self) -> Option<InterruptAck>;
}

impl BringUpTransport for VirtioPci {
    fn num_queues(&mut self) -> u16 {
        VirtioPci::num_queues(self)
    }
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        pci::queue_notifier(self, queue)
    }
    fn set_config_msix_vector(&mut self, entry: u16) -> bool {
        Transport::set_config_vector(self, entry).is_ok()
    }
    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool {
        Transport::set_queue_vector(self, queue, entry).is_ok()
    }
    fn interrupt_ack(&self) -> Option<InterruptAck> {
        None
    }
}

impl BringUpTransport for KernelMmio {
    fn num_queues(&mut self) -> u16 {
        mmio_window::num_queues(self)
    }
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        mmio_window::queue_notifier(self, queue)
    }
    fn set_config_msix_vector(&mut self, _: u16) -> bool {
        false
    }
    fn set_queue_msix_vector(&mut self, _: u16, _: u16) -> bool {
        false
    }
    fn interrupt_ack(&self) -> Option<InterruptAck> {
        Some(mmio_window::interrupt_ack(self))
    }
}

/// Why a found device has no usable transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The PCI function is not a usable modern virtio-pci device.
    Pci(VirtioPciError),
    /// The window is not a usable version-2 virtio-mmio device.
    Mmio(MmioError),
}

/// The kernel's transports: a driver's device is one of these whatever bus
/// it sits on.
pub enum KernelTransport {
    /// virtio-pci, modern or transitional (§4.1).
    Pci(VirtioPci),
    /// virtio-mmio version 2 (§4.2).
    Mmio(KernelMmio),
}

impl KernelTransport {
    /// Number of queues the device offers (as [`BringUpTransport`]; here
    /// too so that callers need not import the trait).
    pub fn num_queues(&mut self) -> u16 {
        BringUpTransport::num_queues(self)
    }

    /// A notifier for queue `queue` (as [`BringUpTransport`]).
    pub fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        BringUpTransport::queue_notifier(self, queue)
    }
}

/// Forwards a call to whichever transport this is.
macro_rules! forward {
    ($self:ident, $transport:ident => $call:expr) => {
        match $self {
            KernelTransport::Pci($transport) => $call,
            KernelTransport::Mmio($transport) => $call,
        }
    };
}

// SAFETY: every method forwards to `VirtioPci` or `KernelMmio`, which both
// keep the trait's promises (`has_queue_reset` may only say less: a false
// there only keeps queue resets from being used): their ids cannot collide (PCI ids are packed
// addresses below 2^32, virtio-mmio ids carry bit 63), `reset` is the
// trait's own here and there, queue resets and `queue_set` forward
// unchanged.
unsafe impl Transport for KernelTransport {
    fn device_id(&self) -> DeviceId {
        forward!(self, t => t.device_id())
    }
    fn read_device_features(&mut self) -> u64 {
        forward!(self, t => t.read_device_features())
    }
    fn write_driver_features(&mut self, features: u64) {
        forward!(self, t => t.write_driver_features(features))
    }
    fn max_queue_size(&mut self, queue: u16) -> u16 {
        forward!(self, t => t.max_queue_size(queue))
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        forward!(self, t => t.queue_used(queue))
    }
    unsafe fn queue_set(&mut self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) {
        // SAFETY: forwarded unchanged; our caller made the promises.
        forward!(self, t => unsafe { t.queue_set(queue, size, desc, driver, device) })
    }
    fn queue_unset(&mut self, queue: u16) {
        forward!(self, t => t.queue_unset(queue))
    }
    fn notify(&mut self, queue: u16) {
        forward!(self, t => Transport::notify(t, queue))
    }
    fn status(&self) -> DeviceStatus {
        forward!(self, t => t.status())
    }
    fn set_status(&mut self, status: DeviceStatus) {
        forward!(self, t => t.set_status(status))
    }
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        forward!(self, t => t.read_config(offset, buf))
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> vireo_virtio::Result {
        forward!(self, t => t.write_config(offset, data))
    }
    fn config_generation(&self) -> u32 {
        forward!(self, t => t.config_generation())
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        forward!(self, t => t.ack_interrupt())
    }
    fn has_queue_reset(&self) -> bool {
        match self {
            KernelTransport::Pci(t) => t.has_queue_reset(),
            // QEMU 7.2 offers VIRTIO_F_RING_RESET on virtio-mmio, but a reset
            // started through `QueueReset` (§4.2.2) never completes there
            // (the blk and gpu queue-reset tests timed out on microvm), so
            // the kernel does not negotiate it on this transport.
            KernelTransport::Mmio(_) => false,
        }
    }
    fn start_queue_reset(&mut self, queue: u16) {
        forward!(self, t => t.start_queue_reset(queue))
    }
    fn queue_reset_done(&mut self, queue: u16) -> bool {
        forward!(self, t => t.queue_reset_done(queue))
    }
}

impl BringUpTransport for KernelTransport {
    fn num_queues(&mut self) -> u16 {
        forward!(self, t => BringUpTransport::num_queues(t))
    }
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        forward!(self, t => BringUpTransport::queue_notifier(t, queue))
    }
    fn set_config_msix_vector(&mut self, entry: u16) -> bool {
        forward!(self, t => BringUpTransport::set_config_msix_vector(t, entry))
    }
    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool {
        forward!(self, t => BringUpTransport::set_queue_msix_vector(t, queue, entry))
    }
    fn interrupt_ack(&self) -> Option<InterruptAck> {
        forward!(self, t => BringUpTransport::interrupt_ack(t))
    }
}
