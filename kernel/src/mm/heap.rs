//! The kernel heap: `talc` over frames from the frame allocator.
//!
//! The heap starts with `INITIAL_HEAP_BYTES` and grows on demand: when talc
//! runs out it calls `GrowFromFrames`, which claims another contiguous run of
//! frames (at least `GROW_BYTES`) through the direct map. When no frames are
//! left, allocation fails normally: `try_reserve` and friends return errors.
//! The heap lock disables interrupts, so any context may allocate.

use super::{PAGE_SIZE, frame, phys_to_virt};
use crate::sync::spinlock::RawIrqSpin;
use core::alloc::Layout;
use talc::{OomHandler, Span, Talc, Talck};

const INITIAL_HEAP_BYTES: u64 = 4 << 20;
const GROW_BYTES: u64 = 2 << 20;

/// Grows the heap from the frame allocator when talc runs dry.
pub struct GrowFromFrames;

impl OomHandler for GrowFromFrames {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        // Room for the request at its alignment plus talc's own bookkeeping.
        let needed = (layout.size() + layout.align() + 4096) as u64;
        let bytes = needed.max(GROW_BYTES).next_multiple_of(PAGE_SIZE);
        claim_frames(talc, bytes)
    }
}

fn claim_frames(talc: &mut Talc<GrowFromFrames>, bytes: u64) -> Result<(), ()> {
    let phys = frame::alloc_contiguous(bytes / PAGE_SIZE, 1).map_err(drop)?;
    let base = phys_to_virt(phys).as_mut_ptr::<u8>();
    // SAFETY: the frames were just allocated for the heap alone and are
    // mapped read-write by the direct map; they are never freed.
    unsafe { talc.claim(Span::from_base_size(base, bytes as usize)) }.map(drop)
}

#[global_allocator]
static ALLOCATOR: Talck<RawIrqSpin, GrowFromFrames> = Talc::new(GrowFromFrames).lock();

/// Gives the heap its first memory. Must run after the frame allocator.
pub fn init() {
    claim_frames(&mut ALLOCATOR.lock(), INITIAL_HEAP_BYTES).expect("no frames for the heap");
}

/// Heap accounting, read on demand.
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    /// Bytes currently allocated.
    pub allocated_bytes: usize,
    /// Bytes the heap holds in all (allocated or free).
    pub claimed_bytes: usize,
    /// Live allocations.
    pub allocation_count: usize,
}

/// The current heap counters.
pub fn stats() -> HeapStats {
    let talc = ALLOCATOR.lock();
    let counters = talc.get_counters();
    HeapStats {
        allocated_bytes: counters.allocated_bytes,
        claimed_bytes: counters.claimed_bytes,
        allocation_count: counters.allocation_count,
    }
}

mod tests {
    use super::stats;
    use crate::{check, check_eq, ktest};
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use core::alloc::Layout;

    ktest!(
        fn many_sizes_roundtrip_with_contents() {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            for size in (0..200).map(|i| 1 + i * 37 % 5000) {
                blocks.push((0..size).map(|byte| (byte ^ size) as u8).collect());
            }
            for block in &blocks {
                let size = block.len();
                check!(block.iter().enumerate().all(|(i, &b)| b == (i ^ size) as u8));
            }
            Ok(())
        }
    );

    ktest!(
        fn alignment_is_honoured() {
            for shift in 0..=12 {
                let layout = Layout::from_size_align(24, 1 << shift).unwrap();
                // SAFETY: non-zero size; freed with the same layout.
                let pointer = unsafe { alloc::alloc::alloc(layout) };
                check!(!pointer.is_null());
                check_eq!(pointer as usize % (1 << shift), 0);
                // SAFETY: allocated above with this layout.
                unsafe { alloc::alloc::dealloc(pointer, layout) };
            }
            Ok(())
        }
    );

    ktest!(
        fn free_returns_memory() {
            let before = stats();
            let boxes: Vec<Box<[u8; 256]>> = (0..64).map(|_| Box::new([7; 256])).collect();
            check!(stats().allocated_bytes >= before.allocated_bytes + 64 * 256);
            drop(boxes);
            check_eq!(stats().allocated_bytes, before.allocated_bytes);
            check_eq!(stats().allocation_count, before.allocation_count);
            Ok(())
        }
    );

    ktest!(
        fn heap_grows_past_initial_size() {
            let big: Vec<u64> = alloc::vec![0xabcd; (8 << 20) / 8];
            check!(stats().claimed_bytes >= 8 << 20);
            check!(big.iter().all(|&x| x == 0xabcd));
            Ok(())
        }
    );

    ktest!(
        fn impossible_allocation_is_an_error() {
            let mut v: Vec<u8> = Vec::new();
            check!(v.try_reserve(1 << 40).is_err(), "1 TiB reservation succeeded");
            check!(v.try_reserve(4096).is_ok());
            Ok(())
        }
    );

    ktest!(
        fn btreemap_stress() {
            let mut map = BTreeMap::new();
            for i in 0u64..5000 {
                map.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
            }
            for i in (0u64..5000).step_by(2) {
                map.remove(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
            check_eq!(map.len(), 2500);
            check!(map.values().all(|v| v % 2 == 1));
            Ok(())
        }
    );
}
