//! The modern virtio-pci transport (VirtIO 1.2 §4.1).
//!
//! Both modern (device id 0x1040 + type) and transitional (0x1000..0x103f,
//! type in the subsystem id) functions are driven here, always through
//! the modern capabilities (§4.1.2.1: a transitional device has them as
//! well as its legacy I/O BAR); a transitional function without them is a
//! legacy-only device, which vireo does not drive.
//!
//! The device describes its register blocks with vendor-specific PCI
//! capabilities (§4.1.4): common configuration, notifications, ISR status
//! and device-specific configuration, each a window into one of its BARs.
//! Every capability field comes from the device, so each window is checked
//! to lie inside its BAR before it is mapped, and every register access is
//! checked against its window: a lying device gets an error, not a wild
//! access.

pub use super::notifier::QueueNotifier;
use crate::mm::{PhysAddr, mmio};
use crate::platform::pci::capability::id;
use crate::platform::pci::config::command;
use crate::platform::pci::{BarError, Function};
use vireo_virtio::{DeviceId, DeviceStatus, InterruptStatus, Transport};

/// `cfg_type` values of the virtio capabilities (§4.1.4).
mod cfg_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
}

/// Common configuration registers (§4.1.4.3, `struct virtio_pci_common_cfg`).
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// Bytes of the structure up to and including `queue_device`.
    pub const MIN_LEN: u64 = 0x38;
    /// `queue_reset` (VirtIO 1.2 §4.1.4.3, after `queue_notify_data` at
    /// 0x38): only in windows long enough to hold it.
    pub const QUEUE_RESET: u64 = 0x3a;
    /// Bytes of the structure up to and including `queue_reset`.
    pub const RESET_LEN: u64 = 0x3c;
}

/// "No MSI-X vector" (§4.1.4.3).
pub const NO_VECTOR: u16 = 0xffff;

/// PCI vendor id of every virtio device (§4.1.2).
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// A modern device's PCI device id is this plus its virtio device type.
const MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// The last modern device id (§4.1.2).
const MODERN_DEVICE_ID_LAST: u16 = 0x107f;
/// Transitional device ids (§4.1.2.1); their type is the subsystem id.
const TRANSITIONAL_DEVICE_IDS: core::ops::RangeInclusive<u16> = 0x1000..=0x103f;

/// The virtio device type (§5) of a PCI function, `None` if it is not a
/// virtio device: the device id minus 0x1040 for a modern one, the
/// subsystem id for a transitional one (§4.1.2, §4.1.2.1).
pub fn device_type(function: &Function) -> Option<u16> {
    if function.vendor_id != VIRTIO_VENDOR {
        return None;
    }
    match function.device_id {
        id @ MODERN_DEVICE_ID_BASE..=MODERN_DEVICE_ID_LAST => Some(id - MODERN_DEVICE_ID_BASE),
        id if TRANSITIONAL_DEVICE_IDS.contains(&id) => Some(function.subsystem.1),
        _ => None,
    }
}

/// Whether `function` is a transitional device (it may also be legacy-only).
pub fn is_transitional(function: &Function) -> bool {
    function.vendor_id == VIRTIO_VENDOR && TRANSITIONAL_DEVICE_IDS.contains(&function.device_id)
}

/// Why a function cannot be driven as a modern virtio-pci device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioPciError {
    /// Not vendor 0x1af4 with a modern or transitional device id.
    NotVirtio,
    /// A transitional device without the modern capabilities: legacy
    /// only (§4.1.2.1), which vireo does not drive.
    LegacyOnly,
    /// A required capability is missing.
    MissingCapability(u8),
    /// A capability is too short or names a window outside its BAR.
    BadCapability(u8),
    /// A BAR the device points at is unusable.
    Bar(BarError),
    /// Mapping a window failed.
    Map(crate::mm::paging::MapError),
}

/// One mapped, bounds-checked register window.
#[derive(Debug, Clone, Copy)]
struct Window {
    region: mmio::MmioRegion,
}

impl Window {
    fn pointer<T>(&self, offset: u64) -> Option<*mut T> {
        let size = size_of::<T>() as u64;
        let fits = offset.is_multiple_of(size) && offset + size <= self.region.len_bytes() as u64;
        fits.then(|| (self.region.virt() + offset).as_mut_ptr())
    }

    /// Reads a register; all-ones if the offset is outside the window (what
    /// a missing PCI device reads as, so callers treat it as "no device").
    fn read<T: Copy + Default + core::ops::Not<Output = T>>(&self, offset: u64) -> T {
        match self.pointer::<T>(offset) {
            // SAFETY: inside the mapped, uncached window (checked), aligned.
            Some(pointer) => unsafe { pointer.read_volatile() },
            None => !T::default(),
        }
    }

    /// Writes a register; ignored outside the window.
    fn write<T: Copy>(&self, offset: u64, value: T) {
        if let Some(pointer) = self.pointer::<T>(offset) {
            // SAFETY: inside the mapped, uncached window (checked), aligned.
            unsafe { pointer.write_volatile(value) };
        }
    }
}

/// A modern virtio-pci device.
#[derive(Debug)]
pub struct VirtioPci {
    /// The function's PCI address, packed: one device instance, one id.
    id: DeviceId,
    common: Window,
    notify: Window,
    notify_multiplier: u32,
    isr: Window,
    device: Option<Window>,
}

/// A parsed `struct virtio_pci_cap` (§4.1.4).
#[derive(Debug, Clone, Copy)]
struct VirtioCap {
    cfg_type: u8,
    bar: u8,
    offset: u32,
    length: u32,
    /// Offset of the capability itself in configuration space.
    position: u16,
}

fn read_caps(function: &Function) -> impl Iterator<Item = VirtioCap> + '_ {
    function.capabilities().filter(|cap| cap.id == id::VENDOR_SPECIFIC).filter_map(|cap| {
        let config = function.config;
        let cap_len = config.read_u8(cap.offset + 2).ok()?;
        // §4.1.4: cap_len is at least 16 bytes.
        if cap_len < 16 {
            return None;
        }
        Some(VirtioCap {
            cfg_type: config.read_u8(cap.offset + 3).ok()?,
            bar: config.read_u8(cap.offset + 4).ok()?,
            offset: config.read_u32(cap.offset + 8).ok()?,
            length: config.read_u32(cap.offset + 12).ok()?,
            position: cap.offset,
        })
    })
}

impl VirtioPci {
    /// Finds and maps the device's register windows and enables memory
    /// decoding and bus mastering.
    ///
    /// # Errors
    /// [`VirtioPciError`] when the function is not a usable modern device.
    pub fn new(function: &Function) -> Result<Self, VirtioPciError> {
        if device_type(function).is_none() {
            return Err(VirtioPciError::NotVirtio);
        }
        // §4.1.4.1: use the first capability of each type the driver knows.
        let find = |wanted: u8| read_caps(function).find(|cap| cap.cfg_type == wanted);
        if is_transitional(function) && find(cfg_type::COMMON).is_none() {
            return Err(VirtioPciError::LegacyOnly);
        }
        let map = |wanted: u8, min_len: u64| -> Result<Window, VirtioPciError> {
            let cap = find(wanted).ok_or(VirtioPciError::MissingCapability(wanted))?;
            map_window(function, cap, min_len)
        };
        let common = map(cfg_type::COMMON, common::MIN_LEN)?;
        let notify_cap =
            find(cfg_type::NOTIFY).ok_or(VirtioPciError::MissingCapability(cfg_type::NOTIFY))?;
        let notify = map_window(function, notify_cap, 2)?;
        // §4.1.4.4: notify_off_multiplier follows the generic capability.
        let notify_multiplier = function
            .config
            .read_u32(notify_cap.position + 16)
            .map_err(|_| VirtioPciError::BadCapability(cfg_type::NOTIFY))?;
        let isr = map(cfg_type::ISR, 1)?;
        let device = match find(cfg_type::DEVICE) {
            Some(cap) => Some(map_window(function, cap, 1)?),
            None => None,
        };
        function
            .enable(command::MEMORY_SPACE | command::BUS_MASTER)
            .map_err(|_| VirtioPciError::BadCapability(0))?;
        let a = function.address;
        let packed = u64::from(a.segment) << 16
            | u64::from(a.bus) << 8
            | u64::from(a.device) << 3
            | u64::from(a.function);
        Ok(Self { id: DeviceId::new(packed), common, notify, notify_multiplier, isr, device })
    }

    /// Number of queues the device offers.
    pub fn num_queues(&self) -> u16 {
        self.common.read::<u16>(common::NUM_QUEUES)
    }

    /// A handle that notifies queue `queue` without borrowing the
    /// transport, so each queue can kick under its own lock. `None` if the
    /// device's notify offset for the queue lies outside the notify window.
    pub fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        let notify_off = self.common.read::<u16>(common::QUEUE_NOTIFY_OFF);
        let offset = u64::from(notify_off) * u64::from(self.notify_multiplier);
        let pointer = self.notify.pointer::<u16>(offset)?;
        // SAFETY: bounds-checked and aligned inside the mapped, uncached
        // notify window, which is never unmapped.
        Some(unsafe { QueueNotifier::new_u16(crate::mm::VirtAddr::from_ptr(pointer), queue) })
    }

    /// Routes configuration-change interrupts to MSI-X entry `entry`
    /// (or [`NO_VECTOR`]); returns whether the device accepted it (§4.1.5.1.2).
    pub fn set_config_msix_vector(&mut self, entry: u16) -> bool {
        self.common.write::<u16>(common::CONFIG_MSIX_VECTOR, entry);
        self.common.read::<u16>(common::CONFIG_MSIX_VECTOR) == entry
    }

    /// Routes queue `queue`'s interrupts to MSI-X entry `entry` (or
    /// [`NO_VECTOR`]); returns whether the device accepted it.
    pub fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool {
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.write::<u16>(common::QUEUE_MSIX_VECTOR, entry);
        self.common.read::<u16>(common::QUEUE_MSIX_VECTOR) == entry
    }
}

fn map_window(function: &Function, cap: VirtioCap, min_len: u64) -> Result<Window, VirtioPciError> {
    let bad = VirtioPciError::BadCapability(cap.cfg_type);
    if u64::from(cap.length) < min_len {
        return Err(bad);
    }
    let bar = function.memory_bar(cap.bar).map_err(VirtioPciError::Bar)?;
    let end = u64::from(cap.offset) + u64::from(cap.length);
    if end > bar.len_bytes {
        return Err(bad);
    }
    let phys: PhysAddr = bar.phys + u64::from(cap.offset);
    let region = mmio::map(phys, cap.length as usize).map_err(VirtioPciError::Map)?;
    Ok(Window { region })
}

// SAFETY: 1. the id is the function's PCI address, the same for every
// `VirtioPci` of that function and unique among functions; 2. `reset` (the
// trait's default) writes 0 to device_status and waits until it reads back
// 0, after which the device uses no buffers (§2.4, §4.1.4.3.2); 3. a queue
// reset is reported done only when queue_reset and queue_enable read 0,
// after which the device uses neither the queue's rings nor its buffers
// (§2.6.1) — which QEMU 7.2's virtio-blk honours only for requests it has
// not yet taken (see `blk::BlkDevice::reset_queue`, which drains first);
// 4. `queue_set` writes exactly the addresses given and nothing else here
// programs addresses; 5. `reset` is not overridden.
unsafe impl Transport for VirtioPci {
    fn device_id(&self) -> DeviceId {
        self.id
    }

    fn read_device_features(&mut self) -> u64 {
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read::<u32>(common::DEVICE_FEATURE);
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read::<u32>(common::DEVICE_FEATURE);
        (u64::from(high) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 0);
        self.common.write::<u32>(common::DRIVER_FEATURE, features as u32);
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 1);
        self.common.write::<u32>(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        if queue >= self.num_queues() {
            return 0;
        }
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.read::<u16>(common::QUEUE_SIZE)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.read::<u16>(common::QUEUE_ENABLE) != 0
    }

    unsafe fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: u64,
        driver_area: u64,
        device_area: u64,
    ) {
        // §4.1.5.1.3: select, size, the three addresses, then enable.
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.write::<u16>(common::QUEUE_SIZE, size);
        self.common.write::<u64>(common::QUEUE_DESC, descriptors);
        self.common.write::<u64>(common::QUEUE_DRIVER, driver_area);
        self.common.write::<u64>(common::QUEUE_DEVICE, device_area);
        self.common.write::<u16>(common::QUEUE_ENABLE, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        // §4.1.4.3.2: queue_enable cannot be cleared; only a device (or,
        // with VIRTIO_F_RING_RESET, queue) reset disables a queue.
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.write::<u16>(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
    }

    fn notify(&mut self, queue: u16) {
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        let notify_off = self.common.read::<u16>(common::QUEUE_NOTIFY_OFF);
        // §4.1.4.4: cap.offset + queue_notify_off * notify_off_multiplier;
        // a product outside the window is dropped by `write`.
        let offset = u64::from(notify_off) * u64::from(self.notify_multiplier);
        self.notify.write::<u16>(offset, queue);
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.common.read::<u8>(common::DEVICE_STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.common.write::<u8>(common::DEVICE_STATUS, status.bits());
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        let window = self.device.ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        let end = offset.checked_add(buf.len()).ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        if end > window.region.len_bytes() {
            return Err(vireo_virtio::Error::ConfigOutOfRange);
        }
        // §4.1.3.1: a 16- or 32-bit field is read at its natural width;
        // other lengths (and unaligned ones) byte by byte.
        let at = offset as u64;
        match buf.len() {
            2 if offset.is_multiple_of(2) => {
                buf.copy_from_slice(&window.read::<u16>(at).to_le_bytes())
            }
            4 if offset.is_multiple_of(4) => {
                buf.copy_from_slice(&window.read::<u32>(at).to_le_bytes())
            }
            _ => {
                for (index, byte) in buf.iter_mut().enumerate() {
                    *byte = window.read::<u8>(at + index as u64);
                }
            }
        }
        Ok(())
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> vireo_virtio::Result {
        let window = self.device.ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        let end = offset.checked_add(data.len()).ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        if end > window.region.len_bytes() {
            return Err(vireo_virtio::Error::ConfigOutOfRange);
        }
        // §4.1.3.1, as in `read_config`.
        let at = offset as u64;
        match *data {
            [a, b] if offset.is_multiple_of(2) => window.write(at, u16::from_le_bytes([a, b])),
            [a, b, c, d] if offset.is_multiple_of(4) => {
                window.write(at, u32::from_le_bytes([a, b, c, d]))
            }
            _ => {
                for (index, byte) in data.iter().enumerate() {
                    window.write::<u8>(at + index as u64, *byte);
                }
            }
        }
        Ok(())
    }

    fn config_generation(&self) -> u32 {
        u32::from(self.common.read::<u8>(common::CONFIG_GENERATION))
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // §4.1.4.5: reading the ISR status clears it.
        InterruptStatus::from_bits_truncate(u32::from(self.isr.read::<u8>(0)))
    }

    fn has_queue_reset(&self) -> bool {
        // The device's common window may end before `queue_reset` (an
        // older layout): then VIRTIO_F_RING_RESET must not be negotiated.
        self.common.region.len_bytes() as u64 >= common::RESET_LEN
    }

    fn start_queue_reset(&mut self, queue: u16) {
        // §4.1.4.3.2: write 1 to queue_reset of the selected queue.
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.write::<u16>(common::QUEUE_RESET, 1);
    }

    fn queue_reset_done(&mut self, queue: u16) -> bool {
        // §4.1.4.3.2: the reset is complete once queue_reset reads back 0;
        // §4.1.4.3.1: the device then also presents 0 in queue_enable.
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
        self.common.read::<u16>(common::QUEUE_RESET) == 0
            && self.common.read::<u16>(common::QUEUE_ENABLE) == 0
    }
}
