//! The PVH `hvm_start_info` handed over by QEMU, copied into kernel memory.
//!
//! The start info, its memory map and the command line live in guest memory
//! the frame allocator will soon hand out, so everything needed later is
//! copied into a fixed-size `BootInfo` before memory management starts.
//! Layout: Xen's `arch/x86/hvm/start_info.h` (version 1 adds the memory map).

use x86_64::PhysAddr;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// More entries than any QEMU machine reports; extra ones are counted, not kept.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// Longer command lines are truncated (and reported).
pub const MAX_CMDLINE_BYTES: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// What a region of physical memory is, per the E820 type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM.
    Ram,
    /// Reserved by the platform.
    Reserved,
    /// ACPI tables, reclaimable once parsed.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Anything else (bad memory, persistent memory, unknown codes).
    Other(u32),
}

impl RegionKind {
    fn from_e820(code: u32) -> Self {
        match code {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            other => Self::Other(other),
        }
    }
}

/// One physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte of the region.
    pub start: PhysAddr,
    /// Length in bytes.
    pub len_bytes: u64,
    /// What the region holds.
    pub kind: RegionKind,
}

impl MemoryRegion {
    /// One past the last byte.
    pub fn end(&self) -> PhysAddr {
        self.start + self.len_bytes
    }
}

/// Why the start info could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The magic number did not match: not a PVH boot.
    BadMagic(u32),
    /// Version 0 has no memory map, which vireo needs.
    NoMemoryMap,
}

/// Everything the kernel keeps from the boot protocol.
pub struct BootInfo {
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    /// Regions the firmware reported beyond `MAX_MEMORY_REGIONS`.
    pub dropped_regions: usize,
    cmdline: [u8; MAX_CMDLINE_BYTES],
    cmdline_len: usize,
    /// Whether the command line was longer than `MAX_CMDLINE_BYTES`.
    pub cmdline_truncated: bool,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp: Option<PhysAddr>,
    /// Physical address of the start info itself.
    pub start_info: PhysAddr,
}

impl BootInfo {
    /// Copies the start info at `start_info_phys`, read through `phys_to_ptr`.
    ///
    /// # Errors
    /// [`BootInfoError`] when the structure is not a usable PVH start info.
    pub fn parse(
        start_info_phys: PhysAddr,
        phys_to_ptr: impl Fn(PhysAddr) -> *const u8,
    ) -> Result<Self, BootInfoError> {
        // SAFETY: the loader put a start info at this address and the boot
        // page tables map all of low memory; read_unaligned copes with any
        // placement.
        let info: StartInfo =
            unsafe { phys_to_ptr(start_info_phys).cast::<StartInfo>().read_unaligned() };
        if info.magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(info.magic));
        }
        if info.version < 1 || info.memmap_paddr == 0 {
            return Err(BootInfoError::NoMemoryMap);
        }
        let mut boot_info = BootInfo {
            regions: [MemoryRegion {
                start: PhysAddr::zero(),
                len_bytes: 0,
                kind: RegionKind::Reserved,
            }; MAX_MEMORY_REGIONS],
            region_count: 0,
            dropped_regions: 0,
            cmdline: [0; MAX_CMDLINE_BYTES],
            cmdline_len: 0,
            cmdline_truncated: false,
            rsdp: PhysAddr::try_new(info.rsdp_paddr).ok().filter(|rsdp| !rsdp.is_null()),
            start_info: start_info_phys,
        };
        for index in 0..info.memmap_entries as usize {
            let entry_phys =
                PhysAddr::new(info.memmap_paddr + (index * size_of::<MemmapEntry>()) as u64);
            // SAFETY: the loader promises `memmap_entries` entries at
            // `memmap_paddr`, inside mapped low memory.
            let entry: MemmapEntry =
                unsafe { phys_to_ptr(entry_phys).cast::<MemmapEntry>().read_unaligned() };
            // An address beyond 52 bits cannot be real memory: ignore it.
            let Ok(start) = PhysAddr::try_new(entry.addr) else {
                boot_info.dropped_regions += 1;
                continue;
            };
            boot_info.push_region(MemoryRegion {
                start,
                len_bytes: entry.size,
                kind: RegionKind::from_e820(entry.kind),
            });
        }
        if info.cmdline_paddr != 0 {
            let base = phys_to_ptr(PhysAddr::new(info.cmdline_paddr));
            while boot_info.cmdline_len < MAX_CMDLINE_BYTES {
                // SAFETY: the command line is a NUL-terminated string in
                // mapped memory; we stop at the NUL or our buffer's end.
                let byte = unsafe { base.add(boot_info.cmdline_len).read() };
                if byte == 0 {
                    break;
                }
                boot_info.cmdline[boot_info.cmdline_len] = byte;
                boot_info.cmdline_len += 1;
            }
            // SAFETY: as above, one byte past what was copied.
            boot_info.cmdline_truncated = boot_info.cmdline_len == MAX_CMDLINE_BYTES
                && unsafe { base.add(MAX_CMDLINE_BYTES).read() } != 0;
        }
        Ok(boot_info)
    }

    fn push_region(&mut self, region: MemoryRegion) {
        if region.len_bytes == 0 {
            return;
        }
        if self.region_count == MAX_MEMORY_REGIONS {
            self.dropped_regions += 1;
            return;
        }
        self.regions[self.region_count] = region;
        self.region_count += 1;
    }

    /// The memory map, in the order the loader gave it.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Usable RAM regions only.
    pub fn ram_regions(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.regions().iter().filter(|region| region.kind == RegionKind::Ram)
    }

    /// The kernel command line (non-UTF-8 bytes make it empty, with a warning
    /// from the caller).
    pub fn cmdline(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len])
    }
}

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

/// Stores the parsed boot info for the rest of the kernel's life.
pub fn set(info: BootInfo) -> &'static BootInfo {
    BOOT_INFO.call_once(|| info)
}

/// The boot info; panics if called before `set` (a kernel bug).
pub fn get() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot info used before it was parsed")
}

mod tests {
    use super::*;
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn start_info_was_pvh() {
            let info = get();
            check!(info.start_info.as_u64() != 0);
            check_eq!(info.dropped_regions, 0);
            check!(!info.cmdline_truncated);
            Ok(())
        }
    );

    ktest!(
        fn memory_map_has_enough_ram() {
            let ram: u64 = get().ram_regions().map(|region| region.len_bytes).sum();
            // The truth from outside: what QEMU was given (`-m`). The map
            // lacks the firmware's reservations and the legacy holes (a few
            // MiB), never more than an eighth of it, and cannot exceed it.
            let Some(given) = crate::arch::fw_cfg::ram_bytes() else {
                return crate::ktest::skip("no fw_cfg: the machine's memory size is unknown");
            };
            check!(
                ram >= given - given / 8,
                "{} MiB of RAM mapped of {} MiB",
                ram >> 20,
                given >> 20
            );
            check!(
                ram <= given,
                "{} MiB of RAM mapped, more than the {} MiB given",
                ram >> 20,
                given >> 20
            );
            Ok(())
        }
    );

    ktest!(
        fn ram_regions_do_not_overlap() {
            let info = get();
            for (i, a) in info.ram_regions().enumerate() {
                for b in info.ram_regions().skip(i + 1) {
                    check!(a.end() <= b.start || b.end() <= a.start, "{:?} overlaps {:?}", a, b);
                }
            }
            Ok(())
        }
    );

    ktest!(
        fn cmdline_selects_test_mode() {
            let cmdline = check_ok!(get().cmdline());
            check!(cmdline.split_whitespace().any(|word| word == "ktest"), "cmdline {:?}", cmdline);
            Ok(())
        }
    );

    ktest!(
        fn bad_magic_is_rejected() {
            let fake = [0u8; 64];
            let result = BootInfo::parse(PhysAddr::zero(), |_| fake.as_ptr());
            check!(matches!(result, Err(BootInfoError::BadMagic(0))));
            Ok(())
        }
    );
}
