//! The modern virtio-pci transport (VirtIO 1.2 §4.1).
//!
//! Both modern (device id 0x1040 + type) and transitional (0x1000..0x103f,
//! type in the subsystem id) functions are driven here, always through
//! the modern capabilities (§4.1.2.1: a transitional device has them as
//! well as its legacy I/O BAR); a transitional function without them is a
//! legacy-only device, which vireo does not drive.
//!
//! The register protocol, the capability walk (§4.1.4) and every bounds
//! check are the crate's (`vireo_virtio::transport::pci`); the kernel gives
//! it the function's configuration space and maps the BAR ranges the
//! capabilities name (checked to lie inside their BAR first: the values
//! come from the device), enables the function, and turns the crate's
//! doorbells into kernel [`QueueNotifier`]s.

pub use super::notifier::QueueNotifier;
use super::window::KernelWindow;
use crate::mm::mmio;
use crate::platform::pci::config::command;
use crate::platform::pci::{BarError, Function};
use vireo_virtio::DeviceId;
use vireo_virtio::transport::QueueNotifiers;
use vireo_virtio::transport::pci::{PciError, PciFunction, PciTransport, cfg_type};

/// "No MSI-X vector" (§4.1.4.3).
pub use vireo_virtio::transport::NO_VECTOR;

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
    /// The function's command register could not be written.
    Enable,
}

/// The kernel's virtio-pci transport: the crate's, over kernel windows.
pub type VirtioPci = PciTransport<KernelWindow>;

/// A function's configuration space and BARs as the crate's transport asks
/// for them. Remembers why a BAR could not be mapped, so the caller gets
/// the kernel's reason rather than only "bad capability".
struct KernelFunction<'a> {
    function: &'a Function,
    map_error: Option<VirtioPciError>,
}

impl PciFunction for KernelFunction<'_> {
    type Window = KernelWindow;

    // A read the configuration space refuses reads as all-ones, as from a
    // missing device; the crate's walk stops on it.
    fn config_u8(&self, offset: u8) -> u8 {
        self.function.config.read_u8(offset.into()).unwrap_or(u8::MAX)
    }
    fn config_u16(&self, offset: u8) -> u16 {
        self.function.config.read_u16(offset.into()).unwrap_or(u16::MAX)
    }
    fn config_u32(&self, offset: u8) -> u32 {
        self.function.config.read_u32(offset.into()).unwrap_or(u32::MAX)
    }

    fn map_bar(&mut self, bar: u8, offset: u32, length: u32) -> Option<KernelWindow> {
        let bar = match self.function.memory_bar(bar) {
            Ok(bar) => bar,
            Err(error) => {
                self.map_error = Some(VirtioPciError::Bar(error));
                return None;
            }
        };
        // The capability's range must lie inside its BAR (§4.1.4).
        if u64::from(offset) + u64::from(length) > bar.len_bytes {
            return None;
        }
        match mmio::map(bar.phys + u64::from(offset), length as usize) {
            Ok(region) => Some(KernelWindow::new(region)),
            Err(error) => {
                self.map_error = Some(VirtioPciError::Map(error));
                None
            }
        }
    }
}

/// Finds and maps the device's register windows and enables memory
/// decoding and bus mastering. The device id is the function's PCI
/// address, packed: the same for every transport of that function and
/// unique among functions (below 2^32, so never a virtio-mmio id).
///
/// # Errors
/// [`VirtioPciError`] when the function is not a usable modern device.
pub fn open(function: &Function) -> Result<VirtioPci, VirtioPciError> {
    if device_type(function).is_none() {
        return Err(VirtioPciError::NotVirtio);
    }
    let a = function.address;
    let packed = u64::from(a.segment) << 16
        | u64::from(a.bus) << 8
        | u64::from(a.device) << 3
        | u64::from(a.function);
    let mut access = KernelFunction { function, map_error: None };
    let transport = PciTransport::new(&mut access, DeviceId::new(packed)).map_err(|error| {
        match (error, access.map_error) {
            // §4.1.2.1: a transitional device has the modern capabilities
            // as well as its legacy BAR; without them it is legacy-only.
            (PciError::MissingCapability(cfg_type::COMMON), _) if is_transitional(function) => {
                VirtioPciError::LegacyOnly
            }
            (_, Some(map_error)) => map_error,
            (PciError::MissingCapability(kind), None) => VirtioPciError::MissingCapability(kind),
            (PciError::BadCapability(kind), None) => VirtioPciError::BadCapability(kind),
        }
    })?;
    function
        .enable(command::MEMORY_SPACE | command::BUS_MASTER)
        .map_err(|_| VirtioPciError::Enable)?;
    Ok(transport)
}

/// A handle that notifies queue `queue` without borrowing the transport,
/// so each queue can kick under its own lock. `None` if the queue does not
/// exist or its doorbell lies outside the notify window (the crate checks).
pub fn queue_notifier(transport: &mut VirtioPci, queue: u16) -> Option<QueueNotifier> {
    let doorbell = QueueNotifiers::notifier(transport, queue).ok()?;
    let address = doorbell.window().register(doorbell.offset(), 2)?;
    // SAFETY: an aligned u16 register inside the mapped, uncached notify
    // window (checked by the crate and again by `register`), never unmapped.
    Some(unsafe { QueueNotifier::new_u16(address, queue) })
}
