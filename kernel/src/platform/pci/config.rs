//! One PCI function's configuration space, through either of the two
//! access mechanisms, behind one interface:
//! - ECAM (PCI Express Base Specification §7.2.2: bus << 20 | device << 15
//!   | function << 12 from the MCFG window's base): volatile reads and
//!   writes of an uncached mapping, 4 KiB per function;
//! - configuration mechanism #1 (PCI Local Bus Specification 3.0 §3.2.2.3.2:
//!   an address written to port 0xCF8, data through ports 0xCFC..0xCFF),
//!   for machines whose ACPI tables have no MCFG (QEMU's `pc`, i440FX): the
//!   first 256 bytes only, the address/data pair serialised by one lock.
//!
//! Offsets are checked against the space the mechanism reaches, so a bad
//! offset read from a device (a capability pointer, say) yields an error
//! value, never an access outside the function.

use crate::mm::VirtAddr;
use crate::sync::IrqSpinLock;
use x86_64::instructions::port::Port;

/// Bytes of one function's ECAM configuration space.
pub const CONFIG_SPACE_BYTES: u16 = 4096;
/// Bytes mechanism #1 reaches: the PCI-compatible space.
pub const LEGACY_CONFIG_SPACE_BYTES: u16 = 256;

/// Standard type-0 header registers (PCI Local Bus Specification 3.0 §6.1).
pub mod reg {
    /// Vendor ID (u16).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (u16).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command (u16).
    pub const COMMAND: u16 = 0x04;
    /// Status (u16).
    pub const STATUS: u16 = 0x06;
    /// Class code: programming interface, subclass, class (u8 each).
    pub const PROG_IF: u16 = 0x09;
    /// Header type (u8); bit 7 = multi-function device.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// First base address register (u32); six of them in a type-0 header.
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor ID (u16, type-0 header).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    /// Subsystem ID (u16, type-0 header).
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    /// Capabilities pointer (u8).
    pub const CAPABILITIES_POINTER: u16 = 0x34;
}

/// Command register bits.
pub mod command {
    /// Respond to memory-space accesses (BARs).
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Allow the function to master the bus (DMA, MSI writes).
    pub const BUS_MASTER: u16 = 1 << 2;
}

/// Status register: the capability list is valid.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// A configuration-space offset that does not fit the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOffset(pub u16);

/// A function's configuration space.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace {
    access: Access,
}

#[derive(Debug, Clone, Copy)]
enum Access {
    /// The function's 4 KiB ECAM page.
    Ecam(VirtAddr),
    /// Mechanism #1's address of the function (bus, device, function in
    /// bits 23:8, enable bit set), register bits clear.
    Ports(u32),
}

/// Mechanism #1's address and data ports.
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// Bit 31 of CONFIG_ADDRESS: the cycle is a configuration access.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Serialises mechanism #1: the address written to 0xCF8 must still be
/// there when 0xCFC is accessed.
static PORTS: IrqSpinLock<()> = IrqSpinLock::new(());

/// Whether mechanism #1 answers: 0xCF8 keeps the enable bit written to it
/// (as Linux's `pci_check_type1` tests). On machines without PCI (QEMU
/// `microvm`) the port reads all ones.
pub fn has_port_mechanism() -> bool {
    let mut address = Port::<u32>::new(CONFIG_ADDRESS);
    let _guard = PORTS.lock();
    // SAFETY: 0xCF8 is the configuration address register, which only
    // this module uses, under `PORTS`; the old value is put back.
    unsafe {
        let saved = address.read();
        address.write(CONFIG_ENABLE);
        let kept = address.read() == CONFIG_ENABLE;
        address.write(saved);
        kept
    }
}

/// A configuration access of `width` bytes the mechanism can make.
trait Width: Copy {
    const BYTES: u16;
    /// # Safety
    /// `pointer` is inside a mapped ECAM page and aligned.
    unsafe fn read_mmio(pointer: *mut u8) -> Self;
    /// # Safety
    /// As for `read_mmio`.
    unsafe fn write_mmio(pointer: *mut u8, value: Self);
    /// # Safety
    /// The caller holds `PORTS` and has selected the dword.
    unsafe fn read_port(port: u16) -> Self;
    /// # Safety
    /// As for `read_port`.
    unsafe fn write_port(port: u16, value: Self);
}

macro_rules! width {
    ($type:ty) => {
        impl Width for $type {
            const BYTES: u16 = size_of::<$type>() as u16;
            unsafe fn read_mmio(pointer: *mut u8) -> Self {
                // SAFETY: the caller's promise.
                unsafe { pointer.cast::<$type>().read_volatile() }
            }
            unsafe fn write_mmio(pointer: *mut u8, value: Self) {
                // SAFETY: the caller's promise.
                unsafe { pointer.cast::<$type>().write_volatile(value) }
            }
            unsafe fn read_port(port: u16) -> Self {
                // SAFETY: the caller's promise; data-port reads have no
                // effect beyond the configuration read.
                unsafe { Port::<$type>::new(port).read() }
            }
            unsafe fn write_port(port: u16, value: Self) {
                // SAFETY: the caller's promise.
                unsafe { Port::<$type>::new(port).write(value) }
            }
        }
    };
}
width!(u8);
width!(u16);
width!(u32);

impl ConfigSpace {
    /// The function's space through ECAM.
    ///
    /// # Safety
    /// `base` must be the uncached mapping of one function's 4 KiB ECAM
    /// page, valid for the kernel's lifetime.
    pub unsafe fn new(base: VirtAddr) -> Self {
        Self { access: Access::Ecam(base) }
    }

    /// The function's space through mechanism #1 (see
    /// [`has_port_mechanism`]); `None` for device ≥ 32 or function ≥ 8.
    pub fn ports(bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then(|| Self {
            access: Access::Ports(
                CONFIG_ENABLE
                    | u32::from(bus) << 16
                    | u32::from(device) << 11
                    | u32::from(function) << 8,
            ),
        })
    }

    /// Bytes of configuration space this mechanism reaches.
    pub fn len_bytes(&self) -> u16 {
        match self.access {
            Access::Ecam(_) => CONFIG_SPACE_BYTES,
            Access::Ports(_) => LEGACY_CONFIG_SPACE_BYTES,
        }
    }

    fn check<W: Width>(&self, offset: u16) -> Result<(), BadOffset> {
        let fits = offset.checked_add(W::BYTES).is_some_and(|end| end <= self.len_bytes());
        if offset.is_multiple_of(W::BYTES) && fits { Ok(()) } else { Err(BadOffset(offset)) }
    }

    fn read<W: Width>(&self, offset: u16) -> Result<W, BadOffset> {
        self.check::<W>(offset)?;
        Ok(match self.access {
            // SAFETY: aligned and inside the function's mapped page (checked).
            Access::Ecam(base) => unsafe { W::read_mmio((base + u64::from(offset)).as_mut_ptr()) },
            Access::Ports(address) => {
                let _guard = PORTS.lock();
                // SAFETY: `PORTS` is held; the dword holding `offset` is
                // selected, and the data port for its byte lane read.
                unsafe {
                    Port::<u32>::new(CONFIG_ADDRESS).write(address | u32::from(offset & !3));
                    W::read_port(CONFIG_DATA + (offset & 3))
                }
            }
        })
    }

    fn write<W: Width>(&self, offset: u16, value: W) -> Result<(), BadOffset> {
        self.check::<W>(offset)?;
        match self.access {
            // SAFETY: aligned and inside the function's mapped page
            // (checked); configuration writes only affect this function.
            Access::Ecam(base) => unsafe {
                W::write_mmio((base + u64::from(offset)).as_mut_ptr(), value)
            },
            Access::Ports(address) => {
                let _guard = PORTS.lock();
                // SAFETY: as in `read`; the write reaches only this function.
                unsafe {
                    Port::<u32>::new(CONFIG_ADDRESS).write(address | u32::from(offset & !3));
                    W::write_port(CONFIG_DATA + (offset & 3), value);
                }
            }
        }
        Ok(())
    }

    /// Reads a u8.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` lies outside the space.
    pub fn read_u8(&self, offset: u16) -> Result<u8, BadOffset> {
        self.read(offset)
    }

    /// Reads a naturally aligned u16.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn read_u16(&self, offset: u16) -> Result<u16, BadOffset> {
        self.read(offset)
    }

    /// Reads a naturally aligned u32.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn read_u32(&self, offset: u16) -> Result<u32, BadOffset> {
        self.read(offset)
    }

    /// Writes a naturally aligned u16.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn write_u16(&self, offset: u16, value: u16) -> Result<(), BadOffset> {
        self.write(offset, value)
    }

    /// Writes a naturally aligned u32.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn write_u32(&self, offset: u16, value: u32) -> Result<(), BadOffset> {
        self.write(offset, value)
    }
}
