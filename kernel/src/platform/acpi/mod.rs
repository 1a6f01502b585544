//! Platform description from the ACPI tables: CPUs and interrupt
//! controllers (MADT), PCI ECAM windows (MCFG), the HPET, the PM timer
//! (FADT) and virtio-mmio devices (DSDT); on a machine without ACPI, CPUs
//! and I/O APICs from the MP tables (`mptable`).
//!
//! The PVH start info gives the RSDP; the `acpi` crate walks RSDP → XSDT →
//! tables and checks checksums; `tables` parses the bodies. The result is
//! kept in one [`PlatformInfo`] for the rest of the kernel's life. Missing or
//! broken tables are logged and replaced by a minimal fallback (the boot CPU
//! at the architectural LAPIC address), never a panic.

mod aml;
mod mptable;
mod tables;

pub use aml::{Interrupt, MmioDeviceInfo};
pub use tables::{
    CpuInfo, HpetInfo, IoApicInfo, IsaOverride, LapicNmi, PciSegment, PmTimerInfo, TableError,
};

use crate::mm::{self, PAGE_SIZE, PhysAddr, mmio, paging};
use crate::platform::apic::{Polarity, TriggerMode, lapic};
use ::acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;

/// The xAPIC register base every PC uses (Intel SDM Vol. 3A §11.4.1).
const DEFAULT_LAPIC_PHYS: u64 = 0xfee0_0000;

/// Where the platform description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The MADT was found and parsed.
    Acpi,
    /// No ACPI (`PlatformError` says why); the MP tables described the
    /// processors and I/O APICs.
    MpTables(PlatformError),
    /// No usable MADT: a single boot CPU was assumed.
    Fallback(PlatformError),
}

/// Why the ACPI tables could not describe the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// The loader passed no RSDP.
    NoRsdp,
    /// The RSDP or the XSDT/RSDT was invalid (bad signature or checksum).
    BadRootTable,
    /// A required table was not found (or failed its checksum).
    Missing(&'static str),
    /// A table's body was malformed.
    Malformed(TableError),
}

/// The platform as the firmware describes it.
#[derive(Debug)]
pub struct PlatformInfo {
    /// Whether this came from ACPI or is the fallback.
    pub source: Source,
    /// Processors, exactly one of them `is_bsp`.
    pub cpus: Vec<CpuInfo>,
    /// Local APIC register base (xAPIC mode).
    pub lapic_phys: PhysAddr,
    /// Whether legacy 8259 PICs are present too.
    pub has_8259: bool,
    /// I/O APICs.
    pub ioapics: Vec<IoApicInfo>,
    /// ISA IRQ overrides.
    pub isa_overrides: Vec<IsaOverride>,
    /// LINT pins wired to NMI.
    pub lapic_nmis: Vec<LapicNmi>,
    /// PCI ECAM windows (empty without an MCFG).
    pub pci_segments: Vec<PciSegment>,
    /// The HPET, if the firmware has one.
    pub hpet: Option<HpetInfo>,
    /// The ACPI PM timer, if the FADT names one.
    pub pm_timer: Option<PmTimerInfo>,
    /// virtio-mmio windows the DSDT describes (`_HID "LNRO0005"`, as QEMU
    /// `microvm` writes them).
    pub virtio_mmio: Vec<MmioDeviceInfo>,
}

/// How an ISA IRQ reaches the I/O APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaRoute {
    /// The global system interrupt.
    pub gsi: u32,
    /// Pin polarity.
    pub polarity: Polarity,
    /// Edge or level.
    pub trigger: TriggerMode,
}

impl PlatformInfo {
    /// The processors the OS may start, the BSP included.
    pub fn usable_cpus(&self) -> impl Iterator<Item = &CpuInfo> {
        self.cpus.iter().filter(|cpu| cpu.usable)
    }

    /// The boot processor.
    pub fn bsp(&self) -> Option<&CpuInfo> {
        self.cpus.iter().find(|cpu| cpu.is_bsp)
    }

    /// Where ISA IRQ `irq` arrives: an override, else the identity mapping
    /// with ISA's active-high, edge-triggered defaults (ACPI 6.5 §5.2.12.5).
    pub fn isa_route(&self, irq: u8) -> IsaRoute {
        match self.isa_overrides.iter().find(|o| o.isa_irq == irq) {
            Some(o) => IsaRoute { gsi: o.gsi, polarity: o.polarity, trigger: o.trigger },
            None => IsaRoute {
                gsi: u32::from(irq),
                polarity: Polarity::ActiveHigh,
                trigger: TriggerMode::Edge,
            },
        }
    }

    fn fallback(error: PlatformError) -> Self {
        PlatformInfo {
            source: Source::Fallback(error),
            cpus: vec![CpuInfo {
                apic_id: lapic::cpuid_apic_id(),
                processor_uid: 0,
                is_bsp: true,
                usable: true,
            }],
            lapic_phys: PhysAddr::new(DEFAULT_LAPIC_PHYS),
            has_8259: true,
            ioapics: Vec::new(),
            isa_overrides: Vec::new(),
            lapic_nmis: Vec::new(),
            pci_segments: Vec::new(),
            hpet: None,
            pm_timer: None,
            virtio_mmio: Vec::new(),
        }
    }
}

/// Maps ACPI tables: through the direct map when they lie in RAM or ACPI
/// memory (the usual case), else with an uncached MMIO mapping.
#[derive(Debug, Clone, Copy)]
struct KernelAcpiHandler;

/// Stands in for a table when mapping fails: all zeroes, which no signature
/// or checksum check accepts.
static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

fn direct_mapped(phys: u64, len: usize) -> bool {
    let first = phys / PAGE_SIZE * PAGE_SIZE;
    let last = (phys + len.max(1) as u64 - 1) / PAGE_SIZE * PAGE_SIZE;
    (first..=last).step_by(PAGE_SIZE as usize).all(|page| {
        paging::translate(mm::phys_to_virt(PhysAddr::new(page))) == Some(PhysAddr::new(page))
    })
}

impl AcpiHandler for KernelAcpiHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = if direct_mapped(phys as u64, size) {
            Some(mm::phys_to_virt(PhysAddr::new(phys as u64)))
        } else {
            match mmio::map(PhysAddr::new(phys as u64), size) {
                Ok(region) => Some(region.virt()),
                Err(error) => {
                    log::error!("acpi: cannot map {size} bytes at {phys:#x}: {error:?}");
                    None
                }
            }
        };
        let (virt, size) = match virt {
            Some(virt) => (virt.as_mut_ptr::<T>(), size),
            None => (ZERO_PAGE.as_ptr().cast_mut().cast::<T>(), size.min(ZERO_PAGE.len())),
        };
        // SAFETY: `virt` maps `size` bytes at `phys` (or is the zero page,
        // which the crate only reads); the crate promises `size` covers a T.
        unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(virt), size, size, *self) }
    }

    fn unmap_physical_region<T>(region: &PhysicalMapping<Self, T>) {
        // MMIO-area mappings are torn down (their addresses are never
        // reused); direct-map views and the zero page stay.
        let virt = region.virtual_start().as_ptr() as u64;
        if (mm::MMIO_BASE..mm::KERNEL_VMA).contains(&virt) {
            let first = virt / PAGE_SIZE * PAGE_SIZE;
            let end = virt + region.mapped_length() as u64;
            for page in (first..end).step_by(PAGE_SIZE as usize) {
                let _ = paging::unmap_page(mm::VirtAddr::new(page));
            }
        }
    }
}

/// The bytes of a table the crate found and checksummed.
fn table_bytes<T: AcpiTable>(mapping: &PhysicalMapping<KernelAcpiHandler, T>) -> &[u8] {
    // SAFETY: the mapping covers the table's whole length (the crate maps
    // `header.length` bytes before checking the checksum over all of them).
    unsafe {
        core::slice::from_raw_parts(
            mapping.virtual_start().as_ptr().cast::<u8>(),
            mapping.region_length(),
        )
    }
}

fn find<T: AcpiTable>(tables: &AcpiTables<KernelAcpiHandler>) -> Option<Vec<u8>> {
    tables.find_table::<T>().ok().map(|mapping| table_bytes(&mapping).to_vec())
}

/// The `_HID` of a virtio-mmio device (Linux's ACPI binding, which QEMU
/// `microvm` follows).
const VIRTIO_MMIO_HID: &[u8] = b"LNRO0005";
/// A DSDT longer than this is not scanned (QEMU's are a few KiB).
const MAX_DSDT_BYTES: u32 = 1 << 20;

/// `len` bytes of firmware memory at `phys`, copied (zeroes where they
/// cannot be mapped).
fn copy_physical(phys: u64, len: usize) -> Vec<u8> {
    // SAFETY: firmware tables and the BIOS areas are plain memory (or
    // device memory the handler maps uncached); reading them has no side
    // effects, and the handler substitutes zeroes for what it cannot map.
    let mapping = unsafe { KernelAcpiHandler.map_physical_region::<u8>(phys as usize, len) };
    // SAFETY: the mapping covers `region_length` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(mapping.virtual_start().as_ptr(), mapping.region_length())
    };
    bytes.to_vec()
}

/// The DSDT's AML, copied out of firmware memory.
fn dsdt_bytes(tables: &AcpiTables<KernelAcpiHandler>) -> Option<Vec<u8>> {
    // The crate found the DSDT through the FADT and checked its header;
    // `address..address + length` is its AML body.
    let dsdt = tables.dsdt().ok()?;
    if dsdt.length == 0 || dsdt.length > MAX_DSDT_BYTES {
        return None;
    }
    Some(copy_physical(dsdt.address as u64, dsdt.length as usize))
}

/// The platform from the MP tables, for a machine without ACPI (`why`).
fn from_mp_tables(why: PlatformError) -> Option<PlatformInfo> {
    // The BIOS data area: the EBDA's segment at 0x40e, base memory in KiB
    // at 0x413.
    let bda = copy_physical(0x400, 0x100);
    let word = |at: usize| u16::from_le_bytes([bda[at], bda[at + 1]]);
    let table_phys = mptable::search_areas(word(0x0e), word(0x13))
        .into_iter()
        .find_map(|(start, len)| mptable::find_pointer(&copy_physical(start, len)))?;
    let header = copy_physical(u64::from(table_phys), 44);
    let length = mptable::table_length(&header)?;
    let table = copy_physical(u64::from(table_phys), length);
    let mp = match mptable::parse(&table, lapic::cpuid_apic_id()) {
        Ok(mp) => mp,
        Err(error) => {
            log::warn!("acpi: MP table at {table_phys:#x} unusable: {error:?}");
            return None;
        }
    };
    // The MP tables give no GSI bases: the I/O APICs' inputs follow each
    // other in table order, each as many as its version register says. An
    // id the table gives that the chip's register does not hold (qboot
    // writes 3 for a chip that reads 0) is replaced by the register's.
    let mut ioapics = mp.ioapics;
    let mut next_gsi = 0;
    for ioapic in &mut ioapics {
        ioapic.gsi_base = next_gsi;
        let (inputs, hardware_id) =
            crate::platform::apic::ioapic::probe(ioapic.phys).unwrap_or((24, ioapic.id));
        if hardware_id != ioapic.id {
            log::info!(
                "acpi: MP table gives I/O APIC {:#x} id {}, its register says {hardware_id}",
                ioapic.phys.as_u64(),
                ioapic.id
            );
            ioapic.id = hardware_id;
        }
        next_gsi += inputs;
    }
    let mut info = PlatformInfo::fallback(why);
    info.source = Source::MpTables(why);
    info.cpus = mp.cpus;
    info.lapic_phys = PhysAddr::try_new(mp.lapic_phys).unwrap_or(PhysAddr::new(DEFAULT_LAPIC_PHYS));
    info.ioapics = ioapics;
    info.isa_overrides = mp.isa_overrides;
    info.lapic_nmis = mp.lapic_nmis;
    // The boot CPU must be among the processors, or the table is wrong.
    info.bsp()?;
    Some(info)
}

fn discover() -> Result<PlatformInfo, PlatformError> {
    let rsdp = crate::arch::boot_info::get().rsdp.ok_or(PlatformError::NoRsdp)?;
    // SAFETY: the PVH loader's RSDP address; the crate validates signature
    // and checksum before following it.
    let tables = unsafe { AcpiTables::from_rsdp(KernelAcpiHandler, rsdp.as_u64() as usize) }
        .map_err(|error| {
            log::error!("acpi: RSDP at {:#x} unusable: {error:?}", rsdp.as_u64());
            PlatformError::BadRootTable
        })?;
    let bsp_apic_id = lapic::cpuid_apic_id();
    let madt = find::<::acpi::madt::Madt>(&tables).ok_or(PlatformError::Missing("APIC"))?;
    let madt = tables::parse_madt(&madt, bsp_apic_id).map_err(PlatformError::Malformed)?;
    let pci_segments = match find::<::acpi::mcfg::Mcfg>(&tables).map(|t| tables::parse_mcfg(&t)) {
        Some(Ok(segments)) => segments,
        Some(Err(error)) => {
            log::warn!("acpi: MCFG unusable: {error:?}");
            Vec::new()
        }
        None => Vec::new(),
    };
    let hpet = match find::<::acpi::hpet::HpetTable>(&tables).map(|t| tables::parse_hpet(&t)) {
        Some(Ok(hpet)) => Some(hpet),
        Some(Err(error)) => {
            log::warn!("acpi: HPET table unusable: {error:?}");
            None
        }
        None => None,
    };
    let pm_timer =
        match find::<::acpi::fadt::Fadt>(&tables).map(|t| tables::parse_fadt_pm_timer(&t)) {
            Some(Ok(pm_timer)) => pm_timer,
            Some(Err(error)) => {
                log::warn!("acpi: FADT unusable: {error:?}");
                None
            }
            None => None,
        };
    let virtio_mmio = dsdt_bytes(&tables)
        .map(|aml| aml::find_mmio_devices(&aml, VIRTIO_MMIO_HID))
        .unwrap_or_default();
    let mut info = PlatformInfo {
        source: Source::Acpi,
        cpus: madt.cpus,
        lapic_phys: PhysAddr::try_new(madt.lapic_phys).unwrap_or(PhysAddr::new(DEFAULT_LAPIC_PHYS)),
        has_8259: madt.has_8259,
        ioapics: madt.ioapics,
        isa_overrides: madt.isa_overrides,
        lapic_nmis: madt.lapic_nmis,
        pci_segments,
        hpet,
        pm_timer,
        virtio_mmio,
    };
    if info.bsp().is_none() {
        // The CPU running this code exists whatever the table says.
        log::warn!("acpi: MADT lacks the boot CPU (APIC id {bsp_apic_id}); adding it");
        info.cpus.insert(
            0,
            CpuInfo { apic_id: bsp_apic_id, processor_uid: 0, is_bsp: true, usable: true },
        );
    }
    Ok(info)
}

static PLATFORM: spin::Once<PlatformInfo> = spin::Once::new();

/// Reads the ACPI tables once (later calls return the same result). Needs
/// the heap and page tables (`mm::init`).
pub fn init() -> &'static PlatformInfo {
    PLATFORM.call_once(|| {
        let info = discover().unwrap_or_else(|error| match from_mp_tables(error) {
            Some(info) => {
                log::warn!("acpi: {error:?}; the MP tables describe the CPUs and I/O APICs");
                info
            }
            None => {
                log::error!(
                    "acpi: {error:?}, no MP tables; assuming one CPU and no I/O APIC, HPET or ECAM"
                );
                PlatformInfo::fallback(error)
            }
        });
        log::info!(
            "acpi: {} CPUs ({} usable), LAPIC {:#x}, {} I/O APICs, {} ISA overrides, {} PCI \
             segments, HPET {}, PM timer {}, {} virtio-mmio devices",
            info.cpus.len(),
            info.usable_cpus().count(),
            info.lapic_phys.as_u64(),
            info.ioapics.len(),
            info.isa_overrides.len(),
            info.pci_segments.len(),
            if info.hpet.is_some() { "present" } else { "absent" },
            if info.pm_timer.is_some() { "present" } else { "absent" },
            info.virtio_mmio.len()
        );
        log::debug!("acpi: {info:?}");
        info
    })
}

/// The platform description; [`init`] must have run (a kernel bug if not).
pub fn platform() -> &'static PlatformInfo {
    PLATFORM.get().expect("acpi::platform() used before acpi::init()")
}

/// The platform description, if [`init`] has run.
pub fn try_platform() -> Option<&'static PlatformInfo> {
    PLATFORM.get()
}

mod tests;
