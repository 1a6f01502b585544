//! Growing QEMU TCG's software TLB, once per CPU at boot.
//!
//! Under TCG every guest memory access is checked against a software TLB
//! that starts with 256 entries, direct mapped by virtual page number, and
//! is resized only when the whole TLB is flushed (a CR3 write): it doubles
//! if more than 70% of its entries were filled since the last flush. A
//! kernel that never switches address spaces never flushes, so it keeps 256
//! entries for good, and anything touching more pages than that — a frame
//! of pixels (1024 pages at 1280x800), a 64x64 rectangle (64 rows, 64
//! pages), the rings, stacks and buffers of a busy driver — takes a TLB
//! miss (a page-table walk in QEMU's C code) on nearly every page.
//!
//! So each CPU, under TCG only, reads one byte from as many consecutive
//! direct-map pages as the TLB has entries (filling every one) and reloads
//! CR3, `ROUNDS` times: 256 -> 16 384 entries. Unmapping uses `invlpg`,
//! which does not resize, so the size mostly stays. Not always:
//! QEMU also flushes whole on an `invlpg` inside the span it tracks for
//! 2 MiB pages (the direct map and the kernel image are mapped with them),
//! and smp::tlb flushes whole for long ranges; such a flush after a quiet
//! 100 ms shrinks the TLB to what that window used (a likely cause of the
//! spread between boots in the full-frame bench). Measured on the gpu
//! bench (one boot, before/after): full 1280x800 redraw 484 -> 434 us a
//! frame, the 64x64 catch-up copy 11.8 -> 7.0 us.

use super::{PAGE_SIZE, VirtAddr};
use crate::arch::percpu::MAX_CPUS;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x86_64::registers::control::Cr3;

/// Entries QEMU's software TLB starts with.
const FIRST_ENTRIES: u64 = 256;
/// Doublings: 256 << 6 = 16 384 entries (a 1920x1080 frame is ~2 000
/// pages, a framebuffer's five slots ~10 100).
pub const ROUNDS: u32 = 6;
/// Entries after growing.
pub const ENTRIES: u64 = FIRST_ENTRIES << ROUNDS;
/// Pages touched in the last round.
const PAGES_NEEDED: u64 = FIRST_ENTRIES << (ROUNDS - 1);

/// Doublings done on each CPU (by CPU id), for the test that every CPU
/// grew its own.
static GROWN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The direct-mapped RAM range read from (start, pages); set once by
/// paging's `init`.
static RANGE: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// Offers a direct-mapped RAM range; the largest one offered is kept.
pub(super) fn offer_range(start: VirtAddr, pages: u64) {
    if pages > RANGE.1.load(Ordering::Relaxed) {
        RANGE.0.store(start.as_u64(), Ordering::Relaxed);
        RANGE.1.store(pages, Ordering::Relaxed);
    }
}

/// Whether this CPU runs under QEMU's TCG (CPUID leaf 0x4000_0000 says
/// "TCGTCGTCGTCG").
pub fn is_tcg() -> bool {
    // CPUID is a VM exit under a hardware hypervisor: ask once.
    static IS_TCG: spin::Once<bool> = spin::Once::new();
    *IS_TCG.call_once(ask_cpuid_for_tcg)
}

fn ask_cpuid_for_tcg() -> bool {
    let hypervisor = core::arch::x86_64::__cpuid(1).ecx & (1 << 31) != 0;
    if !hypervisor {
        return false;
    }
    // Leaves 0x4000_0000.. belong to the hypervisor once the bit is set.
    let leaf = core::arch::x86_64::__cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    &signature == b"TCGTCGTCGTCG"
}

/// Doublings CPU `cpu` did at its start (0: none, or not yet).
pub fn grown_rounds(cpu: usize) -> u32 {
    GROWN.get(cpu).map_or(0, |rounds| rounds.load(Ordering::Acquire))
}

/// Whether a RAM range large enough to grow the TLB was offered.
pub fn has_range() -> bool {
    RANGE.1.load(Ordering::Relaxed) >= PAGES_NEEDED
}

/// Grows the software TLB of this CPU, `cpu` (TCG only); returns the
/// doublings asked for (0 when not under TCG or without a large enough
/// RAM range).
pub fn grow_on_this_cpu(cpu: usize) -> u32 {
    if !is_tcg() || !has_range() {
        return 0;
    }
    let start = RANGE.0.load(Ordering::Relaxed);
    for round in 0..ROUNDS {
        let touched = FIRST_ENTRIES << round;
        for page in 0..touched {
            let address = (start + page * PAGE_SIZE) as *const u8;
            // SAFETY: the page lies inside a direct-mapped RAM range that
            // paging's `init` offered; reading a byte of RAM changes nothing.
            unsafe { core::ptr::read_volatile(address) };
        }
        let (root, flags) = Cr3::read();
        // SAFETY: the same root and flags: only the TLB is flushed.
        unsafe { Cr3::write(root, flags) };
    }
    if let Some(grown) = GROWN.get(cpu) {
        grown.store(ROUNDS, Ordering::Release);
    }
    ROUNDS
}
