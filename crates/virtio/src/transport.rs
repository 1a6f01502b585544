//! The hardware access boundary for the device itself: feature bits, queue
//! registers, notifications, status, config space and interrupts.
//!
//! The kernel implements [`Transport`] for virtio-pci (§4.1) and
//! virtio-mmio (§4.2); host tests implement it over a device model.

use crate::features::Features;
use crate::hal::PhysAddr;
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
/// # Safety
///
/// Implementors promise that [`Transport::reset`] returns only once the
/// device has stopped all DMA (VirtIO 1.2 §2.4: after reset the device uses
/// no buffers), and that `queue_set` programs exactly the addresses given.
/// Queues rely on this to hand buffers back after a reset.
pub unsafe trait Transport {
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
    fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    );
    /// Disables queue `queue`.
    fn queue_unset(&mut self, queue: u16);
    /// Sends an available buffer notification for queue `queue` (§2.7.13.4).
    fn notify(&mut self, queue: u16);
    /// Reads the device status.
    fn status(&mut self) -> DeviceStatus;
    /// Writes the device status.
    fn set_status(&mut self, status: DeviceStatus);
    /// Reads `buf.len()` bytes of device config space at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigOutOfRange`] if the range is outside config space.
    fn read_config(&mut self, offset: usize, buf: &mut [u8]) -> Result;
    /// Writes `data` to device config space at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigOutOfRange`] if the range is outside config space.
    fn write_config(&mut self, offset: usize, data: &[u8]) -> Result;
    /// Config generation counter (§2.5.1: re-read config until it is stable).
    fn config_generation(&mut self) -> u32;
    /// Reads and acknowledges the interrupt cause.
    fn ack_interrupt(&mut self) -> InterruptStatus;

    /// Resets the device: write 0 to status and wait until it reads back 0
    /// (§2.4.1, §4.1.4.3.2). The wait is bounded: a device that never
    /// completes its reset is an error, not a hang.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceResetTimeout`] after [`RESET_POLL_LIMIT`] status reads
    /// that were not 0; the device must then be assumed to still do DMA.
    fn reset(&mut self) -> Result {
        self.set_status(DeviceStatus::empty());
        for _ in 0..RESET_POLL_LIMIT {
            if self.status().is_empty() {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(Error::DeviceResetTimeout)
    }
}

/// How many status reads [`Transport::reset`] makes before giving up.
pub const RESET_POLL_LIMIT: u32 = 1 << 20;

/// Runs the device initialisation steps 1–6 of VirtIO 1.2 §3.1.1: reset,
/// ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK and its check.
/// The driver then sets up its queues and sets `DRIVER_OK` itself.
///
/// Returns the negotiated features (`device ∩ wanted`).
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
    let features = offered & (wanted | Features::VERSION_1);
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
