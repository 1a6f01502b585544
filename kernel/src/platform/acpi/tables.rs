//! Bounds-checked parsers for the few ACPI tables vireo needs: MADT, MCFG
//! and HPET.
//!
//! The `acpi` crate finds the tables and checks their checksums; the bodies
//! are parsed here from plain byte slices, because firmware can be wrong in
//! ways a checksum does not catch (a zero-length MADT entry, a table shorter
//! than its fixed part), and none of that may hang or panic the kernel.
//! Every read goes through `get`, which returns `None` past the end.

use crate::mm::PhysAddr;
use crate::platform::apic::{Polarity, TriggerMode};
use alloc::vec::Vec;

/// Length of the common System Description Table header (ACPI 6.5 §5.2.6).
pub const SDT_HEADER_LEN: usize = 36;

/// Why a table body could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The table is shorter than its fixed part.
    TooShort { table: &'static str, len: usize },
    /// An entry's length is impossible (zero, too small for its type, or
    /// running past the end of the table), at this byte offset.
    BadEntry { table: &'static str, offset: usize },
    /// The HPET's registers are not in system memory (address space id).
    HpetNotInMemory(u8),
}

/// One processor from the MADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    /// The processor's local APIC id (x2APIC ids can exceed 255).
    pub apic_id: u32,
    /// ACPI processor UID, which LAPIC NMI entries refer to.
    pub processor_uid: u32,
    /// Whether this is the CPU that booted the kernel.
    pub is_bsp: bool,
    /// The Enabled flag: the OS may start this processor.
    pub usable: bool,
}

/// One I/O APIC from the MADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicInfo {
    /// The I/O APIC's id.
    pub id: u8,
    /// Physical address of its register window.
    pub phys: PhysAddr,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ that is not identity-mapped onto a GSI, or whose polarity or
/// trigger differs from the ISA default (ACPI 6.5 §5.2.12.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaOverride {
    /// The ISA IRQ number (0..16).
    pub isa_irq: u8,
    /// The global system interrupt it is wired to.
    pub gsi: u32,
    /// Pin polarity.
    pub polarity: Polarity,
    /// Edge or level.
    pub trigger: TriggerMode,
}

/// A local APIC LINT pin wired to NMI (ACPI 6.5 §5.2.12.7 and §5.2.12.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicNmi {
    /// Processor UID, or `u32::MAX` for all processors.
    pub processor_uid: u32,
    /// LINT0 or LINT1.
    pub lint: u8,
    /// Pin polarity.
    pub polarity: Polarity,
    /// Edge or level.
    pub trigger: TriggerMode,
}

/// Everything vireo keeps from the MADT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MadtInfo {
    /// Local APIC register base (the 64-bit override entry wins).
    pub lapic_phys: u64,
    /// PCAT_COMPAT: the board also has dual 8259 PICs.
    pub has_8259: bool,
    /// Processors, in table order, duplicates removed.
    pub cpus: Vec<CpuInfo>,
    /// I/O APICs.
    pub ioapics: Vec<IoApicInfo>,
    /// ISA interrupt source overrides.
    pub isa_overrides: Vec<IsaOverride>,
    /// LINT pins wired to NMI.
    pub lapic_nmis: Vec<LapicNmi>,
}

/// A PCI segment's ECAM window (PCI Firmware Specification 3.2 §4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciSegment {
    /// PCI segment group number.
    pub segment: u16,
    /// First bus the window decodes.
    pub bus_start: u8,
    /// Last bus the window decodes.
    pub bus_end: u8,
    /// Physical address of bus 0's configuration space in this window
    /// (even when `bus_start` is not 0).
    pub ecam_phys: PhysAddr,
}

/// The HPET table (IA-PC HPET Specification 1.0a §3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpetInfo {
    /// Physical address of the register block.
    pub phys: PhysAddr,
    /// HPET sequence number.
    pub number: u8,
    /// Smallest periodic tick without lost interrupts, in counter ticks.
    pub min_tick: u16,
    /// Number of comparators the table claims (the registers are authoritative).
    pub comparators: u8,
}

fn bytes<const N: usize>(table: &[u8], offset: usize) -> Option<[u8; N]> {
    table.get(offset..offset.checked_add(N)?)?.try_into().ok()
}
fn u8_at(table: &[u8], offset: usize) -> Option<u8> {
    table.get(offset).copied()
}
fn u16_at(table: &[u8], offset: usize) -> Option<u16> {
    bytes(table, offset).map(u16::from_le_bytes)
}
fn u32_at(table: &[u8], offset: usize) -> Option<u32> {
    bytes(table, offset).map(u32::from_le_bytes)
}
fn u64_at(table: &[u8], offset: usize) -> Option<u64> {
    bytes(table, offset).map(u64::from_le_bytes)
}

/// Decodes MPS INTI flags (ACPI 6.5 Table 5.26); "conforms to the bus" and
/// the reserved encodings mean the ISA defaults, active high and edge.
pub fn decode_inti_flags(flags: u16) -> (Polarity, TriggerMode) {
    let polarity = if flags & 0b11 == 0b11 { Polarity::ActiveLow } else { Polarity::ActiveHigh };
    let trigger = if (flags >> 2) & 0b11 == 0b11 { TriggerMode::Level } else { TriggerMode::Edge };
    (polarity, trigger)
}

// MADT entry types and the minimum lengths of the fields we read
// (ACPI 6.5 §5.2.12.2 through §5.2.12.13).
const LOCAL_APIC: u8 = 0;
const IO_APIC: u8 = 1;
const SOURCE_OVERRIDE: u8 = 2;
const LOCAL_APIC_NMI: u8 = 4;
const LAPIC_ADDRESS_OVERRIDE: u8 = 5;
const LOCAL_X2APIC: u8 = 9;
const LOCAL_X2APIC_NMI: u8 = 10;

fn min_entry_len(kind: u8) -> usize {
    match kind {
        LOCAL_APIC => 8,
        IO_APIC => 12,
        SOURCE_OVERRIDE => 10,
        LOCAL_APIC_NMI => 6,
        LAPIC_ADDRESS_OVERRIDE => 12,
        LOCAL_X2APIC => 16,
        LOCAL_X2APIC_NMI => 12,
        _ => 2,
    }
}

/// Parses a whole MADT (header included). `bsp_apic_id` marks the boot CPU.
///
/// # Errors
/// [`TableError`] when the table or an entry is malformed.
pub fn parse_madt(table: &[u8], bsp_apic_id: u32) -> Result<MadtInfo, TableError> {
    const NAME: &str = "APIC";
    let too_short = TableError::TooShort { table: NAME, len: table.len() };
    let mut info = MadtInfo {
        lapic_phys: u64::from(u32_at(table, SDT_HEADER_LEN).ok_or(too_short)?),
        has_8259: u32_at(table, SDT_HEADER_LEN + 4).ok_or(too_short)? & 1 != 0,
        ..MadtInfo::default()
    };
    let mut offset = SDT_HEADER_LEN + 8;
    while offset < table.len() {
        let bad = TableError::BadEntry { table: NAME, offset };
        let (kind, len) = (table[offset], usize::from(u8_at(table, offset + 1).ok_or(bad)?));
        if len < min_entry_len(kind) || offset + len > table.len() {
            return Err(bad);
        }
        let entry = &table[offset..offset + len];
        // Every read below is within `min_entry_len`, checked above.
        let field32 = |at| u32_at(entry, at).unwrap_or(0);
        match kind {
            LOCAL_APIC | LOCAL_X2APIC => {
                let (apic_id, uid, flags) = if kind == LOCAL_APIC {
                    (u32::from(entry[3]), u32::from(entry[2]), field32(4))
                } else {
                    (field32(4), field32(12), field32(8))
                };
                // 0xff is not a real xAPIC id (it is the broadcast id).
                let placeholder = kind == LOCAL_APIC && apic_id == 0xff;
                if !placeholder && info.cpus.iter().all(|cpu| cpu.apic_id != apic_id) {
                    info.cpus.push(CpuInfo {
                        apic_id,
                        processor_uid: uid,
                        is_bsp: apic_id == bsp_apic_id,
                        usable: flags & 1 != 0,
                    });
                }
            }
            IO_APIC => info.ioapics.push(IoApicInfo {
                id: entry[2],
                phys: PhysAddr::new(u64::from(field32(4))),
                gsi_base: field32(8),
            }),
            // Bus 0 is ISA, the only bus the spec defines overrides for.
            SOURCE_OVERRIDE if entry[2] == 0 => {
                let (polarity, trigger) = decode_inti_flags(u16_at(entry, 8).unwrap_or(0));
                info.isa_overrides.push(IsaOverride {
                    isa_irq: entry[3],
                    gsi: field32(4),
                    polarity,
                    trigger,
                });
            }
            LOCAL_APIC_NMI | LOCAL_X2APIC_NMI => {
                let (uid, flags, lint) = if kind == LOCAL_APIC_NMI {
                    let uid = if entry[2] == 0xff { u32::MAX } else { u32::from(entry[2]) };
                    (uid, u16_at(entry, 3).unwrap_or(0), entry[5])
                } else {
                    (field32(4), u16_at(entry, 2).unwrap_or(0), entry[8])
                };
                let (polarity, trigger) = decode_inti_flags(flags);
                info.lapic_nmis.push(LapicNmi { processor_uid: uid, lint, polarity, trigger });
            }
            LAPIC_ADDRESS_OVERRIDE => info.lapic_phys = u64_at(entry, 4).unwrap_or(0),
            _ => {}
        }
        offset += len;
    }
    Ok(info)
}

/// Parses a whole MCFG (header included); windows with an empty bus range
/// or a zero base are skipped.
///
/// # Errors
/// [`TableError::TooShort`] when the fixed part is missing.
pub fn parse_mcfg(table: &[u8]) -> Result<Vec<PciSegment>, TableError> {
    const ENTRIES: usize = SDT_HEADER_LEN + 8;
    const ENTRY_LEN: usize = 16;
    if table.len() < ENTRIES {
        return Err(TableError::TooShort { table: "MCFG", len: table.len() });
    }
    let segments = table[ENTRIES..]
        .chunks_exact(ENTRY_LEN)
        .filter_map(|entry| {
            let base = u64_at(entry, 0)?;
            let (bus_start, bus_end) = (entry[10], entry[11]);
            let ecam_phys = PhysAddr::try_new(base).ok().filter(|base| !base.is_null())?;
            (bus_start <= bus_end).then_some(PciSegment {
                segment: u16_at(entry, 8)?,
                bus_start,
                bus_end,
                ecam_phys,
            })
        })
        .collect();
    Ok(segments)
}

/// Parses a whole HPET table (header included).
///
/// # Errors
/// [`TableError`] when the table is short or the block is not in memory.
pub fn parse_hpet(table: &[u8]) -> Result<HpetInfo, TableError> {
    let too_short = TableError::TooShort { table: "HPET", len: table.len() };
    let block_id = u32_at(table, 36).ok_or(too_short)?;
    // Base address: a Generic Address Structure (ACPI 6.5 §5.2.3.2) at 40;
    // address space 0 is system memory.
    let space = u8_at(table, 40).ok_or(too_short)?;
    if space != 0 {
        return Err(TableError::HpetNotInMemory(space));
    }
    let base = u64_at(table, 44).ok_or(too_short)?;
    Ok(HpetInfo {
        phys: PhysAddr::try_new(base).map_err(|_| TableError::HpetNotInMemory(space))?,
        number: u8_at(table, 52).ok_or(too_short)?,
        min_tick: u16_at(table, 53).ok_or(too_short)?,
        comparators: ((block_id >> 8) & 0x1f) as u8 + 1,
    })
}

/// The ACPI PM timer, from the FADT (ACPI 6.5 §4.8.3.3, §5.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmTimerInfo {
    /// Its I/O port.
    pub port: u16,
    /// TMR_VAL_EXT: 32 bits wide, else 24.
    pub is_32bit: bool,
}

// FADT fields (ACPI 6.5 Table 5.9).
const FADT_PM_TMR_BLK: usize = 76;
const FADT_PM_TMR_LEN: usize = 91;
const FADT_FLAGS: usize = 112;
const FADT_X_PM_TMR_BLK: usize = 208;
const FADT_TMR_VAL_EXT: u32 = 1 << 8;
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// Generic Address Structure space id of system I/O (ACPI 6.5 §5.2.3.2).
const GAS_SYSTEM_IO: u8 = 1;

/// The PM timer a whole FADT (header included) describes, if any: none on
/// hardware-reduced platforms (QEMU `microvm`), whose FADT fields for it
/// are to be ignored (§4.1), nor when its block is not in I/O space.
///
/// # Errors
/// [`TableError::TooShort`] when the table ends before its flags.
pub fn parse_fadt_pm_timer(table: &[u8]) -> Result<Option<PmTimerInfo>, TableError> {
    let flags = u32_at(table, FADT_FLAGS)
        .ok_or(TableError::TooShort { table: "FACP", len: table.len() })?;
    if flags & FADT_HW_REDUCED_ACPI != 0 {
        return Ok(None);
    }
    let is_32bit = flags & FADT_TMR_VAL_EXT != 0;
    // The 64-bit X_PM_TMR_BLK wins when present and nonzero (§5.2.9).
    let extended = u8_at(table, FADT_X_PM_TMR_BLK)
        .zip(u64_at(table, FADT_X_PM_TMR_BLK + 4))
        .filter(|&(_, address)| address != 0);
    let port = match extended {
        Some((GAS_SYSTEM_IO, address)) => u16::try_from(address).ok(),
        Some(_) => None,
        None => u32_at(table, FADT_PM_TMR_BLK)
            .filter(|&block| block != 0 && u8_at(table, FADT_PM_TMR_LEN) == Some(4))
            .and_then(|block| u16::try_from(block).ok()),
    };
    Ok(port.map(|port| PmTimerInfo { port, is_32bit }))
}
