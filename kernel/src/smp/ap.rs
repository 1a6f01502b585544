//! Bringing up the application processors: INIT-SIPI-SIPI, one at a time.
//!
//! For each AP the boot CPU allocates its per-CPU block, descriptor tables
//! with IST stacks, and a boot stack that becomes its idle thread's stack,
//! writes them into the trampoline's parameter block, and sends INIT, then
//! STARTUP twice (Intel SDM Vol. 3A §8.4.4.1, "Typical BSP Initialization
//! Sequence"), waiting until the AP reports online before starting the next
//! one (they share the trampoline).

use super::ApEntry;
use crate::arch::gdt::{CpuTables, IstStacks};
use crate::arch::percpu;
use crate::arch::trampoline::{self, TRAMPOLINE_PHYS, TrampolineParams};
use crate::mm::{PAGE_SIZE, PhysAddr, frame, phys_to_virt};
use crate::platform::time;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::PageTable;
use x86_64::structures::paging::PageTableFlags as Flags;

/// Bytes of each AP's boot (later idle) stack.
const AP_STACK_BYTES: usize = 64 * 1024;
/// How long to wait for an AP to come online.
const ONLINE_TIMEOUT_US: u64 = 2_000_000;

/// Everything an AP needs, allocated by the boot CPU.
struct ApStart {
    cpu_id: u32,
    apic_id: u32,
    per_cpu: &'static percpu::PerCpu,
    tables: &'static CpuTables,
    entry: ApEntry,
    online: AtomicBool,
}

/// Why an AP did not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApError {
    /// No memory for its stacks or tables.
    OutOfMemory,
    /// It never reported online.
    Timeout {
        /// The AP's APIC id.
        apic_id: u32,
    },
}

/// Page tables for start-up: the kernel's upper half plus an identity map of
/// the first 2 MiB (where the trampoline runs). Returns the PML4's address.
fn startup_page_tables() -> Result<PhysAddr, ApError> {
    let alloc_table = || -> Result<(PhysAddr, &'static mut PageTable), ApError> {
        let phys = frame::alloc().map_err(|_| ApError::OutOfMemory)?;
        // The trampoline loads CR3 with a 32-bit move.
        assert!(phys.as_u64() < 1 << 32, "start-up page table above 4 GiB");
        // SAFETY: a fresh frame, reachable through the direct map.
        let table = unsafe { &mut *phys_to_virt(phys).as_mut_ptr::<PageTable>() };
        table.zero();
        Ok((phys, table))
    };
    let (pml4_phys, pml4) = alloc_table()?;
    let (pdpt_phys, pdpt) = alloc_table()?;
    let (pd_phys, pd) = alloc_table()?;
    // SAFETY: the active PML4 is reachable through the direct map; we only read it.
    let kernel_pml4 =
        unsafe { &*phys_to_virt(Cr3::read().0.start_address()).as_ptr::<PageTable>() };
    for slot in 256..512 {
        pml4[slot] = kernel_pml4[slot].clone();
    }
    let table_flags = Flags::PRESENT | Flags::WRITABLE;
    pml4[0].set_addr(pdpt_phys, table_flags);
    pdpt[0].set_addr(pd_phys, table_flags);
    pd[0].set_addr(PhysAddr::new(0), table_flags | Flags::HUGE_PAGE);
    Ok(pml4_phys)
}

/// Starts every AP in `apic_ids` (the boot CPU's own id excluded by the
/// caller), each running `entry`; returns how many came online.
pub fn start_all(apic_ids: &[u32], entry: ApEntry) -> usize {
    let Ok(cr3) = startup_page_tables() else {
        log::error!("smp: no memory for start-up page tables; running on one CPU");
        return 0;
    };
    let mut started = 0;
    for &apic_id in apic_ids {
        let cpu_id = percpu::cpu_count() as u32;
        if cpu_id as usize >= percpu::MAX_CPUS {
            log::warn!("smp: more than {} CPUs; ignoring the rest", percpu::MAX_CPUS);
            break;
        }
        match start_one(cpu_id, apic_id, cr3, entry) {
            Ok(()) => started += 1,
            Err(error) => log::error!("smp: CPU with APIC id {apic_id} not started: {error:?}"),
        }
    }
    // The start-up tables stay allocated: three frames, and a late AP
    // (after a timeout) may still be using them.
    started
}

fn start_one(cpu_id: u32, apic_id: u32, cr3: PhysAddr, entry: ApEntry) -> Result<(), ApError> {
    let stacks: &'static IstStacks = Box::leak(IstStacks::new_boxed());
    let tables: &'static CpuTables = Box::leak(Box::new(CpuTables::new(stacks)));
    let boot_stack = frame::alloc_contiguous((AP_STACK_BYTES as u64) / PAGE_SIZE, 1)
        .map_err(|_| ApError::OutOfMemory)?;
    let stack_top = phys_to_virt(boot_stack).as_u64() + AP_STACK_BYTES as u64;
    // Allocated here: the AP needs GS (its locks use it) before it may
    // touch the heap.
    let per_cpu = percpu::allocate_ap(cpu_id, apic_id);
    let start: &'static ApStart = Box::leak(Box::new(ApStart {
        cpu_id,
        apic_id,
        per_cpu,
        tables,
        entry,
        online: AtomicBool::new(false),
    }));
    let params = TrampolineParams {
        cr3: cr3.as_u64(),
        stack_top,
        entry: ap_entry as *const () as u64,
        argument: core::ptr::from_ref(start) as u64,
    };
    let target = phys_to_virt(PhysAddr::new(TRAMPOLINE_PHYS)).as_mut_ptr::<u8>();
    // SAFETY: the direct map covers the first MiB, page-aligned and
    // writable; APs start one at a time and the previous one has left the
    // trampoline (it reported online, past its last trampoline access);
    // page 8 lies below 1 MiB, which the frame allocator never hands out.
    unsafe { trampoline::install(target, &params) };

    let page = (TRAMPOLINE_PHYS / PAGE_SIZE) as u8;
    super::ipi::send_init(apic_id);
    time::busy_wait_us(init_delay_us());
    for _ in 0..2 {
        super::ipi::send_startup(apic_id, page);
        let deadline = time::uptime_us() + 200;
        while time::uptime_us() < deadline && !start.online.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        if start.online.load(Ordering::Acquire) {
            return Ok(());
        }
    }
    let deadline = time::uptime_us() + ONLINE_TIMEOUT_US;
    while time::uptime_us() < deadline {
        if start.online.load(Ordering::Acquire) {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(ApError::Timeout { apic_id })
}

/// The wait between INIT and the first STARTUP. The SDM's 10 ms is for
/// processors that need time to come out of reset; a hypervisor (CPUID leaf
/// 1 ECX bit 31) handles INIT at once, and Linux likewise skips the delay
/// on modern CPUs.
fn init_delay_us() -> u64 {
    let under_hypervisor = core::arch::x86_64::__cpuid(1).ecx & (1 << 31) != 0;
    if under_hypervisor { 500 } else { 10_000 }
}

/// First Rust code on an AP, on its boot stack, interrupts off.
extern "C" fn ap_entry(start: &'static ApStart) -> ! {
    // Leave the start-up page tables (with their identity map) for the
    // kernel's own: same upper half, so this code keeps running.
    let (_, flags) = Cr3::read();
    // SAFETY: the boot CPU's CR3 value is the kernel's page table root.
    unsafe { Cr3::write(super::kernel_page_table_root(), flags) };
    percpu::install(start.per_cpu);
    percpu::publish(start.per_cpu);
    start.tables.load();
    crate::arch::interrupts::load_idt();
    if let Err(error) = crate::platform::apic::lapic::init_this_cpu() {
        log::error!("smp: CPU {}: local APIC unusable: {error:?}", start.cpu_id);
    }
    // See mm::soft_tlb: each CPU has its own software TLB under TCG.
    crate::mm::soft_tlb::grow_on_this_cpu(start.cpu_id as usize);
    (start.entry.prepare)(start.cpu_id);
    super::mark_online();
    log::debug!("smp: CPU {} (APIC id {}) online", start.cpu_id, start.apic_id);
    start.online.store(true, Ordering::Release);
    (start.entry.run)()
}
