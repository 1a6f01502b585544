//! Canary frames: proof that nobody writes to memory the kernel gave back.
//!
//! With canaries on (`mm.canary` on the command line, or a test), every frame
//! returned to the allocator is filled with a pattern derived from its own
//! physical address and marked. The pattern is checked when the frame is
//! handed out again, and for every marked free frame on demand
//! ([`super::frame::verify_free`], run by the shell's `mem`). A device that
//! writes after the driver took its buffers back (a late DMA after a reset,
//! a completion into a ring the driver moved) changes a canary; the change is
//! counted and the first frame that changed is remembered, so a test can fail
//! with its address.
//!
//! The pattern holds the word's own address, so a copy of one canary frame
//! into another is caught too, and it is not zero, so a device zeroing memory
//! (a DISCARD landing in the wrong place, a stale read of zeroes) is caught.
//! What canaries cannot see: a write into a frame that was reallocated before
//! the write came (the frame then belongs to someone else, who sees it).

use super::{PAGE_SIZE, PhysAddr, phys_to_virt};
use core::sync::atomic::{AtomicU64, Ordering};

/// Mixed with each word's physical address to form the pattern.
const PATTERN: u64 = 0xca4a_57d1_e5ee_d000;
const WORDS_PER_FRAME: usize = (PAGE_SIZE / 8) as usize;

/// Frames whose canary was found changed, since boot.
static CHANGED_FRAMES: AtomicU64 = AtomicU64::new(0);
/// Frames whose canary was checked (on reuse or on demand), since boot.
static CHECKED_FRAMES: AtomicU64 = AtomicU64::new(0);
/// The first changed frame's physical address, plus one (0: none yet).
static FIRST_CHANGED: AtomicU64 = AtomicU64::new(0);

/// # Safety
/// `frame` is a free RAM frame and the caller holds the frame allocator's
/// lock, so no one else holds a reference into it while the slice lives.
unsafe fn words<'a>(frame: u64) -> &'a mut [u64] {
    let phys = PhysAddr::new(frame * PAGE_SIZE);
    // SAFETY: the frame is free RAM (the caller's contract), which the direct
    // map covers with write-back memory; nothing else references it.
    unsafe {
        core::slice::from_raw_parts_mut(phys_to_virt(phys).as_mut_ptr::<u64>(), WORDS_PER_FRAME)
    }
}

fn expected(frame: u64, index: usize) -> u64 {
    PATTERN ^ (frame * PAGE_SIZE + index as u64 * 8)
}

/// Fills a frame that was just freed with its canary.
///
/// # Safety
/// As [`words`]: a free RAM frame, the allocator's lock held.
pub(super) unsafe fn fill(frame: u64) {
    // SAFETY: passed on from this function's contract.
    for (index, word) in unsafe { words(frame) }.iter_mut().enumerate() {
        *word = expected(frame, index);
    }
}

/// Checks a marked free frame's canary; counts and remembers a change.
/// Returns whether it was intact.
///
/// # Safety
/// As [`words`]: a free RAM frame, the allocator's lock held.
pub(super) unsafe fn check(frame: u64) -> bool {
    CHECKED_FRAMES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: passed on from this function's contract.
    let changed = unsafe { words(frame) }
        .iter()
        .enumerate()
        .position(|(i, &word)| word != expected(frame, i));
    let Some(offset) = changed else { return true };
    CHANGED_FRAMES.fetch_add(1, Ordering::Relaxed);
    let phys = frame * PAGE_SIZE;
    if FIRST_CHANGED.compare_exchange(0, phys + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        log::error!(
            "mm: canary frame {phys:#x} changed at offset {:#x} while free: something wrote \
             to memory the kernel had given back",
            offset * 8
        );
    }
    false
}

/// Canary counters since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryStats {
    /// Whether frames freed now get a canary.
    pub enabled: bool,
    /// Free frames holding a canary now.
    pub marked: u64,
    /// Canaries checked (on reuse or on demand).
    pub checked: u64,
    /// Canaries found changed.
    pub changed: u64,
    /// The first frame found changed.
    pub first_changed: Option<PhysAddr>,
}

pub(super) fn stats(enabled: bool, marked: u64) -> CanaryStats {
    let first = FIRST_CHANGED.load(Ordering::Relaxed);
    CanaryStats {
        enabled,
        marked,
        checked: CHECKED_FRAMES.load(Ordering::Relaxed),
        changed: CHANGED_FRAMES.load(Ordering::Relaxed),
        first_changed: first.checked_sub(1).map(PhysAddr::new),
    }
}
