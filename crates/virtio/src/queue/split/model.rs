//! The ring's shared memory as loom sees it (`loom` feature, tests only).
//!
//! The real [`super::SplitQueue`] code runs unchanged; only the accessors of
//! `SplitRing` are swapped for these. Fields the two sides hand over under
//! the protocol's barriers (descriptors, indirect tables, ring entries) are
//! loom `UnsafeCell`s, so loom reports any access the barriers do not
//! order as a data race; the index, flag and event fields both sides poll
//! are `Relaxed` loom atomics, which model one untorn volatile access each
//! and let loom explore stale reads (store buffering) where no full barrier
//! forbids them. [`LoomDevice`] is the device's view for the model's device
//! thread, which brings its own fences.

use alloc::boxed::Box;
use alloc::vec::Vec;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicU16;
use loom::sync::atomic::Ordering::Relaxed;

use super::ring::SplitRing;
use super::{SplitQueue, State};
use crate::Result;
use crate::hal::{Hal, PhysAddr};

/// A descriptor as the model stores it: `(addr, len, flags, next)`.
pub type Desc = (u64, u32, u16, u16);

/// Every shared field of one split ring and its indirect tables.
pub struct RingModel {
    mask: usize,
    desc: Box<[UnsafeCell<Desc>]>,
    avail_flags: AtomicU16,
    avail_idx: AtomicU16,
    avail_ring: Box<[UnsafeCell<u16>]>,
    used_event: AtomicU16,
    used_flags: AtomicU16,
    used_idx: AtomicU16,
    used_ring: Box<[UnsafeCell<(u32, u32)>]>,
    avail_event: AtomicU16,
    indirect: Box<[UnsafeCell<Desc>]>,
    indirect_max: usize,
    indirect_base: PhysAddr,
}

// SAFETY: the cells are only reached through `UnsafeCell::with{,_mut}`,
// which loom checks for unsynchronised (racing) access; that check is the
// point of the model.
unsafe impl Sync for RingModel {}
// SAFETY: as above; all contents are plain integers.
unsafe impl Send for RingModel {}

fn cells<T: Copy>(n: usize, v: T) -> Box<[UnsafeCell<T>]> {
    (0..n).map(|_| UnsafeCell::new(v)).collect::<Vec<_>>().into_boxed_slice()
}

impl RingModel {
    pub(super) fn new(size: u16, indirect_max: u16, indirect_base: PhysAddr) -> Self {
        let n = usize::from(size);
        Self {
            mask: n - 1,
            desc: cells(n, (0, 0, 0, 0)),
            avail_flags: AtomicU16::new(0),
            avail_idx: AtomicU16::new(0),
            avail_ring: cells(n, 0),
            used_event: AtomicU16::new(0),
            used_flags: AtomicU16::new(0),
            used_idx: AtomicU16::new(0),
            used_ring: cells(n, (0, 0)),
            avail_event: AtomicU16::new(0),
            indirect: cells(n * usize::from(indirect_max), (0, 0, 0, 0)),
            indirect_max: usize::from(indirect_max),
            indirect_base,
        }
    }
}

fn read<T: Copy>(cell: &UnsafeCell<T>) -> T {
    // SAFETY: plain copy out of the cell; loom flags it if it races.
    cell.with(|p| unsafe { *p })
}

fn write<T>(cell: &UnsafeCell<T>, v: T) {
    // SAFETY: plain store into the cell; loom flags it if it races.
    cell.with_mut(|p| unsafe { *p = v })
}

impl<H: Hal> SplitRing<H> {
    pub(super) fn zero(&mut self) {
        let m = &self.model;
        for c in m.desc.iter().chain(m.indirect.iter()) {
            write(c, (0, 0, 0, 0));
        }
        m.avail_ring.iter().for_each(|c| write(c, 0));
        m.used_ring.iter().for_each(|c| write(c, (0, 0)));
        for a in [&m.avail_flags, &m.avail_idx, &m.used_event, &m.used_flags, &m.used_idx] {
            a.store(0, Relaxed);
        }
        m.avail_event.store(0, Relaxed);
    }

    pub(super) fn write_desc(&mut self, i: u16, addr: PhysAddr, len: u32, flags: u16, next: u16) {
        write(&self.model.desc[usize::from(i) & self.model.mask], (addr, len, flags, next));
    }

    pub(super) fn write_indirect(
        &mut self,
        head: u16,
        j: usize,
        addr: PhysAddr,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result {
        // Same bounds as the real pool: the byte offset / 16 is the entry.
        let entry = self.indirect_offset(head, j)? / 16;
        write(&self.model.indirect[entry], (addr, len, flags, next));
        Ok(())
    }

    pub(super) fn set_avail_entry(&mut self, slot: u16, head: u16) {
        write(&self.model.avail_ring[usize::from(slot) & self.model.mask], head);
    }

    pub(super) fn set_avail_idx(&mut self, idx: u16) {
        self.model.avail_idx.store(idx, Relaxed);
    }

    pub(super) fn set_avail_flags(&mut self, flags: u16) {
        self.model.avail_flags.store(flags, Relaxed);
    }

    pub(super) fn set_used_event(&mut self, v: u16) {
        self.model.used_event.store(v, Relaxed);
    }

    pub(super) fn used_flags(&self) -> u16 {
        self.model.used_flags.load(Relaxed)
    }

    pub(super) fn used_idx(&self) -> u16 {
        self.model.used_idx.load(Relaxed)
    }

    pub(super) fn avail_event(&self) -> u16 {
        self.model.avail_event.load(Relaxed)
    }

    pub(super) fn used_entry(&self, slot: u16) -> (u32, u32) {
        read(&self.model.used_ring[usize::from(slot) & self.model.mask])
    }
}

/// The device side of one queue's shared memory, for a loom device thread.
/// Accesses are as unordered as the real ones: the caller adds the device's
/// barriers (`loom::sync::atomic::fence`).
#[derive(Clone)]
pub struct LoomDevice {
    model: Arc<RingModel>,
}

impl LoomDevice {
    /// `avail.idx`.
    pub fn avail_idx(&self) -> u16 {
        self.model.avail_idx.load(Relaxed)
    }
    /// `avail.flags`.
    pub fn avail_flags(&self) -> u16 {
        self.model.avail_flags.load(Relaxed)
    }
    /// `used_event`.
    pub fn used_event(&self) -> u16 {
        self.model.used_event.load(Relaxed)
    }
    /// `avail.ring[slot % size]`.
    pub fn avail_entry(&self, slot: u16) -> u16 {
        read(&self.model.avail_ring[usize::from(slot) & self.model.mask])
    }
    /// Descriptor `i` of the ring's table.
    pub fn desc(&self, i: u16) -> Desc {
        read(&self.model.desc[usize::from(i) & self.model.mask])
    }
    /// Entry `j` of the indirect table at device address `table`, if that
    /// is a table of this queue.
    pub fn indirect(&self, table: PhysAddr, j: u16) -> Option<Desc> {
        let m = &self.model;
        let stride = (m.indirect_max * 16) as u64;
        let head = table.checked_sub(m.indirect_base)? / stride.max(1);
        let i = usize::try_from(head).ok()? * m.indirect_max + usize::from(j);
        (usize::from(j) < m.indirect_max).then(|| m.indirect.get(i).map(read)).flatten()
    }
    /// Writes `used.ring[slot % size] = (id, len)`.
    pub fn set_used_entry(&self, slot: u16, id: u32, len: u32) {
        write(&self.model.used_ring[usize::from(slot) & self.model.mask], (id, len));
    }
    /// Publishes `used.idx`.
    pub fn set_used_idx(&self, v: u16) {
        self.model.used_idx.store(v, Relaxed);
    }
    /// `used.idx` (the device's own field).
    pub fn used_idx(&self) -> u16 {
        self.model.used_idx.load(Relaxed)
    }
    /// Writes `used.flags`.
    pub fn set_used_flags(&self, v: u16) {
        self.model.used_flags.store(v, Relaxed);
    }
    /// Writes `avail_event`.
    pub fn set_avail_event(&self, v: u16) {
        self.model.avail_event.store(v, Relaxed);
    }
}

impl<H: Hal, B> SplitQueue<H, B> {
    /// The device's view of this queue's rings (loom model only).
    pub fn loom_device(&self) -> LoomDevice {
        LoomDevice { model: self.ring.model.clone() }
    }

    /// Moves an idle, live queue to ring index `idx` on both sides, as if
    /// `idx` requests had come and gone, so the model can start next to the
    /// 2^16 wrap. Call before the device thread starts.
    ///
    /// # Panics
    ///
    /// If requests are in flight or the queue is not live.
    pub fn loom_start_at(&mut self, idx: u16) {
        assert!(self.in_flight == 0 && self.state == State::Live);
        (self.avail_idx, self.kicked_avail, self.last_used, self.seen_used) = (idx, idx, idx, idx);
        self.used_event = idx;
        let m = &self.ring.model;
        m.avail_idx.store(idx, Relaxed);
        m.used_idx.store(idx, Relaxed);
        m.used_event.store(idx, Relaxed);
        m.avail_event.store(idx, Relaxed);
    }
}
