//! Symmetric multiprocessing: per-CPU data, AP bring-up, IPIs and TLB
//! shootdown.

pub mod ap;
pub mod ipi;
pub mod tlb;

mod tests;

use crate::arch::percpu;
use crate::mm::PhysAddr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use x86_64::structures::paging::PhysFrame;

static ONLINE_CPUS: AtomicUsize = AtomicUsize::new(1);
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

/// CPUs running the scheduler (ids `0..online_cpus()`).
pub fn online_cpus() -> usize {
    ONLINE_CPUS.load(Ordering::Acquire)
}

fn mark_online() {
    ONLINE_CPUS.fetch_add(1, Ordering::AcqRel);
}

fn kernel_page_table_root() -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new(KERNEL_CR3.load(Ordering::Relaxed)))
}

/// What an AP runs once its CPU is set up (GDT, IDT, local APIC). The
/// scheduler provides it (`sched::AP_ENTRY`): it sits above this layer, so
/// it is handed in, not imported.
#[derive(Clone, Copy)]
pub struct ApEntry {
    /// Runs before the CPU counts as online, interrupts off: the scheduler
    /// makes the running code this CPU's idle thread and starts its tick.
    pub prepare: fn(cpu_id: u32),
    /// Runs once the CPU is online, forever (the idle loop).
    pub run: fn() -> !,
}

/// Prepares SMP on the boot CPU: remembers the kernel's page-table root for
/// the APs, records the boot CPU's APIC id and installs the IPI handlers.
/// Needs the local APIC (`platform::apic::init_bsp`).
pub fn init() {
    KERNEL_CR3.store(
        x86_64::registers::control::Cr3::read().0.start_address().as_u64(),
        Ordering::Relaxed,
    );
    percpu::this_cpu().apic_id.store(crate::platform::apic::lapic::id(), Ordering::Relaxed);
    ipi::init();
}

/// Starts every AP that ACPI lists, each running `entry` once its CPU is
/// set up; the boot CPU's scheduler must be running. Returns the number of
/// CPUs online.
pub fn start_aps(ap_apic_ids: &[u32], entry: ApEntry) -> usize {
    ap::start_all(ap_apic_ids, entry);
    online_cpus()
}
