//! Polling a queue without its lock (VirtIO 1.2 §2.7.8, §2.7.14).
//!
//! A waiter that polls for its completion must not take the queue's lock,
//! nor re-enable interrupts (a full barrier), on each empty look: it reads
//! the device's `used.idx` straight from the ring and compares it with the
//! index the last locked pop ended at; only a difference is worth the lock.
//! While it polls, the queue's interrupts are suppressed (§2.7.7) unless
//! another thread sleeps on the queue and needs them: a sleeper counts
//! itself in `sleepers` *before* it takes the lock to re-enable and
//! recheck, and a poller decides under that lock, so a poller never turns
//! interrupts off under a sleeper's feet.

use super::{BlkDevice, QueueSlot};
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use vireo_virtio::SplitQueue;

/// Offset of `idx` in the used ring (`struct virtq_used`: flags, idx).
const USED_IDX_OFFSET: u64 = 2;

/// A queue's `used.idx`, as the device writes it.
pub(super) struct UsedIndex {
    idx: *const AtomicU16,
}

// SAFETY: the pointer is into the queue's used ring, which the kernel maps
// for as long as the (static) device lives: a device reset restarts the
// same rings, and the device is never torn down once running. Reading an
// `AtomicU16` there from any CPU is sound; only the device writes it.
unsafe impl Send for UsedIndex {}
// SAFETY: as above; shared reads only.
unsafe impl Sync for UsedIndex {}

impl UsedIndex {
    pub(super) fn of<B>(queue: &SplitQueue<super::KernelHal, B>) -> Self {
        let used = queue.ring_addresses().device_area + USED_IDX_OFFSET;
        let virt = crate::mm::phys_to_virt(crate::mm::PhysAddr::new(used));
        Self { idx: virt.as_ptr::<AtomicU16>() }
    }

    /// The index the device has published up to.
    pub(super) fn load(&self) -> u16 {
        // SAFETY: see the `Send` impl: a live, aligned (the used ring is
        // 4-byte aligned, §2.7.8) u16 in ring memory. Acquire: the entries
        // it covers are read after it (pop_used reads them again anyway).
        unsafe { (*self.idx).load(Ordering::Acquire) }
    }
}

impl UsedIndex {
    /// Tests only: publishes `value` as `used.idx`, as a lying device would.
    pub(super) fn forge(&self, value: u16) {
        // SAFETY: as for `load`; the ring is device-writable memory, and a
        // device may store any value here at any time, which is exactly
        // what the driver must withstand.
        unsafe { (*self.idx).store(value, Ordering::Release) }
    }
}

/// What a queue counts beyond the ring's own counters.
#[derive(Default)]
pub(super) struct PollState {
    /// `used.idx` as it was just before the last locked pop found nothing.
    pub seen_used: AtomicU16,
    /// Threads asleep on this queue's interrupt.
    pub sleepers: AtomicU32,
    /// Lock-free looks that found nothing new.
    pub empty_polls: AtomicU64,
}

impl QueueSlot {
    /// Whether the device published anything since the last locked pop
    /// (no lock, no barrier beyond the load).
    pub(super) fn has_news(&self) -> bool {
        self.used_idx.load() != self.poll.seen_used.load(Ordering::Relaxed)
    }
}

/// Per-request counters of a workload, summed over every queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkCounters {
    /// Requests the device finished.
    pub completions: u64,
    /// Notifications sent to the device.
    pub kicks: u64,
    /// Completion interrupts taken (any CPU).
    pub interrupts: u64,
    /// Full barriers in the ring code.
    pub full_barriers: u64,
    /// Looks at a queue that found nothing (lock-free and locked).
    pub empty_polls: u64,
}

impl BlkDevice {
    /// Before polling queue `index` for a request: suppress its interrupts
    /// unless someone sleeps on them (see the module description).
    pub(super) fn quiet_for_polling(&self, index: usize) {
        let Some(slot) = self.queues.get(index) else { return };
        if slot.polled {
            return;
        }
        let mut state = slot.state.lock();
        if slot.poll.sleepers.load(Ordering::Acquire) == 0 {
            let _ = state.queue.disable_interrupts();
        }
    }

    /// Counters summed over every queue, for the benchmarks.
    pub fn counters(&self) -> BlkCounters {
        let mut total = BlkCounters::default();
        for (index, slot) in self.queues.iter().enumerate() {
            let stats = slot.state.lock().queue.stats();
            total.completions += stats.completions;
            total.kicks += stats.kicks;
            total.full_barriers += stats.full_barriers;
            total.empty_polls += stats.empty_polls + slot.poll.empty_polls.load(Ordering::Relaxed);
            total.interrupts += (0..slot.interrupts.len())
                .map(|cpu| self.interrupts_taken(index, cpu))
                .sum::<u64>();
        }
        total
    }
}
