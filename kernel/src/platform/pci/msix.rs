//! MSI-X (PCI Local Bus Specification 3.0 §6.8.2): per-vector messages
//! written by the device straight to a local APIC.
//!
//! On x86 a message is a write of `vector` to `0xfee0_0000 | apic_id << 12`
//! (Intel SDM Vol. 3A §11.11: physical destination, fixed delivery, edge).
//! The table lives in one of the function's BARs; vireo maps it uncached.

use super::Function;
use super::capability::id;
use crate::mm::{PAGE_SIZE, mmio};

const MESSAGE_CONTROL: u16 = 2;
const TABLE_OFFSET_BIR: u16 = 4;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const CONTROL_TABLE_SIZE_MASK: u16 = 0x7ff;
const ENTRY_BYTES: u64 = 16;
const VECTOR_CONTROL_MASKED: u32 = 1;
const MSI_ADDRESS_BASE: u32 = 0xfee0_0000;

/// Why MSI-X cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixError {
    /// The function has no MSI-X capability.
    NotSupported,
    /// The table's BAR is unusable.
    Bar(super::BarError),
    /// The table does not fit inside its BAR.
    TableOutsideBar,
    /// Mapping the table failed.
    Map(crate::mm::paging::MapError),
    /// An entry index beyond the table.
    NoSuchEntry(u16),
    /// An APIC id that a plain MSI address cannot reach (> 255).
    DestinationTooHigh(u32),
    /// Configuration space could not be accessed.
    Config(super::config::BadOffset),
}

impl From<super::config::BadOffset> for MsixError {
    fn from(error: super::config::BadOffset) -> Self {
        Self::Config(error)
    }
}

/// The MSI-X capability of `function` and its table size (§6.8.2.3:
/// Message Control holds the size minus one).
fn capability_and_size(
    function: &Function,
) -> Result<(super::capability::Capability, u16), MsixError> {
    let capability = function
        .capabilities()
        .find(|capability| capability.id == id::MSI_X)
        .ok_or(MsixError::NotSupported)?;
    let control = function.config.read_u16(capability.offset + MESSAGE_CONTROL)?;
    Ok((capability, (control & CONTROL_TABLE_SIZE_MASK) + 1))
}

/// A function's MSI-X table.
#[derive(Debug)]
pub struct MsiX {
    function: Function,
    capability_offset: u16,
    table: mmio::MmioRegion,
    table_size: u16,
}

impl MsiX {
    /// Finds and maps the MSI-X table of `function`. All entries are masked
    /// and MSI-X stays disabled until [`MsiX::enable`].
    ///
    /// # Errors
    /// [`MsixError`] when the capability is missing or its table unusable.
    pub fn new(function: &Function) -> Result<Self, MsixError> {
        let (capability, table_size) = capability_and_size(function)?;
        let config = function.config;
        let table_location = config.read_u32(capability.offset + TABLE_OFFSET_BIR)?;
        let bar = function.memory_bar((table_location & 0x7) as u8).map_err(MsixError::Bar)?;
        let table_offset = u64::from(table_location & !0x7);
        let table_bytes = u64::from(table_size) * ENTRY_BYTES;
        if table_offset + table_bytes > bar.len_bytes {
            return Err(MsixError::TableOutsideBar);
        }
        let table =
            mmio::map(bar.phys + table_offset, table_bytes.next_multiple_of(PAGE_SIZE) as usize)
                .map_err(MsixError::Map)?;
        let msix =
            Self { function: *function, capability_offset: capability.offset, table, table_size };
        for entry in 0..table_size {
            msix.write_entry_word(entry, 3, VECTOR_CONTROL_MASKED);
        }
        Ok(msix)
    }

    /// Entries in the table.
    pub fn table_size(&self) -> u16 {
        self.table_size
    }

    /// Entries in `function`'s table, read from its capability alone:
    /// cheaper than [`MsiX::new`], whose BAR sizing briefly turns memory
    /// decoding off (which QEMU pays for with a remap of guest memory).
    ///
    /// # Errors
    /// [`MsixError::NotSupported`] without the capability.
    pub fn table_size_of(function: &Function) -> Result<u16, MsixError> {
        capability_and_size(function).map(|(_, size)| size)
    }

    /// Whether MSI-X is enabled on `function`, read from its capability
    /// alone: unlike [`MsiX::new`], which masks every entry, this changes
    /// nothing.
    pub fn is_enabled_on(function: &Function) -> bool {
        capability_and_size(function).is_ok_and(|(capability, _)| {
            function
                .config
                .read_u16(capability.offset + MESSAGE_CONTROL)
                .is_ok_and(|control| control & CONTROL_ENABLE != 0)
        })
    }

    fn entry_word(&self, entry: u16, word: u64) -> *mut u32 {
        (self.table.virt() + u64::from(entry) * ENTRY_BYTES + word * 4).as_mut_ptr()
    }

    fn write_entry_word(&self, entry: u16, word: u64, value: u32) {
        // SAFETY: `entry < table_size` (callers check) and the table was
        // mapped whole, uncached; entries are 4-byte aligned words.
        unsafe { self.entry_word(entry, word).write_volatile(value) };
    }

    fn read_entry_word(&self, entry: u16, word: u64) -> u32 {
        // SAFETY: as for `write_entry_word`.
        unsafe { self.entry_word(entry, word).read_volatile() }
    }

    /// Points entry `entry` at `vector` on the CPU with `apic_id` and
    /// unmasks it.
    ///
    /// # Errors
    /// [`MsixError::NoSuchEntry`] or [`MsixError::DestinationTooHigh`].
    pub fn route(&self, entry: u16, vector: u8, apic_id: u32) -> Result<(), MsixError> {
        if entry >= self.table_size {
            return Err(MsixError::NoSuchEntry(entry));
        }
        if apic_id > 0xff {
            return Err(MsixError::DestinationTooHigh(apic_id));
        }
        // Mask while the entry is inconsistent (§6.8.3.5).
        self.write_entry_word(entry, 3, VECTOR_CONTROL_MASKED);
        self.write_entry_word(entry, 0, MSI_ADDRESS_BASE | (apic_id << 12));
        self.write_entry_word(entry, 1, 0);
        self.write_entry_word(entry, 2, u32::from(vector));
        self.write_entry_word(entry, 3, 0);
        Ok(())
    }

    /// Masks or unmasks entry `entry`.
    ///
    /// # Errors
    /// [`MsixError::NoSuchEntry`].
    pub fn set_masked(&self, entry: u16, masked: bool) -> Result<(), MsixError> {
        if entry >= self.table_size {
            return Err(MsixError::NoSuchEntry(entry));
        }
        self.write_entry_word(entry, 3, if masked { VECTOR_CONTROL_MASKED } else { 0 });
        Ok(())
    }

    /// The message data (vector) programmed in `entry`, for checks.
    pub fn vector_of(&self, entry: u16) -> Option<u8> {
        (entry < self.table_size).then(|| self.read_entry_word(entry, 2) as u8)
    }

    /// Turns MSI-X on (and with it INTx off, §6.8.2.3).
    ///
    /// # Errors
    /// Only if configuration space is unreadable.
    pub fn enable(&self) -> Result<(), MsixError> {
        let offset = self.capability_offset + MESSAGE_CONTROL;
        let control = self.function.config.read_u16(offset)?;
        let control = (control | CONTROL_ENABLE) & !CONTROL_FUNCTION_MASK;
        self.function.config.write_u16(offset, control)?;
        Ok(())
    }

    /// Turns MSI-X off again (the device falls back to INTx).
    ///
    /// # Errors
    /// Only if configuration space is unreadable.
    pub fn disable(&self) -> Result<(), MsixError> {
        let offset = self.capability_offset + MESSAGE_CONTROL;
        let control = self.function.config.read_u16(offset)?;
        self.function.config.write_u16(offset, control & !CONTROL_ENABLE)?;
        Ok(())
    }

    /// Whether MSI-X is enabled.
    pub fn is_enabled(&self) -> bool {
        self.function
            .config
            .read_u16(self.capability_offset + MESSAGE_CONTROL)
            .is_ok_and(|control| control & CONTROL_ENABLE != 0)
    }
}
