//! The split virtqueue, driver side (VirtIO 1.2 §2.7).
//!
//! Driver-private state (`Slot`) mirrors everything the driver needs about
//! each descriptor — free-list links, chain tail and length, writable byte
//! count, the request's owner — so the driver never reads back `addr`,
//! `len`, `flags` or `next` from shared memory (which a device could have
//! changed). The only values read from shared memory are `used.idx`,
//! `used.ring[]`, `used.flags` and `avail_event`, and each is validated.
//!
//! Allocation: [`SplitQueue::new`] allocates the private slot array with
//! `alloc` (and the rings and indirect-table pool through the [`Hal`]); no
//! other method allocates.

pub mod layout;
mod ring;

use alloc::boxed::Box;
use alloc::vec::Vec;

use self::layout::{
    VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
};
use self::ring::SplitRing;
use super::event::vring_need_event;
use super::{QueueStats, Rejected, Token, Used, Virtqueue};
use crate::barrier::{virtio_mb, virtio_rmb, virtio_wmb};
use crate::buffer::{DmaBuffers, Segment};
use crate::features::Features;
use crate::hal::Hal;
use crate::transport::Transport;
use crate::{Error, Result};

/// How to set up one split queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Queue index on the device.
    pub index: u16,
    /// Number of descriptors: a power of two, at most 32768 and at most the
    /// device's maximum (§2.7).
    pub size: u16,
    /// The features negotiated with the device; `VERSION_1` is required,
    /// `INDIRECT_DESC` and `EVENT_IDX` are used when present.
    pub features: Features,
    /// Longest indirect table per request (0 = never use indirect). Capped
    /// at `size`, since no chain may be longer than the queue (§2.7.5.3.1).
    pub indirect_max: u16,
}

/// Driver-private state of one descriptor.
#[derive(Debug)]
struct Slot<B> {
    /// Next descriptor in the free list or in this descriptor's chain.
    next: u16,
    /// For a chain head: the chain's last descriptor.
    tail: u16,
    /// For a chain head: ring descriptors the chain uses.
    chain_len: u16,
    /// For a chain head: total device-writable bytes (saturated).
    writable: u32,
    /// `Some` exactly while this descriptor heads an in-flight request.
    owner: Option<B>,
}

/// A split virtqueue whose in-flight requests own buffers of type `B`.
///
/// Not `Sync`; one CPU drives it at a time (wrap it in the kernel's lock).
pub struct SplitQueue<H: Hal, B> {
    ring: SplitRing<H>,
    slots: Box<[Slot<B>]>,
    index: u16,
    size: u16,
    free_head: u16,
    num_free: u16,
    in_flight: u16,
    /// Our copy of `avail.idx`; never read back from shared memory.
    avail_idx: u16,
    /// `avail_idx` at the last notify decision (the `old` of
    /// `vring_need_event`).
    kicked_avail: u16,
    /// Requests added since the last notify decision.
    pending: u32,
    /// Next used ring entry we expect.
    last_used: u16,
    event_idx: bool,
    indirect_max: u16,
    irq_on: bool,
    broken: bool,
    stats: QueueStats,
}

impl<H: Hal, B> SplitQueue<H, B> {
    /// Allocates the rings, programs them into queue `config.index` of the
    /// device, and returns the queue. Call before setting `DRIVER_OK`
    /// (§3.1.1 step 7).
    ///
    /// # Errors
    ///
    /// [`Error::FeaturesRejected`] without `VERSION_1`;
    /// [`Error::QueueUnavailable`] if the device has no such queue or it is
    /// in use; [`Error::InvalidQueueSize`]; [`Error::DmaAlloc`].
    pub fn new<T: Transport>(hal: &H, transport: &mut T, config: QueueConfig) -> Result<Self> {
        if !config.features.contains(Features::VERSION_1) {
            return Err(Error::FeaturesRejected);
        }
        if transport.queue_used(config.index) {
            return Err(Error::QueueUnavailable);
        }
        let max = transport.max_queue_size(config.index);
        if max == 0 {
            return Err(Error::QueueUnavailable);
        }
        ring::check_size(config.size, max)?;
        let size = config.size;
        let indirect_max = if config.features.contains(Features::INDIRECT_DESC) {
            config.indirect_max.min(size)
        } else {
            0
        };
        let ring = SplitRing::new(hal, size, indirect_max)?;
        let slots: Vec<Slot<B>> = (0..size)
            .map(|i| Slot {
                next: i.wrapping_add(1) & (size - 1),
                tail: i,
                chain_len: 0,
                writable: 0,
                owner: None,
            })
            .collect();
        let (desc, driver, device) = ring.addresses();
        transport.queue_set(config.index, size, desc, driver, device);
        Ok(Self {
            ring,
            slots: slots.into_boxed_slice(),
            index: config.index,
            size,
            free_head: 0,
            num_free: size,
            in_flight: 0,
            avail_idx: 0,
            kicked_avail: 0,
            pending: 0,
            last_used: 0,
            event_idx: config.features.contains(Features::EVENT_IDX),
            indirect_max,
            irq_on: true,
            broken: false,
            stats: QueueStats::default(),
        })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Free descriptors in the ring.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Requests added and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Whether a device protocol violation broke this queue.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether `EVENT_IDX` is in use.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// Longest indirect table in use (0 = indirect off).
    pub fn indirect_max(&self) -> u16 {
        self.indirect_max
    }

    /// Adds a request described by explicit segment lists; `owner` is kept
    /// with the request and returned by `pop_used`.
    ///
    /// # Safety
    ///
    /// Every segment must describe memory that stays allocated, is accessed
    /// by nothing but the device, and may be written by the device (the
    /// writable ones), until this request is returned by `pop_used` or
    /// [`SplitQueue::reset`] hands it back. Prefer the safe
    /// [`Virtqueue::add`] with a [`DmaBuffers`] owner.
    ///
    /// # Errors
    ///
    /// As [`Virtqueue::add`], with `owner` handed back.
    pub unsafe fn add_raw(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        owner: B,
    ) -> core::result::Result<Token, Rejected<B>> {
        let nr = readable.len();
        let seg = |_: &B, i: usize| {
            if i < nr { readable[i] } else { writable[i - nr] }
        };
        self.add_chain(nr + writable.len(), nr, seg, owner)
    }

    #[inline(always)]
    fn add_chain(
        &mut self,
        nseg: usize,
        nread: usize,
        seg: impl Fn(&B, usize) -> Segment,
        owner: B,
    ) -> core::result::Result<Token, Rejected<B>> {
        let checked = self.check_request(nseg, nread, &|i| seg(&owner, i));
        let (indirect, writable) = match checked {
            Ok(v) => v,
            Err(error) => {
                return Err(Rejected { error, buffers: owner });
            }
        };
        let head = self.free_head;
        let last = nseg - 1;
        let flags_of = |i: usize| {
            let w = if i >= nread { VIRTQ_DESC_F_WRITE } else { 0 };
            let n = if i < last { VIRTQ_DESC_F_NEXT } else { 0 };
            w | n
        };
        let (tail, chain_len) = if indirect {
            // §2.7.5.3: the table holds the whole chain, `next` indexes the
            // table; the ring descriptor carries only INDIRECT (§2.7.5.3.1:
            // never INDIRECT together with NEXT).
            for i in 0..nseg {
                let s = seg(&owner, i);
                let next = if i < last { (i + 1) as u16 } else { 0 };
                self.ring.write_indirect(head, i, s.addr, s.len, flags_of(i), next);
            }
            let table = self.ring.indirect_table(head);
            self.ring.write_desc(head, table, (nseg * 16) as u32, VIRTQ_DESC_F_INDIRECT, 0);
            self.free_head = self.slots[usize::from(head)].next;
            (head, 1)
        } else {
            // Walk the private free list; each descriptor's private `next`
            // already is the chain link we publish.
            let mut d = head;
            let mut tail = head;
            for i in 0..nseg {
                let s = seg(&owner, i);
                let next = self.slots[usize::from(d)].next;
                let link = if i < last { next } else { 0 };
                self.ring.write_desc(d, s.addr, s.len, flags_of(i), link);
                tail = d;
                d = next;
            }
            self.free_head = d;
            (tail, nseg as u16)
        };
        self.num_free -= chain_len;
        let slot = &mut self.slots[usize::from(head)];
        slot.tail = tail;
        slot.chain_len = chain_len;
        slot.writable = writable;
        slot.owner = Some(owner);

        // §2.7.13.2: put the head in the next available ring slot.
        self.ring.set_avail_entry(self.avail_idx, head);
        // §2.7.13.3.1: the driver MUST perform a suitable memory barrier
        // before the idx update, so the device sees the descriptors and the
        // ring entry before it sees the new index.
        virtio_wmb();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring.set_avail_idx(self.avail_idx);

        self.in_flight += 1;
        self.pending += 1;
        self.stats.added += 1;
        Ok(Token(head))
    }

    /// Validates a request before anything is written; returns whether it
    /// goes indirect and its writable byte total.
    #[inline(always)]
    fn check_request(
        &self,
        nseg: usize,
        nread: usize,
        seg: &impl Fn(usize) -> Segment,
    ) -> Result<(bool, u32)> {
        if self.broken {
            return Err(Error::Broken);
        }
        if nseg == 0 || nread > nseg {
            return Err(Error::InvalidRequest);
        }
        let mut writable: u64 = 0;
        for i in 0..nseg {
            let len = seg(i).len;
            if len == 0 {
                return Err(Error::InvalidRequest);
            }
            if i >= nread {
                writable += u64::from(len);
            }
        }
        let indirect = nseg > 1 && nseg <= usize::from(self.indirect_max);
        if !indirect && nseg > usize::from(self.size) {
            // §2.7.5.2: no chain longer than the queue size.
            return Err(Error::InvalidRequest);
        }
        let needed = if indirect { 1 } else { nseg };
        if needed > usize::from(self.num_free) {
            return Err(Error::QueueFull);
        }
        Ok((indirect, writable.min(u64::from(u32::MAX)) as u32))
    }

    #[cold]
    fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        e
    }

    /// Resets the device (stopping all its DMA) and hands every in-flight
    /// request's buffers to `reclaim`. Consumes the queue; its memory is
    /// freed because the device can no longer access it.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceResetTimeout`] if the device does not complete the
    /// reset. It may then still write the rings and buffers, so the queue
    /// and every in-flight request are leaked, never freed.
    pub fn reset<T: Transport>(
        mut self,
        transport: &mut T,
        mut reclaim: impl FnMut(Token, B),
    ) -> Result {
        if let Err(error) = transport.reset() {
            // The device may still write the rings, even with nothing in
            // flight: leak them, and (through Drop) every in-flight buffer.
            self.ring.leak_on_drop();
            return Err(error);
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(b) = slot.owner.take() {
                reclaim(Token(i as u16), b);
            }
        }
        self.in_flight = 0;
        Ok(())
    }
}

impl<H: Hal, B> Drop for SplitQueue<H, B> {
    /// With requests in flight and no [`SplitQueue::reset`], the device may
    /// still write the ring and those buffers: leak them rather than free
    /// memory under the device's feet.
    fn drop(&mut self) {
        if self.in_flight > 0 {
            self.ring.leak_on_drop();
            for slot in self.slots.iter_mut() {
                if let Some(b) = slot.owner.take() {
                    core::mem::forget(b);
                }
            }
        }
    }
}

impl<H: Hal, B> SplitQueue<H, B> {
    /// Makes a request available to the device, taking ownership of its
    /// buffers until the device returns them. Does not notify the device.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`], [`Error::InvalidRequest`] or [`Error::Broken`],
    /// with the buffers handed back.
    #[inline]
    pub fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>>
    where
        B: DmaBuffers,
    {
        let n = buffers.segment_count();
        let r = buffers.readable_count();
        self.add_chain(n, r, |b: &B, i| b.segment(i), buffers)
    }

    /// Notify decision plus the notification itself, see
    /// [`Virtqueue::kick`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`].
    #[inline]
    pub fn kick<T: Transport>(&mut self, transport: &mut T) -> Result<bool> {
        let kick = self.should_notify()?;
        if kick {
            transport.notify(self.index);
        }
        Ok(kick)
    }

    #[inline]
    /// Decides whether the device must be notified about requests added
    /// since the last decision, see [`Virtqueue::should_notify`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`].
    pub fn should_notify(&mut self) -> Result<bool> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.pending == 0 {
            return Ok(false);
        }
        // §2.7.13.4.1: the driver MUST perform a suitable memory barrier
        // before reading `flags` or `avail_event`, to avoid missing a
        // notification. This is the store→load case: our `avail.idx` store
        // must be visible before we read the device's suppression state, or
        // the device may re-enable notifications, recheck a stale idx and
        // sleep while we read its stale "no notify" and skip the kick.
        virtio_mb();
        self.stats.full_barriers += 1;
        let old = self.kicked_avail;
        let new = self.avail_idx;
        self.kicked_avail = new;
        // More than 2^16 - 1 adds since the last decision make the
        // event-index window ambiguous: kick unconditionally.
        let overflow = self.pending > u32::from(u16::MAX);
        self.pending = 0;
        let kick = overflow
            || if self.event_idx {
                // §2.7.10: notify iff avail.idx moved past avail_event.
                vring_need_event(self.ring.avail_event(), new, old)
            } else {
                // §2.7.10: without EVENT_IDX only VIRTQ_USED_F_NO_NOTIFY.
                self.ring.used_flags() & VIRTQ_USED_F_NO_NOTIFY == 0
            };
        if kick {
            self.stats.kicks += 1;
        } else {
            self.stats.kicks_suppressed += 1;
        }
        Ok(kick)
    }

    /// The queue's index on its device.
    pub fn queue_index(&self) -> u16 {
        self.index
    }

    #[inline]
    /// Takes the next completed request, see [`Virtqueue::pop_used`].
    ///
    /// # Errors
    ///
    /// [`Error::DeviceBadId`], [`Error::DeviceBadLength`],
    /// [`Error::DeviceIdxOverrun`] (the queue is then broken) or
    /// [`Error::Broken`].
    pub fn pop_used(&mut self) -> Result<Option<Used<B>>> {
        if self.broken {
            return Err(Error::Broken);
        }
        let used_idx = self.ring.used_idx();
        if used_idx == self.last_used {
            self.stats.empty_polls += 1;
            return Ok(None);
        }
        // The device cannot have returned more requests than are in flight.
        if used_idx.wrapping_sub(self.last_used) > self.in_flight {
            return Err(self.fail(Error::DeviceIdxOverrun));
        }
        // §2.7.14 (and §2.7.8.2 for the device's matching write barrier):
        // read the used entry only after observing used.idx cover it.
        virtio_rmb();
        let (id, len) = self.ring.used_entry(self.last_used);
        if id >= u32::from(self.size) {
            return Err(self.fail(Error::DeviceBadId));
        }
        let slot = &mut self.slots[id as usize];
        // Not a head in flight: a body descriptor, a free one, or a duplicate.
        if slot.owner.is_none() {
            return Err(self.fail(Error::DeviceBadId));
        }
        // §2.7.8.2: len is the number of bytes written into the buffer; a
        // larger value is a lie we must not pass on to the driver.
        if len > slot.writable {
            return Err(self.fail(Error::DeviceBadLength));
        }
        let Some(buffers) = slot.owner.take() else {
            return Err(self.fail(Error::DeviceBadId));
        };
        let (tail, chain_len) = (slot.tail, slot.chain_len);
        // Return the chain to the free list with the private links: O(1).
        self.slots[usize::from(tail)].next = self.free_head;
        self.free_head = id as u16;
        self.num_free += chain_len;
        self.in_flight -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        self.stats.completions += 1;
        if self.event_idx && self.irq_on {
            // §2.7.7: ask for an interrupt when the device passes the next
            // entry. Only a hint until `enable_interrupts` adds the barrier
            // and recheck that make it reliable before sleeping.
            self.ring.set_used_event(self.last_used);
        }
        Ok(Some(Used { token: Token(id as u16), written_len: len, buffers }))
    }

    /// Re-enables used-buffer interrupts and reports whether completions
    /// raced in, see [`Virtqueue::enable_interrupts`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`].
    pub fn enable_interrupts(&mut self) -> Result<bool> {
        if self.broken {
            return Err(Error::Broken);
        }
        self.irq_on = true;
        self.stats.interrupts_enabled += 1;
        if self.event_idx {
            // §2.7.7.2: interrupt when used.idx passes last_used.
            self.ring.set_used_event(self.last_used);
        } else {
            self.ring.set_avail_flags(0);
        }
        // §2.7.14 / §2.7.7.2: the re-enable store must be visible before we
        // re-read used.idx (store→load), otherwise the device can publish an
        // entry, read our stale "no interrupt" and stay silent while we read
        // a stale used.idx and go to sleep.
        virtio_mb();
        self.stats.full_barriers += 1;
        Ok(self.ring.used_idx() != self.last_used)
    }

    /// Asks the device not to interrupt (a hint, §2.7.7).
    ///
    /// # Errors
    ///
    /// [`Error::Broken`].
    pub fn disable_interrupts(&mut self) -> Result {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.irq_on {
            self.irq_on = false;
            self.stats.interrupts_suppressed += 1;
            if !self.event_idx {
                // §2.7.7: with EVENT_IDX we simply stop advancing used_event.
                self.ring.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
            }
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Zeroes the counters.
    pub fn reset_stats(&mut self) {
        self.stats = QueueStats::default();
    }
}

impl<H: Hal, B: DmaBuffers> Virtqueue<B> for SplitQueue<H, B> {
    #[inline]
    fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>> {
        SplitQueue::add(self, buffers)
    }
    #[inline]
    fn should_notify(&mut self) -> Result<bool> {
        SplitQueue::should_notify(self)
    }
    fn queue_index(&self) -> u16 {
        self.index
    }
    #[inline]
    fn pop_used(&mut self) -> Result<Option<Used<B>>> {
        SplitQueue::pop_used(self)
    }
    #[inline]
    fn enable_interrupts(&mut self) -> Result<bool> {
        SplitQueue::enable_interrupts(self)
    }
    #[inline]
    fn disable_interrupts(&mut self) -> Result {
        SplitQueue::disable_interrupts(self)
    }
    fn stats(&self) -> QueueStats {
        self.stats
    }
    fn reset_stats(&mut self) {
        self.stats = QueueStats::default();
    }
}
