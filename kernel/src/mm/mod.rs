//! Memory management: physical frames, page tables with a direct map of all
//! RAM, the kernel heap, DMA buffers and MMIO mappings.
//!
//! Virtual layout (PML4 slots):
//! - 256..: the direct map (HHDM) of RAM at `HHDM_BASE + phys`;
//! - 288: `VMAP_BASE`, pages mapped one by one (tests, later stacks);
//! - 320: `MMIO_BASE`, device registers mapped uncached;
//! - 511: the kernel image at `KERNEL_VMA + phys`.

pub mod canary;
mod canary_tests;
pub mod dma;
pub mod frame;
pub mod heap;
pub mod mmio;
pub mod paging;
pub mod soft_tlb;
pub mod vmap;

use crate::arch::boot_info::BootInfo;
pub use x86_64::{PhysAddr, VirtAddr};

/// Bytes per small page / frame.
pub const PAGE_SIZE: u64 = 4096;
/// Start of the direct map of physical memory.
pub const HHDM_BASE: u64 = 0xffff_8000_0000_0000;
/// Start of the page-by-page mapping area.
pub const VMAP_BASE: u64 = 0xffff_9000_0000_0000;
/// Start of the MMIO mapping area.
pub const MMIO_BASE: u64 = 0xffff_a000_0000_0000;
/// Where the kernel image is linked: physical address + this.
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// A request could not be met from free memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// The direct-map address of a physical address.
pub fn phys_to_virt(phys: PhysAddr) -> VirtAddr {
    VirtAddr::new(HHDM_BASE + phys.as_u64())
}

/// The physical range the kernel image occupies.
pub fn kernel_image_phys() -> (PhysAddr, PhysAddr) {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __kernel_end: u8;
    }
    // Only the addresses of the linker-defined symbols are taken.
    let (start, end) = (&raw const __kernel_start as u64, &raw const __kernel_end as u64);
    (PhysAddr::new(start - KERNEL_VMA), PhysAddr::new(end - KERNEL_VMA))
}

/// Brings up frames, the final page tables and the heap, in that order.
pub fn init(boot_info: &BootInfo) {
    frame::init(boot_info);
    paging::init(boot_info);
    heap::init();
}
