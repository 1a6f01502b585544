//! Walking a function's capability list (PCI Local Bus Specification 3.0
//! §6.7) without trusting it: every pointer is bounds-checked, pointers
//! into the header are rejected, and the walk stops after 48 entries (the
//! most that fit in the 192 bytes after the header), so a looping list ends.

use super::config::{self, ConfigSpace, reg};

/// Capability IDs vireo looks for.
pub mod id {
    /// Vendor-specific (VirtIO uses it for its structures, VirtIO 1.2 §4.1.4).
    pub const VENDOR_SPECIFIC: u8 = 0x09;
    /// MSI-X (PCI Local Bus Specification 3.0 §6.8.2).
    pub const MSI_X: u8 = 0x11;
}

const MAX_CAPABILITIES: usize = 48;
const FIRST_CAPABILITY_OFFSET: u8 = 0x40;

/// One entry of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Offset of the capability in configuration space.
    pub offset: u16,
}

/// Iterates over the capability list of `config`.
pub fn capabilities(config: ConfigSpace) -> impl Iterator<Item = Capability> {
    let has_list =
        config.read_u16(reg::STATUS).is_ok_and(|status| status & config::STATUS_CAPABILITIES != 0);
    let first = if has_list { config.read_u8(reg::CAPABILITIES_POINTER).unwrap_or(0) } else { 0 };
    let mut next = first;
    let mut seen = 0;
    core::iter::from_fn(move || {
        // Bits 1:0 are reserved; pointers below 0x40 would be the header.
        let offset = next & !0x3;
        if offset < FIRST_CAPABILITY_OFFSET || seen == MAX_CAPABILITIES {
            return None;
        }
        seen += 1;
        let id = config.read_u8(u16::from(offset)).ok()?;
        next = config.read_u8(u16::from(offset) + 1).ok()?;
        Some(Capability { id, offset: u16::from(offset) })
    })
}
