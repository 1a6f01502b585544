//! TLB shootdown: after unmapping a kernel page, make every CPU forget it.
//!
//! The unmapping CPU flushes its own TLB, then publishes the range, sets a
//! pending flag per other online CPU and sends them `TLB_SHOOTDOWN_IPI`; each
//! flushes and clears its flag; the initiator waits for all flags to clear.
//! One shootdown runs at a time. A CPU waiting for that turn keeps serving
//! requests aimed at itself, so two CPUs shooting down at once (each
//! perhaps with interrupts off) cannot wait on each other forever.

use crate::arch::interrupts::InterruptFrame;
use crate::arch::percpu::{self, MAX_CPUS};
use crate::mm::{PAGE_SIZE, VirtAddr};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x86_64::instructions::tlb;

static IN_PROGRESS: AtomicBool = AtomicBool::new(false);
static RANGE_START: AtomicU64 = AtomicU64::new(0);
static RANGE_PAGES: AtomicU64 = AtomicU64::new(0);
static PENDING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Above this many pages a full flush is cheaper than page by page.
const FULL_FLUSH_PAGES: u64 = 32;

fn flush_local(start: u64, pages: u64) {
    if pages > FULL_FLUSH_PAGES {
        // Kernel mappings may be global: reloading CR3 would keep them.
        tlb::flush_all();
    } else {
        for page in 0..pages {
            tlb::flush(VirtAddr::new(start + page * PAGE_SIZE));
        }
    }
}

/// Serves a pending request for this CPU, if any.
fn serve_pending() {
    let cpu = percpu::cpu_id() as usize;
    if PENDING[cpu].load(Ordering::Acquire) {
        flush_local(RANGE_START.load(Ordering::Relaxed), RANGE_PAGES.load(Ordering::Relaxed));
        crate::count_event!(tlb_shootdowns);
        // Release: our flush happens before the initiator sees the ack.
        PENDING[cpu].store(false, Ordering::Release);
    }
}

pub(super) fn on_shootdown_ipi(_: &mut InterruptFrame) {
    crate::count_event!(ipis_received);
    serve_pending();
    crate::platform::apic::lapic::eoi();
}

/// Removes stale translations of `pages` pages from `start` on every CPU.
/// The caller has already changed the page tables.
pub fn shootdown(start: VirtAddr, pages: u64) {
    let guard = crate::sync::PreemptGuard::new();
    let me = guard.cpu_id() as usize;
    flush_local(start.as_u64(), pages);
    let online = super::online_cpus();
    if online < 2 {
        return;
    }
    while IN_PROGRESS.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        serve_pending();
        core::hint::spin_loop();
    }
    RANGE_START.store(start.as_u64(), Ordering::Relaxed);
    RANGE_PAGES.store(pages, Ordering::Relaxed);
    for cpu in (0..online).filter(|&cpu| cpu != me) {
        // Release: the range is visible before the flag.
        PENDING[cpu].store(true, Ordering::Release);
        super::ipi::send(cpu as u32, crate::platform::apic::TLB_SHOOTDOWN_IPI);
    }
    for cpu in (0..online).filter(|&cpu| cpu != me) {
        while PENDING[cpu].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    IN_PROGRESS.store(false, Ordering::Release);
}

/// Unmaps one kernel page on every CPU and returns its frame.
///
/// # Errors
/// As [`crate::mm::paging::unmap_page`].
pub fn unmap_kernel_page(
    virt: VirtAddr,
) -> Result<crate::mm::PhysAddr, crate::mm::paging::MapError> {
    let phys = crate::mm::paging::unmap_page(virt)?;
    shootdown(virt, 1);
    Ok(phys)
}
