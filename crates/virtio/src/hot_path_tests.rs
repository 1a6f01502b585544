//! Checks the two promises that are easy to break silently: the hot path
//! never allocates, and the counters count what they claim.

use alloc::boxed::Box;
use core::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::vec::Vec;

use crate::testing::{HeapHal, RecordingTransport};
use crate::{Dma, DmaChain, Features, QueueConfig, QueueStats, SplitQueue, UsedLenPolicy};

/// Counts allocations made by the current thread only, so tests running in
/// parallel do not disturb each other.
struct CountingAlloc;
std::thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}
// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// An honest device completing everything available, by raw pointer
/// (phys == virt with [`HeapHal`]).
fn complete_all(used: u64, avail: u64, size: u16, next_avail: &mut u16, used_idx: &mut u16) {
    // SAFETY: test-only device access to the live ring at its own address.
    unsafe {
        let avail_idx = core::ptr::read_volatile((avail + 2) as *const u16);
        while *next_avail != avail_idx {
            let slot = u64::from(*next_avail & (size - 1));
            let head = core::ptr::read_volatile((avail + 4 + slot * 2) as *const u16);
            let e = used + 4 + u64::from(*used_idx & (size - 1)) * 8;
            core::ptr::write_volatile(e as *mut u32, u32::from(head));
            core::ptr::write_volatile((e + 4) as *mut u32, 7);
            *used_idx = used_idx.wrapping_add(1);
            core::ptr::write_volatile((used + 2) as *mut u16, *used_idx);
            *next_avail = next_avail.wrapping_add(1);
        }
    }
}

#[test]
fn hot_path_never_allocates_and_counts() {
    for features in
        [Features::VERSION_1, Features::VERSION_1 | Features::EVENT_IDX | Features::INDIRECT_DESC]
    {
        let mut t = RecordingTransport::default();
        let size = 16;
        let used_len = UsedLenPolicy::Strict;
        let cfg = QueueConfig { index: 0, size, features, indirect_max: 4, used_len };
        let mut q: SplitQueue<HeapHal, Box<DmaChain<HeapHal, 4>>> =
            SplitQueue::new(&HeapHal, &mut t, cfg).unwrap();
        let (_, _, avail, used) = t.queue.unwrap();
        let mut pool: Vec<_> = (0..5)
            .map(|_| {
                let mut c = DmaChain::new(Dma::new(HeapHal, 1).unwrap());
                c.set_segments(&[(0, 16)], &[(64, 64), (1024, 1)]).unwrap();
                Box::new(c)
            })
            .collect();
        let (mut next_avail, mut used_idx) = (0u16, 0u16);
        let before = allocs();
        let rounds = 1000u64;
        for _ in 0..rounds {
            while let Some(c) = pool.pop() {
                q.add(c).map_err(|r| r.error).unwrap();
                if pool.len() == 2 {
                    q.kick(&mut t).unwrap();
                }
            }
            q.kick(&mut t).unwrap();
            complete_all(used, avail, size, &mut next_avail, &mut used_idx);
            while let Some(u) = q.pop_used().unwrap() {
                assert_eq!(u.written_len, 7);
                pool.push(u.buffers);
            }
            assert!(!q.enable_interrupts().unwrap());
            q.disable_interrupts().unwrap();
        }
        assert_eq!(allocs(), before, "hot path allocated ({features:?})");
        let s = q.stats();
        let n = rounds * 5;
        assert_eq!(s.added, n);
        assert_eq!(s.completions, n);
        assert_eq!(s.kicks + s.kicks_suppressed, rounds * 2);
        // One mb per notify decision with work, and one per re-enable after
        // a disable. The first round starts with interrupts on: its
        // `enable_interrupts` finds them published and needs none — but
        // with EVENT_IDX the `None` of `pop_used` paid it instead.
        let first = u64::from(features.contains(Features::EVENT_IDX));
        assert_eq!(s.full_barriers, rounds * 2 + (rounds - 1) + first);
        assert_eq!(s.empty_polls, rounds);
        assert_eq!(s.interrupts_enabled, rounds);
        assert_eq!(s.interrupts_suppressed, rounds);
        assert_eq!(t.notifies, s.kicks);
        q.reset_stats();
        assert_eq!(q.stats(), QueueStats::default());
    }
}

#[test]
fn invalid_requests_are_rejected_without_side_effects() {
    let mut t = RecordingTransport::default();
    let cfg = QueueConfig {
        index: 0,
        size: 2,
        features: Features::VERSION_1,
        indirect_max: 0,
        used_len: UsedLenPolicy::Strict,
    };
    let mut q: SplitQueue<HeapHal, DmaChain<HeapHal, 4>> =
        SplitQueue::new(&HeapHal, &mut t, cfg).unwrap();
    let mut c = DmaChain::new(Dma::new(HeapHal, 1).unwrap());
    // Empty request.
    let r = q.add(c).unwrap_err();
    assert_eq!(r.error, crate::Error::InvalidRequest);
    c = r.buffers;
    // Three segments can never fit a 2-entry queue without indirect.
    c.set_segments(&[(0, 1), (8, 1)], &[(16, 1)]).unwrap();
    let r = q.add(c).unwrap_err();
    assert_eq!(r.error, crate::Error::InvalidRequest);
    assert_eq!((q.num_free(), q.in_flight(), q.stats().added), (2, 0, 0));
    // A segment outside its region is refused when built.
    let mut c = r.buffers;
    assert_eq!(c.set_segments(&[(4090, 16)], &[]), Err(crate::Error::OutOfBounds));
    // Queue sizes must be powers of two.
    let bad = QueueConfig { size: 3, ..cfg };
    assert!(matches!(
        SplitQueue::<HeapHal, ()>::new(&HeapHal, &mut t, bad),
        Err(crate::Error::InvalidQueueSize)
    ));
}
