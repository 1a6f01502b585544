//! What a request hands to the device: scatter-gather segments of DMA memory
//! together with the owner that keeps that memory alive.
//!
//! # Ownership choice
//!
//! The queue takes *ownership* of a request's buffers ([`DmaBuffers`]) in
//! `add` and gives them back only from `pop_used` (the device returned them)
//! or from `reclaim` with proof that the device or the queue was reset.
//! Tokens are plain ids and do not borrow anything, so `mem::forget` or
//! dropping a token cannot free memory the device might still write. If a
//! queue is dropped without such proof, it leaks its rings and every
//! in-flight buffer rather than free them (counted in
//! [`crate::leak_counts`]): leaking is safe, a use-after-free by DMA is not.
//!
//! A [`DmaChain`] owns its region for good: it hands out bytes, never the
//! region itself, so the segments it checked against the region can neither
//! outgrow it nor outlive it.

use crate::hal::{Dma, Hal, PhysAddr};
use crate::{Error, Result};

/// One device-visible scatter-gather element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Device address of the first byte.
    pub addr: PhysAddr,
    /// Length in bytes (never zero when submitted).
    pub len: u32,
}

/// Memory for one request: device-readable segments first, then
/// device-writable ones (VirtIO 1.2 §2.7.4.2: readable before writable).
///
/// # Safety
///
/// Implementors promise that, for as long as the value lives (including
/// after it is moved, e.g. into a queue):
/// - every [`Segment`] returned describes memory that stays allocated and
///   device-accessible at that address, and that no safe code can reach
///   through any other handle while the value is owned by a queue;
/// - `segment_count`, `readable_count` and `segment` return the same answers
///   each time they are called on an unchanged value, with
///   `readable_count() <= segment_count()`.
pub unsafe trait DmaBuffers {
    /// Total number of segments.
    fn segment_count(&self) -> usize;
    /// How many of the first segments the device may only read.
    fn readable_count(&self) -> usize;
    /// The `index`-th segment, `index < segment_count()`.
    fn segment(&self, index: usize) -> Segment;
}

/// A ready-made [`DmaBuffers`]: one [`Dma`] region carved into at most `N`
/// segments.
///
/// The region cannot be swapped or shrunk while the chain lives: there is
/// byte access ([`DmaChain::region_mut`], [`DmaChain::bytes_mut`]) but no
/// `&mut Dma`, so every segment checked by [`DmaChain::set_segments`] stays
/// inside memory the chain owns. This does not compile:
///
/// ```compile_fail,E0599
/// # use vireo_virtio::{Dma, DmaChain};
/// # fn f<H: vireo_virtio::Hal>(hal: H) -> vireo_virtio::Result {
/// let mut chain: DmaChain<H> = DmaChain::new(Dma::new(hal.clone(), 4)?);
/// chain.set_segments(&[], &[(0, 4 * 4096)])?;
/// *chain.dma_mut() = Dma::new(hal, 1)?; // the segment would outgrow this
/// # Ok(()) }
/// ```
///
/// while byte access does:
///
/// ```
/// # use vireo_virtio::{Dma, DmaChain};
/// # fn f<H: vireo_virtio::Hal>(hal: H) -> vireo_virtio::Result {
/// let mut chain: DmaChain<H> = DmaChain::new(Dma::new(hal, 4)?);
/// chain.set_segments(&[], &[(0, 4 * 4096)])?;
/// chain.region_mut().fill(0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DmaChain<H: Hal, const N: usize = 8> {
    dma: Dma<H>,
    /// `(offset, len)` of each segment inside `dma`.
    segs: [(u32, u32); N],
    count: u8,
    readable: u8,
}

impl<H: Hal, const N: usize> DmaChain<H, N> {
    /// Wraps a region; it starts with no segments.
    pub fn new(dma: Dma<H>) -> Self {
        const { assert!(N <= u8::MAX as usize, "at most 255 segments") };
        Self { dma, segs: [(0, 0); N], count: 0, readable: 0 }
    }

    /// Replaces the segment layout with `readable` then `writable`
    /// `(offset, len)` ranges of the region.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] if there are more than `N` segments in total,
    /// one is empty or longer than `u32::MAX`, or one starts 4 GiB or more
    /// into the region; [`Error::OutOfBounds`] if a range leaves the region.
    /// On error the layout is left empty.
    pub fn set_segments(
        &mut self,
        readable: &[(usize, usize)],
        writable: &[(usize, usize)],
    ) -> Result {
        self.count = 0;
        self.readable = 0;
        let total = readable.len() + writable.len();
        if total > N {
            return Err(Error::InvalidRequest);
        }
        for (i, &(off, len)) in readable.iter().chain(writable).enumerate() {
            if len == 0 || len > u32::MAX as usize {
                return Err(Error::InvalidRequest);
            }
            let end = off.checked_add(len).ok_or(Error::OutOfBounds)?;
            if end > self.dma.len() {
                return Err(Error::OutOfBounds);
            }
            // Offsets are kept as u32 (one cache line for a small chain);
            // a segment starting 4 GiB into a region is refused, not cut.
            let off = u32::try_from(off).map_err(|_| Error::InvalidRequest)?;
            self.segs[i] = (off, len as u32);
        }
        self.count = total as u8;
        self.readable = readable.len() as u8;
        Ok(())
    }

    /// The bytes of segment `index`.
    ///
    /// # Panics
    ///
    /// If `index >= segment_count()`.
    pub fn bytes(&self, index: usize) -> &[u8] {
        assert!(index < self.count as usize, "segment index out of range");
        let (off, len) = self.segs[index];
        &self.dma.as_slice()[off as usize..off as usize + len as usize]
    }

    /// The bytes of segment `index`, mutably.
    ///
    /// # Panics
    ///
    /// If `index >= segment_count()`.
    pub fn bytes_mut(&mut self, index: usize) -> &mut [u8] {
        assert!(index < self.count as usize, "segment index out of range");
        let (off, len) = self.segs[index];
        &mut self.dma.as_mut_slice()[off as usize..off as usize + len as usize]
    }

    /// The whole underlying region (its address, size and HAL).
    pub fn dma(&self) -> &Dma<H> {
        &self.dma
    }

    /// All bytes of the region, segments or not.
    pub fn region(&self) -> &[u8] {
        self.dma.as_slice()
    }

    /// All bytes of the region, mutably (e.g. to encode a command before
    /// laying out its segments). The region itself cannot be replaced.
    pub fn region_mut(&mut self) -> &mut [u8] {
        self.dma.as_mut_slice()
    }

    /// Gives the region back.
    pub fn into_dma(self) -> Dma<H> {
        self.dma
    }
}

// SAFETY: every segment was checked to lie inside `self.dma`, which `self`
// owns exclusively and never hands out mutably (no `&mut Dma` accessor), so
// the region can neither be swapped nor freed while the chain lives; its
// physical address does not change when `self` moves, and the layout only
// changes through `&mut self`, which the queue never hands out while it
// owns the chain.
unsafe impl<H: Hal, const N: usize> DmaBuffers for DmaChain<H, N> {
    #[inline]
    fn segment_count(&self) -> usize {
        self.count as usize
    }

    #[inline]
    fn readable_count(&self) -> usize {
        self.readable as usize
    }

    #[inline]
    fn segment(&self, index: usize) -> Segment {
        let (off, len) = self.segs[index];
        Segment { addr: self.dma.paddr() + u64::from(off), len }
    }
}

// SAFETY: the box owns the `T` exclusively and keeps it alive (and at the
// same place) for as long as the box lives; `T`'s own contract covers its
// segments. Moving a `Box` moves 8 bytes instead of the whole request, so
// drivers keep a pool of boxed requests allocated once at setup.
unsafe impl<T: DmaBuffers + ?Sized> DmaBuffers for alloc::boxed::Box<T> {
    #[inline]
    fn segment_count(&self) -> usize {
        (**self).segment_count()
    }

    #[inline]
    fn readable_count(&self) -> usize {
        (**self).readable_count()
    }

    #[inline]
    fn segment(&self, index: usize) -> Segment {
        (**self).segment(index)
    }
}

// SAFETY: a `&'static mut T` is the only handle to a `T` that is never
// dropped (e.g. from `Box::leak` or a static pool), so its memory stays
// valid and unreachable by other code while the queue holds the reference.
unsafe impl<T: DmaBuffers + ?Sized> DmaBuffers for &'static mut T {
    #[inline]
    fn segment_count(&self) -> usize {
        (**self).segment_count()
    }

    #[inline]
    fn readable_count(&self) -> usize {
        (**self).readable_count()
    }

    #[inline]
    fn segment(&self, index: usize) -> Segment {
        (**self).segment(index)
    }
}
