//! The only code that touches the split ring's shared memory. Every access
//! is a single volatile load or store of a naturally aligned field, and
//! every index is masked to the queue size (or checked against the indirect
//! table), so no value the device writes can make us access memory outside
//! the ring.
//!
//! With the `loom` feature (tests only) the same accessors go to loom cells
//! and atomics instead ([`super::model`]), so the model checker sees every
//! shared access of the real queue code.

#[cfg(not(feature = "loom"))]
use core::ptr;

use super::layout::RingLayout;
#[cfg(not(feature = "loom"))]
use super::layout::{Le16, Le32, Le64, VirtqDesc, VirtqUsedElem};
use super::sharing::SharedRegion;
use crate::hal::{Hal, PhysAddr};
use crate::{Error, Result};

/// Shared ring memory plus the optional indirect-table pool, both shared
/// with the device coherently for as long as they live.
pub(super) struct SplitRing<H: Hal> {
    mem: SharedRegion<H>,
    layout: RingLayout,
    mask: usize,
    /// One table of `indirect_max` descriptors per descriptor index.
    indirect: Option<SharedRegion<H>>,
    indirect_max: usize,
    #[cfg(feature = "loom")]
    pub(super) model: loom::sync::Arc<super::model::RingModel>,
}

// Offsets inside the avail/used headers (§2.7.6, §2.7.8).
#[cfg(not(feature = "loom"))]
const RING_FLAGS: usize = 0;
#[cfg(not(feature = "loom"))]
const RING_IDX: usize = 2;
#[cfg(not(feature = "loom"))]
const RING_ENTRIES: usize = 4;

impl<H: Hal> SplitRing<H> {
    /// Allocates zeroed ring memory for `size` entries (a power of two) and,
    /// if `indirect_max > 0`, `size` indirect tables of that many entries.
    pub(super) fn new(hal: &H, size: u16, indirect_max: u16) -> Result<Self> {
        debug_assert!(size.is_power_of_two());
        let layout = RingLayout::new(size);
        let mem = SharedRegion::new(hal, layout.total)?;
        let indirect = if indirect_max > 0 {
            let bytes = usize::from(size) * usize::from(indirect_max) * 16;
            Some(SharedRegion::new(hal, bytes)?)
        } else {
            None
        };
        Ok(Self {
            mem,
            layout,
            mask: usize::from(size) - 1,
            #[cfg(feature = "loom")]
            model: loom::sync::Arc::new(super::model::RingModel::new(
                size,
                indirect_max,
                indirect.as_ref().map_or(0, SharedRegion::device),
            )),
            indirect,
            indirect_max: usize::from(indirect_max),
        })
    }

    /// Makes dropping this ring leak its memory instead of freeing it.
    pub(super) fn leak_on_drop(&mut self) {
        self.mem.leak_on_drop();
        if let Some(p) = &mut self.indirect {
            p.leak_on_drop();
        }
    }

    /// The HAL the rings came from.
    pub(super) fn hal(&self) -> &H {
        self.mem.dma().hal()
    }

    /// Device address of the indirect-table pool and its size in bytes.
    pub(super) fn indirect_pool(&self) -> Option<(PhysAddr, usize)> {
        self.indirect.as_ref().map(|p| (p.device(), p.dma().len()))
    }

    /// Device addresses of the descriptor table, driver area, device area.
    pub(super) fn addresses(&self) -> (PhysAddr, PhysAddr, PhysAddr) {
        let base = self.mem.device();
        (base, base + self.layout.avail as u64, base + self.layout.used as u64)
    }

    /// Device address of head `head`'s indirect table; `None` without a pool.
    pub(super) fn indirect_table(&self, head: u16) -> Option<PhysAddr> {
        let pool = self.indirect.as_ref()?;
        Some(pool.device() + ((usize::from(head) & self.mask) * self.indirect_max * 16) as u64)
    }

    /// Offset of entry `j` of head `head`'s indirect table in the pool.
    pub(super) fn indirect_offset(&self, head: u16, j: usize) -> Result<usize> {
        if self.indirect.is_none() || j >= self.indirect_max {
            return Err(Error::InvalidRequest);
        }
        Ok(((usize::from(head) & self.mask) * self.indirect_max + j) * 16)
    }
}

#[cfg(not(feature = "loom"))]
impl<H: Hal> SplitRing<H> {
    /// Zeroes the rings (not the indirect tables, which are rewritten
    /// before each use). Only for a queue the device has forgotten.
    pub(super) fn zero(&mut self) {
        self.mem.dma_mut().as_mut_slice().fill(0);
    }

    #[inline(always)]
    fn at<T>(&self, offset: usize) -> *mut T {
        debug_assert!(offset + size_of::<T>() <= self.layout.total);
        debug_assert!(offset.is_multiple_of(align_of::<T>()));
        self.mem.dma().vaddr().as_ptr().wrapping_add(offset).cast()
    }

    #[inline(always)]
    fn store16(&mut self, offset: usize, v: u16) {
        // SAFETY: callers pass offsets computed from the layout with masked
        // indices, so the 2-byte field lies inside `mem` (which we own) and
        // is 2-aligned (ring parts are 2/4/16 aligned, page-aligned base).
        unsafe { ptr::write_volatile(self.at::<Le16>(offset), Le16::new(v)) }
    }

    #[inline(always)]
    fn load16(&self, offset: usize) -> u16 {
        // SAFETY: as in `store16`; the device may write the field at any
        // time, which a volatile aligned 2-byte load tolerates (no tearing,
        // no assumption about the value).
        unsafe { ptr::read_volatile(self.at::<Le16>(offset)).get() }
    }

    /// Writes descriptor `i` of the ring's table.
    #[inline(always)]
    pub(super) fn write_desc(&mut self, i: u16, addr: PhysAddr, len: u32, flags: u16, next: u16) {
        let d = desc(addr, len, flags, next);
        let off = (usize::from(i) & self.mask) * 16;
        // SAFETY: the masked index is inside the table at offset 0 of `mem`;
        // entries are 16-aligned. The device reads descriptors only after
        // the avail.idx store that follows our write barrier.
        unsafe { ptr::write_volatile(self.at::<VirtqDesc>(off), d) }
    }

    /// Writes entry `j` of the indirect table that belongs to head `head`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] without a pool or with `j >= indirect_max`
    /// (callers never ask for that).
    #[inline(always)]
    pub(super) fn write_indirect(
        &mut self,
        head: u16,
        j: usize,
        addr: PhysAddr,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result {
        let off = self.indirect_offset(head, j)?;
        let Some(pool) = &self.indirect else { return Err(Error::InvalidRequest) };
        // SAFETY: `off` is inside the pool (masked head < size, checked
        // j < indirect_max) and 16-aligned; the pool is ours, and the device
        // reads the table only after the head descriptor is published.
        unsafe {
            ptr::write_volatile(
                pool.dma().vaddr().as_ptr().add(off).cast::<VirtqDesc>(),
                desc(addr, len, flags, next),
            )
        }
        Ok(())
    }

    /// `avail.ring[slot % size] = head` (§2.7.13.2).
    #[inline(always)]
    pub(super) fn set_avail_entry(&mut self, slot: u16, head: u16) {
        let off = self.layout.avail + RING_ENTRIES + (usize::from(slot) & self.mask) * 2;
        self.store16(off, head);
    }

    /// Publishes `avail.idx` (§2.7.13.3).
    #[inline(always)]
    pub(super) fn set_avail_idx(&mut self, idx: u16) {
        self.store16(self.layout.avail + RING_IDX, idx);
    }

    /// Writes `avail.flags` (§2.7.7).
    #[inline(always)]
    pub(super) fn set_avail_flags(&mut self, flags: u16) {
        self.store16(self.layout.avail + RING_FLAGS, flags);
    }

    /// Writes `used_event`, at the end of the available ring (§2.7.7).
    #[inline(always)]
    pub(super) fn set_used_event(&mut self, v: u16) {
        let off = self.layout.avail + RING_ENTRIES + (self.mask + 1) * 2;
        self.store16(off, v);
    }

    /// Reads `used.flags` (§2.7.10).
    #[inline(always)]
    pub(super) fn used_flags(&self) -> u16 {
        self.load16(self.layout.used + RING_FLAGS)
    }

    /// Reads `used.idx` (§2.7.14).
    #[inline(always)]
    pub(super) fn used_idx(&self) -> u16 {
        self.load16(self.layout.used + RING_IDX)
    }

    /// Reads `avail_event`, at the end of the used ring (§2.7.10).
    #[inline(always)]
    pub(super) fn avail_event(&self) -> u16 {
        let off = self.layout.used + RING_ENTRIES + (self.mask + 1) * 8;
        self.load16(off)
    }

    /// Reads `used.ring[slot % size]` as `(id, len)`.
    #[inline(always)]
    pub(super) fn used_entry(&self, slot: u16) -> (u32, u32) {
        let off = self.layout.used + RING_ENTRIES + (usize::from(slot) & self.mask) * 8;
        // SAFETY: masked slot inside the used ring of `mem`, 4-aligned
        // (used ring is 4-aligned, entries 8 bytes). The device may write it
        // concurrently only if it misbehaves; we validate whatever we read.
        let e = unsafe { ptr::read_volatile(self.at::<VirtqUsedElem>(off)) };
        (e.id.get(), e.len.get())
    }
}

#[cfg(not(feature = "loom"))]
#[inline(always)]
fn desc(addr: PhysAddr, len: u32, flags: u16, next: u16) -> VirtqDesc {
    VirtqDesc {
        addr: Le64::new(addr),
        len: Le32::new(len),
        flags: Le16::new(flags),
        next: Le16::new(next),
    }
}

/// Checks a requested queue size against §2.7 and the device maximum.
pub(super) fn check_size(size: u16, device_max: u16) -> Result {
    if size == 0 || !size.is_power_of_two() || size > 32768 || size > device_max {
        return Err(Error::InvalidQueueSize);
    }
    Ok(())
}
