//! The virtio-mmio transport, version 2 (VirtIO 1.2 §4.2.2), over any
//! [`RegisterWindow`]: the kernel finds the device (device tree, ACPI, a
//! command line) and maps its registers; everything else is here.

use super::window::{self, RegisterWindow};
use super::{DeviceStatus, InterruptStatus, Notifier, QueueNotifiers, Transport};
use crate::hal::PhysAddr;
use crate::reset::DeviceId;
use crate::{Error, Result};

/// Register offsets (§4.2.2, `VIRTIO_MMIO_*` in Linux's `virtio_mmio.h`);
/// public so that a kernel can point its own doorbell or interrupt handler
/// at them.
pub mod reg {
    /// `MagicValue` (R): [`MMIO_MAGIC`](super::MMIO_MAGIC).
    pub const MAGIC_VALUE: usize = 0x000;
    /// `Version` (R): 2; legacy devices 1.
    pub const VERSION: usize = 0x004;
    /// `DeviceID` (R): the virtio device type; 0 for an empty slot.
    pub const DEVICE_ID: usize = 0x008;
    /// `VendorID` (R).
    pub const VENDOR_ID: usize = 0x00c;
    /// `DeviceFeatures` (R): 32 feature bits, as `DeviceFeaturesSel` picks.
    pub const DEVICE_FEATURES: usize = 0x010;
    /// `DeviceFeaturesSel` (W).
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    /// `DriverFeatures` (W).
    pub const DRIVER_FEATURES: usize = 0x020;
    /// `DriverFeaturesSel` (W).
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    /// `QueueSel` (W): the queue the `Queue*` registers apply to.
    pub const QUEUE_SEL: usize = 0x030;
    /// `QueueNumMax` (R): the selected queue's largest size; 0 = no queue.
    pub const QUEUE_NUM_MAX: usize = 0x034;
    /// `QueueNum` (W): the size the driver uses.
    pub const QUEUE_NUM: usize = 0x038;
    /// `QueueReady` (RW).
    pub const QUEUE_READY: usize = 0x044;
    /// `QueueNotify` (W): the queue index; needs no select.
    pub const QUEUE_NOTIFY: usize = 0x050;
    /// `InterruptStatus` (R).
    pub const INTERRUPT_STATUS: usize = 0x060;
    /// `InterruptACK` (W).
    pub const INTERRUPT_ACK: usize = 0x064;
    /// `Status` (RW): the device status; writing 0 resets.
    pub const STATUS: usize = 0x070;
    /// `QueueDescLow` (W); `QueueDescHigh` follows at +4.
    pub const QUEUE_DESC_LOW: usize = 0x080;
    /// `QueueDriverLow` (W); `QueueDriverHigh` follows at +4.
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    /// `QueueDeviceLow` (W); `QueueDeviceHigh` follows at +4.
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    /// `QueueReset` (RW, VirtIO 1.2).
    pub const QUEUE_RESET: usize = 0x0c0;
    /// `ConfigGeneration` (R).
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// `Config`: the device-specific configuration starts here.
    pub const CONFIG: usize = 0x100;
}

/// `MagicValue`: "virt" in little-endian (§4.2.2).
pub const MMIO_MAGIC: u32 = 0x7472_6976;

/// Why a register window cannot be driven as a virtio-mmio v2 device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The window is smaller than the register block (0x100 bytes).
    TooSmall,
    /// `MagicValue` is not "virt".
    BadMagic(u32),
    /// `Version` is not 2; 1 is the legacy layout, which this crate does
    /// not drive (§4.2.4).
    UnsupportedVersion(u32),
    /// `DeviceID` is 0: a placeholder with no device behind it (§4.2.2).
    NoDevice,
}

/// A virtio-mmio v2 device.
#[derive(Debug)]
pub struct MmioTransport<W: RegisterWindow> {
    window: W,
    id: DeviceId,
    device_type: u32,
    vendor: u32,
}

impl<W: RegisterWindow> MmioTransport<W> {
    /// Checks the window holds a virtio-mmio v2 device and takes it.
    /// `id` names the device instance (e.g. its register base address),
    /// as [`Transport::device_id`] requires.
    ///
    /// # Errors
    ///
    /// [`MmioError`] when the registers are not those of a usable device.
    pub fn new(window: W, id: DeviceId) -> core::result::Result<Self, MmioError> {
        if window.len() < reg::CONFIG {
            return Err(MmioError::TooSmall);
        }
        let magic = window.read_u32(reg::MAGIC_VALUE);
        if magic != MMIO_MAGIC {
            return Err(MmioError::BadMagic(magic));
        }
        let version = window.read_u32(reg::VERSION);
        if version != 2 {
            return Err(MmioError::UnsupportedVersion(version));
        }
        let device_type = window.read_u32(reg::DEVICE_ID);
        if device_type == 0 {
            return Err(MmioError::NoDevice);
        }
        let vendor = window.read_u32(reg::VENDOR_ID);
        Ok(Self { window, id, device_type, vendor })
    }

    /// The virtio device type (§5: 1 net, 2 block, 16 GPU, 18 input, ...).
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The `VendorID` register.
    pub fn vendor(&self) -> u32 {
        self.vendor
    }

    /// The register window (for a kernel's own doorbells or diagnostics).
    pub fn window(&self) -> &W {
        &self.window
    }

    /// Selects queue `queue` (§4.2.2 `QueueSel`).
    fn select(&self, queue: u16) {
        self.window.write_u32(reg::QUEUE_SEL, u32::from(queue));
    }

    fn write_u64(&self, low: usize, value: u64) {
        self.window.write_u32(low, value as u32);
        self.window.write_u32(low + 4, (value >> 32) as u32);
    }
}

// SAFETY: 1. the caller of `new` names the instance; 2. `reset` is the
// provided one: status 0 read back means the device reset (§2.4,
// §4.2.3.1); 3. a queue reset is reported done only when QueueReset and
// QueueReady both read 0 (§4.2.2, §2.6.1); 4. `queue_set` writes exactly
// the given addresses, through a window that promises faithful accesses,
// and nothing else here programs addresses; 5. `reset` is not overridden.
unsafe impl<W: RegisterWindow> Transport for MmioTransport<W> {
    fn device_id(&self) -> DeviceId {
        self.id
    }

    fn read_device_features(&mut self) -> u64 {
        window::read_features(&self.window, reg::DEVICE_FEATURES_SEL, reg::DEVICE_FEATURES)
    }

    fn write_driver_features(&mut self, features: u64) {
        window::write_features(
            &self.window,
            reg::DRIVER_FEATURES_SEL,
            reg::DRIVER_FEATURES,
            features,
        );
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.select(queue);
        // §4.2.2: 0 when the queue is not available. A size beyond what a
        // split queue can use is capped (the ring checks its own size).
        self.window.read_u32(reg::QUEUE_NUM_MAX).min(32768) as u16
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.select(queue);
        self.window.read_u32(reg::QUEUE_READY) != 0
    }

    unsafe fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        // §4.2.3.2: select, size, the three addresses, then QueueReady.
        self.select(queue);
        self.window.write_u32(reg::QUEUE_NUM, u32::from(size));
        self.write_u64(reg::QUEUE_DESC_LOW, descriptors);
        self.write_u64(reg::QUEUE_DRIVER_LOW, driver_area);
        self.write_u64(reg::QUEUE_DEVICE_LOW, device_area);
        self.window.write_u32(reg::QUEUE_READY, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        // MMIO can clear QueueReady, but that is not a proof the device
        // stopped with the buffers (only a reset is).
        self.select(queue);
        self.window.write_u32(reg::QUEUE_READY, 0);
    }

    fn notify(&mut self, queue: u16) {
        // §4.2.2: the queue index is written to QueueNotify; no select.
        self.window.write_u32(reg::QUEUE_NOTIFY, u32::from(queue));
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.window.read_u32(reg::STATUS) as u8)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.window.write_u32(reg::STATUS, u32::from(status.bits()));
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) -> Result {
        window::read_config(&self.window, reg::CONFIG, offset, buf)
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> Result {
        window::write_config(&self.window, reg::CONFIG, offset, data)
    }

    fn config_generation(&self) -> u32 {
        self.window.read_u32(reg::CONFIG_GENERATION)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        acknowledge_interrupt(&self.window)
    }

    fn has_queue_reset(&self) -> bool {
        // The v2 block has QueueReset (added in 1.2); a device offers
        // VIRTIO_F_RING_RESET only if it implements it.
        true
    }

    fn start_queue_reset(&mut self, queue: u16) {
        self.select(queue);
        self.window.write_u32(reg::QUEUE_RESET, 1);
    }

    fn queue_reset_done(&mut self, queue: u16) -> bool {
        self.select(queue);
        self.window.read_u32(reg::QUEUE_RESET) == 0 && self.window.read_u32(reg::QUEUE_READY) == 0
    }
}

/// Reads and acknowledges a device's interrupt causes (§4.2.3.3: read
/// `InterruptStatus`, write the handled bits to `InterruptACK`, which lowers
/// the line); undefined bits are neither reported nor written back
/// (§4.2.2.2). A free function so that an interrupt handler can use it with
/// a copy of the window, without the transport.
pub fn acknowledge_interrupt<W: RegisterWindow>(window: &W) -> InterruptStatus {
    let status = InterruptStatus::from_bits_truncate(window.read_u32(reg::INTERRUPT_STATUS));
    if !status.is_empty() {
        window.write_u32(reg::INTERRUPT_ACK, status.bits());
    }
    status
}

/// Rings one virtio-mmio queue: a write of its index to `QueueNotify`,
/// which needs no select, so notifiers of one device may ring at once.
#[derive(Clone, Debug)]
pub struct MmioNotifier<W> {
    window: W,
    queue: u16,
}

impl<W: RegisterWindow> Notifier for MmioNotifier<W> {
    fn queue(&self) -> u16 {
        self.queue
    }
    fn notify(&self) {
        self.window.write_u32(reg::QUEUE_NOTIFY, u32::from(self.queue));
    }
}

impl<W: RegisterWindow + Clone + Send + Sync> QueueNotifiers for MmioTransport<W> {
    type Notifier = MmioNotifier<W>;
    fn notifier(&mut self, queue: u16) -> Result<MmioNotifier<W>> {
        if self.max_queue_size(queue) == 0 {
            return Err(Error::QueueUnavailable);
        }
        Ok(MmioNotifier { window: self.window.clone(), queue })
    }
}
