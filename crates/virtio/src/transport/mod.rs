//! The hardware access boundary for the device itself: feature bits, queue
//! registers, notifications, status, config space and interrupts.
//!
//! The crate implements [`Transport`] for virtio-pci ([`pci`], §4.1) and
//! virtio-mmio ([`mmio`], §4.2) over a [`RegisterWindow`] the kernel maps;
//! a kernel may also implement it itself, and host tests implement it over
//! a device model (the `fake` module).

pub mod mmio;
pub mod pci;
mod window;

pub use window::{MmioWindow, RegisterWindow};

use crate::features::Features;
use crate::hal::PhysAddr;
use crate::reset::{DeviceId, DeviceReset};
use crate::{Error, Result};

bitflags::bitflags! {
    /// The device status field (VirtIO 1.2 §2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct DeviceStatus: u8 {
        /// The guest found the device.
        const ACKNOWLEDGE = 1;
        /// The guest knows how to drive the device.
        const DRIVER = 2;
        /// The driver is set up and ready.
        const DRIVER_OK = 4;
        /// Feature negotiation is complete.
        const FEATURES_OK = 8;
        /// The device hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 64;
        /// The driver gave up on the device.
        const FAILED = 128;
    }
}

bitflags::bitflags! {
    /// Why the device interrupted (ISR status, VirtIO 1.2 §4.1.4.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct InterruptStatus: u32 {
        /// A used buffer notification for some queue.
        const QUEUE = 1;
        /// The configuration space changed.
        const CONFIG = 2;
    }
}

/// Access to one VirtIO device's registers.
///
/// Methods that only read one register without side effects take `&self`
/// ([`Transport::status`], [`Transport::config_generation`],
/// [`Transport::read_config`], [`Transport::has_queue_reset`]), so shared
/// code (diagnostics, a config reader) needs no exclusive borrow. The
/// others take `&mut self` because they are register *sequences* that
/// must not interleave with another CPU's (select a feature word or a
/// queue, then read or write it: §4.1.4.3, §4.2.2) or because the read
/// itself changes the device (the ISR status is cleared by reading it,
/// §4.1.4.5). Kicking a queue without the transport, concurrently with
/// other queues, goes through a per-queue [`Notifier`]
/// ([`QueueNotifiers`]).
///
/// # Safety
///
/// The queues trust a transport's word about when the device stops using
/// memory, and hand buffers back (or free rings) on it. Implementors
/// promise that:
/// 1. [`Transport::device_id`] is the same for every transport value that
///    drives the same device instance and differs between devices, for as
///    long as any queue of the device lives;
/// 2. once the provided [`Transport::reset`] reads status 0, the device
///    accesses none of the rings or buffers it was given (VirtIO 1.2 §2.4)
///    until queues are programmed again;
/// 3. once [`Transport::queue_reset_done`] returns `true` after
///    [`Transport::start_queue_reset`] for a queue, the device accesses
///    neither that queue's rings nor any buffer made available through it
///    (§2.6.1) until the queue is programmed and enabled again;
/// 4. `queue_set` programs exactly the addresses given, and no other method
///    makes the device access memory;
/// 5. `reset` is not overridden (the proof it returns can only be made by
///    the provided method).
pub unsafe trait Transport {
    /// Which device instance this transport drives (see the trait's
    /// safety contract); reset proofs are bound to it.
    fn device_id(&self) -> DeviceId;
    /// Device feature bits (all 64).
    fn read_device_features(&mut self) -> u64;
    /// Writes the driver's accepted feature bits.
    fn write_driver_features(&mut self, features: u64);
    /// Largest size the device supports for queue `queue`; 0 if the queue
    /// does not exist.
    fn max_queue_size(&mut self, queue: u16) -> u16;
    /// Whether queue `queue` is already set up.
    fn queue_used(&mut self, queue: u16) -> bool;
    /// Programs and enables queue `queue` with the three ring addresses.
    ///
    /// # Safety
    ///
    /// The device may read and write the three areas (and every buffer
    /// made available through them) from now until a reset proves it
    /// stopped: they must be ring memory of `size` entries that stays
    /// allocated, and untouched by anything but the queue that owns it,
    /// for that long. [`crate::SplitQueue`] is the intended caller.
    unsafe fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    );
    /// Asks for queue `queue` to be disabled. Proves nothing: on PCI
    /// `queue_enable` cannot be cleared (§4.1.4.3.2), so only a device or
    /// queue reset stops a queue.
    fn queue_unset(&mut self, queue: u16);
    /// Sends an available buffer notification for queue `queue` (§2.7.13.4).
    fn notify(&mut self, queue: u16);
    /// Reads the device status.
    fn status(&self) -> DeviceStatus;
    /// Writes the device status.
    fn set_status(&mut self, status: DeviceStatus);
    /// Reads `buf.len()` bytes of device config space at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigOutOfRange`] if the range is outside config space.
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> Result;
    /// Writes `data` to device config space at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigOutOfRange`] if the range is outside config space.
    fn write_config(&mut self, offset: usize, data: &[u8]) -> Result;
    /// Config generation counter (§2.5.1: re-read config until it is
    /// stable; [`crate::config::read_consistent`] does that).
    fn config_generation(&self) -> u32;
    /// Reads and acknowledges the interrupt cause. `&mut`: on PCI the read
    /// itself clears the ISR status (§4.1.4.5); on MMIO it is a read of
    /// InterruptStatus then a write of InterruptACK (§4.2.2).
    fn ack_interrupt(&mut self) -> InterruptStatus;

    /// Routes configuration-change interrupts to MSI-X table entry `entry`,
    /// or to none with [`NO_VECTOR`] (§4.1.5.1.2). The default, for
    /// transports without MSI-X, accepts only `NO_VECTOR`.
    ///
    /// # Errors
    ///
    /// [`Error::VectorRefused`] if the device does not read the entry back
    /// (it reads `NO_VECTOR` when it cannot use it);
    /// [`Error::VectorsUnsupported`] without MSI-X.
    fn set_config_vector(&mut self, entry: u16) -> Result {
        if entry == NO_VECTOR { Ok(()) } else { Err(Error::VectorsUnsupported) }
    }
    /// Routes queue `queue`'s used-buffer interrupts to MSI-X table entry
    /// `entry`, or to none with [`NO_VECTOR`] (§4.1.5.1.2). A queue reset
    /// forgets it (§4.1.4.3.2): set it again before
    /// [`crate::SplitQueue::restart`].
    ///
    /// # Errors
    ///
    /// As [`Transport::set_config_vector`].
    fn set_queue_vector(&mut self, queue: u16, entry: u16) -> Result {
        let _ = queue;
        if entry == NO_VECTOR { Ok(()) } else { Err(Error::VectorsUnsupported) }
    }

    /// Whether this transport can reset single queues (it has the register
    /// `VIRTIO_F_RING_RESET` needs, e.g. PCI's `queue_reset`, §4.1.4.3).
    /// [`negotiate_features`] accepts `RING_RESET` only if it can.
    fn has_queue_reset(&self) -> bool {
        false
    }
    /// Starts resetting queue `queue` (PCI: select it and write 1 to
    /// `queue_reset`, §4.1.4.3.2). Only called if
    /// [`Transport::has_queue_reset`].
    fn start_queue_reset(&mut self, queue: u16) {
        let _ = queue;
    }
    /// Whether the reset of queue `queue` has completed (PCI: `queue_reset`
    /// and `queue_enable` both read back 0, §4.1.4.3.1).
    fn queue_reset_done(&mut self, queue: u16) -> bool {
        let _ = queue;
        false
    }

    /// Resets the device: write 0 to status and wait until it reads back 0
    /// (§2.4.2, §4.1.4.3.2). The wait is bounded: a device that never
    /// completes its reset is an error, not a hang. The returned proof lets
    /// every queue of this device created before the reset hand back its
    /// buffers ([`crate::SplitQueue::reclaim`]).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceResetTimeout`] after [`RESET_POLL_LIMIT`] status reads
    /// that were not 0; the device must then be assumed to still do DMA.
    fn reset(&mut self) -> Result<DeviceReset> {
        // Taken before the reset starts: the proof covers only queues
        // programmed before this point (see `crate::reset`).
        let proof = DeviceReset::begin(self.device_id());
        self.set_status(DeviceStatus::empty());
        for _ in 0..RESET_POLL_LIMIT {
            if self.status().is_empty() {
                return Ok(proof);
            }
            core::hint::spin_loop();
        }
        Err(Error::DeviceResetTimeout)
    }
}

/// "No MSI-X vector" (VirtIO 1.2 §4.1.4.3, `VIRTIO_MSI_NO_VECTOR`).
pub const NO_VECTOR: u16 = 0xffff;

/// Sends the available-buffer notification of one queue (VirtIO 1.2
/// §2.7.13.4) without borrowing the transport.
///
/// [`Transport::notify`] takes `&mut self` because on PCI it selects the
/// queue before reading its notify offset, so all queues of a device would
/// kick through one lock. A notifier resolves its doorbell once (PCI: the
/// address `cap.offset + queue_notify_off * notify_off_multiplier`,
/// §4.1.4.4; MMIO: `QueueNotify`, §4.2.2) and then rings it with one write
/// through `&self`, so each queue kicks under its own lock, concurrently
/// with the others. Use it with [`crate::SplitQueue::kick_with`].
pub trait Notifier {
    /// The queue index whose doorbell this is.
    fn queue(&self) -> u16;
    /// Sends the notification.
    fn notify(&self);
}

/// A transport that hands out per-queue [`Notifier`]s.
pub trait QueueNotifiers: Transport {
    /// The notifier type; `Send + Sync` lets it live beside each queue's
    /// lock on any CPU.
    type Notifier: Notifier + Send + Sync;

    /// The notifier of queue `queue`.
    ///
    /// # Errors
    ///
    /// [`Error::QueueUnavailable`] if the device has no such queue or its
    /// doorbell lies outside the notification area.
    fn notifier(&mut self, queue: u16) -> Result<Self::Notifier>;
}

/// How many status reads [`Transport::reset`] (and register reads of a
/// queue reset) make before giving up.
pub const RESET_POLL_LIMIT: u32 = 1 << 20;

/// Runs the device initialisation steps 1–6 of VirtIO 1.2 §3.1.1: reset,
/// ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK and its check.
/// The driver then sets up its queues and sets `DRIVER_OK` itself.
///
/// Returns the negotiated features: those offered, wanted (plus
/// `VERSION_1`) and honourable by this crate. Device-type bits pass
/// through; ring and transport bits the crate does not implement
/// (`RING_PACKED`, `IN_ORDER`, `NOTIFICATION_DATA`, ...) are never
/// accepted, nor is `RING_RESET` on a transport without a queue-reset
/// register (see [`Features::unsupported`]).
///
/// # Errors
///
/// [`Error::FeaturesRejected`] if `VERSION_1` is not offered by the device
/// (this crate only implements the modern layout) or the device clears
/// `FEATURES_OK`; the status is then set to `FAILED`.
/// [`Error::DeviceResetTimeout`] if the initial reset does not complete.
pub fn negotiate_features<T: Transport>(transport: &mut T, wanted: Features) -> Result<Features> {
    transport.reset()?;
    transport.set_status(DeviceStatus::ACKNOWLEDGE);
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = Features::from_bits_retain(transport.read_device_features());
    // `difference` works on the raw bits, so device-type bits survive.
    let mut features = (offered & (wanted | Features::VERSION_1)).difference(offered.unsupported());
    if !transport.has_queue_reset() {
        features.remove(Features::RING_RESET);
    }
    if !features.contains(Features::VERSION_1) {
        transport.set_status(DeviceStatus::FAILED);
        return Err(Error::FeaturesRejected);
    }
    transport.write_driver_features(features.bits());
    let s = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
    transport.set_status(s);
    if !transport.status().contains(DeviceStatus::FEATURES_OK) {
        transport.set_status(DeviceStatus::FAILED);
        return Err(Error::FeaturesRejected);
    }
    Ok(features)
}
