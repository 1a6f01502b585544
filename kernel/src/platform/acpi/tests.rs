//! Checks against what QEMU q35 reports, and the parsers against
//! synthetic (and broken) tables.

use super::tables::{self, SDT_HEADER_LEN, TableError};
use super::{Source, platform};
use crate::platform::apic::{Polarity, TriggerMode, lapic};
use crate::{check, check_eq, check_ok, ktest};
use alloc::vec::Vec;

/// QEMU builds ACPI tables (`etc/acpi/rsdp` in fw_cfg): the truth from
/// outside that decides whether a missing RSDP is a failure or a machine
/// without ACPI (`-M microvm,acpi=off`).
fn qemu_has_acpi() -> bool {
    crate::arch::fw_cfg::has_file("etc/acpi/rsdp").unwrap_or(true)
}

const NO_ACPI: &str = "QEMU built no ACPI tables (no etc/acpi/rsdp in fw_cfg)";

ktest!(
    fn rsdp_has_signature_and_checksum() {
        if !qemu_has_acpi() {
            return ktest::skip(NO_ACPI);
        }
        // The address the PVH start info handed over (`arch::boot_info`).
        let rsdp = check_ok!(crate::arch::boot_info::get().rsdp.ok_or("no RSDP"));
        let bytes = crate::mm::phys_to_virt(rsdp).as_ptr::<[u8; 20]>();
        // SAFETY: the RSDP lies in firmware memory covered by the direct map.
        let bytes = unsafe { bytes.read_unaligned() };
        check_eq!(&bytes[..8], b"RSD PTR ");
        let sum = bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        check_eq!(sum, 0);
        Ok(())
    }
);

ktest!(
    fn tables_came_from_acpi() {
        if !qemu_has_acpi() {
            check!(matches!(platform().source, Source::MpTables(_)), "{:?}", platform().source);
            return ktest::skip(NO_ACPI);
        }
        check_eq!(platform().source, Source::Acpi);
        Ok(())
    }
);

ktest!(
    fn madt_has_exactly_one_bsp_and_it_is_this_cpu() {
        let info = platform();
        check!(!info.cpus.is_empty());
        let bsps: Vec<_> = info.cpus.iter().filter(|cpu| cpu.is_bsp).collect();
        check_eq!(bsps.len(), 1);
        check_eq!(bsps[0].apic_id, lapic::id());
        check_eq!(lapic::id(), lapic::cpuid_apic_id());
        check!(bsps[0].usable);
        Ok(())
    }
);

ktest!(
    fn usable_cpu_count_matches_qemu_smp() {
        let smp = check_ok!(crate::arch::fw_cfg::cpu_count().ok_or("no fw_cfg"));
        check_eq!(platform().usable_cpus().count(), usize::from(smp));
        let mut ids: Vec<u32> = platform().cpus.iter().map(|cpu| cpu.apic_id).collect();
        ids.sort_unstable();
        ids.dedup();
        check_eq!(ids.len(), platform().cpus.len());
        Ok(())
    }
);

/// Whether this is QEMU's q35, whose MCH (host bridge 8086:29c0 at
/// 00:00.0, read through configuration port 0xCF8, which q35 also
/// decodes) always has an ECAM window.
fn is_q35() -> bool {
    use crate::platform::pci::config::{ConfigSpace, has_port_mechanism, reg};
    let host = ConfigSpace::ports(0, 0, 0).filter(|_| has_port_mechanism());
    host.is_some_and(|host| {
        host.read_u16(reg::VENDOR_ID) == Ok(0x8086) && host.read_u16(reg::DEVICE_ID) == Ok(0x29c0)
    })
}

ktest!(
    fn mcfg_has_segment_0_with_an_ecam_window() {
        if platform().pci_segments.is_empty() && !is_q35() {
            return ktest::skip("no MCFG, and not q35 (whose MCH has one)");
        }
        let segment = platform().pci_segments.iter().find(|segment| segment.segment == 0);
        let segment = check_ok!(segment.ok_or("no segment 0"));
        check_eq!(segment.bus_start, 0);
        check!(segment.bus_end >= segment.bus_start);
        check!(segment.ecam_phys.as_u64() % (1 << 20) == 0, "ECAM at {:?}", segment.ecam_phys);
        Ok(())
    }
);

ktest!(
    fn one_ioapic_at_gsi_0_and_the_lapic_at_its_usual_address() {
        let info = platform();
        check!(!info.ioapics.is_empty());
        check_eq!(info.ioapics[0].gsi_base, 0);
        check_eq!(info.ioapics[0].phys.as_u64(), 0xfec0_0000);
        check_eq!(info.lapic_phys.as_u64(), 0xfee0_0000);
        check!(info.has_8259, "q35 sets PCAT_COMPAT");
        Ok(())
    }
);

ktest!(
    fn isa_irq0_is_overridden_to_gsi2() {
        if platform().isa_overrides.is_empty() {
            return ktest::skip(
                "the MADT has no ISA overrides (QEMU microvm wires IRQ 0 to GSI 0)",
            );
        }
        let route = platform().isa_route(0);
        check_eq!(
            (route.gsi, route.polarity, route.trigger),
            (2, Polarity::ActiveHigh, TriggerMode::Edge)
        );
        // An IRQ without an override maps to itself with ISA defaults.
        check_eq!(platform().isa_route(4).gsi, 4);
        Ok(())
    }
);

ktest!(
    fn lint1_is_described_as_nmi() {
        check!(
            platform().lapic_nmis.iter().any(|nmi| nmi.lint == 1),
            "{:?}",
            platform().lapic_nmis
        );
        Ok(())
    }
);

/// A MADT with the given entries after a zeroed header.
fn madt(entries: &[&[u8]]) -> Vec<u8> {
    let mut table = alloc::vec![0u8; SDT_HEADER_LEN];
    table.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    table.extend_from_slice(&1u32.to_le_bytes());
    for entry in entries {
        table.extend_from_slice(entry);
    }
    table
}

ktest!(
    fn madt_parser_reads_xapic_x2apic_and_override_entries() {
        let table = madt(&[
            &[0, 8, 0, 0, 1, 0, 0, 0],    // CPU uid 0, id 0, enabled
            &[0, 8, 1, 0xff, 1, 0, 0, 0], // placeholder id 0xff
            &[9, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0], // x2APIC id 256, disabled
            &[1, 12, 3, 0, 0, 0, 0xc0, 0xfe, 0x20, 0, 0, 0], // IOAPIC 3, GSI 32
            &[2, 10, 0, 9, 9, 0, 0, 0, 0x0f, 0], // IRQ 9: level, low
            &[5, 12, 0, 0, 0, 0, 0, 0xfe, 1, 0, 0, 0], // LAPIC at 1:fe000000
        ]);
        let info = check_ok!(tables::parse_madt(&table, 0));
        check_eq!(info.cpus.len(), 2);
        check!(info.cpus[0].is_bsp && info.cpus[0].usable);
        check_eq!((info.cpus[1].apic_id, info.cpus[1].processor_uid), (256, 7));
        check!(!info.cpus[1].usable && !info.cpus[1].is_bsp);
        check_eq!((info.ioapics[0].id, info.ioapics[0].gsi_base), (3, 32));
        check_eq!(info.ioapics[0].phys.as_u64(), 0xfec0_0000);
        let irq9 = info.isa_overrides[0];
        check_eq!((irq9.isa_irq, irq9.gsi), (9, 9));
        check_eq!((irq9.polarity, irq9.trigger), (Polarity::ActiveLow, TriggerMode::Level));
        check_eq!(info.lapic_phys, 0x1_fe00_0000);
        check!(info.has_8259);
        Ok(())
    }
);

ktest!(
    fn broken_madt_entries_are_errors_not_hangs() {
        let zero_length = madt(&[&[0, 0, 0, 0]]);
        check_eq!(
            tables::parse_madt(&zero_length, 0),
            Err(TableError::BadEntry { table: "APIC", offset: 44 })
        );
        let overrun = madt(&[&[0, 8, 0, 0, 1, 0, 0, 0], &[1, 12, 0, 0]]);
        check_eq!(
            tables::parse_madt(&overrun, 0),
            Err(TableError::BadEntry { table: "APIC", offset: 52 })
        );
        let too_small_for_type = madt(&[&[1, 4, 0, 0]]);
        check!(tables::parse_madt(&too_small_for_type, 0).is_err());
        check!(matches!(tables::parse_madt(&[0; 40], 0), Err(TableError::TooShort { .. })));
        Ok(())
    }
);

ktest!(
    fn short_or_odd_mcfg_and_hpet_tables_are_handled() {
        check!(tables::parse_mcfg(&[0; 40]).is_err());
        // A trailing partial entry and an empty bus range are skipped.
        let mut mcfg = alloc::vec![0u8; SDT_HEADER_LEN + 8];
        mcfg.extend_from_slice(&[0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 0, 5, 4, 0, 0, 0, 0]);
        mcfg.extend_from_slice(&[0, 0, 0, 0xb0, 0, 0, 0, 0, 1, 0, 0, 0xff, 0, 0, 0, 0]);
        mcfg.extend_from_slice(&[1, 2, 3]);
        let segments = check_ok!(tables::parse_mcfg(&mcfg));
        check_eq!(segments.len(), 1);
        check_eq!((segments[0].segment, segments[0].bus_end), (1, 0xff));
        check!(tables::parse_hpet(&[0; 50]).is_err());
        let mut hpet = alloc::vec![0u8; 56];
        hpet[40] = 1; // system I/O space: unusable
        check_eq!(tables::parse_hpet(&hpet), Err(TableError::HpetNotInMemory(1)));
        Ok(())
    }
);
