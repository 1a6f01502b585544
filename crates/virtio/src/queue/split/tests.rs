//! Deterministic tests of the ring's checks and notification logic, with a
//! hand-driven device (physical = virtual address, [`HeapHal`]). Each device
//! lie asserts the exact error it must produce; lifecycle and ownership
//! tests live in `lifecycle_tests.rs`.

use alloc::vec::Vec;

use super::layout::RingLayout;
use super::{QueueConfig, SplitQueue, UsedLenPolicy};
use crate::queue::event::vring_need_event;
use crate::testing::{HeapHal, RecordingTransport};
use crate::{Dma, DmaChain, Error, Features, Segment};

pub(crate) type Chain = DmaChain<HeapHal, 4>;

/// The device end of a queue: pokes the used ring, reads the driver area.
pub(crate) struct Device {
    avail: *mut u8,
    used: *mut u8,
    size: u16,
    /// Next used slot the device writes.
    pub(crate) idx: u16,
}

impl Device {
    pub(crate) fn of(t: &RecordingTransport) -> Self {
        let (size, _, avail, used) = t.queue.expect("queue programmed");
        Self { avail: avail as *mut u8, used: used as *mut u8, size, idx: 0 }
    }

    /// Writes used entry `(id, len)` at the next slot and publishes it.
    pub(crate) fn ret(&mut self, id: u32, len: u32) {
        let slot = usize::from(self.idx & (self.size - 1));
        // SAFETY: entry `slot` (< size) of the live, 4-aligned used ring.
        unsafe {
            let e = self.used.add(4 + slot * 8);
            e.cast::<u32>().write_volatile(id.to_le());
            e.add(4).cast::<u32>().write_volatile(len.to_le());
        }
        self.set_used_idx(self.idx.wrapping_add(1));
    }

    pub(crate) fn set_used_idx(&mut self, idx: u16) {
        self.idx = idx;
        // SAFETY: used.idx, offset 2 of the live used ring.
        unsafe { self.used.add(2).cast::<u16>().write_volatile(idx.to_le()) }
    }

    fn avail_word(&self, offset: usize) -> u16 {
        // SAFETY: a 2-aligned field inside the live driver area.
        u16::from_le(unsafe { self.avail.add(offset).cast::<u16>().read_volatile() })
    }

    pub(crate) fn used_event(&self) -> u16 {
        self.avail_word(4 + 2 * usize::from(self.size))
    }

    pub(crate) fn avail_flags(&self) -> u16 {
        self.avail_word(0)
    }

    /// Sets `avail_event` (EVENT_IDX kick suppression).
    pub(crate) fn set_avail_event(&mut self, v: u16) {
        let off = RingLayout::new(self.size).total - RingLayout::new(self.size).used - 2;
        // SAFETY: avail_event, the last field of the live used ring.
        unsafe { self.used.add(off).cast::<u16>().write_volatile(v.to_le()) }
    }
}

pub(crate) fn config(size: u16, features: Features) -> QueueConfig {
    let features = features | Features::VERSION_1;
    QueueConfig { index: 0, size, features, indirect_max: 0, used_len: UsedLenPolicy::Strict }
}

/// A one-page chain: `nread` readable segments of 16 bytes, then one
/// writable segment of `writable` bytes.
pub(crate) fn chain(nread: usize, writable: usize) -> Chain {
    let mut c = DmaChain::new(Dma::new(HeapHal, 1).unwrap());
    let r: Vec<_> = (0..nread).map(|i| (i * 16, 16)).collect();
    c.set_segments(&r, &[(1024, writable)]).unwrap();
    c
}

type Queue = SplitQueue<HeapHal, Chain>;

fn queue(size: u16, features: Features) -> (Queue, RecordingTransport, Device) {
    let mut t = RecordingTransport::default();
    let q = SplitQueue::new(&HeapHal, &mut t, config(size, features)).unwrap();
    let d = Device::of(&t);
    (q, t, d)
}

/// Asserts `pop_used` fails with exactly `want`, breaks the queue, hands
/// out no buffers, and fails fast afterwards.
fn assert_breaks(q: &mut Queue, want: Error) {
    assert_eq!(q.pop_used().map(|u| u.map(|u| u.token)).unwrap_err(), want);
    assert!(q.is_broken());
    assert_eq!(q.pop_used().unwrap_err(), Error::Broken);
    assert_eq!(q.add(chain(1, 8)).unwrap_err().error, Error::Broken);
}

#[test]
fn id_outside_the_queue_is_out_of_range() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(1, 8)).unwrap();
    d.ret(4, 0);
    assert_breaks(&mut q, Error::DeviceIdOutOfRange);
}

#[test]
fn free_descriptor_id_is_not_in_flight() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap(); // head 0, one descriptor
    d.ret(3, 0);
    assert_breaks(&mut q, Error::DeviceIdNotInFlight);
}

#[test]
fn chain_body_id_is_not_in_flight() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(1, 8)).unwrap(); // head 0, body 1
    d.ret(1, 0);
    assert_breaks(&mut q, Error::DeviceIdNotInFlight);
}

#[test]
fn duplicate_id_is_not_in_flight() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap();
    q.add(chain(0, 8)).unwrap();
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 0);
    d.ret(0, 8); // head 0 again, with head 1 still in flight
    assert_breaks(&mut q, Error::DeviceIdNotInFlight);
}

#[test]
fn a_duplicate_published_before_its_head_was_reused_is_not_in_flight() {
    // The hostile device's fuzzer (seed 315): head 0 completed twice in one
    // go; the driver takes the first, reuses head 0 for a new request (a
    // queue of two has no other free head), and must not take the second
    // as that request's completion.
    let (mut q, _t, mut d) = queue(2, Features::empty());
    q.add(chain(0, 8)).unwrap(); // head 0
    q.add(chain(0, 8)).unwrap(); // head 1: room in flight for the lie
    d.ret(0, 8);
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 0);
    assert_eq!(q.add(chain(0, 8)).unwrap().index(), 0);
    assert_breaks(&mut q, Error::DeviceIdNotInFlight);
}

#[test]
fn a_late_duplicate_names_a_free_head_because_heads_are_reused_oldest_first() {
    // The same lie arriving after the next add: with a LIFO free list the
    // next request would sit on head 0 and take the duplicate as its own
    // completion (fuzz seeds 406, 408).
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap(); // head 0
    q.add(chain(0, 8)).unwrap(); // head 1
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 0);
    assert_ne!(q.add(chain(0, 8)).unwrap().index(), 0);
    d.ret(0, 8);
    assert_breaks(&mut q, Error::DeviceIdNotInFlight);
}

#[test]
fn a_reused_head_completed_after_it_was_made_available_is_taken() {
    let (mut q, _t, mut d) = queue(1, Features::empty());
    q.add(chain(0, 8)).unwrap();
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 0);
    assert_eq!(q.add(chain(0, 8)).unwrap().index(), 0);
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 0);
}

#[test]
fn length_beyond_writable_breaks_a_strict_queue() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(1, 8)).unwrap();
    d.ret(0, 9);
    assert_breaks(&mut q, Error::DeviceBadLength);
}

#[test]
fn length_beyond_writable_is_clamped_and_counted_by_a_clamping_queue() {
    let mut t = RecordingTransport::default();
    let cfg = QueueConfig { used_len: UsedLenPolicy::Clamp, ..config(4, Features::empty()) };
    let mut q: Queue = SplitQueue::new(&HeapHal, &mut t, cfg).unwrap();
    let mut d = Device::of(&t);
    q.add(chain(1, 8)).unwrap();
    d.ret(0, 24); // readable + writable: what some devices report
    let u = q.pop_used().unwrap().unwrap();
    assert_eq!((u.written_len, q.stats().len_clamped), (8, 1));
    let head = q.add(chain(1, 8)).unwrap().index();
    d.ret(u32::from(head), 8);
    assert_eq!(q.pop_used().unwrap().unwrap().written_len, 8);
    assert_eq!((q.stats().len_clamped, q.is_broken()), (1, false));
}

#[test]
fn used_idx_beyond_in_flight_is_an_overrun() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap();
    d.set_used_idx(2);
    assert_breaks(&mut q, Error::DeviceIdxOverrun);
}

#[test]
fn used_idx_going_back_below_a_seen_value_is_backwards() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap();
    q.add(chain(0, 8)).unwrap();
    d.ret(0, 8);
    d.ret(1, 8); // used.idx = 2
    q.pop_used().unwrap().unwrap(); // saw 2, consumed 1
    d.set_used_idx(1); // back to 1: would read as "empty" without the check
    assert_breaks(&mut q, Error::DeviceIdxBackwards);
}

#[test]
fn used_idx_going_back_behind_the_driver_is_backwards() {
    let (mut q, _t, mut d) = queue(4, Features::empty());
    q.add(chain(0, 8)).unwrap();
    d.ret(0, 8);
    q.pop_used().unwrap().unwrap();
    q.add(chain(0, 8)).unwrap();
    d.set_used_idx(0);
    assert_breaks(&mut q, Error::DeviceIdxBackwards);
}

/// A handler that pops until `None` and returns must leave `used_event`
/// = next entry, made visible by a full barrier before the `None`.
#[test]
fn pop_until_none_publishes_used_event_behind_a_full_barrier() {
    let (mut q, _t, mut d) = queue(8, Features::EVENT_IDX);
    for _ in 0..3 {
        q.add(chain(0, 8)).unwrap();
    }
    d.ret(0, 8);
    d.ret(1, 8);
    let before = q.stats().full_barriers;
    while q.pop_used().unwrap().is_some() {}
    assert_eq!(d.used_event(), 2);
    assert_eq!(q.stats().full_barriers, before + 1, "one barrier before the first None");
    assert!(q.pop_used().unwrap().is_none());
    assert_eq!(q.stats().full_barriers, before + 1, "later Nones need none");
    // Published and fenced: enable_interrupts adds no second barrier.
    assert!(!q.enable_interrupts().unwrap());
    assert_eq!(q.stats().full_barriers, before + 1);
    // The recheck after the barrier catches a completion that raced in.
    q.pop_used().unwrap(); // nothing
    d.ret(2, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().token.index(), 2);
}

/// With interrupts disabled under EVENT_IDX, a device honouring
/// `used_event` (§2.7.7.2) never interrupts, across more than 2^16
/// completions; after enabling it interrupts for the next one.
#[test]
fn disabled_event_idx_interrupts_stay_suppressed_past_the_wrap() {
    let (mut q, _t, mut d) = queue(4, Features::EVENT_IDX);
    q.disable_interrupts().unwrap();
    let mut interrupts = 0;
    for _ in 0..70_000u32 {
        let heads: Vec<u16> = (0..3).map(|_| q.add(chain(0, 8)).unwrap().index()).collect();
        let old = d.idx;
        for head in heads {
            d.ret(u32::from(head), 8);
        }
        if vring_need_event(d.used_event(), d.idx, old) {
            interrupts += 1;
        }
        while q.pop_used().unwrap().is_some() {}
    }
    assert_eq!(interrupts, 0, "a disabled queue interrupted");
    assert!(!q.enable_interrupts().unwrap());
    let head = q.add(chain(0, 8)).unwrap().index();
    let old = d.idx;
    d.ret(u32::from(head), 8);
    assert!(vring_need_event(d.used_event(), d.idx, old), "enabled queue must interrupt");
}

#[test]
fn disable_without_event_idx_sets_no_interrupt() {
    let (mut q, _t, d) = queue(4, Features::empty());
    assert_eq!(d.avail_flags(), 0);
    q.disable_interrupts().unwrap();
    assert_eq!(d.avail_flags(), super::layout::VIRTQ_AVAIL_F_NO_INTERRUPT);
    assert!(!q.enable_interrupts().unwrap());
    assert_eq!(d.avail_flags(), 0);
}

#[test]
fn chains_longer_than_2_pow_32_bytes_are_refused() {
    let (mut q, _t, _d) = queue(4, Features::empty());
    let half = Segment { addr: 0x1000, len: 1 << 31 };
    let one = Segment { addr: 0x1000, len: 1 };
    // SAFETY: the recording transport has no device: nothing ever accesses
    // these addresses, and the request is reclaimed below.
    let r = unsafe { q.add_raw(&[half, half], &[one], Chain::new(Dma::new(HeapHal, 1).unwrap())) };
    assert_eq!(r.unwrap_err().error, Error::InvalidRequest);
    // SAFETY: as above; exactly 2^32 bytes is allowed (§2.7.5.2).
    let r = unsafe { q.add_raw(&[half], &[half], Chain::new(Dma::new(HeapHal, 1).unwrap())) };
    assert!(r.is_ok());
}

/// More adds than a u32 between two notify decisions must still kick.
#[test]
fn pending_count_saturates_instead_of_wrapping() {
    let (mut q, _t, mut d) = queue(4, Features::EVENT_IDX);
    d.set_avail_event(1000); // the device asks for no kick yet
    q.pending = u32::MAX;
    q.add(chain(0, 8)).unwrap();
    assert_eq!(q.pending, u32::MAX);
    assert!(q.should_notify().unwrap(), "a wrapped count skipped the kick");
}

#[test]
fn indirect_tables_longer_than_the_queue_are_refused() {
    let mut t = RecordingTransport::default();
    let mut cfg = config(4, Features::INDIRECT_DESC);
    cfg.indirect_max = 5;
    assert!(matches!(Queue::new(&HeapHal, &mut t, cfg), Err(Error::InvalidIndirectMax)));
    cfg.indirect_max = 4;
    assert!(Queue::new(&HeapHal, &mut t, cfg).is_ok());
    // 32768 tables of 16 entries would be 8 MiB of pool.
    let cfg = QueueConfig { indirect_max: 16, ..config(32768, Features::INDIRECT_DESC) };
    assert!(matches!(Queue::new(&HeapHal, &mut t, cfg), Err(Error::InvalidIndirectMax)));
}

#[test]
fn indirect_entry_outside_its_table_is_an_error_not_a_silent_overwrite() {
    let ring = super::ring::SplitRing::new(&HeapHal, 4, 3).unwrap();
    let mut ring = ring;
    assert!(ring.write_indirect(1, 2, 0, 1, 0, 0).is_ok());
    assert_eq!(ring.write_indirect(1, 3, 0, 1, 0, 0), Err(Error::InvalidRequest));
    let no_pool = super::ring::SplitRing::<HeapHal>::new(&HeapHal, 4, 0).unwrap();
    assert_eq!(no_pool.indirect_table(0), None);
}

#[test]
fn unimplemented_ring_features_are_refused_with_their_bits() {
    let mut t = RecordingTransport::default();
    for bad in [Features::RING_PACKED, Features::IN_ORDER, Features::NOTIFICATION_DATA] {
        let r = Queue::new(&HeapHal, &mut t, config(4, bad | Features::EVENT_IDX));
        assert_eq!(r.err(), Some(Error::UnsupportedFeatures(bad)));
    }
}

#[test]
fn the_queue_is_send_and_sync_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Queue>();
}
