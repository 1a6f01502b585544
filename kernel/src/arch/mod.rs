//! x86_64-specific code: boot, CPU tables, interrupts, devices on I/O ports.

mod boot;
pub mod boot_info;
pub mod exceptions;
pub mod fixup;
pub mod fw_cfg;
pub mod gdt;
pub mod interrupts;
mod long_mode;
pub mod percpu;
pub mod qemu_exit;
mod rt;
pub mod serial;
pub mod stack_trace;
pub mod trampoline;
pub mod upcalls;

use gdt::{CpuTables, IstStacks};

static BSP_IST_STACKS: IstStacks = IstStacks::new();
static BSP_TABLES: spin::Once<CpuTables> = spin::Once::new();

/// Loads the boot CPU's GDT, TSS and the IDT. Needs no heap, so faults from
/// here on are reported instead of triple-faulting.
pub fn init_boot_cpu() {
    BSP_TABLES.call_once(|| CpuTables::new(&BSP_IST_STACKS)).load();
    interrupts::load_idt();
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

mod tests {
    use super::interrupts::{self, InterruptFrame, IrqError};
    use super::{exceptions, fixup};
    use crate::{check, check_eq, check_ok, ktest};
    use core::sync::atomic::{AtomicU64, Ordering};

    ktest!(
        fn int3_returns_and_is_counted() {
            let before = exceptions::breakpoint_count();
            x86_64::instructions::interrupts::int3();
            x86_64::instructions::interrupts::int3();
            check_eq!(exceptions::breakpoint_count(), before + 2);
            Ok(())
        }
    );

    static SOFT_IRQ_SEEN: AtomicU64 = AtomicU64::new(0);

    fn record_vector(frame: &mut InterruptFrame) {
        SOFT_IRQ_SEEN.store(frame.vector, Ordering::Relaxed);
    }

    ktest!(
        fn software_interrupt_reaches_its_handler() {
            check_ok!(interrupts::register_irq(0x40, record_vector));
            // SAFETY: vector 0x40 has a handler that only records the vector.
            unsafe { core::arch::asm!("int 0x40") };
            interrupts::unregister_irq(0x40);
            check_eq!(SOFT_IRQ_SEEN.load(Ordering::Relaxed), 0x40);
            Ok(())
        }
    );

    ktest!(
        fn irq_registration_rejects_bad_requests() {
            check_eq!(
                interrupts::register_irq(14, record_vector),
                Err(IrqError::ReservedVector(14))
            );
            check_ok!(interrupts::register_irq(0x41, record_vector));
            check_eq!(interrupts::register_irq(0x41, record_vector), Err(IrqError::InUse(0x41)));
            interrupts::unregister_irq(0x41);
            Ok(())
        }
    );

    ktest!(
        fn vector_allocation_finds_consecutive_free_vectors() {
            let first = check_ok!(interrupts::allocate_irq_vectors(3, record_vector));
            let second = check_ok!(interrupts::allocate_irq_vectors(2, record_vector));
            check!(first >= 0x60 && second >= 0x60 && second + 2 <= 0xe0);
            check!(second >= first + 3 || second + 2 <= first, "runs overlap");
            for vector in (first..first + 3).chain(second..second + 2) {
                interrupts::unregister_irq(vector);
            }
            check_eq!(
                interrupts::allocate_irq_vectors(200, record_vector),
                Err(IrqError::NoFreeVectors)
            );
            Ok(())
        }
    );

    ktest!(
        fn unhandled_interrupt_is_counted() {
            let before = interrupts::unhandled_irq_count();
            // SAFETY: vector 0x42 has no handler; the dispatcher only counts it.
            unsafe { core::arch::asm!("int 0x42") };
            check_eq!(interrupts::unhandled_irq_count(), before + 1);
            Ok(())
        }
    );

    fn clobber_sse(_: &mut InterruptFrame) {
        // SAFETY: scribbles on xmm0/xmm15, which the entry stub must restore.
        unsafe {
            core::arch::asm!("pcmpeqd xmm0, xmm0", "pcmpeqd xmm15, xmm15",
                             out("xmm0") _, out("xmm15") _);
        }
    }

    ktest!(
        fn interrupt_preserves_sse_state() {
            check_ok!(interrupts::register_irq(0x43, clobber_sse));
            let (low, high): (u64, u64);
            // SAFETY: loads known values into xmm0/xmm15, takes the interrupt,
            // and reads them back; all registers used are declared.
            unsafe {
                core::arch::asm!(
                    "mov {tmp}, 0x1122334455667788",
                    "movq xmm0, {tmp}",
                    "mov {tmp}, 0x0123456789abcdef",
                    "movq xmm15, {tmp}",
                    "int 0x43",
                    "movq {low}, xmm0",
                    "movq {high}, xmm15",
                    tmp = out(reg) _, low = out(reg) low, high = out(reg) high,
                    out("xmm0") _, out("xmm15") _,
                );
            }
            interrupts::unregister_irq(0x43);
            check_eq!(low, 0x1122_3344_5566_7788);
            check_eq!(high, 0x0123_4567_89ab_cdef);
            Ok(())
        }
    );

    ktest!(
        fn interrupt_preserves_the_red_zone() {
            let seen: u64;
            // SAFETY: writes 8 bytes inside the red zone below rsp (the ABI gives
            // leaf code those 128 bytes), takes an interrupt, reads them back.
            unsafe {
                core::arch::asm!(
                    "mov qword ptr [rsp - 64], {marker}",
                    "int3",
                    "mov {seen}, qword ptr [rsp - 64]",
                    marker = in(reg) 0x5eed_f00d_u64,
                    seen = lateout(reg) seen,
                );
            }
            check_eq!(seen, 0x5eed_f00d);
            Ok(())
        }
    );

    ktest!(
        fn probe_reads_mapped_memory() {
            let value = 0x1234_5678_u64;
            check_eq!(fixup::probe_read_u64(&raw const value as u64), Ok(0x1234_5678));
            Ok(())
        }
    );

    ktest!(
        fn probe_of_non_canonical_address_is_a_fault() {
            // A non-canonical address raises #GP (vector 13), not #PF.
            let fault = fixup::probe_read_u64(0x8000_0000_0000_0000);
            check_eq!(fault.map_err(|fault| fault.vector), Err(13));
            Ok(())
        }
    );

    ktest!(
        fn null_page_is_unmapped() {
            let fault = fixup::probe_read_u64(0);
            check!(matches!(fault, Err(fixup::Fault { vector: 14, address: 0 })), "{:?}", fault);
            Ok(())
        }
    );
}
