//! Bringing a running device back after a device reset (VirtIO 1.2 §2.4),
//! for drivers that recover from a stalled or lying device instead of
//! giving it up.
//!
//! The driver resets the device ([`VirtioDevice::reset`]: bounded, and a
//! proof only when the status reads back 0), reclaims each queue's buffers
//! against that proof, then runs §3.1.1 again: [`VirtioDevice::renegotiate`]
//! (steps 1–6 with exactly the features it had, and the configuration
//! vector routed again: a reset sets `config_msix_vector` back to
//! `NO_VECTOR`, §4.1.5.1.2), [`VirtioDevice::restart_queue`] for every
//! queue (its MSI-X entry first, for the same reason), and
//! [`VirtioDevice::driver_ok`]. The MSI-X table and the vectors live in the
//! PCI function and the kernel, which a device reset does not touch.

use super::interrupts::CONFIG_MSIX_ENTRY;
use super::{BringUpError, BringUpTransport, DeviceConfig, VirtioDevice, config};
use crate::drivers::virtio::hal::KernelHal;
use vireo_virtio::{DeviceReset, DeviceStatus, Features, SplitQueue};

impl<T: BringUpTransport> VirtioDevice<T> {
    /// Resets the device and returns the proof that it stopped using
    /// everything it was given (§2.4.2); bounded.
    ///
    /// # Errors
    /// [`vireo_virtio::Error::DeviceResetTimeout`]: the device may still
    /// do DMA; keep its buffers.
    pub fn reset(&self) -> vireo_virtio::Result<DeviceReset> {
        self.transport.lock().reset()
    }

    /// §3.1.1 steps 1–6 again after a reset, accepting nothing but
    /// `features` (what the device ran with before), and configuration
    /// changes routed again.
    ///
    /// # Errors
    /// [`BringUpError::Negotiation`], [`BringUpError::MissingFeatures`] if
    /// the device no longer offers one of them, or
    /// [`BringUpError::VectorRefused`].
    pub fn renegotiate(&self, features: Features) -> Result<(), BringUpError> {
        let mut transport = self.transport.lock();
        let got = vireo_virtio::negotiate_features(&mut *transport, features)
            .map_err(BringUpError::Negotiation)?;
        if got != features {
            transport.set_status(DeviceStatus::FAILED);
            return Err(BringUpError::MissingFeatures(features.difference(got)));
        }
        if self.config_vector.is_some() && !transport.set_config_msix_vector(CONFIG_MSIX_ENTRY) {
            return Err(BringUpError::VectorRefused { queue: None });
        }
        Ok(())
    }

    /// Programs a reclaimed queue into the re-initialised device: its MSI-X
    /// entry (if it has one), then its zeroed rings.
    ///
    /// # Errors
    /// [`BringUpError::VectorRefused`] or [`BringUpError::Queue`].
    pub fn restart_queue<B>(
        &self,
        queue: &mut SplitQueue<KernelHal, B>,
        msix_entry: Option<u16>,
    ) -> Result<(), BringUpError> {
        let index = queue.queue_index();
        let mut transport = self.transport.lock();
        if let Some(entry) = msix_entry
            && !transport.set_queue_msix_vector(index, entry)
        {
            return Err(BringUpError::VectorRefused { queue: Some(index) });
        }
        queue.restart(&mut *transport).map_err(|error| BringUpError::Queue { index, error })
    }

    /// Reads the configuration consistently (§2.5.1), e.g. after a
    /// configuration-change notification.
    ///
    /// # Errors
    /// As bring-up's own read.
    pub fn read_config<C: DeviceConfig>(&self, features: Features) -> Result<C, BringUpError> {
        config::read::<C>(&mut *self.transport.lock(), features)
    }

    /// Writes `data` at `offset` of the device configuration (e.g.
    /// virtio-blk's `writeback`, §5.2.4).
    ///
    /// # Errors
    /// [`BringUpError::Config`] outside the window.
    pub fn write_config(&self, offset: usize, data: &[u8]) -> Result<(), BringUpError> {
        self.transport.lock().write_config(offset, data).map_err(BringUpError::Config)
    }

    /// §3.1.1 step 8: the device is live again.
    pub fn driver_ok(&self) {
        let mut transport = self.transport.lock();
        let status = transport.status();
        transport.set_status(status | DeviceStatus::DRIVER_OK);
    }
}
