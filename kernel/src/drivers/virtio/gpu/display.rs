//! Display changes (VirtIO 1.2 §5.7.4, §5.7.5): the device sets
//! `VIRTIO_GPU_EVENT_DISPLAY` in `events_read` and signals a configuration
//! change when a display is connected, removed or resized; the driver asks
//! GET_DISPLAY_INFO again and clears the event through `events_clear`.
//!
//! The interrupt handler only raises a flag: the work (a control command,
//! a new framebuffer) belongs to whoever owns the framebuffer, which polls
//! [`GpuDevice::take_display_change`].

use super::{GpuDevice, GpuDeviceError, Scanout};
use core::sync::atomic::{AtomicBool, Ordering};
use vireo_virtio::Transport;

/// `struct virtio_gpu_config` offsets (§5.7.4).
const EVENTS_READ: usize = 0;
const EVENTS_CLEAR: usize = 4;
/// `VIRTIO_GPU_EVENT_DISPLAY`.
const EVENT_DISPLAY: u32 = 1;

/// Raised by the configuration-change interrupt.
static CHANGED: AtomicBool = AtomicBool::new(false);

/// The driver's `ON_CONFIG_CHANGE`: interrupt context, so only a flag.
pub(super) fn on_config_change() {
    CHANGED.store(true, Ordering::Release);
}

impl GpuDevice {
    /// Whether the device reported a display change since the last call;
    /// if so, the event is cleared and the scanout read again, and the new
    /// scanout is returned (the caller makes a framebuffer at its mode).
    ///
    /// # Errors
    /// [`GpuDeviceError::ScanoutDisabled`] when no display is left, or the
    /// command's error; the flag is consumed either way.
    pub fn take_display_change(&self) -> Result<Option<Scanout>, GpuDeviceError> {
        if !CHANGED.swap(false, Ordering::AcqRel) {
            return Ok(None);
        }
        let events = {
            let mut transport = self.virtio.transport();
            let mut bytes = [0u8; 4];
            transport
                .read_config(EVENTS_READ, &mut bytes)
                .map_err(|_| GpuDeviceError::QueueBroken)?;
            let events = u32::from_le_bytes(bytes);
            // §5.7.5: the driver writes the bits it handled to events_clear.
            if events != 0 {
                let _ = transport.write_config(EVENTS_CLEAR, &events.to_le_bytes());
            }
            events
        };
        if events & EVENT_DISPLAY == 0 {
            return Ok(None);
        }
        let before = self.scanout();
        let after = self.refresh_scanout()?;
        log::info!(
            "virtio-gpu: display changed: scanout {} {}x{} -> scanout {} {}x{}",
            before.id,
            before.rect.width,
            before.rect.height,
            after.id,
            after.rect.width,
            after.rect.height
        );
        Ok(Some(after))
    }

    /// Display-change interrupts seen so far.
    pub fn display_changes(&self) -> u64 {
        self.virtio.config_changes()
    }

    /// Whether the device can signal display changes to this driver.
    pub fn signals_display_changes(&self) -> bool {
        self.virtio.signals_config_changes()
    }
}
