//! Local APIC timer and IPI delivery, I/O APIC routing, and an HPET
//! comparator interrupt travelling HPET → I/O APIC → local APIC.
//!
//! Each test installs its own handler on a private vector, enables
//! interrupts only while it waits (with a timeout, so a lost interrupt
//! fails the test instead of hanging it), and restores everything.

use super::{Polarity, TriggerMode, ioapic, lapic, timer};
use crate::arch::interrupts::{self, InterruptFrame};
use crate::platform::hpet;
use crate::platform::time;
use crate::{check, check_eq, check_ok, ktest};
use core::sync::atomic::{AtomicUsize, Ordering};

const TIMER_TEST_VECTOR: u8 = 0xe0;
const IPI_TEST_VECTOR: u8 = 0xe1;
const IOAPIC_TEST_VECTOR: u8 = 0xe2;
const ALL_BUT_SELF_TEST_VECTOR: u8 = 0xe3;
/// TCG can be slow; a lost interrupt is declared after this long.
const TIMEOUT_US: u64 = 500_000;

static HITS: AtomicUsize = AtomicUsize::new(0);

fn count_and_eoi(_: &mut InterruptFrame) {
    HITS.fetch_add(1, Ordering::SeqCst);
    lapic::eoi();
}

/// Runs `arm` with `vector` handled by `count_and_eoi`, then waits with
/// interrupts enabled until the handler ran; returns how many times it did.
fn interrupts_after(vector: u8, arm: impl FnOnce()) -> Result<usize, interrupts::IrqError> {
    interrupts_after_n(vector, 1, TIMEOUT_US, arm)
}

/// As [`interrupts_after`], waiting for `expected` interrupts.
fn interrupts_after_n(
    vector: u8,
    expected: usize,
    timeout_us: u64,
    arm: impl FnOnce(),
) -> Result<usize, interrupts::IrqError> {
    use x86_64::instructions::interrupts::{are_enabled, disable, enable};
    let were_enabled = are_enabled();
    disable();
    interrupts::register_irq(vector, count_and_eoi)?;
    HITS.store(0, Ordering::SeqCst);
    let start = time::rdtsc();
    arm();
    enable();
    while HITS.load(Ordering::SeqCst) < expected
        && time::ticks_to_us(time::rdtsc() - start) < timeout_us
    {
        core::hint::spin_loop();
    }
    // A little longer, to catch a duplicate delivery.
    time::busy_wait_us(2000);
    disable();
    interrupts::unregister_irq(vector);
    let hits = HITS.load(Ordering::SeqCst);
    if were_enabled {
        enable();
    }
    Ok(hits)
}

/// Runs a test that programs the local APIC timer, which the scheduler
/// otherwise owns (its tick would re-arm the timer in the middle).
fn with_timer<R>(f: impl FnOnce() -> R) -> R {
    timer::with_timer_lent(|| {
        let result = f();
        lapic::stop_timer();
        result
    })
}

ktest!(
    fn lapic_is_enabled_with_sane_id_and_version() {
        check_eq!(lapic::id(), lapic::cpuid_apic_id());
        let version = lapic::version();
        check!((0x10..=0x15).contains(&version), "version {:#x}", version);
        check_eq!(lapic::is_x2apic(), lapic::cpu_has_x2apic());
        Ok(())
    }
);

ktest!(
    fn lapic_timer_is_calibrated() {
        // QEMU's APIC clock is 1 GHz before the divide-by-16.
        let hz = lapic::timer_hz();
        check!((1_000_000..=1_000_000_000).contains(&hz), "timer at {} Hz", hz);
        Ok(())
    }
);

ktest!(
    fn lapic_oneshot_timer_fires_once() {
        let start = time::rdtsc();
        let hits = check_ok!(with_timer(|| interrupts_after(TIMER_TEST_VECTOR, || {
            timer::program_oneshot(TIMER_TEST_VECTOR, 1_000_000)
        })));
        let waited_us = time::ticks_to_us(time::rdtsc() - start);
        check_eq!(hits, 1);
        check!(waited_us >= 900, "fired after only {} us", waited_us);
        Ok(())
    }
);

ktest!(
    fn lapic_deadline_timer_fires_once() {
        // TSC-deadline mode where the CPU has it, else the one-shot fallback.
        let hits = check_ok!(with_timer(|| interrupts_after(TIMER_TEST_VECTOR, || {
            let deadline = time::rdtsc() + time::tsc_hz() / 1000;
            timer::program_deadline(TIMER_TEST_VECTOR, deadline)
        })));
        check_eq!(hits, 1);
        Ok(())
    }
);

ktest!(
    fn stopped_timer_stays_quiet() {
        // Twice the armed time is long enough to be sure.
        let hits =
            check_ok!(with_timer(|| interrupts_after_n(TIMER_TEST_VECTOR, 1, 20_000, || {
                timer::program_oneshot(TIMER_TEST_VECTOR, 1_000_000);
                lapic::stop_timer();
                lapic::set_oneshot_ns(1_000_000);
                lapic::stop_timer();
            })));
        check_eq!(hits, 0);
        Ok(())
    }
);

ktest!(
    fn self_ipi_is_delivered() {
        let mut sent = Ok(());
        let hits = check_ok!(interrupts_after(IPI_TEST_VECTOR, || {
            sent = lapic::send_ipi(lapic::id(), IPI_TEST_VECTOR)
        }));
        check_ok!(sent);
        check_eq!(hits, 1);
        Ok(())
    }
);

ktest!(
    fn ipi_to_all_but_self_reaches_every_other_cpu() {
        let others = crate::platform::acpi::platform().usable_cpus().count() - 1;
        let mut sent = Ok(());
        let hits =
            check_ok!(interrupts_after_n(ALL_BUT_SELF_TEST_VECTOR, others, TIMEOUT_US, || {
                sent = lapic::send_ipi_all_but_self(ALL_BUT_SELF_TEST_VECTOR)
            }));
        check_ok!(sent);
        check_eq!(hits, others);
        Ok(())
    }
);

ktest!(
    fn no_apic_errors_were_reported() {
        check!(
            lapic::error_count() == 0,
            "{} errors, last ESR {:#x}, {} spurious",
            lapic::error_count(),
            lapic::last_error_status(),
            lapic::spurious_count()
        );
        Ok(())
    }
);

ktest!(
    fn ioapic_has_24_inputs_from_gsi_0_masked_but_device_lines() {
        let controllers = ioapic::controllers();
        check!(!controllers.is_empty());
        check_eq!(controllers[0].gsi_base(), 0);
        check!(controllers[0].entry_count() >= 24, "{} entries", controllers[0].entry_count());
        check_eq!(controllers[0].hardware_id(), controllers[0].id());
        check!(matches!(controllers[0].version(), 0x11 | 0x20), "{:#x}", controllers[0].version());
        // Every input is masked but the lines of virtio-mmio devices, which
        // their drivers unmask (on microvm without ACPI, GSIs 5..12).
        let device_line = |gsi: u32| {
            crate::platform::virtio_mmio::slots()
                .iter()
                .any(|slot| slot.interrupt.is_some_and(|irq| irq.gsi == gsi))
        };
        for gsi in (0..controllers[0].entry_count()).filter(|&gsi| !device_line(gsi)) {
            let entry = check_ok!(ioapic::entry(gsi).ok_or("no entry"));
            check!(entry & (1 << 16) != 0, "GSI {} unmasked: {:#x}", gsi, entry);
        }
        Ok(())
    }
);

ktest!(
    fn ioapic_route_mask_unmask_roundtrip() {
        let gsi = check_ok!(ioapic::route_isa_irq(0, IOAPIC_TEST_VECTOR, lapic::id()));
        // GSI 2 on q35 and pc (the MADT's override), 0 on microvm.
        check_eq!(gsi, crate::platform::acpi::platform().isa_route(0).gsi);
        let entry = check_ok!(ioapic::entry(gsi).ok_or("no entry"));
        check_eq!(entry & 0xff, u64::from(IOAPIC_TEST_VECTOR));
        check_eq!(entry >> 56, u64::from(lapic::id()));
        check!(entry & (1 << 16) != 0, "route must leave the input masked");
        // Unmask/mask only flip bit 16; PIT IRQ 0 cannot fire with
        // interrupts disabled.
        check_ok!(ioapic::unmask(gsi));
        check_eq!(ioapic::entry(gsi), Some(entry & !(1 << 16)));
        check_ok!(ioapic::mask(gsi));
        check_eq!(ioapic::entry(gsi), Some(entry));
        check_eq!(ioapic::mask(9999), Err(ioapic::IoApicError::NoSuchGsi(9999)));
        check_eq!(
            ioapic::route(3, 0x10, 0, TriggerMode::Edge, Polarity::ActiveHigh),
            Err(ioapic::IoApicError::BadVector(0x10))
        );
        Ok(())
    }
);

ktest!(
    fn hpet_comparator_interrupt_arrives_through_the_ioapic() {
        let Some(hpet) = hpet::get() else { return ktest::skip("no HPET") };
        // The highest I/O APIC input timer 0 may drive (QEMU q35: 23).
        let capabilities = hpet.route_capabilities(0);
        check!(capabilities != 0);
        let gsi = 31 - capabilities.leading_zeros();
        check_ok!(ioapic::route(
            gsi,
            IOAPIC_TEST_VECTOR,
            lapic::id(),
            TriggerMode::Edge,
            Polarity::ActiveHigh
        ));
        check_ok!(ioapic::unmask(gsi));
        let ticks = hpet.frequency_hz() / 1000;
        let hits = check_ok!(interrupts_after(IOAPIC_TEST_VECTOR, || {
            hpet.arm_timer(0, gsi, hpet.counter() + ticks, TriggerMode::Edge)
        }));
        hpet.disarm_timer(0);
        check_ok!(ioapic::mask(gsi));
        check_eq!(hits, 1);
        Ok(())
    }
);

ktest!(
    fn system_vectors_are_distinct_and_in_the_top_priority_classes() {
        let vectors = [
            super::TIMER,
            super::RESCHEDULE_IPI,
            super::TLB_SHOOTDOWN_IPI,
            super::HALT_IPI,
            super::CALL_FUNCTION_IPI,
            super::ERROR,
            super::SPURIOUS,
        ];
        for (index, vector) in vectors.iter().enumerate() {
            check!(*vector >= 0xe0, "vector {:#x}", vector);
            check!(!vectors[index + 1..].contains(vector), "{:#x} used twice", vector);
        }
        Ok(())
    }
);
