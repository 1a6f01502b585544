//! The split virtqueue, driver side (VirtIO 1.2 §2.7).
//!
//! Driver-private state (`Slot`) mirrors everything the driver needs about
//! each descriptor — free-list links, chain tail and length, writable byte
//! count, the request's owner — so the driver never reads back `addr`,
//! `len`, `flags` or `next` from shared memory (which a device could have
//! changed). The only values read from shared memory are `used.idx`,
//! `used.ring[]`, `used.flags` and `avail_event`, and each is validated.
//!
//! Lifecycle: [`SplitQueue::new`] programs the rings (the queue is *live*);
//! only a reset proof for this queue ([`SplitQueue::reclaim`]) hands its
//! in-flight buffers back and *stops* it; a stopped queue may be
//! [`SplitQueue::restart`]ed or dropped, which frees its rings. A live
//! queue dropped leaks them instead (see [`crate::leak_counts`]).
//!
//! Allocation: [`SplitQueue::new`] allocates the private slot array with
//! `alloc` (and the rings and indirect-table pool through the [`Hal`]); no
//! other method allocates.

pub mod layout;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(feature = "loom")]
pub mod model;
mod ring;
mod sharing;
#[cfg(test)]
mod tests;
mod used;
mod virtqueue;

use alloc::boxed::Box;
use alloc::vec::Vec;

use self::layout::{
    VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY,
};
use self::ring::SplitRing;
use self::sharing::{Mappings, Place};
use super::event::vring_need_event;
use super::{QueueStats, Rejected, RingAddresses, Token};
use crate::barrier::{Site, virtio_mb, virtio_wmb};
use crate::buffer::{DmaBuffers, Segment};
use crate::features::Features;
use crate::hal::Hal;
use crate::reset::{DeviceId, Ticket};
use crate::transport::{Notifier, Transport};
use crate::{Error, Result};

/// Largest indirect-table pool a queue may allocate (`size * indirect_max`
/// descriptors of 16 bytes): 4 MiB, e.g. 8 entries for each of 32768 heads.
pub const MAX_INDIRECT_POOL_BYTES: usize = 4 << 20;

/// What `pop_used` does when the device claims it wrote more bytes than the
/// request's writable segments hold.
///
/// VirtIO 1.2 §2.7.8.1 forbids it, but Linux tried enforcing it in the ring
/// core and reverted that (f124034faa91, "virtio_ring: validate used buffer
/// length"): several devices, legacy ones in particular, report the whole
/// buffer length, readable part included. So each driver chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsedLenPolicy {
    /// A length beyond the writable bytes is a protocol violation:
    /// [`Error::DeviceBadLength`], and the queue breaks. For drivers that
    /// interpret the length (it says how much of a response to decode).
    Strict,
    /// Clamp the length to the writable bytes and count it in
    /// [`QueueStats::len_clamped`]. For drivers whose result does not
    /// depend on the length (e.g. a status byte says it).
    Clamp,
}

/// How to set up one split queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Queue index on the device.
    pub index: u16,
    /// Number of descriptors: a power of two, at most 32768 and at most the
    /// device's maximum (§2.7).
    pub size: u16,
    /// The features negotiated with the device: `VERSION_1` is required;
    /// `INDIRECT_DESC`, `EVENT_IDX` and `RING_RESET` are used when present;
    /// any other ring/transport bit is refused.
    pub features: Features,
    /// Longest indirect table per request (0 = never use indirect); at most
    /// `size` (§2.7.5.3.1) and within [`MAX_INDIRECT_POOL_BYTES`]. Ignored
    /// without `INDIRECT_DESC`.
    pub indirect_max: u16,
    /// What to do with a used length beyond the writable bytes.
    pub used_len: UsedLenPolicy,
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
    /// For a chain head: `used.idx` as last seen when the chain was made
    /// available. Entries below it were published before the device could
    /// see this chain, so none of them can be its completion (a duplicate
    /// of an earlier request that used the same head, say).
    available_after: u16,
    /// `Some` exactly while this descriptor heads an in-flight request.
    owner: Option<B>,
}

/// Whether the device may use the rings, and whether we still use them.
/// One field, so the hot path checks usability with one compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Programmed into the device, and no reset proven since.
    Live,
    /// Live, but the device broke the protocol: every call fails fast.
    Broken,
    /// Reclaimed after a proven reset: the device has forgotten the rings.
    Stopped,
}

/// A split virtqueue whose in-flight requests own buffers of type `B`.
///
/// `Send` and `Sync` when `H` and `B` are: every method that touches the
/// ring or its requests takes `&mut self`, so a shared `&SplitQueue` can
/// only read counters. One CPU drives it at a time (wrap it in a lock).
pub struct SplitQueue<H: Hal, B> {
    ring: SplitRing<H>,
    slots: Box<[Slot<B>]>,
    /// What each request in flight shared (empty unless `H` shares
    /// buffers).
    mappings: Mappings,
    /// The device the rings are programmed into, and when.
    device: DeviceId,
    programmed: Ticket,
    state: State,
    features: Features,
    index: u16,
    size: u16,
    /// The free list, oldest first: `add` takes from the head, completions
    /// join at the tail (FIFO, unlike Linux's LIFO). A head is reused only
    /// after every other free descriptor, so a device that completes a
    /// request twice, or late, names a free descriptor (caught as
    /// `DeviceIdNotInFlight`) instead of the next request that took the
    /// same head, whose buffers would go back while the device has them.
    free_head: u16,
    /// Last descriptor of the free list (stale while `num_free` is 0).
    free_tail: u16,
    num_free: u16,
    in_flight: u16,
    /// Our copy of `avail.idx`; never read back from shared memory.
    avail_idx: u16,
    /// `avail_idx` at the last notify decision (the `old` of
    /// `vring_need_event`).
    kicked_avail: u16,
    /// Requests added since the last notify decision (saturating).
    pending: u32,
    /// Next used ring entry we expect.
    last_used: u16,
    /// The largest `used.idx` seen (it must never go back, §2.7.8).
    seen_used: u16,
    event_idx: bool,
    indirect_max: u16,
    used_len: UsedLenPolicy,
    irq_on: bool,
    /// With EVENT_IDX: the value last stored in `used_event`, and whether a
    /// full barrier has run since (which makes it safe to sleep on, §2.7.7.2).
    used_event: u16,
    used_event_fenced: bool,
    stats: QueueStats,
}

impl<H: Hal, B> SplitQueue<H, B> {
    /// Allocates the rings, programs them into queue `config.index` of the
    /// device, and returns the live queue. Call before setting `DRIVER_OK`
    /// (§3.1.1 step 7).
    ///
    /// # Errors
    ///
    /// [`Error::FeaturesRejected`] without `VERSION_1`;
    /// [`Error::UnsupportedFeatures`] with a ring feature the crate does not
    /// implement; [`Error::QueueUnavailable`] if the device has no such
    /// queue or it is in use; [`Error::InvalidQueueSize`];
    /// [`Error::InvalidIndirectMax`]; [`Error::DmaAlloc`].
    pub fn new<T: Transport>(hal: &H, transport: &mut T, config: QueueConfig) -> Result<Self> {
        if !config.features.contains(Features::VERSION_1) {
            return Err(Error::FeaturesRejected);
        }
        let unsupported = config.features.unsupported();
        if !unsupported.is_empty() {
            return Err(Error::UnsupportedFeatures(unsupported));
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
        let indirect_max =
            if config.features.contains(Features::INDIRECT_DESC) { config.indirect_max } else { 0 };
        let pool_bytes = usize::from(size) * usize::from(indirect_max) * 16;
        if indirect_max > size || pool_bytes > MAX_INDIRECT_POOL_BYTES {
            return Err(Error::InvalidIndirectMax);
        }
        let ring = SplitRing::new(hal, size, indirect_max)?;
        let slots: Vec<Slot<B>> = (0..size)
            .map(|_| Slot {
                next: 0,
                tail: 0,
                chain_len: 0,
                writable: 0,
                available_after: 0,
                owner: None,
            })
            .collect();
        let mut queue = Self {
            ring,
            slots: slots.into_boxed_slice(),
            mappings: Mappings::new::<H>(size, indirect_max),
            device: transport.device_id(),
            programmed: Ticket::draw(),
            state: State::Stopped,
            features: config.features,
            index: config.index,
            size,
            free_head: 0,
            free_tail: size.wrapping_sub(1),
            num_free: 0,
            in_flight: 0,
            avail_idx: 0,
            kicked_avail: 0,
            pending: 0,
            last_used: 0,
            seen_used: 0,
            event_idx: config.features.contains(Features::EVENT_IDX),
            indirect_max,
            used_len: config.used_len,
            irq_on: true,
            used_event: 0,
            used_event_fenced: true,
            stats: QueueStats::default(),
        };
        queue.program(transport);
        Ok(queue)
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
        self.state == State::Broken
    }

    /// Whether the queue was reclaimed and not yet restarted.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether `EVENT_IDX` is in use.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// Longest indirect table in use (0 = indirect off).
    pub fn indirect_max(&self) -> u16 {
        self.indirect_max
    }

    /// The device this queue's rings are programmed into.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Where the rings live, as the device sees them (what `queue_set`
    /// programmed), for diagnostics.
    pub fn ring_addresses(&self) -> RingAddresses {
        let (descriptors, driver_area, device_area) = self.ring.addresses();
        RingAddresses {
            descriptors,
            driver_area,
            device_area,
            indirect_pool: self.ring.indirect_pool(),
        }
    }

    /// Adds a request described by explicit segment lists; `owner` is kept
    /// with the request and returned by `pop_used` or `reclaim`.
    ///
    /// The segments' addresses go to the device as they are: they must be
    /// device addresses already (the HAL is not asked to share them, even
    /// if it [shares buffers](Hal::SHARES_BUFFERS)).
    ///
    /// # Safety
    ///
    /// Every segment must describe memory that the device can reach at that
    /// address, that stays allocated (and reachable), is accessed by
    /// nothing but the device, and may be written by the device (the
    /// writable ones), until this request is returned by `pop_used` or
    /// [`SplitQueue::reclaim`] hands it back — or forever, if the queue is
    /// dropped while live. Prefer the safe [`SplitQueue::add`] with a
    /// [`DmaBuffers`] owner.
    ///
    /// # Errors
    ///
    /// As [`crate::Virtqueue::add`], with `owner` handed back.
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
        self.add_chain::<false>(nr + writable.len(), nr, seg, owner)
    }

    /// Publishes one request. `SHARE`: its segments are the driver's
    /// addresses, to be shared through the HAL if it shares buffers
    /// (`add`); otherwise they are device addresses already (`add_raw`).
    #[inline(always)]
    fn add_chain<const SHARE: bool>(
        &mut self,
        nseg: usize,
        nread: usize,
        seg: impl Fn(&B, usize) -> Segment,
        owner: B,
    ) -> core::result::Result<Token, Rejected<B>> {
        let checked = self.check_request(nseg, nread, &|i| seg(&owner, i));
        let (indirect, writable) = match checked {
            Ok(v) => v,
            Err(error) => return Err(Rejected { error, buffers: owner }),
        };
        let head = self.free_head;
        let last = nseg - 1;
        let flags_of = |i: usize| {
            let w = if i >= nread { VIRTQ_DESC_F_WRITE } else { 0 };
            let n = if i < last { VIRTQ_DESC_F_NEXT } else { 0 };
            w | n
        };
        // Compiled out unless the HAL shares buffers: then each segment is
        // published at the address `share` returns, and a refusal undoes
        // the segments before it (nothing is published yet, so the request
        // is simply handed back).
        let share = SHARE && H::SHARES_BUFFERS;
        let (tail, chain_len) = if indirect {
            // §2.7.5.3: the table holds the whole chain, `next` indexes the
            // table; the ring descriptor carries only INDIRECT (§2.7.5.3.1:
            // never INDIRECT together with NEXT).
            let Some(table) = self.ring.indirect_table(head) else {
                debug_assert!(false, "indirect chosen without a pool");
                return Err(Rejected { error: Error::InvalidRequest, buffers: owner });
            };
            for i in 0..nseg {
                let s = seg(&owner, i);
                let place = Place::Indirect { head, entry: i };
                let Some(addr) = self.publish_addr::<SHARE>(place, s, i >= nread, (head, i)) else {
                    return Err(Rejected { error: Error::DmaShare, buffers: owner });
                };
                let next = if i < last { (i + 1) as u16 } else { 0 };
                if self.ring.write_indirect(head, i, addr, s.len, flags_of(i), next).is_err() {
                    // Unreachable: check_request bounds nseg by indirect_max.
                    // Nothing is published yet, so refusing loses nothing.
                    debug_assert!(false, "indirect entry {i} outside its table");
                    if share {
                        self.unshare_chain(head, i as u16 + 1, true);
                    }
                    return Err(Rejected { error: Error::InvalidRequest, buffers: owner });
                }
            }
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
                let place = Place::Direct(d);
                let Some(addr) = self.publish_addr::<SHARE>(place, s, i >= nread, (head, i)) else {
                    return Err(Rejected { error: Error::DmaShare, buffers: owner });
                };
                let link = if i < last { next } else { 0 };
                self.ring.write_desc(d, addr, s.len, flags_of(i), link);
                tail = d;
                d = next;
            }
            self.free_head = d;
            (tail, nseg as u16)
        };
        if H::SHARES_BUFFERS {
            self.note_shared(head, if SHARE { nseg as u16 } else { 0 }, indirect);
        }
        self.num_free -= chain_len;
        let slot = &mut self.slots[usize::from(head)];
        slot.tail = tail;
        slot.chain_len = chain_len;
        slot.writable = writable;
        slot.available_after = self.seen_used;
        slot.owner = Some(owner);

        // §2.7.13.2: put the head in the next available ring slot.
        self.ring.set_avail_entry(self.avail_idx, head);
        // §2.7.13.3.1: the driver MUST perform a suitable memory barrier
        // before the idx update, so the device sees the descriptors and the
        // ring entry before it sees the new index.
        virtio_wmb(Site::PublishAvail);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring.set_avail_idx(self.avail_idx);

        self.in_flight += 1;
        // Saturating: a wrapped count would read as "nothing to notify".
        self.pending = self.pending.saturating_add(1);
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
        self.check_usable()?;
        if nseg == 0 || nread > nseg {
            return Err(Error::InvalidRequest);
        }
        let (mut total, mut writable) = (0u64, 0u64);
        for i in 0..nseg {
            let len = u64::from(seg(i).len);
            if len == 0 {
                return Err(Error::InvalidRequest);
            }
            total += len;
            if i >= nread {
                writable += len;
            }
        }
        // §2.7.5.2: no chain longer than 2^32 bytes in total.
        if total > 1 << 32 {
            return Err(Error::InvalidRequest);
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
        // A used length is a u32, so saturating the total loses nothing.
        Ok((indirect, writable.min(u64::from(u32::MAX)) as u32))
    }

    /// `Broken` or `Stopped` if the ring must not be used now.
    #[inline(always)]
    fn check_usable(&self) -> Result {
        match self.state {
            State::Live => Ok(()),
            State::Broken => Err(Error::Broken),
            State::Stopped => Err(Error::Stopped),
        }
    }

    #[cold]
    fn fail(&mut self, e: Error) -> Error {
        self.state = State::Broken;
        e
    }

    /// Makes a request available to the device, taking ownership of its
    /// buffers until the device returns them. Does not notify the device.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`], [`Error::InvalidRequest`], [`Error::Broken`]
    /// or [`Error::Stopped`], with the buffers handed back.
    #[inline]
    pub fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>>
    where
        B: DmaBuffers,
    {
        let n = buffers.segment_count();
        let r = buffers.readable_count();
        self.add_chain::<true>(n, r, |b: &B, i| b.segment(i), buffers)
    }

    /// Notify decision plus the notification itself, see
    /// [`crate::Virtqueue::kick`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] or [`Error::Stopped`].
    #[inline]
    pub fn kick<T: Transport>(&mut self, transport: &mut T) -> Result<bool> {
        let kick = self.should_notify()?;
        if kick {
            transport.notify(self.index);
        }
        Ok(kick)
    }

    /// The notify decision plus the notification, through this queue's own
    /// [`Notifier`] instead of the transport: queues of one device kick
    /// concurrently, each under its own lock.
    ///
    /// # Errors
    ///
    /// [`Error::WrongNotifier`] if `notifier` rings another queue (nothing
    /// is decided then); [`Error::Broken`] or [`Error::Stopped`].
    #[inline]
    pub fn kick_with<N: Notifier + ?Sized>(&mut self, notifier: &N) -> Result<bool> {
        if notifier.queue() != self.index {
            return Err(Error::WrongNotifier);
        }
        let kick = self.should_notify()?;
        if kick {
            notifier.notify();
        }
        Ok(kick)
    }

    /// Decides whether the device must be notified about requests added
    /// since the last decision, see [`crate::Virtqueue::should_notify`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] or [`Error::Stopped`].
    #[inline]
    pub fn should_notify(&mut self) -> Result<bool> {
        self.check_usable()?;
        if self.pending == 0 {
            return Ok(false);
        }
        // §2.7.13.4.1: the driver MUST perform a suitable memory barrier
        // before reading `flags` or `avail_event`, to avoid missing a
        // notification. This is the store→load case: our `avail.idx` store
        // must be visible before we read the device's suppression state, or
        // the device may re-enable notifications, recheck a stale idx and
        // sleep while we read its stale "no notify" and skip the kick.
        virtio_mb(Site::NotifyDecision);
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

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Zeroes the counters.
    pub fn reset_stats(&mut self) {
        self.stats = QueueStats::default();
    }
}
