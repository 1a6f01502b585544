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

/// An AP's local APIC and timer (the boot CPU's APIC is set up by
/// `arch::apic::init_bsp`).
fn init_this_cpu() {
    if let Err(error) = crate::platform::apic::lapic::init_this_cpu() {
        log::error!("smp: CPU {}: local APIC unusable: {error:?}", percpu::cpu_id());
    }
    crate::sched::timer::start_this_cpu();
}

/// Brings up SMP: the boot CPU's APIC, scheduler and timer, then every AP
/// that ACPI lists. Returns the number of CPUs online.
pub fn init(ap_apic_ids: &[u32]) -> usize {
    KERNEL_CR3.store(
        x86_64::registers::control::Cr3::read().0.start_address().as_u64(),
        Ordering::Relaxed,
    );
    percpu::this_cpu().apic_id.store(crate::platform::apic::lapic::id(), Ordering::Relaxed);
    ipi::init();
    crate::sched::init_boot_cpu();
    crate::arch::interrupts::register_irq(
        crate::platform::apic::TIMER,
        crate::sched::timer::on_timer_interrupt,
    )
    .expect("timer vector taken");
    crate::sched::timer::start_this_cpu();
    ap::start_all(ap_apic_ids);
    online_cpus()
}
