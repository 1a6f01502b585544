//! The VirtIO crate's DMA boundary, implemented with the frame allocator.
//!
//! DMA memory is physically contiguous frames reached through the direct
//! map. x86 DMA is cache-coherent and QEMU has no IOMMU in vireo's machine,
//! so the device address is the physical address.

use crate::mm::{PAGE_SIZE, PhysAddr, frame, phys_to_virt};
use core::ptr::NonNull;
use vireo_virtio::Hal;

/// The kernel's HAL: stateless, so clones are interchangeable.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHal;

// SAFETY: `dma_alloc` hands out frames fresh from the frame allocator
// (contiguous, page aligned, owned by nobody else), zeroed through the
// write-back direct map, which is coherent with device DMA on x86, and the
// device address is the physical address (no IOMMU): the trait's default,
// identity sharing (`SHARES_BUFFERS` false) is exact.
unsafe impl Hal for KernelHal {
    fn dma_alloc(&self, pages: usize) -> Option<(u64, NonNull<u8>)> {
        let phys = frame::alloc_contiguous(pages as u64, 1).ok()?;
        let virt = phys_to_virt(phys).as_mut_ptr::<u8>();
        // SAFETY: the frames were just allocated and are mapped read-write.
        unsafe { virt.write_bytes(0, pages * PAGE_SIZE as usize) };
        Some((phys.as_u64(), NonNull::new(virt)?))
    }

    unsafe fn dma_dealloc(&self, paddr: u64, _vaddr: NonNull<u8>, pages: usize) {
        frame::free(PhysAddr::new(paddr), pages as u64);
    }
}
