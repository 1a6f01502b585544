//! The virtio-mmio transport, version 2 (VirtIO 1.2 §4.2).
//!
//! A virtio-mmio device is one register window: control registers from
//! 0x000, the device-specific configuration from 0x100 (§4.2.2). Nothing
//! here depends on the kernel: the window is reached through
//! [`RegisterWindow`], which the kernel implements over an uncached
//! mapping (`window`) and a test could implement over an array. Every
//! access is checked against the window's length, so a device that names
//! a configuration offset it does not have gets an error, not a wild
//! access.
//!
//! Only version 2 is driven: a legacy device (version 1, page-based queue
//! addresses, §4.2.4) is refused with [`MmioError::Legacy`], as is a window
//! without the magic value, and a placeholder slot (device id 0) is
//! [`MmioError::NoDevice`], which §4.2.2.2 says is not an error to report.

pub mod window;

use vireo_virtio::{DeviceId, DeviceStatus, InterruptStatus, Transport};

/// A device's register window: 8-, 16- and 32-bit volatile accesses at
/// byte offsets from its base.
///
/// # Safety
///
/// Implementors promise that every offset below [`RegisterWindow::len_bytes`]
/// reaches the device's register at that offset, each access exactly once
/// and in program order (an uncached mapping on x86), that the window
/// stays valid for as long as the value lives, and that
/// [`RegisterWindow::device_id`] is the same for every window of one
/// device and differs between devices (the [`Transport`] contract's
/// first promise rests on it).
pub unsafe trait RegisterWindow {
    /// Which device this window reaches (e.g. from its physical base).
    fn device_id(&self) -> DeviceId;
    /// Bytes of the window (control registers and configuration).
    fn len_bytes(&self) -> usize;
    /// Reads the byte at `offset` (< `len_bytes`).
    fn read_u8(&self, offset: usize) -> u8;
    /// Reads the aligned u16 at `offset`.
    fn read_u16(&self, offset: usize) -> u16;
    /// Reads the aligned u32 at `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes the byte at `offset`.
    fn write_u8(&self, offset: usize, value: u8);
    /// Writes the aligned u16 at `offset`.
    fn write_u16(&self, offset: usize, value: u16);
    /// Writes the aligned u32 at `offset`.
    fn write_u32(&self, offset: usize, value: u32);
}

/// Control register offsets (§4.2.2, table "MMIO Device Register Layout").
pub mod reg {
    /// `MagicValue` (R): [`super::MAGIC`].
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
    /// `QueueNotify` (W): the queue index.
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
    /// `ConfigGeneration` (R).
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// `Config`: the device-specific configuration starts here.
    pub const CONFIG: usize = 0x100;
}

/// `MagicValue`: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The version this transport drives.
pub const VERSION_2: u32 = 2;
/// Queues probed at most when counting them: a device that offers every
/// index cannot make the count loop for long. QEMU's limit
/// (`VIRTIO_QUEUE_MAX`) is the same.
pub const MAX_QUEUES: u16 = 1024;

/// Why a window cannot be driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The window is smaller than the control registers.
    TooSmall(usize),
    /// `MagicValue` is not "virt": no virtio device here.
    BadMagic(u32),
    /// `Version` 1: a legacy device, which this transport does not drive.
    Legacy,
    /// Another `Version` than 1 or 2.
    UnknownVersion(u32),
    /// `DeviceID` 0: an empty slot (§4.2.2.2: ignored without an error).
    NoDevice,
}

/// Reads and acknowledges a device's interrupt causes (§4.2.3.3: read
/// `InterruptStatus`, write the handled bits to `InterruptACK`, which
/// lowers the line); undefined bits are ignored and never written back
/// (§4.2.2.2). A free function so that an interrupt handler can use it with
/// a copy of the window, without the transport.
pub fn acknowledge_interrupt(window: &impl RegisterWindow) -> InterruptStatus {
    let status = InterruptStatus::from_bits_truncate(window.read_u32(reg::INTERRUPT_STATUS));
    if !status.is_empty() {
        window.write_u32(reg::INTERRUPT_ACK, status.bits());
    }
    status
}

/// A version-2 virtio-mmio device.
pub struct VirtioMmio<W: RegisterWindow> {
    window: W,
    device_type: u32,
    vendor_id: u32,
}

impl<W: RegisterWindow> VirtioMmio<W> {
    /// Checks `MagicValue`, `Version` and `DeviceID` in that order, as
    /// §4.2.3.1.1 requires, touching no other register.
    ///
    /// # Errors
    /// [`MmioError`] for anything but a version-2 device with a nonzero id.
    pub fn new(window: W) -> Result<Self, MmioError> {
        if window.len_bytes() < reg::CONFIG {
            return Err(MmioError::TooSmall(window.len_bytes()));
        }
        let magic = window.read_u32(reg::MAGIC_VALUE);
        if magic != MAGIC {
            return Err(MmioError::BadMagic(magic));
        }
        match window.read_u32(reg::VERSION) {
            VERSION_2 => {}
            1 => return Err(MmioError::Legacy),
            other => return Err(MmioError::UnknownVersion(other)),
        }
        let device_type = window.read_u32(reg::DEVICE_ID);
        if device_type == 0 {
            return Err(MmioError::NoDevice);
        }
        let vendor_id = window.read_u32(reg::VENDOR_ID);
        Ok(Self { window, device_type, vendor_id })
    }

    /// The virtio device type (§5), from `DeviceID`.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The vendor id the device reports.
    pub fn vendor_id(&self) -> u32 {
        self.vendor_id
    }

    /// The register window.
    pub fn window(&self) -> &W {
        &self.window
    }

    /// Queues the device has: the indices from 0 whose `QueueNumMax` is
    /// nonzero (virtio-mmio has no queue count register), at most
    /// [`MAX_QUEUES`].
    pub fn num_queues(&mut self) -> u16 {
        (0..MAX_QUEUES).find(|&queue| self.max_queue_size(queue) == 0).unwrap_or(MAX_QUEUES)
    }

    fn select(&mut self, queue: u16) {
        self.window.write_u32(reg::QUEUE_SEL, u32::from(queue));
    }

    fn write_u64(&mut self, low: usize, value: u64) {
        self.window.write_u32(low, value as u32);
        self.window.write_u32(low + 4, (value >> 32) as u32);
    }

    /// The configuration range `offset..offset + len` as window offsets.
    fn config_range(&self, offset: usize, len: usize) -> vireo_virtio::Result<usize> {
        let start = reg::CONFIG.checked_add(offset).ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        let end = start.checked_add(len).ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        if end > self.window.len_bytes() {
            return Err(vireo_virtio::Error::ConfigOutOfRange);
        }
        Ok(start)
    }
}

// SAFETY: 1. the id is the window's (see `RegisterWindow`'s contract);
// 2. `reset` (the trait's default, not overridden) writes 0 to `Status` and
// waits until it reads back 0; §4.2.2.1 has the device then clear every
// `QueueReady`, and a device must not touch a queue whose `QueueReady` is 0,
// so it uses no rings or buffers afterwards; 3. there is no queue reset
// (`queue_reset_done` keeps its default, `false`); 4. `queue_set` writes
// exactly the addresses given and nothing else here programs addresses.
unsafe impl<W: RegisterWindow> Transport for VirtioMmio<W> {
    fn device_id(&self) -> DeviceId {
        self.window.device_id()
    }

    fn read_device_features(&mut self) -> u64 {
        // §4.2.2.2: select before reading.
        self.window.write_u32(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.window.read_u32(reg::DEVICE_FEATURES);
        self.window.write_u32(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.window.read_u32(reg::DEVICE_FEATURES);
        (u64::from(high) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.window.write_u32(reg::DRIVER_FEATURES_SEL, 0);
        self.window.write_u32(reg::DRIVER_FEATURES, features as u32);
        self.window.write_u32(reg::DRIVER_FEATURES_SEL, 1);
        self.window.write_u32(reg::DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.select(queue);
        // The ring API's sizes are u16; a device offering more offers u16::MAX
        // as far as the driver is concerned (split rings stop at 32768).
        u16::try_from(self.window.read_u32(reg::QUEUE_NUM_MAX)).unwrap_or(u16::MAX)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        // §4.2.3.2 step 2: a queue in use reads `QueueReady` nonzero.
        self.select(queue);
        self.window.read_u32(reg::QUEUE_READY) != 0
    }

    unsafe fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: u64,
        driver_area: u64,
        device_area: u64,
    ) {
        // §4.2.3.2 steps 5-7: size, the three areas, then QueueReady. The
        // ring checked `size` against `QueueNumMax` (§4.2.2.2).
        self.select(queue);
        self.window.write_u32(reg::QUEUE_NUM, u32::from(size));
        self.write_u64(reg::QUEUE_DESC_LOW, descriptors);
        self.write_u64(reg::QUEUE_DRIVER_LOW, driver_area);
        self.write_u64(reg::QUEUE_DEVICE_LOW, device_area);
        self.window.write_u32(reg::QUEUE_READY, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        // §4.2.2.2: to stop using a queue, write 0 to QueueReady and read
        // it back to synchronise.
        self.select(queue);
        self.window.write_u32(reg::QUEUE_READY, 0);
        let _ = self.window.read_u32(reg::QUEUE_READY);
    }

    fn notify(&mut self, queue: u16) {
        // §4.2.3.4: without VIRTIO_F_NOTIFICATION_DATA, the queue index.
        self.window.write_u32(reg::QUEUE_NOTIFY, u32::from(queue));
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.window.read_u32(reg::STATUS) as u8)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.window.write_u32(reg::STATUS, u32::from(status.bits()));
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        let at = self.config_range(offset, buf.len())?;
        // §4.2.2.2: 8-bit fields byte-wide, 16-bit fields 16-bit aligned,
        // 32- and 64-bit fields 32-bit aligned; other lengths byte by byte.
        match buf.len() {
            2 if at.is_multiple_of(2) => {
                buf.copy_from_slice(&self.window.read_u16(at).to_le_bytes())
            }
            4 if at.is_multiple_of(4) => {
                buf.copy_from_slice(&self.window.read_u32(at).to_le_bytes())
            }
            8 if at.is_multiple_of(4) => {
                buf[..4].copy_from_slice(&self.window.read_u32(at).to_le_bytes());
                buf[4..].copy_from_slice(&self.window.read_u32(at + 4).to_le_bytes());
            }
            _ => {
                for (index, byte) in buf.iter_mut().enumerate() {
                    *byte = self.window.read_u8(at + index);
                }
            }
        }
        Ok(())
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> vireo_virtio::Result {
        let at = self.config_range(offset, data.len())?;
        match *data {
            [a, b] if at.is_multiple_of(2) => self.window.write_u16(at, u16::from_le_bytes([a, b])),
            [a, b, c, d] if at.is_multiple_of(4) => {
                self.window.write_u32(at, u32::from_le_bytes([a, b, c, d]))
            }
            _ => {
                for (index, &byte) in data.iter().enumerate() {
                    self.window.write_u8(at + index, byte);
                }
            }
        }
        Ok(())
    }

    fn config_generation(&self) -> u32 {
        self.window.read_u32(reg::CONFIG_GENERATION)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        acknowledge_interrupt(&self.window)
    }

    // No queue reset (the trait's default `has_queue_reset` is false, so
    // VIRTIO_F_RING_RESET is never negotiated here): QEMU 7.2 offers the
    // feature on virtio-mmio, but a reset started through `QueueReset`
    // (0x0c0, §4.2.2) never completes there (the blk and gpu queue-reset
    // tests timed out on microvm).
}
