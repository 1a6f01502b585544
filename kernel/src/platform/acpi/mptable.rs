//! The Intel MultiProcessor Specification 1.4 tables: how a machine
//! without ACPI describes its processors and I/O APICs. QEMU's `microvm`
//! with `acpi=off` has no RSDP, but its firmware (qboot) still writes them.
//!
//! The MP floating pointer ("_MP_", 16 bytes, checksummed) lies on a
//! 16-byte boundary in the first KiB of the EBDA, the last KiB of base
//! memory, or the BIOS ROM at 0xF0000..0x100000 (MP spec §4.1); it points
//! at the configuration table ("PCMP", checksummed), whose entries name
//! processors, buses, I/O APICs and interrupt assignments (§4.3). As with
//! the ACPI bodies (`tables`), everything is parsed from byte slices with
//! every read bounds-checked.

use super::tables::{CpuInfo, IoApicInfo, IsaOverride, LapicNmi, TableError, decode_inti_flags};
use crate::mm::PhysAddr;
use alloc::vec::Vec;

/// What vireo keeps from the MP configuration table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MpInfo {
    /// The local APIC base.
    pub lapic_phys: u64,
    /// Processors, enabled or not, duplicates removed.
    pub cpus: Vec<CpuInfo>,
    /// I/O APICs, in table order, with GSI bases filled in by the caller
    /// (the table has none).
    pub ioapics: Vec<IoApicInfo>,
    /// ISA interrupts not identity-mapped onto the first I/O APIC, or not
    /// edge/active-high.
    pub isa_overrides: Vec<IsaOverride>,
    /// LINT pins wired to NMI (`processor_uid` is the APIC id here).
    pub lapic_nmis: Vec<LapicNmi>,
}

/// Where the floating pointer may be (MP spec §4.1): `(start, length)`,
/// from the BIOS data area's EBDA segment and base memory size. Firmware
/// that leaves those zero (qboot) gets the 640 KiB PC default, as Linux
/// assumes too (qboot's pointer is at 0x9fc00).
pub fn search_areas(ebda_segment: u16, base_memory_kib: u16) -> [(u64, usize); 3] {
    let base_kib = if base_memory_kib == 0 { 640 } else { u64::from(base_memory_kib) };
    let ebda = if ebda_segment == 0 { 0x9_fc00 } else { u64::from(ebda_segment) << 4 };
    [(ebda, 1024), ((base_kib - 1) * 1024, 1024), (0xf_0000, 0x1_0000)]
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte)) == 0
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The configuration table's physical address from a floating pointer
/// found in `area` (which starts at a 16-byte boundary), if there is one.
pub fn find_pointer(area: &[u8]) -> Option<u32> {
    area.chunks_exact(16)
        .filter(|candidate| &candidate[..4] == b"_MP_" && checksum_ok(candidate))
        // Length 1 (in 16-byte units); a zero pointer means a default
        // configuration (§4.1, feature byte 1), which vireo does not model.
        .filter_map(|candidate| u32_at(candidate, 4).filter(|&table| table != 0))
        .next()
}

/// The base table's length from its header, to know how much to copy.
pub fn table_length(header: &[u8]) -> Option<usize> {
    (header.get(..4)? == b"PCMP").then_some(usize::from(u16_at(header, 4)?))
}

const HEADER_LEN: usize = 44;
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IO_APIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;

/// Parses a whole base configuration table. `bsp_apic_id` marks the boot
/// CPU (the table's BP flag is checked against it, not trusted).
///
/// # Errors
/// [`TableError`] for a bad signature, checksum, length or entry.
pub fn parse(table: &[u8], bsp_apic_id: u32) -> Result<MpInfo, TableError> {
    const NAME: &str = "PCMP";
    let too_short = TableError::TooShort { table: NAME, len: table.len() };
    let length = table_length(table).ok_or(too_short)?;
    if length < HEADER_LEN || length > table.len() || !checksum_ok(&table[..length]) {
        return Err(too_short);
    }
    let table = &table[..length];
    let mut info =
        MpInfo { lapic_phys: u64::from(u32_at(table, 36).ok_or(too_short)?), ..MpInfo::default() };
    let mut isa_buses = Vec::new();
    let mut at = HEADER_LEN;
    while at < table.len() {
        let bad = TableError::BadEntry { table: NAME, offset: at };
        let kind = table[at];
        let len = match kind {
            PROCESSOR => 20,
            BUS | IO_APIC | IO_INTERRUPT | LOCAL_INTERRUPT => 8,
            _ => return Err(bad),
        };
        let entry = table.get(at..at + len).ok_or(bad)?;
        match kind {
            PROCESSOR => {
                let apic_id = u32::from(entry[1]);
                let usable = entry[3] & 0x01 != 0;
                if info.cpus.iter().all(|cpu| cpu.apic_id != apic_id) {
                    info.cpus.push(CpuInfo {
                        apic_id,
                        processor_uid: apic_id,
                        is_bsp: apic_id == bsp_apic_id,
                        usable,
                    });
                }
            }
            BUS if entry[2..8].starts_with(b"ISA") => isa_buses.push(entry[1]),
            // Local interrupt, type NMI (§4.3.5): to one APIC id, or 0xff all.
            LOCAL_INTERRUPT if entry[1] == 1 => {
                let (polarity, trigger) = decode_inti_flags(u16_at(entry, 2).unwrap_or(0));
                let uid = if entry[6] == 0xff { u32::MAX } else { u32::from(entry[6]) };
                info.lapic_nmis.push(LapicNmi {
                    processor_uid: uid,
                    lint: entry[7],
                    polarity,
                    trigger,
                });
            }
            IO_APIC if entry[3] & 0x01 != 0 => info.ioapics.push(IoApicInfo {
                id: entry[1],
                phys: PhysAddr::try_new(u64::from(u32_at(entry, 4).ok_or(bad)?))
                    .map_err(|_| bad)?,
                gsi_base: 0,
            }),
            _ => {}
        }
        at += len;
    }
    // Interrupt entries name buses and I/O APICs by id, so a second pass
    // (over entries the first one checked).
    let mut at = HEADER_LEN;
    while at < table.len() {
        let kind = table[at];
        let len = if kind == PROCESSOR { 20 } else { 8 };
        let entry = &table[at..at + len];
        // INT (type 0) from an ISA bus to the first I/O APIC (§4.3.4).
        let to_first_ioapic = info.ioapics.first().is_some_and(|first| first.id == entry[6]);
        if kind == IO_INTERRUPT && entry[1] == 0 && isa_buses.contains(&entry[4]) && to_first_ioapic
        {
            let (isa_irq, pin) = (entry[5], u32::from(entry[7]));
            let (polarity, trigger) = decode_inti_flags(u16_at(entry, 2).unwrap_or(0));
            let default = super::IsaRoute {
                gsi: u32::from(isa_irq),
                polarity: crate::platform::apic::Polarity::ActiveHigh,
                trigger: crate::platform::apic::TriggerMode::Edge,
            };
            let route = super::IsaRoute { gsi: pin, polarity, trigger };
            if route != default && isa_irq < 16 {
                info.isa_overrides.push(IsaOverride { isa_irq, gsi: pin, polarity, trigger });
            }
        }
        at += len;
    }
    Ok(info)
}

mod tests {
    use super::*;
    use crate::{check, check_eq, check_ok, ktest};
    use alloc::vec;

    /// A table as qboot writes one: two CPUs, an ISA bus, one I/O APIC,
    /// IRQ 0 on pin 2, IRQ 5 on pin 5 level/active-high.
    fn table() -> Vec<u8> {
        let mut entries = Vec::new();
        for (apic_id, flags) in [(0u8, 0x03u8), (1, 0x01)] {
            let mut cpu = vec![PROCESSOR, apic_id, 0x14, flags];
            cpu.extend_from_slice(&[0; 16]);
            entries.push(cpu);
        }
        entries.push(vec![BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        entries.push(vec![IO_APIC, 0, 0x20, 0x01, 0x00, 0x00, 0xc0, 0xfe]);
        entries.push(vec![IO_INTERRUPT, 0, 0, 0, 0, 0, 0, 2]);
        // Flags 0b1101: active high (01), level (11).
        entries.push(vec![IO_INTERRUPT, 0, 0x0d, 0, 0, 5, 0, 5]);
        entries.push(vec![IO_INTERRUPT, 0, 0, 0, 0, 4, 0, 4]);
        entries.push(vec![LOCAL_INTERRUPT, 3, 0, 0, 0, 0, 0xff, 0]);
        entries.push(vec![LOCAL_INTERRUPT, 1, 0, 0, 0, 0, 0xff, 1]);
        let body: Vec<u8> = entries.concat();
        let length = (HEADER_LEN + body.len()) as u16;
        let mut table = b"PCMP".to_vec();
        table.extend_from_slice(&length.to_le_bytes());
        table.extend_from_slice(&[4, 0]); // revision, checksum (below)
        table.extend_from_slice(b"QEMU    microvm     ");
        table.extend_from_slice(&[0; 6]); // OEM table pointer and size
        table.extend_from_slice(&0u16.to_le_bytes()); // entry count: 0, as qboot writes
        table.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        table.extend_from_slice(&[0; 4]); // extended table length, checksum
        table.extend_from_slice(&body);
        let sum = table.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        table[7] = 0u8.wrapping_sub(sum);
        table
    }

    ktest!(
        fn a_qboot_style_mp_table_parses() {
            let info = check_ok!(parse(&table(), 0));
            check_eq!(info.lapic_phys, 0xfee0_0000);
            check_eq!(info.cpus.len(), 2);
            check!(info.cpus[0].is_bsp && info.cpus[0].usable);
            check!(!info.cpus[1].is_bsp && info.cpus[1].usable);
            check_eq!(info.ioapics.len(), 1);
            check_eq!(info.ioapics[0].phys.as_u64(), 0xfec0_0000);
            // IRQ 0 → pin 2 and the level IRQ 5 are overrides; IRQ 4 is not.
            let irqs: Vec<(u8, u32)> =
                info.isa_overrides.iter().map(|o| (o.isa_irq, o.gsi)).collect();
            check_eq!(irqs, vec![(0, 2), (5, 5)]);
            // LINT1 of every CPU is NMI; the ExtINT on LINT0 is not kept.
            let nmis: Vec<(u32, u8)> =
                info.lapic_nmis.iter().map(|n| (n.processor_uid, n.lint)).collect();
            check_eq!(nmis, vec![(u32::MAX, 1)]);
            Ok(())
        }
    );

    ktest!(
        fn the_search_covers_the_pc_defaults() {
            check_eq!(search_areas(0, 0)[1], (0x9_fc00, 1024));
            check_eq!(search_areas(0x9fc0, 639)[0], (0x9_fc00, 1024));
            check_eq!(search_areas(0x9fc0, 639)[1], (0x9_f800, 1024));
            check_eq!(search_areas(0, 0)[2], (0xf_0000, 0x1_0000));
            Ok(())
        }
    );

    ktest!(
        fn broken_mp_tables_are_errors_not_panics() {
            let good = table();
            for len in 0..good.len() {
                check!(parse(&good[..len], 0).is_err(), "a {}-byte prefix parsed", len);
            }
            // A length that ends inside an entry (checksum fixed up).
            let mut cut = good.clone();
            cut[4] -= 4;
            cut[7] = cut[7].wrapping_add(4);
            check!(parse(&cut, 0).is_err());
            let mut bad_sum = good.clone();
            bad_sum[10] ^= 1;
            check!(parse(&bad_sum, 0).is_err());
            // An unknown entry type, checksum fixed up.
            let mut unknown = good.clone();
            unknown[HEADER_LEN] = 9;
            unknown[7] = unknown[7].wrapping_sub(9);
            check!(parse(&unknown, 0).is_err());
            // The floating pointer: found only with its checksum right.
            let mut pointer = vec![0u8; 64];
            pointer[16..20].copy_from_slice(b"_MP_");
            pointer[20..24].copy_from_slice(&0x9fc00u32.to_le_bytes());
            pointer[24] = 1;
            check_eq!(find_pointer(&pointer), None);
            let sum = pointer[16..32].iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
            pointer[26] = 0u8.wrapping_sub(sum);
            check_eq!(find_pointer(&pointer), Some(0x9fc00));
            Ok(())
        }
    );
}
