//! How a split queue shares memory with the device (see [`crate::hal`]):
//! its ring areas once, coherently, for as long as they live; request
//! buffers per request, and only with a HAL that sets
//! [`Hal::SHARES_BUFFERS`] — with any other HAL every function here that
//! touches buffers is compiled out.
//!
//! The device addresses of shared segments are kept in driver-private
//! memory ([`Mappings`]), never read back from the descriptors the device
//! could have rewritten, so a scribbling device cannot make the driver
//! unshare (or copy back into) anything it did not share.

use alloc::boxed::Box;
use alloc::vec;

use super::SplitQueue;
use crate::buffer::Segment;
use crate::hal::{Dma, Hal, PhysAddr, Sharing};
use crate::{Error, Result};

/// A ring area: a [`Dma`] region shared with [`Sharing::Coherent`].
/// Dropping it unshares and frees it, unless it was leaked (the device may
/// still use it, so the mapping stays too).
pub(super) struct SharedRegion<H: Hal> {
    dma: Dma<H>,
    /// The device's address of the first byte.
    device: PhysAddr,
}

impl<H: Hal> SharedRegion<H> {
    /// Allocates at least `bytes` zeroed bytes and shares them.
    ///
    /// # Errors
    ///
    /// [`Error::DmaAlloc`], or [`Error::DmaShare`] if the HAL cannot share
    /// them (the pages are then freed: the device never learnt of them).
    pub(super) fn new(hal: &H, bytes: usize) -> Result<Self> {
        let dma = Dma::with_bytes(hal.clone(), bytes)?;
        // SAFETY: `dma` is a live allocation of `hal` that we own; only the
        // ring (through `self`) and the device access it until `drop`
        // unshares it, or never again if it is leaked.
        let device = unsafe { hal.share(dma.paddr(), dma.len(), Sharing::Coherent) }
            .ok_or(Error::DmaShare)?;
        Ok(Self { dma, device })
    }

    /// The device's address of the first byte.
    pub(super) fn device(&self) -> PhysAddr {
        self.device
    }

    /// The region, for the CPU.
    pub(super) fn dma(&self) -> &Dma<H> {
        &self.dma
    }

    /// The region, mutably, for the CPU.
    #[cfg(not(feature = "loom"))]
    pub(super) fn dma_mut(&mut self) -> &mut Dma<H> {
        &mut self.dma
    }

    /// Keep the region allocated and shared forever.
    pub(super) fn leak_on_drop(&mut self) {
        self.dma.leak_on_drop();
    }
}

impl<H: Hal> Drop for SharedRegion<H> {
    fn drop(&mut self) {
        if self.dma.is_leaked() {
            return;
        }
        let (paddr, len) = (self.dma.paddr(), self.dma.len());
        // SAFETY: exactly the sharing made in `new`, ended once; the queue
        // drops an unleaked ring only once its device was proven stopped
        // (or never saw it), so the device no longer accesses it. The pages
        // are freed right after, when `self.dma` drops.
        unsafe { self.dma.hal().unshare(self.device, paddr, len, Sharing::Coherent) }
    }
}

/// One shared segment of a request in flight.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    device: PhysAddr,
    paddr: PhysAddr,
    len: u32,
    sharing: Sharing,
}

const UNMAPPED: Mapping = Mapping { device: 0, paddr: 0, len: 0, sharing: Sharing::ToDevice };

/// What each request in flight shared; empty unless the HAL shares
/// buffers.
pub(super) struct Mappings {
    /// Per ring descriptor: the segment it carries (direct chains).
    direct: Box<[Mapping]>,
    /// Per head, `indirect_max` entries: its indirect table's segments.
    indirect: Box<[Mapping]>,
    /// Per head: how many segments the request shared (0: none, as for
    /// `add_raw`) and whether they sit in its indirect table.
    heads: Box<[(u16, bool)]>,
    indirect_max: usize,
}

/// Where a segment's descriptor lives.
#[derive(Clone, Copy)]
pub(super) enum Place {
    /// Ring descriptor `index`.
    Direct(u16),
    /// Entry `entry` of head `head`'s indirect table.
    Indirect { head: u16, entry: usize },
}

impl Mappings {
    /// Room for a queue of `size` with `indirect_max`-entry tables if `H`
    /// shares buffers; nothing otherwise.
    pub(super) fn new<H: Hal>(size: u16, indirect_max: u16) -> Self {
        let (n, m) = (usize::from(size), usize::from(indirect_max));
        if !H::SHARES_BUFFERS {
            return Self {
                direct: Box::new([]),
                indirect: Box::new([]),
                heads: Box::new([]),
                indirect_max: m,
            };
        }
        Self {
            direct: vec![UNMAPPED; n].into_boxed_slice(),
            indirect: vec![UNMAPPED; n * m].into_boxed_slice(),
            heads: vec![(0, false); n].into_boxed_slice(),
            indirect_max: m,
        }
    }

    fn at(&mut self, place: Place) -> &mut Mapping {
        match place {
            Place::Direct(i) => &mut self.direct[usize::from(i)],
            Place::Indirect { head, entry } => {
                &mut self.indirect[usize::from(head) * self.indirect_max + entry]
            }
        }
    }
}

impl<H: Hal, B> SplitQueue<H, B> {
    /// Shares segment `s` of a request being added, for the descriptor at
    /// `place`, and returns the device's address for it; `None` if the HAL
    /// cannot share it now. Only called when `H::SHARES_BUFFERS`.
    ///
    /// The caller guarantees `s` belongs to a request whose owner the queue
    /// is taking (the [`crate::DmaBuffers`] contract: nothing else touches
    /// it until the queue gives it back, which it does only after
    /// [`SplitQueue::unshare_request`]).
    #[inline]
    pub(super) fn share_segment(
        &mut self,
        place: Place,
        s: Segment,
        sharing: Sharing,
    ) -> Option<PhysAddr> {
        let len = s.len as usize;
        // SAFETY: the segment is the request's memory, owned by the queue
        // from now until `unshare_request` (caller's guarantee above), and
        // accessed by nothing but the device in between.
        let device = unsafe { self.ring.hal().share(s.addr, len, sharing) }?;
        *self.mappings.at(place) = Mapping { device, paddr: s.addr, len: s.len, sharing };
        Some(device)
    }

    /// The address to publish for segment `s` of the request at `head`
    /// (its `done`-th): `s.addr` itself unless `SHARE` (the request came
    /// through `add`) and the HAL shares buffers; then the device's address
    /// from [`SplitQueue::share_segment`] — or, if the HAL refuses, `None`
    /// after unsharing the segments before it, so a refused request leaves
    /// nothing shared.
    #[inline(always)]
    pub(super) fn publish_addr<const SHARE: bool>(
        &mut self,
        place: Place,
        s: Segment,
        writable: bool,
        (head, done): (u16, usize),
    ) -> Option<PhysAddr> {
        if !(SHARE && H::SHARES_BUFFERS) {
            return Some(s.addr);
        }
        let sharing = if writable { Sharing::FromDevice } else { Sharing::ToDevice };
        let shared = self.share_segment(place, s, sharing);
        if shared.is_none() {
            let indirect = matches!(place, Place::Indirect { .. });
            self.unshare_chain(head, done as u16, indirect);
        }
        shared
    }

    /// Records that the request at `head` shared `count` segments (0 for a
    /// request whose segments were not shared).
    #[inline]
    pub(super) fn note_shared(&mut self, head: u16, count: u16, indirect: bool) {
        self.mappings.heads[usize::from(head)] = (count, indirect);
    }

    /// Unshares the first `count` segments of the chain at `head`: the
    /// ring descriptors along the private links, or the entries of its
    /// indirect table. Only called when `H::SHARES_BUFFERS`.
    pub(super) fn unshare_chain(&mut self, head: u16, count: u16, indirect: bool) {
        let hal = self.ring.hal().clone();
        let mut d = head;
        for entry in 0..usize::from(count) {
            let place = if indirect {
                Place::Indirect { head, entry }
            } else {
                let here = d;
                d = self.slots[usize::from(d)].next;
                Place::Direct(here)
            };
            let m = core::mem::replace(self.mappings.at(place), UNMAPPED);
            // SAFETY: `m` is a live sharing made by `share_segment` for
            // this request (from private state the device cannot touch),
            // ended once (the entry is cleared); the caller has proof the
            // device is done with it (a used entry, or a reset).
            unsafe { hal.unshare(m.device, m.paddr, m.len as usize, m.sharing) };
        }
    }

    /// Unshares everything the request at `head` shared; called when the
    /// device returned it or a reset proved it stopped, before the buffers
    /// go back to the driver (so a bounce has copied back by then).
    #[inline]
    pub(super) fn unshare_request(&mut self, head: u16) {
        if !H::SHARES_BUFFERS {
            return;
        }
        let (count, indirect) = core::mem::take(&mut self.mappings.heads[usize::from(head)]);
        self.unshare_chain(head, count, indirect);
    }
}
