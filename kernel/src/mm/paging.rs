//! Page tables: the final direct map, and map/unmap/translate for the
//! kernel's own mapping areas.
//!
//! The boot stub mapped physical 0..4 GiB twice (identity and direct map),
//! MMIO holes included. `init` replaces both with a direct map of exactly the
//! RAM and ACPI regions of the memory map (2 MiB pages where a region allows,
//! 4 KiB at its edges), so device memory is never mapped cacheable by
//! accident and null pointers fault. The kernel image mapping (PML4 slot
//! 511) is kept.
//!
//! All changes go through one lock; unmapping flushes this CPU's TLB (remote
//! CPUs are shot down by the SMP layer).

use super::{HHDM_BASE, OutOfMemory, PAGE_SIZE, PhysAddr, VirtAddr, frame, phys_to_virt};
use crate::arch::boot_info::{BootInfo, RegionKind};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MapToError, TranslateResult, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size4KiB, Translate,
};

const HUGE_PAGE_SIZE: u64 = 2 << 20;
const IDENTITY_SLOT: usize = 0;
const HHDM_SLOT: usize = 256;

/// Why a mapping change failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame for a page table.
    OutOfMemory,
    /// The page is already mapped.
    AlreadyMapped,
    /// The page is not mapped.
    NotMapped,
    /// The page lies inside a huge-page mapping (the direct map).
    InsideHugePage,
}

impl From<OutOfMemory> for MapError {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
    }
}

static PAGE_TABLES: spin::Mutex<()> = spin::Mutex::new(());

struct KernelFrames;

// SAFETY: frames come from the frame allocator, unused and 4 KiB aligned.
unsafe impl FrameAllocator<Size4KiB> for KernelFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let phys = frame::alloc().ok()?;
        zero_frame(phys);
        Some(PhysFrame::containing_address(phys))
    }
}

fn zero_frame(phys: PhysAddr) {
    // SAFETY: a freshly allocated frame, reachable through the direct map.
    unsafe { phys_to_virt(phys).as_mut_ptr::<u8>().write_bytes(0, PAGE_SIZE as usize) };
}

fn active_pml4() -> *mut PageTable {
    phys_to_virt(Cr3::read().0.start_address()).as_mut_ptr()
}

/// Runs `f` with the active page tables, under the page-table lock.
fn with_mapper<R>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _guard = PAGE_TABLES.lock();
        // SAFETY: CR3's PML4 is mapped by the direct map at HHDM_BASE, and the
        // lock gives us the only mutable view of the tables.
        let mut mapper =
            unsafe { OffsetPageTable::new(&mut *active_pml4(), VirtAddr::new(HHDM_BASE)) };
        f(&mut mapper)
    })
}

/// The page table in the frame at `table_phys`, through the direct map.
///
/// # Safety
/// The frame must hold a page table, and the caller must be its only
/// writer for the reference's life: boot code before other CPUs run, or a
/// holder of the page-table lock building tables no one else can reach yet.
unsafe fn table_at(table_phys: PhysAddr) -> &'static mut PageTable {
    // SAFETY: page-table frames are RAM reachable through the direct map;
    // exclusivity is the caller's promise.
    unsafe { &mut *phys_to_virt(table_phys).as_mut_ptr::<PageTable>() }
}

/// The child table of `table[index]`, allocated and linked if missing.
///
/// # Safety
/// As for [`table_at`], for the whole subtree under `table`.
unsafe fn next_table(
    table: &mut PageTable,
    index: usize,
) -> Result<&'static mut PageTable, OutOfMemory> {
    let entry = &mut table[index];
    if entry.is_unused() {
        let phys = frame::alloc()?;
        zero_frame(phys);
        entry.set_addr(phys, Flags::PRESENT | Flags::WRITABLE);
    }
    // SAFETY: the entry points at a page table of the caller's subtree.
    Ok(unsafe { table_at(entry.addr()) })
}

/// Maps `start..end` at `HHDM_BASE + phys` in the tree rooted at `pml4`:
/// 2 MiB pages where the range allows, 4 KiB elsewhere.
///
/// # Safety
/// The caller is the only user of the tree under `pml4` (see `table_at`).
unsafe fn direct_map_range(pml4: &mut PageTable, start: u64, end: u64) -> Result<(), OutOfMemory> {
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::GLOBAL | Flags::NO_EXECUTE;
    let mut phys = start;
    while phys < end {
        let virt = VirtAddr::new(HHDM_BASE + phys);
        // SAFETY: the caller owns the whole tree.
        let pdpt = unsafe { next_table(pml4, usize::from(virt.p4_index()))? };
        // SAFETY: as above.
        let pd = unsafe { next_table(pdpt, usize::from(virt.p3_index()))? };
        if phys.is_multiple_of(HUGE_PAGE_SIZE) && phys + HUGE_PAGE_SIZE <= end {
            pd[usize::from(virt.p2_index())]
                .set_addr(PhysAddr::new(phys), flags | Flags::HUGE_PAGE);
            phys += HUGE_PAGE_SIZE;
        } else {
            // SAFETY: as above.
            let pt = unsafe { next_table(pd, usize::from(virt.p2_index()))? };
            pt[usize::from(virt.p1_index())].set_addr(PhysAddr::new(phys), flags);
            phys += PAGE_SIZE;
        }
    }
    Ok(())
}

/// Replaces the boot identity map and direct map with a direct map of RAM
/// and ACPI memory only.
pub fn init(boot_info: &BootInfo) {
    // SAFETY: single CPU, interrupts off during boot; the boot PML4 is live.
    let pml4 = unsafe { &mut *active_pml4() };
    // Build the new direct map under a scratch PML4, then move its slots in.
    let scratch_phys = frame::alloc().expect("no frame for page tables");
    zero_frame(scratch_phys);
    // SAFETY: a fresh, zeroed frame that only this function knows.
    let scratch = unsafe { table_at(scratch_phys) };
    // The first 1 MiB is mapped whole: firmware tables and the AP trampoline
    // live there.
    // SAFETY: the scratch tree is private to this function until installed.
    unsafe { direct_map_range(scratch, 0, 1 << 20) }.expect("no frames for the direct map");
    for region in boot_info.regions() {
        let wanted = matches!(
            region.kind,
            RegionKind::Ram | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
        );
        if wanted {
            let start = region.start.as_u64().next_multiple_of(PAGE_SIZE).max(1 << 20);
            let end = region.end().as_u64() / PAGE_SIZE * PAGE_SIZE;
            if start < end {
                // SAFETY: as above.
                unsafe { direct_map_range(scratch, start, end) }
                    .expect("no frames for the direct map");
                if region.kind == RegionKind::Ram {
                    let pages = (end - start) / PAGE_SIZE;
                    super::soft_tlb::offer_range(phys_to_virt(PhysAddr::new(start)), pages);
                }
            }
        }
    }
    pml4[IDENTITY_SLOT].set_unused();
    for slot in HHDM_SLOT..HHDM_SLOT + 128 {
        pml4[slot] = scratch[slot].clone();
    }
    frame::free(scratch_phys, 1);
    // Reloading CR3 flushes every non-global entry; the old direct map used
    // no global pages.
    let (root, cr3_flags) = Cr3::read();
    // SAFETY: same root; the kernel image and the new direct map are mapped.
    unsafe { Cr3::write(root, cr3_flags) };
}

/// Maps the 4 KiB page at `virt` to `phys`.
///
/// # Errors
/// [`MapError`] if the page is mapped already, a huge page covers it, or a
/// page-table frame cannot be allocated.
pub fn map_page(virt: VirtAddr, phys: PhysAddr, flags: Flags) -> Result<(), MapError> {
    let page = Page::<Size4KiB>::containing_address(virt);
    let frame = PhysFrame::containing_address(phys);
    with_mapper(|mapper| {
        // SAFETY: callers map into vireo's own mapping areas, never over
        // memory Rust code already uses; the frame is theirs to map.
        match unsafe { mapper.map_to(page, frame, flags | Flags::PRESENT, &mut KernelFrames) } {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) => Err(MapError::OutOfMemory),
            Err(MapToError::PageAlreadyMapped(_)) => Err(MapError::AlreadyMapped),
            Err(MapToError::ParentEntryHugePage) => Err(MapError::InsideHugePage),
        }
    })
}

/// Unmaps the 4 KiB page at `virt` and returns the frame it mapped. Only
/// this CPU's TLB is flushed.
///
/// # Errors
/// [`MapError::NotMapped`] or [`MapError::InsideHugePage`].
pub fn unmap_page(virt: VirtAddr) -> Result<PhysAddr, MapError> {
    let page = Page::<Size4KiB>::containing_address(virt);
    with_mapper(|mapper| match mapper.unmap(page) {
        Ok((frame, flush)) => {
            flush.flush();
            Ok(frame.start_address())
        }
        Err(UnmapError::ParentEntryHugePage) => Err(MapError::InsideHugePage),
        Err(_) => Err(MapError::NotMapped),
    })
}

/// The physical address `virt` maps to, if any.
pub fn translate(virt: VirtAddr) -> Option<PhysAddr> {
    with_mapper(|mapper| mapper.translate_addr(virt))
}

/// The flags of the mapping that covers `virt`, if any.
pub fn flags_of(virt: VirtAddr) -> Option<Flags> {
    with_mapper(|mapper| match mapper.translate(virt) {
        TranslateResult::Mapped { flags, .. } => Some(flags),
        _ => None,
    })
}

/// Whether `address` is mapped, by a lock-free walk of the active tables.
/// For crash reports, which must not wait on the page-table lock.
pub fn is_mapped(address: u64) -> bool {
    let Ok(virt) = VirtAddr::try_new(address) else {
        return false;
    };
    // SAFETY: only read, racily but harmlessly: a concurrent change makes
    // the answer stale, never unsafe, because page-table frames stay tables.
    let mut table: &PageTable = unsafe { table_at(Cr3::read().0.start_address()) };
    for index in [virt.p4_index(), virt.p3_index(), virt.p2_index(), virt.p1_index()] {
        let entry = &table[index];
        if !entry.flags().contains(Flags::PRESENT) {
            return false;
        }
        if entry.flags().contains(Flags::HUGE_PAGE) {
            return true;
        }
        // SAFETY: as above, for the next level.
        table = unsafe { table_at(entry.addr()) };
    }
    true
}

mod tests {
    use super::*;
    use crate::arch::fixup;
    use crate::mm::{VMAP_BASE, vmap};
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn map_translate_unmap_roundtrip() {
            let virt = vmap::reserve(1);
            let phys = check_ok!(frame::alloc());
            check_ok!(map_page(virt, phys, Flags::WRITABLE | Flags::NO_EXECUTE));
            check_eq!(translate(virt + 0x123u64), Some(phys + 0x123u64));
            check_eq!(check_ok!(unmap_page(virt)), phys);
            check_eq!(translate(virt), None);
            frame::free(phys, 1);
            Ok(())
        }
    );

    ktest!(
        fn mapping_aliases_the_direct_map() {
            let virt = vmap::reserve(1);
            let phys = check_ok!(frame::alloc());
            check_ok!(map_page(virt, phys, Flags::WRITABLE | Flags::NO_EXECUTE));
            // SAFETY: both addresses map the frame this test owns.
            let seen = unsafe {
                virt.as_mut_ptr::<u64>().write_volatile(0x7669_7265_6f21);
                phys_to_virt(phys).as_ptr::<u64>().read_volatile()
            };
            check_ok!(unmap_page(virt));
            frame::free(phys, 1);
            check_eq!(seen, 0x7669_7265_6f21);
            Ok(())
        }
    );

    ktest!(
        fn double_map_and_double_unmap_are_errors() {
            let virt = vmap::reserve(1);
            let phys = check_ok!(frame::alloc());
            check_ok!(map_page(virt, phys, Flags::WRITABLE));
            check_eq!(map_page(virt, phys, Flags::WRITABLE), Err(MapError::AlreadyMapped));
            check_ok!(unmap_page(virt));
            check_eq!(unmap_page(virt), Err(MapError::NotMapped));
            frame::free(phys, 1);
            Ok(())
        }
    );

    ktest!(
        fn unmapped_page_faults_with_its_address() {
            let virt = vmap::reserve(1);
            let phys = check_ok!(frame::alloc());
            check_ok!(map_page(virt, phys, Flags::WRITABLE));
            check_ok!(fixup::probe_read_u64(virt.as_u64()));
            check_ok!(unmap_page(virt));
            frame::free(phys, 1);
            let fault = fixup::probe_read_u64(virt.as_u64() + 8);
            check_eq!(fault, Err(fixup::Fault { vector: 14, address: virt.as_u64() + 8 }));
            Ok(())
        }
    );

    ktest!(
        fn direct_map_covers_all_ram_and_no_identity_map() {
            for region in crate::arch::boot_info::get().ram_regions() {
                let last = (region.end() - 1u64).align_down(PAGE_SIZE);
                check_eq!(translate(phys_to_virt(last)), Some(last));
            }
            check!(!is_mapped(0x1000), "identity map still present");
            check!(!is_mapped(VMAP_BASE - PAGE_SIZE));
            Ok(())
        }
    );

    ktest!(
        fn kernel_text_translates_to_its_load_address() {
            let text = kernel_text_translates_to_its_load_address as *const () as u64;
            let phys = check_ok!(translate(VirtAddr::new(text)).ok_or("unmapped"));
            check_eq!(phys.as_u64(), text - crate::mm::KERNEL_VMA);
            Ok(())
        }
    );

    ktest!(
        fn write_to_readonly_mapping_faults() {
            let virt = vmap::reserve(1);
            let phys = check_ok!(frame::alloc());
            check_ok!(map_page(virt, phys, Flags::NO_EXECUTE));
            // SAFETY: the page maps a frame this test owns; the write should fault.
            let result = unsafe { fixup::probe_write_u64(virt.as_u64(), 1) };
            check_ok!(unmap_page(virt));
            frame::free(phys, 1);
            check_eq!(result.map_err(|fault| fault.vector), Err(14));
            Ok(())
        }
    );
}
