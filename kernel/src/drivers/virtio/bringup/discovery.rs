//! Finding a driver's devices: PCI functions of its type, modern or
//! transitional (§4.1.2), then virtio-mmio windows reporting its type
//! (§4.2.2), and opening their transports.

use super::VirtioDriver;
use super::transport::{KernelTransport, TransportError};
use crate::drivers::virtio::mmio::window::{self, MmioDevice};
use crate::drivers::virtio::pci::{self, VirtioPciError};
use crate::platform::apic::{Polarity, TriggerMode};
use crate::platform::pci::Function;

/// Where a device was found.
#[derive(Debug, Clone, Copy)]
pub enum Location {
    /// A PCI function.
    Pci(&'static Function),
    /// A virtio-mmio window.
    Mmio(&'static MmioDevice),
}

/// How a device's interrupts can reach a CPU.
#[derive(Debug, Clone, Copy)]
pub enum InterruptSource {
    /// MSI-X on this function: a vector per table entry.
    Msix(&'static Function),
    /// One I/O APIC line for the whole device.
    Line {
        /// The global system interrupt.
        gsi: u32,
        /// Edge or level.
        trigger: TriggerMode,
        /// Active high or low.
        polarity: Polarity,
    },
    /// Nothing known: the device can only be polled.
    None,
}

impl Location {
    /// Opens the device's transport.
    ///
    /// # Errors
    /// [`TransportError`] when the device cannot be driven.
    pub fn open(self) -> Result<KernelTransport, TransportError> {
        match self {
            Location::Pci(function) => {
                pci::open(function).map(KernelTransport::Pci).map_err(TransportError::Pci)
            }
            Location::Mmio(device) => {
                device.transport().map(KernelTransport::Mmio).map_err(TransportError::Mmio)
            }
        }
    }

    /// Where its interrupts come from.
    pub fn interrupts(self) -> InterruptSource {
        match self {
            Location::Pci(function) => InterruptSource::Msix(function),
            Location::Mmio(device) => match device.slot.interrupt {
                Some(irq) => InterruptSource::Line {
                    gsi: irq.gsi,
                    trigger: irq.trigger,
                    polarity: irq.polarity,
                },
                None => InterruptSource::None,
            },
        }
    }
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Location::Pci(function) => write!(
                f,
                "PCI {} ({:04x}:{:04x})",
                function.address, function.vendor_id, function.device_id
            ),
            Location::Mmio(device) => write!(f, "virtio-mmio {:#x}", device.slot.phys.as_u64()),
        }
    }
}

/// The PCI functions that are virtio devices of `D`'s type.
pub fn find_functions<D: VirtioDriver>() -> impl Iterator<Item = &'static Function> {
    crate::platform::pci::functions()
        .iter()
        .filter(|function| pci::device_type(function) == Some(D::DEVICE_ID))
}

/// Every device of `D`'s type: PCI functions first, then virtio-mmio.
pub fn find_devices<D: VirtioDriver>() -> impl Iterator<Item = Location> {
    let mmio = window::devices()
        .iter()
        .filter(|device| device.device_type == u32::from(D::DEVICE_ID))
        .map(Location::Mmio);
    find_functions::<D>().map(Location::Pci).chain(mmio)
}

/// The first device of `D`'s type whose transport opens, with it. A device
/// that cannot be opened (a legacy-only function among them) is passed over
/// with a log line saying why, and its error returned if no later one
/// opens. `Ok(None)` when there is no device at all.
///
/// # Errors
/// The last [`TransportError`] when devices were found but none opened.
pub fn open_first<D: VirtioDriver>() -> Result<Option<(Location, KernelTransport)>, TransportError>
{
    let mut last_error = None;
    for location in find_devices::<D>() {
        match location.open() {
            Ok(transport) => return Ok(Some((location, transport))),
            Err(error @ TransportError::Pci(VirtioPciError::LegacyOnly)) => {
                log::warn!(
                    "{}: {location} is a legacy-only virtio device (no VirtIO 1.x capabilities, \
                     §4.1.2.1); vireo drives VirtIO 1.x only: skipped",
                    D::NAME
                );
                last_error = Some(error);
            }
            Err(error) => {
                log::warn!("{}: {location} unusable: {error:?}", D::NAME);
                last_error = Some(error);
            }
        }
    }
    last_error.map_or(Ok(None), Err)
}
