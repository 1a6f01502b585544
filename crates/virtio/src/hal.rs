//! The hardware access boundary for memory: who gives us DMA-able pages,
//! and how the device gets to see them.
//!
//! Two kinds of memory reach the device, as in Linux's DMA API:
//! - **ring areas** (descriptor table, available and used rings, indirect
//!   tables), which driver and device both read and write at any time.
//!   They come from [`Hal::dma_alloc`] and are shared once, for their whole
//!   life, with [`Sharing::Coherent`] (Linux: `dma_alloc_coherent`);
//! - **request buffers**, which change hands at `add` and `pop_used`. On a
//!   plain coherent platform (x86 without an IOMMU, vireo's kernel) their
//!   addresses go to the device as they are and nothing else happens. A
//!   HAL that sets [`Hal::SHARES_BUFFERS`] gets [`Hal::share`] for every
//!   segment the ring publishes and [`Hal::unshare`] when the segment
//!   comes back (Linux: `dma_map_single` / `dma_unmap_single`): it can
//!   map an IOMMU (`VIRTIO_F_ACCESS_PLATFORM`), bounce through a window the
//!   device can reach (a confidential guest's shared memory, a device
//!   limited to low addresses), or clean and invalidate caches.
//!
//! There is no separate "sync" call: the ring never lets the CPU touch a
//! buffer between `share` and `unshare` (the queue owns it), so
//! `share` is map + sync-for-device and `unshare` is sync-for-CPU + unmap.

use core::ptr::NonNull;

use crate::{Error, Result};

/// An address in the driver's physical address space (what
/// [`Hal::dma_alloc`] returns and [`crate::Segment`]s carry), or, once
/// [`Hal::share`] translated it, the device's address for the same bytes
/// (an IOVA, a bounce slot). With a HAL that does not share, the two are
/// the same.
pub type PhysAddr = u64;

/// Granularity of [`Hal::dma_alloc`].
pub const PAGE_SIZE: usize = 4096;

/// How a region is shared with the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// A ring area: driver and device both read and write it while it is
    /// shared, with no hand-over point, so the mapping must be coherent:
    /// the device sees every byte the CPU writes and the reverse, at once.
    /// A HAL must never bounce it (it may map it, or convert it in place).
    Coherent,
    /// A buffer the device only reads (driver to device; Linux
    /// `DMA_TO_DEVICE`). A bounce copies it in at `share`.
    ToDevice,
    /// A buffer the device writes (device to driver; `DMA_FROM_DEVICE`). A
    /// bounce copies it back at `unshare`, and must also copy it *in* at
    /// `share`: the device may write only part of it, and the rest must
    /// come back as the driver left it, not as stale bounce bytes (the
    /// info leak Linux fixed in "swiotlb: fix info leak with
    /// DMA_FROM_DEVICE", 2022).
    FromDevice,
}

/// DMA memory provider, and the device's view of it.
///
/// # Safety
///
/// Implementations promise that:
/// - [`Hal::dma_alloc`] returns `pages * PAGE_SIZE` bytes that are zeroed,
///   page aligned, physically contiguous at the returned [`PhysAddr`],
///   readable and writable through the returned pointer, and not part of any
///   other live allocation, until they are passed to [`Hal::dma_dealloc`];
/// - [`Hal::share`] with [`Sharing::Coherent`] of (part of) such an
///   allocation returns an address at which the device sees exactly the
///   bytes the CPU sees, coherently, until the matching [`Hal::unshare`];
/// - with [`Hal::SHARES_BUFFERS`] `false`, every buffer address the driver
///   hands the ring already *is* the device's address for those bytes
///   (coherent DMA, no translation), and `share`/`unshare` are never called
///   for buffers;
/// - with `SHARES_BUFFERS` `true`, [`Hal::share`] of a buffer returns a
///   device address at which the device reads the buffer's bytes as they
///   were at the call ([`Sharing::ToDevice`]) or whose bytes it writes
///   land in the buffer by the time [`Hal::unshare`] returns, the rest of
///   the buffer unchanged ([`Sharing::FromDevice`]); the device address
///   stays valid, and reaches nothing but that buffer's bytes (or its
///   bounce copy), until `unshare`.
///
/// Clones of a `Hal` value must be interchangeable (memory allocated or
/// shared through one may be freed or unshared through another).
pub unsafe trait Hal: Clone {
    /// Whether request buffers need [`Hal::share`] / [`Hal::unshare`].
    ///
    /// `false` (the default) is the coherent fast path: the ring publishes
    /// each segment's address as it is, keeps no mapping state and calls
    /// neither method for buffers, so sharing costs nothing. A HAL that
    /// overrides `share` for buffers must set this to `true`, or its
    /// `share` is never called for them.
    const SHARES_BUFFERS: bool = false;

    /// Allocates `pages` zeroed, contiguous pages; `None` if out of memory.
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)>;

    /// Returns pages obtained from [`Hal::dma_alloc`].
    ///
    /// # Safety
    ///
    /// `paddr`, `vaddr` and `pages` must be exactly one earlier allocation of
    /// this HAL that was not yet freed; no reference into it may remain, it
    /// must not be shared, and the device must no longer access it.
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize);

    /// Called instead of [`Hal::dma_dealloc`] when a region is leaked on
    /// purpose because a device may still access it (a queue dropped
    /// without a reset proof, or a reset that timed out). The pages stay
    /// allocated, and shared if they were; this only lets the HAL count
    /// them. Default: nothing.
    fn dma_leaked(&self, paddr: PhysAddr, pages: usize) {
        let _ = (paddr, pages);
    }

    /// Makes the `len` bytes at `paddr` reachable by the device and returns
    /// the device's address for them; `None` if that is impossible now
    /// (e.g. the bounce window is full), in which case nothing was shared.
    ///
    /// The ring calls it with [`Sharing::Coherent`] for each ring area when
    /// a queue is created, and (only if [`Hal::SHARES_BUFFERS`]) with
    /// [`Sharing::ToDevice`] / [`Sharing::FromDevice`] for each segment of
    /// each request it publishes. The default is the identity, right for
    /// coherent platforms without an IOMMU.
    ///
    /// # Safety
    ///
    /// The range must be memory the caller owns and that nothing but the
    /// device accesses until the matching [`Hal::unshare`] (for a ring
    /// area: nothing but the ring and the device). For `Coherent` it must
    /// lie inside one live [`Hal::dma_alloc`] allocation.
    unsafe fn share(&self, paddr: PhysAddr, len: usize, sharing: Sharing) -> Option<PhysAddr> {
        let _ = (len, sharing);
        Some(paddr)
    }

    /// Ends a sharing made by [`Hal::share`]: after it the device address
    /// reaches nothing, and (for [`Sharing::FromDevice`]) the buffer holds
    /// what the device wrote. Default: nothing.
    ///
    /// The ring calls it when the device has provably finished with the
    /// range: a buffer returned by `pop_used` or handed back by `reclaim`
    /// after a reset, rings freed after a reset. It never calls it for
    /// memory it leaks because the device may still use it: those mappings
    /// stay, since unmapping them would let a bounce slot or an IOVA be
    /// reused for other memory while a stale device still writes there.
    ///
    /// # Safety
    ///
    /// `device`, `paddr`, `len` and `sharing` must be those of one earlier
    /// `share` of this HAL that was not yet unshared, and the device must
    /// no longer access the range.
    unsafe fn unshare(&self, device: PhysAddr, paddr: PhysAddr, len: usize, sharing: Sharing) {
        let _ = (device, paddr, len, sharing);
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

    /// Physical address of the first byte, as [`Hal::dma_alloc`] gave it
    /// (also the device's address unless the HAL shares buffers).
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

    /// Whether [`Dma::leak_on_drop`] was called.
    pub(crate) fn is_leaked(&self) -> bool {
        self.leak
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
