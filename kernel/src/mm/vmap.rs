//! Kernel virtual address ranges handed out page by page.
//!
//! Ranges are never reused, and each is followed by an unmapped guard page,
//! so a stale pointer or an overrun faults instead of touching a neighbour.
//! One PML4 slot (512 GiB) per area is far more than a run can use.

use super::{MMIO_BASE, PAGE_SIZE, VMAP_BASE, VirtAddr};
use core::sync::atomic::{AtomicU64, Ordering};

const AREA_BYTES: u64 = 512 << 30;

/// A bump allocator of virtual addresses within one area.
pub struct VirtualArea {
    base: u64,
    next_offset: AtomicU64,
}

impl VirtualArea {
    const fn new(base: u64) -> Self {
        Self { base, next_offset: AtomicU64::new(0) }
    }

    /// Reserves `pages` pages plus a guard page; returns the first page.
    pub fn reserve(&self, pages: u64) -> VirtAddr {
        let bytes = (pages + 1) * PAGE_SIZE;
        let offset = self.next_offset.fetch_add(bytes, Ordering::Relaxed);
        assert!(offset + bytes <= AREA_BYTES, "virtual area at {:#x} exhausted", self.base);
        VirtAddr::new(self.base + offset)
    }
}

/// General page-by-page mappings.
pub static VMAP: VirtualArea = VirtualArea::new(VMAP_BASE);
/// Device register mappings.
pub static MMIO: VirtualArea = VirtualArea::new(MMIO_BASE);

/// Reserves `pages` pages in the general area.
pub fn reserve(pages: u64) -> VirtAddr {
    VMAP.reserve(pages)
}
