//! The hardware access boundary for memory: who gives us DMA-able pages.
//!
//! The kernel implements [`Hal`] over its DMA API (page-aligned, physically
//! contiguous buffers with both a physical and a virtual address); host tests
//! implement it over ordinary memory shared with a device model.

use core::ptr::NonNull;

use crate::{Error, Result};

/// A device-visible (physical or IOVA) address.
pub type PhysAddr = u64;

/// Granularity of [`Hal::dma_alloc`].
pub const PAGE_SIZE: usize = 4096;

/// DMA memory provider.
///
/// # Safety
///
/// Implementations promise that:
/// - [`Hal::dma_alloc`] returns `pages * PAGE_SIZE` bytes that are zeroed,
///   page aligned, physically contiguous at the returned [`PhysAddr`],
///   readable and writable through the returned pointer, and not part of any
///   other live allocation, until they are passed to [`Hal::dma_dealloc`];
/// - the device sees at `paddr + n` exactly the byte the CPU sees at
///   `vaddr + n` (coherent DMA);
/// - `phys_to_virt`/`virt_to_phys` are consistent with live allocations.
///
/// Clones of a `Hal` value must be interchangeable (memory allocated through
/// one may be freed through another).
pub unsafe trait Hal: Clone {
    /// Allocates `pages` zeroed, contiguous pages; `None` if out of memory.
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)>;

    /// Returns pages obtained from [`Hal::dma_alloc`].
    ///
    /// # Safety
    ///
    /// `paddr`, `vaddr` and `pages` must be exactly one earlier allocation of
    /// this HAL that was not yet freed; no reference into it may remain and
    /// the device must no longer access it.
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize);

    /// Translates a device address inside a live allocation to a CPU pointer.
    fn phys_to_virt(&self, paddr: PhysAddr) -> Option<NonNull<u8>>;

    /// Translates a CPU pointer inside a live allocation to a device address.
    fn virt_to_phys(&self, vaddr: NonNull<u8>) -> Option<PhysAddr>;

    /// Called instead of [`Hal::dma_dealloc`] when a region is leaked on
    /// purpose because a device may still access it (a queue dropped
    /// without a reset proof, or a reset that timed out). The pages stay
    /// allocated; this only lets the HAL count them. Default: nothing.
    fn dma_leaked(&self, paddr: PhysAddr, pages: usize) {
        let _ = (paddr, pages);
    }
}

/// An owned region of DMA memory, freed on drop.
///
/// While the driver owns a `Dma` it may read and write it like any byte
/// slice; while a request holding it is in flight the queue owns it, so no
/// safe code can touch memory the device may be writing.
#[derive(Debug)]
pub struct Dma<H: Hal> {
    hal: H,
    paddr: PhysAddr,
    vaddr: NonNull<u8>,
    pages: usize,
    leak: bool,
}

// SAFETY: `Dma` exclusively owns its memory (Hal contract: no aliasing with
// other allocations), like a `Box<[u8]>`; sending it moves that ownership.
unsafe impl<H: Hal + Send> Send for Dma<H> {}
// SAFETY: shared access only hands out `&[u8]`, which is `Sync`.
unsafe impl<H: Hal + Sync> Sync for Dma<H> {}

impl<H: Hal> Dma<H> {
    /// Allocates `pages` zeroed pages from `hal`.
    ///
    /// # Errors
    ///
    /// [`Error::DmaAlloc`] if `pages` is zero or the HAL is out of memory.
    pub fn new(hal: H, pages: usize) -> Result<Self> {
        if pages == 0 {
            return Err(Error::DmaAlloc);
        }
        let (paddr, vaddr) = hal.dma_alloc(pages).ok_or(Error::DmaAlloc)?;
        Ok(Self { hal, paddr, vaddr, pages, leak: false })
    }

    /// Allocates enough zeroed pages for `bytes` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::DmaAlloc`] if `bytes` is zero or the HAL is out of memory.
    pub fn with_bytes(hal: H, bytes: usize) -> Result<Self> {
        Self::new(hal, bytes.div_ceil(PAGE_SIZE))
    }

    /// Device address of the first byte.
    pub fn paddr(&self) -> PhysAddr {
        self.paddr
    }

    /// CPU address of the first byte.
    pub fn vaddr(&self) -> NonNull<u8> {
        self.vaddr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Always false: regions have at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The HAL this region came from.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// Never free this region: for memory a device may still access.
    pub(crate) fn leak_on_drop(&mut self) {
        self.leak = true;
    }

    /// The region as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: Hal contract: `len()` bytes at `vaddr` are valid and owned
        // by `self`; the device does not write them while the driver holds
        // `self` (in-flight requests are owned by the queue).
        unsafe { core::slice::from_raw_parts(self.vaddr.as_ptr(), self.len()) }
    }

    /// The region as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.vaddr.as_ptr(), self.len()) }
    }
}

impl<H: Hal> Drop for Dma<H> {
    fn drop(&mut self) {
        if self.leak {
            crate::leaks::count_pages(self.pages);
            self.hal.dma_leaked(self.paddr, self.pages);
            return;
        }
        // SAFETY: exactly the allocation made in `new`, freed once; `&mut
        // self` in drop means no references remain, and a `Dma` inside an
        // in-flight request is never dropped by the queue (it leaks instead).
        unsafe { self.hal.dma_dealloc(self.paddr, self.vaddr, self.pages) }
    }
}
