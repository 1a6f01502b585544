//! The VirtIO crate's DMA boundary, implemented with the frame allocator.
//!
//! DMA memory is physically contiguous frames reached through the direct
//! map. x86 DMA is cache-coherent and QEMU has no IOMMU in vireo's machine,
//! so the device address is the physical address.

use crate::mm::{HHDM_BASE, PAGE_SIZE, PhysAddr, VMAP_BASE, frame, phys_to_virt};
use core::ptr::NonNull;
use vireo_virtio::Hal;

/// The kernel's HAL: stateless, so clones are interchangeable.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHal;

// SAFETY: `dma_alloc` hands out frames fresh from the frame allocator
// (contiguous, page aligned, owned by nobody else), zeroed through the
// write-back direct map, which is coherent with device DMA on x86; the
// translations below are the direct map's, exact for every frame.
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

    fn phys_to_virt(&self, paddr: u64) -> Option<NonNull<u8>> {
        let phys = PhysAddr::try_new(paddr).ok()?;
        NonNull::new(phys_to_virt(phys).as_mut_ptr())
    }

    fn virt_to_phys(&self, vaddr: NonNull<u8>) -> Option<u64> {
        let virt = vaddr.as_ptr() as u64;
        // Only direct-map addresses translate by subtraction.
        (HHDM_BASE..VMAP_BASE).contains(&virt).then(|| virt - HHDM_BASE)
    }
}
