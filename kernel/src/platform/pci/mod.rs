//! PCI: enumeration, BARs, capabilities and MSI-X.
//!
//! The MCFG table gives each segment's ECAM window; buses are mapped (1 MiB
//! of uncached configuration space each) as the scan reaches them. Without
//! an MCFG (QEMU's `pc`), segment 0 is scanned through configuration
//! mechanism #1 if it answers, and not at all if not (QEMU's `microvm`
//! has no PCI). The scan follows PCI-to-PCI bridges to their secondary
//! buses. Everything read from a device is checked before use: unknown
//! header types are skipped, a bus number outside the window is ignored,
//! capability lists are bounded.

pub mod capability;
pub mod config;
pub mod msix;

use crate::mm::{PhysAddr, mmio};
use alloc::vec::Vec;
use config::{ConfigSpace, reg};

/// Where a function sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    /// Segment group.
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub device: u8,
    /// Function (0..8).
    pub function: u8,
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// A memory BAR, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    /// Physical base the firmware assigned.
    pub phys: PhysAddr,
    /// Size in bytes (a power of two).
    pub len_bytes: u64,
    /// Whether the BAR is 64-bit (it then uses the next BAR slot too).
    pub is_64bit: bool,
    /// Whether the region is prefetchable.
    pub is_prefetchable: bool,
}

/// One PCI function found by the scan.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// Where it is.
    pub address: Address,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// Subsystem vendor and device ID (type-0 headers; 0 for bridges),
    /// which name a transitional virtio device's type (VirtIO 1.2 §4.1.2.1).
    pub subsystem: (u16, u16),
    /// Its configuration space.
    pub config: ConfigSpace,
}

/// Why a BAR could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// No such BAR (index ≥ 6, or the upper half of a 64-bit BAR).
    NoSuchBar(u8),
    /// An I/O-space BAR.
    IoSpace,
    /// The BAR is not implemented or was never assigned an address.
    Unassigned,
    /// Configuration space could not be read.
    Config(config::BadOffset),
}

impl From<config::BadOffset> for BarError {
    fn from(error: config::BadOffset) -> Self {
        Self::Config(error)
    }
}

impl Function {
    /// Decodes memory BAR `index` (sizing it with decoding briefly off).
    ///
    /// # Errors
    /// [`BarError`] for I/O, missing or unassigned BARs.
    pub fn memory_bar(&self, index: u8) -> Result<MemoryBar, BarError> {
        if index >= 6 {
            return Err(BarError::NoSuchBar(index));
        }
        let offset = reg::BAR0 + u16::from(index) * 4;
        let low = self.config.read_u32(offset)?;
        if low & 1 != 0 {
            return Err(BarError::IoSpace);
        }
        let is_64bit = (low >> 1) & 0b11 == 0b10;
        if is_64bit && index == 5 {
            return Err(BarError::NoSuchBar(index));
        }
        let high = if is_64bit { self.config.read_u32(offset + 4)? } else { 0 };
        // Size: write all ones, read back the writable bits (PCI Local Bus
        // Specification 3.0 §6.2.5.1), with memory decoding off meanwhile so
        // the device never answers at the probe address.
        let command = self.config.read_u16(reg::COMMAND)?;
        self.config.write_u16(reg::COMMAND, command & !config::command::MEMORY_SPACE)?;
        self.config.write_u32(offset, u32::MAX)?;
        let size_low = self.config.read_u32(offset)?;
        self.config.write_u32(offset, low)?;
        let size_high = if is_64bit {
            self.config.write_u32(offset + 4, u32::MAX)?;
            let size_high = self.config.read_u32(offset + 4)?;
            self.config.write_u32(offset + 4, high)?;
            size_high
        } else {
            u32::MAX
        };
        self.config.write_u16(reg::COMMAND, command)?;
        let mask = (u64::from(size_high) << 32) | u64::from(size_low & !0xf);
        let len_bytes = (!mask).wrapping_add(1);
        let base = (u64::from(high) << 32) | u64::from(low & !0xf);
        if mask == 0 || len_bytes == 0 || base == 0 {
            return Err(BarError::Unassigned);
        }
        Ok(MemoryBar {
            phys: PhysAddr::try_new(base).map_err(|_| BarError::Unassigned)?,
            len_bytes,
            is_64bit,
            is_prefetchable: low & (1 << 3) != 0,
        })
    }

    /// Sets command-register bits (memory decoding, bus mastering, ...).
    ///
    /// # Errors
    /// Only if configuration space is unreadable (never for scanned functions).
    pub fn enable(&self, bits: u16) -> Result<(), config::BadOffset> {
        let command = self.config.read_u16(reg::COMMAND)?;
        self.config.write_u16(reg::COMMAND, command | bits)
    }

    /// The function's capabilities.
    pub fn capabilities(&self) -> impl Iterator<Item = capability::Capability> {
        capability::capabilities(self.config)
    }
}

static FUNCTIONS: spin::Once<Vec<Function>> = spin::Once::new();

const DEVICES_PER_BUS: u8 = 32;
const FUNCTIONS_PER_DEVICE: u8 = 8;
const HEADER_TYPE_MASK: u8 = 0x7f;
const HEADER_MULTIFUNCTION: u8 = 0x80;
const HEADER_PCI_BRIDGE: u8 = 0x01;
const BRIDGE_SECONDARY_BUS: u16 = 0x19;

/// How a scan reaches configuration space.
#[derive(Debug, Clone, Copy)]
enum Mechanism {
    /// One MCFG window.
    Ecam(crate::platform::acpi::PciSegment),
    /// Mechanism #1: segment 0, every bus.
    Ports,
}

struct Scanner {
    mechanism: Mechanism,
    found: Vec<Function>,
    buses_seen: [bool; 256],
}

impl Scanner {
    fn segment(&self) -> u16 {
        match self.mechanism {
            Mechanism::Ecam(segment) => segment.segment,
            Mechanism::Ports => 0,
        }
    }

    /// A function's configuration space on `bus`: through the bus's ECAM
    /// window (mapped here) or the ports. `None` if the bus is outside the
    /// window or cannot be mapped.
    fn bus_config(&self, bus: u8) -> Option<impl Fn(u8, u8) -> Option<ConfigSpace> + use<>> {
        let window = match self.mechanism {
            Mechanism::Ecam(segment) => {
                if bus < segment.bus_start || bus > segment.bus_end {
                    return None;
                }
                let bus_phys = segment.ecam_phys + (u64::from(bus) << 20);
                match mmio::map(bus_phys, 1 << 20) {
                    Ok(window) => Some(window),
                    Err(error) => {
                        log::error!("pci: bus {bus:#x}: cannot map configuration space: {error:?}");
                        return None;
                    }
                }
            }
            Mechanism::Ports => None,
        };
        Some(move |device: u8, function: u8| match &window {
            Some(window) => {
                let offset = (u64::from(device) << 15) | (u64::from(function) << 12);
                // SAFETY: the page lies inside the bus window just mapped
                // uncached, which is never unmapped.
                Some(unsafe { ConfigSpace::new(window.virt() + offset) })
            }
            None => ConfigSpace::ports(bus, device, function),
        })
    }

    fn scan_bus(&mut self, bus: u8) {
        if self.buses_seen[usize::from(bus)] {
            return;
        }
        self.buses_seen[usize::from(bus)] = true;
        let Some(config_of) = self.bus_config(bus) else { return };
        for device in 0..DEVICES_PER_BUS {
            for function in 0..FUNCTIONS_PER_DEVICE {
                let Some(config) = config_of(device, function) else { break };
                let vendor_id = config.read_u16(reg::VENDOR_ID).unwrap_or(0xffff);
                if vendor_id == 0xffff {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let header = config.read_u8(reg::HEADER_TYPE).unwrap_or(0);
                let subsystem = if header & HEADER_TYPE_MASK == 0 {
                    (
                        config.read_u16(reg::SUBSYSTEM_VENDOR_ID).unwrap_or(0),
                        config.read_u16(reg::SUBSYSTEM_ID).unwrap_or(0),
                    )
                } else {
                    (0, 0)
                };
                self.found.push(Function {
                    address: Address { segment: self.segment(), bus, device, function },
                    vendor_id,
                    device_id: config.read_u16(reg::DEVICE_ID).unwrap_or(0xffff),
                    class: (
                        config.read_u8(reg::PROG_IF + 2).unwrap_or(0),
                        config.read_u8(reg::PROG_IF + 1).unwrap_or(0),
                        config.read_u8(reg::PROG_IF).unwrap_or(0),
                    ),
                    subsystem,
                    config,
                });
                if header & HEADER_TYPE_MASK == HEADER_PCI_BRIDGE
                    && let Ok(secondary) = config.read_u8(BRIDGE_SECONDARY_BUS)
                {
                    self.scan_bus(secondary);
                }
                if function == 0 && header & HEADER_MULTIFUNCTION == 0 {
                    break;
                }
            }
        }
    }
}

/// How configuration space was reached, for the log and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Through the MCFG's ECAM windows.
    Ecam,
    /// Through configuration mechanism #1 (no MCFG).
    Ports,
    /// Neither: no MCFG and nothing answers at port 0xCF8.
    None,
}

static ACCESS: spin::Once<Access> = spin::Once::new();

/// Scans every ECAM segment once, or segment 0 through the ports without
/// an MCFG; later calls return the same list.
pub fn init() -> &'static [Function] {
    FUNCTIONS.call_once(|| {
        let segments = &crate::platform::acpi::platform().pci_segments;
        let mechanisms: Vec<Mechanism> = if !segments.is_empty() {
            segments.iter().copied().map(Mechanism::Ecam).collect()
        } else if config::has_port_mechanism() {
            alloc::vec![Mechanism::Ports]
        } else {
            Vec::new()
        };
        let access = match mechanisms.first() {
            Some(Mechanism::Ecam(_)) => Access::Ecam,
            Some(Mechanism::Ports) => Access::Ports,
            None => Access::None,
        };
        ACCESS.call_once(|| access);
        let mut found = Vec::new();
        for mechanism in mechanisms {
            let first_bus = match mechanism {
                Mechanism::Ecam(segment) => segment.bus_start,
                Mechanism::Ports => 0,
            };
            let mut scanner = Scanner { mechanism, found: Vec::new(), buses_seen: [false; 256] };
            scanner.scan_bus(first_bus);
            found.append(&mut scanner.found);
        }
        for function in &found {
            log::debug!(
                "pci: {} {:04x}:{:04x} class {:02x}{:02x}{:02x}",
                function.address,
                function.vendor_id,
                function.device_id,
                function.class.0,
                function.class.1,
                function.class.2
            );
        }
        match access {
            Access::Ecam => log::info!("pci: {} functions (ECAM)", found.len()),
            Access::Ports => {
                log::info!(
                    "pci: {} functions (no MCFG: configuration ports 0xCF8/0xCFC)",
                    found.len()
                )
            }
            Access::None => log::info!("pci: none (no MCFG, and nothing answers at port 0xCF8)"),
        }
        found
    })
}

/// How [`init`] reached configuration space (`None` before it ran).
pub fn access() -> Option<Access> {
    ACCESS.get().copied()
}

/// The functions found by `init` (empty before it).
pub fn functions() -> &'static [Function] {
    FUNCTIONS.get().map_or(&[], Vec::as_slice)
}

mod tests;
