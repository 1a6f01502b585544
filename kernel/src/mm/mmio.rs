//! Device registers mapped uncached.
//!
//! MMIO pages get PCD|PWT, which selects the UC type in the default PAT, so
//! every access reaches the device in program order and nothing is merged or
//! speculatively read. The direct map never covers device memory (see
//! `paging`), so there is no cacheable alias.

use super::paging::{MapError, map_page};
use super::{PAGE_SIZE, PhysAddr, VirtAddr, vmap};
use x86_64::structures::paging::PageTableFlags as Flags;

/// A mapped device register window.
#[derive(Debug, Clone, Copy)]
pub struct MmioRegion {
    virt: VirtAddr,
    phys: PhysAddr,
    len_bytes: usize,
}

impl MmioRegion {
    /// Virtual address of the first mapped byte (`phys` itself, not the page).
    pub fn virt(&self) -> VirtAddr {
        self.virt
    }

    /// Physical address the region starts at.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// Length of the region in bytes.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }
}

/// The page flags every MMIO mapping uses.
pub const MMIO_FLAGS: Flags = Flags::PRESENT
    .union(Flags::WRITABLE)
    .union(Flags::NO_CACHE)
    .union(Flags::WRITE_THROUGH)
    .union(Flags::NO_EXECUTE);

/// Maps `len_bytes` of device memory at `phys` uncached.
///
/// # Errors
/// [`MapError`] when page tables cannot be allocated.
pub fn map(phys: PhysAddr, len_bytes: usize) -> Result<MmioRegion, MapError> {
    let first_page = phys.align_down(PAGE_SIZE);
    let offset = phys - first_page;
    let pages = (offset + len_bytes as u64).div_ceil(PAGE_SIZE);
    let base = vmap::MMIO.reserve(pages);
    for page in 0..pages {
        map_page(base + page * PAGE_SIZE, first_page + page * PAGE_SIZE, MMIO_FLAGS)?;
    }
    Ok(MmioRegion { virt: base + offset, phys, len_bytes })
}

mod tests {
    use super::*;
    use crate::mm::paging::{flags_of, translate};
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn mmio_mapping_is_uncached_and_offset_preserved() {
            // The IOAPIC's register window: device memory on every PC.
            let region = check_ok!(map(PhysAddr::new(0xfec0_0010), 0x20));
            check_eq!(region.virt().as_u64() % PAGE_SIZE, 0x10);
            check_eq!((region.phys().as_u64(), region.len_bytes()), (0xfec0_0010, 0x20));
            check_eq!(translate(region.virt()), Some(PhysAddr::new(0xfec0_0010)));
            let flags = check_ok!(flags_of(region.virt()).ok_or("unmapped"));
            check!(flags.contains(Flags::NO_CACHE | Flags::WRITE_THROUGH), "flags {:?}", flags);
            check!(flags.contains(Flags::NO_EXECUTE));
            Ok(())
        }
    );

    ktest!(
        fn device_memory_is_not_in_the_direct_map() {
            check!(!crate::mm::paging::is_mapped(
                crate::mm::phys_to_virt(PhysAddr::new(0xfec0_0000)).as_u64()
            ));
            Ok(())
        }
    );
}
