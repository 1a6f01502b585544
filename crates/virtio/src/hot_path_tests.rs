//! Checks the two promises that are easy to break silently: the hot path
//! never allocates, and the counters count what they claim.

use alloc::boxed::Box;
use core::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::vec::Vec;

use crate::fuzzing::{HeapHal, RecordingTransport};
use crate::{Dma, DmaChain, Features, QueueConfig, QueueStats, SplitQueue};

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
        let cfg = QueueConfig { index: 0, size, features, indirect_max: 4 };
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
        // One mb per notify decision with work, one per re-enable.
        assert_eq!(s.full_barriers, rounds * 2 + rounds);
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
    let cfg = QueueConfig { index: 0, size: 2, features: Features::VERSION_1, indirect_max: 0 };
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

std::thread_local! {
    static FREED_PAGES: Cell<usize> = const { Cell::new(0) };
}

/// [`HeapHal`] that counts the pages it frees on this thread.
#[derive(Clone, Copy)]
struct CountingHal;
// SAFETY: delegates to `HeapHal`, which upholds the contract.
unsafe impl crate::Hal for CountingHal {
    fn dma_alloc(&self, pages: usize) -> Option<(crate::PhysAddr, core::ptr::NonNull<u8>)> {
        HeapHal.dma_alloc(pages)
    }
    unsafe fn dma_dealloc(&self, p: crate::PhysAddr, v: core::ptr::NonNull<u8>, pages: usize) {
        FREED_PAGES.with(|c| c.set(c.get() + pages));
        // SAFETY: forwarded unchanged from our caller.
        unsafe { HeapHal.dma_dealloc(p, v, pages) }
    }
    fn phys_to_virt(&self, p: crate::PhysAddr) -> Option<core::ptr::NonNull<u8>> {
        HeapHal.phys_to_virt(p)
    }
    fn virt_to_phys(&self, v: core::ptr::NonNull<u8>) -> Option<crate::PhysAddr> {
        HeapHal.virt_to_phys(v)
    }
}

#[test]
fn failed_reset_leaks_ring_and_requests() {
    use crate::Error;
    use crate::transport::{DeviceStatus, Transport};
    let freed = || FREED_PAGES.with(Cell::get);
    let cfg = QueueConfig { index: 0, size: 4, features: Features::VERSION_1, indirect_max: 0 };
    let mut t = RecordingTransport::default();
    let mut q = SplitQueue::<CountingHal, DmaChain<CountingHal, 2>>::new(&CountingHal, &mut t, cfg)
        .unwrap();
    let mut c = DmaChain::<CountingHal, 2>::new(Dma::new(CountingHal, 1).unwrap());
    c.set_segments(&[(0, 8)], &[]).unwrap();
    q.add(c).map_err(|r| r.error).unwrap();
    t.set_status(DeviceStatus::DRIVER_OK);
    t.refuses_reset = true;
    let before = freed();
    let mut back = 0;
    assert_eq!(q.reset(&mut t, |_, _| back += 1), Err(Error::DeviceResetTimeout));
    assert_eq!(back, 0, "handed back buffers the device may still write");
    assert_eq!(freed(), before, "freed memory of a device that did not reset");
}

#[test]
fn drop_with_requests_in_flight_leaks_instead_of_freeing() {
    let freed = || FREED_PAGES.with(Cell::get);
    let cfg = QueueConfig { index: 0, size: 4, features: Features::VERSION_1, indirect_max: 0 };
    let chain = || {
        let mut c = DmaChain::<CountingHal, 2>::new(Dma::new(CountingHal, 1).unwrap());
        c.set_segments(&[(0, 8)], &[]).unwrap();
        c
    };
    // In flight at drop: neither the ring nor the request is freed.
    let mut t = RecordingTransport::default();
    let mut q = SplitQueue::new(&CountingHal, &mut t, cfg).unwrap();
    q.add(chain()).map_err(|r| r.error).unwrap();
    let before = freed();
    drop(q);
    assert_eq!(freed(), before, "freed memory the device may still write");
    // Reset hands the request back; then everything is freed.
    let mut q = SplitQueue::new(&CountingHal, &mut t, cfg).unwrap();
    let tok = q.add(chain()).map_err(|r| r.error).unwrap();
    let mut back = Vec::new();
    let before = freed();
    q.reset(&mut t, |t, b| back.push((t, b))).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, tok);
    assert!(freed() > before, "ring freed after reset");
    let before = freed();
    drop(back);
    assert_eq!(freed(), before + 1, "request memory freed by its owner");
}
