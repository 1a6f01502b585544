//! The modern virtio-pci transport (VirtIO 1.2 §4.1) over a small
//! [`PciFunction`] trait: the kernel gives config-space reads (ECAM, port
//! I/O, a hypercall) and maps BAR ranges; the capability walk, every
//! bounds check and the register protocol are here.
//!
//! The device describes its register blocks with vendor-specific
//! capabilities (§4.1.4): common configuration, notifications, ISR status,
//! device-specific configuration, each a range of one BAR. All of it comes
//! from the device, so the walk is bounded, every capability is checked
//! before its range is mapped, and every register access is checked
//! against its window ([`RegisterWindow`]'s contract).

use super::window::{self, RegisterWindow};
use super::{DeviceStatus, InterruptStatus, NO_VECTOR, Notifier, QueueNotifiers, Transport};
use crate::hal::PhysAddr;
use crate::reset::DeviceId;
use crate::{Error, Result};

/// What the transport needs from the kernel for one PCI function.
pub trait PciFunction {
    /// The kernel's mapping of a BAR range.
    type Window: RegisterWindow;

    /// Reads 8 bits of the function's configuration space at `offset`.
    fn config_u8(&self, offset: u8) -> u8;
    /// Reads 16 bits (little-endian, aligned) at `offset`.
    fn config_u16(&self, offset: u8) -> u16;
    /// Reads 32 bits (little-endian, aligned) at `offset`.
    fn config_u32(&self, offset: u8) -> u32;

    /// Maps `length` bytes at `offset` into memory BAR `bar`; `None` if the
    /// BAR is absent, not a memory BAR, or the range does not fit inside it
    /// (the caller checks nothing more: the values come from the device).
    fn map_bar(&mut self, bar: u8, offset: u32, length: u32) -> Option<Self::Window>;
}

/// `cfg_type` values of the virtio capabilities (§4.1.4).
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
}

/// Common configuration registers (§4.1.4.3, `virtio_pci_common_cfg`).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const CONFIG_MSIX_VECTOR: usize = 0x10;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Bytes up to and including `queue_device`.
    pub const MIN_LEN: u32 = 0x38;
    /// `queue_reset` (after `queue_notify_data` at 0x38), 1.2 layout only.
    pub const QUEUE_RESET: usize = 0x3a;
    /// Bytes up to and including `queue_reset`.
    pub const RESET_LEN: usize = 0x3c;
}

/// PCI capability list (PCI Local Bus 3.0 §6.7): status bit, list head.
const STATUS: u8 = 0x06;
const STATUS_CAPABILITIES: u16 = 1 << 4;
const CAPABILITIES_POINTER: u8 = 0x34;
const VENDOR_SPECIFIC: u8 = 0x09;
/// Most capabilities 192 bytes of 4-aligned entries past the header hold:
/// a longer (looping) list is cut there.
const MAX_CAPABILITIES: usize = 48;

/// Why a function cannot be driven as a modern virtio-pci device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// A required capability (this `cfg_type`) is missing.
    MissingCapability(u8),
    /// A capability of this `cfg_type` is too short or names a range its
    /// BAR does not hold.
    BadCapability(u8),
}

/// A parsed `struct virtio_pci_cap` (§4.1.4).
#[derive(Clone, Copy, Debug)]
struct VirtioCap {
    cfg_type: u8,
    bar: u8,
    offset: u32,
    length: u32,
    /// Where the capability sits in configuration space.
    position: u8,
}

/// The first vendor-specific capability of type `wanted` (§4.1.4.1: the
/// driver uses the first one of each type it knows).
fn find<F: PciFunction>(function: &F, wanted: u8) -> Option<VirtioCap> {
    if function.config_u16(STATUS) & STATUS_CAPABILITIES == 0 {
        return None;
    }
    let mut position = function.config_u8(CAPABILITIES_POINTER) & 0xfc;
    for _ in 0..MAX_CAPABILITIES {
        if position < 0x40 {
            return None; // 0 ends the list; the header is never a capability
        }
        let id = function.config_u8(position);
        let next = function.config_u8(position.wrapping_add(1)) & 0xfc;
        // §4.1.4: cap_len covers at least the 16-byte generic part, which
        // must fit in configuration space.
        let len = function.config_u8(position.wrapping_add(2));
        if id == VENDOR_SPECIFIC && len >= 16 && position <= 0xff - 15 {
            let cap = VirtioCap {
                cfg_type: function.config_u8(position + 3),
                bar: function.config_u8(position + 4),
                offset: function.config_u32(position + 8),
                length: function.config_u32(position + 12),
                position,
            };
            if cap.cfg_type == wanted {
                return Some(cap);
            }
        }
        position = next;
    }
    None
}

fn map<F: PciFunction>(
    function: &mut F,
    cap: VirtioCap,
    min_len: u32,
) -> core::result::Result<F::Window, PciError> {
    let bad = PciError::BadCapability(cap.cfg_type);
    if cap.length < min_len {
        return Err(bad);
    }
    // The window checks every access against its own length, so even a
    // short mapping could not reach outside it.
    function.map_bar(cap.bar, cap.offset, cap.length).ok_or(bad)
}

/// A modern virtio-pci device.
#[derive(Debug)]
pub struct PciTransport<W: RegisterWindow> {
    id: DeviceId,
    common: W,
    notify: W,
    notify_multiplier: u32,
    isr: W,
    device: Option<W>,
}

impl<W: RegisterWindow> PciTransport<W> {
    /// Finds and maps the device's register blocks. `id` names the device
    /// instance (e.g. its segment/bus/device/function), as
    /// [`Transport::device_id`] requires. Enabling memory decoding and bus
    /// mastering, and checking the vendor and device ids, are the caller's.
    ///
    /// # Errors
    ///
    /// [`PciError`] when a required capability is missing or unusable.
    pub fn new<F: PciFunction<Window = W>>(
        function: &mut F,
        id: DeviceId,
    ) -> core::result::Result<Self, PciError> {
        let required = |function: &F, t| find(function, t).ok_or(PciError::MissingCapability(t));
        let common_cap = required(function, cfg_type::COMMON)?;
        let notify_cap = required(function, cfg_type::NOTIFY)?;
        let isr_cap = required(function, cfg_type::ISR)?;
        // §4.1.4.4: notify_off_multiplier follows the generic capability,
        // so the notify capability is at least 20 bytes.
        if notify_cap.position > 0xff - 19 || function.config_u8(notify_cap.position + 2) < 20 {
            return Err(PciError::BadCapability(cfg_type::NOTIFY));
        }
        let notify_multiplier = function.config_u32(notify_cap.position + 16);
        let common = map(function, common_cap, common::MIN_LEN)?;
        let notify = map(function, notify_cap, 2)?;
        let isr = map(function, isr_cap, 1)?;
        let device = match find(function, cfg_type::DEVICE) {
            Some(cap) => Some(map(function, cap, 1)?),
            None => None,
        };
        Ok(Self { id, common, notify, notify_multiplier, isr, device })
    }

    /// Number of queues the device offers (`num_queues`, §4.1.4.3).
    pub fn num_queues(&self) -> u16 {
        self.common.read_u16(common::NUM_QUEUES)
    }

    fn select(&self, queue: u16) {
        self.common.write_u16(common::QUEUE_SELECT, queue);
    }

    /// §4.1.3.1: 64-bit fields as two 32-bit accesses, low first.
    fn write_u64(&self, at: usize, value: u64) {
        self.common.write_u32(at, value as u32);
        self.common.write_u32(at + 4, (value >> 32) as u32);
    }

    /// Offset of queue `queue`'s doorbell in the notify window (§4.1.4.4:
    /// `queue_notify_off * notify_off_multiplier`), if it lies inside.
    fn doorbell(&self, queue: u16) -> Option<usize> {
        self.select(queue);
        let notify_off = self.common.read_u16(common::QUEUE_NOTIFY_OFF);
        let offset = u64::from(notify_off) * u64::from(self.notify_multiplier);
        let offset = usize::try_from(offset).ok()?;
        (offset.is_multiple_of(2) && offset.checked_add(2)? <= self.notify.len()).then_some(offset)
    }
}

/// §4.1.5.1.2: the device reads back what it kept (`NO_VECTOR` if it
/// could not use the entry).
fn kept(asked: u16, read_back: u16) -> Result {
    if asked == read_back { Ok(()) } else { Err(Error::VectorRefused) }
}

// SAFETY: 1. the caller of `new` names the instance; 2. `reset` is the
// provided one: device_status reads back 0 only once the reset completed
// (§4.1.4.3.2), after which the device uses no buffers (§2.4); 3. a queue
// reset is reported done only when queue_reset and queue_enable both read
// 0 (§4.1.4.3.1-2, §2.6.1); 4. `queue_set` writes exactly the addresses
// given, through windows that promise faithful accesses, and nothing else
// programs addresses; 5. `reset` is not overridden.
unsafe impl<W: RegisterWindow> Transport for PciTransport<W> {
    fn device_id(&self) -> DeviceId {
        self.id
    }

    fn read_device_features(&mut self) -> u64 {
        window::read_features(&self.common, common::DEVICE_FEATURE_SELECT, common::DEVICE_FEATURE)
    }

    fn write_driver_features(&mut self, features: u64) {
        let (select, word) = (common::DRIVER_FEATURE_SELECT, common::DRIVER_FEATURE);
        window::write_features(&self.common, select, word, features);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        if queue >= self.num_queues() {
            return 0;
        }
        self.select(queue);
        self.common.read_u16(common::QUEUE_SIZE)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.select(queue);
        self.common.read_u16(common::QUEUE_ENABLE) != 0
    }

    unsafe fn queue_set(
        &mut self,
        queue: u16,
        size: u16,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        // §4.1.5.1.3: select, size, the three addresses, then enable.
        self.select(queue);
        self.common.write_u16(common::QUEUE_SIZE, size);
        self.write_u64(common::QUEUE_DESC, descriptors);
        self.write_u64(common::QUEUE_DRIVER, driver_area);
        self.write_u64(common::QUEUE_DEVICE, device_area);
        self.common.write_u16(common::QUEUE_ENABLE, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        // §4.1.4.3.2: queue_enable cannot be cleared; only a device (or
        // queue) reset disables a queue. Silence it at least.
        self.select(queue);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
    }

    fn notify(&mut self, queue: u16) {
        // A doorbell outside the window is dropped (a lying device).
        if let Some(offset) = self.doorbell(queue) {
            self.notify.write_u16(offset, queue);
        }
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.common.read_u8(common::DEVICE_STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.common.write_u8(common::DEVICE_STATUS, status.bits());
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) -> Result {
        let device = self.device.as_ref().ok_or(Error::ConfigOutOfRange)?;
        window::read_config(device, 0, offset, buf)
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> Result {
        let device = self.device.as_ref().ok_or(Error::ConfigOutOfRange)?;
        window::write_config(device, 0, offset, data)
    }

    fn config_generation(&self) -> u32 {
        u32::from(self.common.read_u8(common::CONFIG_GENERATION))
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // §4.1.4.5: reading the ISR status clears it.
        InterruptStatus::from_bits_truncate(u32::from(self.isr.read_u8(0)))
    }

    fn set_config_vector(&mut self, entry: u16) -> Result {
        self.common.write_u16(common::CONFIG_MSIX_VECTOR, entry);
        kept(entry, self.common.read_u16(common::CONFIG_MSIX_VECTOR))
    }

    fn set_queue_vector(&mut self, queue: u16, entry: u16) -> Result {
        self.select(queue);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, entry);
        kept(entry, self.common.read_u16(common::QUEUE_MSIX_VECTOR))
    }

    fn has_queue_reset(&self) -> bool {
        // A common window ending before `queue_reset` is an older layout:
        // then VIRTIO_F_RING_RESET must not be negotiated.
        self.common.len() >= common::RESET_LEN
    }

    fn start_queue_reset(&mut self, queue: u16) {
        self.select(queue);
        self.common.write_u16(common::QUEUE_RESET, 1);
    }

    fn queue_reset_done(&mut self, queue: u16) -> bool {
        self.select(queue);
        self.common.read_u16(common::QUEUE_RESET) == 0
            && self.common.read_u16(common::QUEUE_ENABLE) == 0
    }
}

/// Rings one virtio-pci queue's doorbell, resolved once, with one 16-bit
/// write of the queue index (§4.1.4.4): no select register, so notifiers
/// of one device may ring at once.
#[derive(Clone, Debug)]
pub struct PciNotifier<W> {
    window: W,
    offset: usize,
    queue: u16,
}

impl<W> PciNotifier<W> {
    /// The notify window the doorbell is in.
    pub fn window(&self) -> &W {
        &self.window
    }

    /// The doorbell's offset in [`PciNotifier::window`]: inside it and
    /// 2-aligned (checked when the notifier was made), for a kernel that
    /// rings it through its own mapping.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<W: RegisterWindow> Notifier for PciNotifier<W> {
    fn queue(&self) -> u16 {
        self.queue
    }
    fn notify(&self) {
        self.window.write_u16(self.offset, self.queue);
    }
}

impl<W: RegisterWindow + Clone + Send + Sync> QueueNotifiers for PciTransport<W> {
    type Notifier = PciNotifier<W>;
    fn notifier(&mut self, queue: u16) -> Result<PciNotifier<W>> {
        if queue >= self.num_queues() {
            return Err(Error::QueueUnavailable);
        }
        let offset = self.doorbell(queue).ok_or(Error::QueueUnavailable)?;
        Ok(PciNotifier { window: self.notify.clone(), offset, queue })
    }
}
