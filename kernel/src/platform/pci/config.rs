//! One PCI function's configuration space, reached through ECAM (PCI
//! Express Base Specification §7.2.2: bus << 20 | device << 15 |
//! function << 12 from the MCFG window's base).
//!
//! Every access is a volatile read or write of the uncached ECAM mapping.
//! Offsets are checked against the 4 KiB space, so a bad offset read from a
//! device (a capability pointer, say) yields an error value, never an access
//! outside the function's page.

use crate::mm::VirtAddr;

/// Bytes of one function's ECAM configuration space.
pub const CONFIG_SPACE_BYTES: u16 = 4096;

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
    base: VirtAddr,
}

impl ConfigSpace {
    /// # Safety
    /// `base` must be the uncached mapping of one function's 4 KiB ECAM
    /// page, valid for the kernel's lifetime.
    pub unsafe fn new(base: VirtAddr) -> Self {
        Self { base }
    }

    fn checked(&self, offset: u16, width: u16) -> Result<*mut u8, BadOffset> {
        if !offset.is_multiple_of(width) || offset.saturating_add(width) > CONFIG_SPACE_BYTES {
            return Err(BadOffset(offset));
        }
        Ok((self.base + u64::from(offset)).as_mut_ptr())
    }

    /// Reads a u8.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` lies outside the space.
    pub fn read_u8(&self, offset: u16) -> Result<u8, BadOffset> {
        let pointer = self.checked(offset, 1)?;
        // SAFETY: inside the function's mapped page (checked).
        Ok(unsafe { pointer.read_volatile() })
    }

    /// Reads a naturally aligned u16.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn read_u16(&self, offset: u16) -> Result<u16, BadOffset> {
        let pointer = self.checked(offset, 2)?;
        // SAFETY: aligned and inside the function's mapped page (checked).
        Ok(unsafe { pointer.cast::<u16>().read_volatile() })
    }

    /// Reads a naturally aligned u32.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn read_u32(&self, offset: u16) -> Result<u32, BadOffset> {
        let pointer = self.checked(offset, 4)?;
        // SAFETY: aligned and inside the function's mapped page (checked).
        Ok(unsafe { pointer.cast::<u32>().read_volatile() })
    }

    /// Writes a naturally aligned u16.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn write_u16(&self, offset: u16, value: u16) -> Result<(), BadOffset> {
        let pointer = self.checked(offset, 2)?;
        // SAFETY: aligned and inside the function's mapped page (checked);
        // configuration writes only affect this function.
        unsafe { pointer.cast::<u16>().write_volatile(value) };
        Ok(())
    }

    /// Writes a naturally aligned u32.
    ///
    /// # Errors
    /// [`BadOffset`] when `offset` is unaligned or outside the space.
    pub fn write_u32(&self, offset: u16, value: u32) -> Result<(), BadOffset> {
        let pointer = self.checked(offset, 4)?;
        // SAFETY: as for `write_u16`.
        unsafe { pointer.cast::<u32>().write_volatile(value) };
        Ok(())
    }
}
