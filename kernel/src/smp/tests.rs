//! SMP tests: bring-up, per-CPU data, IPIs and TLB shootdown.

use super::{ipi, online_cpus, tlb};
use crate::arch::fixup;
use crate::arch::interrupts::{self, InterruptFrame};
use crate::arch::percpu;
use crate::ktest::{on_cpu, on_each_cpu};
use crate::mm::{frame, paging, vmap};
use crate::{check, check_eq, check_ok, ktest};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x86_64::structures::paging::PageTableFlags as Flags;

ktest!(
    fn every_acpi_cpu_is_online() {
        let listed = crate::platform::acpi::platform().usable_cpus().count();
        check_eq!(online_cpus(), listed);
        check_eq!(percpu::cpu_count(), listed);
        check!(online_cpus() >= 1);
        Ok(())
    }
);

ktest!(
    fn per_cpu_blocks_are_distinct_and_self_consistent() {
        let mut apic_ids: Vec<u32> = Vec::new();
        for (index, cpu) in percpu::all_cpus().enumerate() {
            check_eq!(cpu.cpu_id as usize, index);
            apic_ids.push(cpu.apic_id.load(Ordering::Relaxed));
        }
        let count = apic_ids.len();
        apic_ids.sort_unstable();
        apic_ids.dedup();
        check_eq!(apic_ids.len(), count);
        Ok(())
    }
);

ktest!(
    fn gs_finds_this_cpus_own_block() {
        let mismatches = Arc::new(AtomicU32::new(0));
        let seen = mismatches.clone();
        on_each_cpu(move |cpu| {
            let block = percpu::this_cpu();
            let expected = percpu::cpu(cpu as usize).unwrap();
            let apic_id = crate::platform::apic::lapic::id();
            if !core::ptr::eq(block, expected)
                || percpu::cpu_id() != cpu
                || block.apic_id.load(Ordering::Relaxed) != apic_id
            {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        check_eq!(mismatches.load(Ordering::Relaxed), 0);
        Ok(())
    }
);

ktest!(
    fn per_cpu_counters_are_isolated() {
        // Each CPU's thread bumps only its own counter through GS; the
        // increments must land on the CPU that made them and nowhere else.
        const BUMPS: u64 = 1_000;
        let before: Vec<u64> =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().tlb_shootdowns).collect();
        on_each_cpu(|cpu| {
            if cpu == 0 {
                return;
            }
            let _pinned = crate::sync::PreemptGuard::new();
            for _ in 0..BUMPS * u64::from(cpu) {
                crate::count_event!(tlb_shootdowns);
            }
        })?;
        for (cpu, old) in percpu::all_cpus().zip(before) {
            let delta = cpu.counters.snapshot().tlb_shootdowns - old;
            // Real shootdowns may add a few; bumps are exact multiples.
            check!(
                delta >= BUMPS * u64::from(cpu.cpu_id)
                    && delta < BUMPS * u64::from(cpu.cpu_id) + BUMPS,
                "CPU {} counted {}",
                cpu.cpu_id,
                delta
            );
        }
        Ok(())
    }
);

static DEPTH_SEEN: AtomicU32 = AtomicU32::new(u32::MAX);

fn record_depth(_: &mut InterruptFrame) {
    DEPTH_SEEN.store(percpu::irq_depth(), Ordering::Relaxed);
}

ktest!(
    fn irq_depth_counts_handler_nesting() {
        check_eq!(percpu::irq_depth(), 0);
        check_ok!(interrupts::register_irq(0x44, record_depth));
        // SAFETY: vector 0x44's handler only records the depth.
        unsafe { core::arch::asm!("int 0x44") };
        interrupts::unregister_irq(0x44);
        check_eq!(DEPTH_SEEN.load(Ordering::Relaxed), 1);
        check_eq!(percpu::irq_depth(), 0);
        Ok(())
    }
);

ktest!(
    fn echo_ipi_round_trips_to_every_cpu() {
        let me = {
            let guard = crate::sync::PreemptGuard::new();
            guard.cpu_id()
        };
        for cpu in (0..online_cpus() as u32).filter(|&cpu| cpu != me) {
            check!(ipi::echo_round_trip(cpu).is_some(), "no echo from CPU {}", cpu);
        }
        check!(ipi::echo_round_trip(99).is_none());
        Ok(())
    }
);

ktest!(
    fn tlb_shootdown_makes_unmapped_page_fault_everywhere() {
        let virt = vmap::reserve(1);
        let phys = check_ok!(frame::alloc());
        check_ok!(paging::map_page(virt, phys, Flags::WRITABLE | Flags::NO_EXECUTE));
        let address = virt.as_u64();
        // Every CPU reads the page, so each has it in its TLB.
        let readable = Arc::new(AtomicU32::new(0));
        let seen = readable.clone();
        on_each_cpu(move |_| {
            if fixup::probe_read_u64(address).is_ok() {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        check_eq!(readable.load(Ordering::Relaxed) as usize, online_cpus());
        let served: u64 =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().tlb_shootdowns).sum();
        check_eq!(check_ok!(tlb::unmap_kernel_page(virt)), phys);
        frame::free(phys, 1);
        let served_after: u64 =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().tlb_shootdowns).sum();
        check!(served_after - served >= online_cpus() as u64 - 1);
        let faults = Arc::new(AtomicU32::new(0));
        let seen = faults.clone();
        on_each_cpu(move |_| {
            if let Err(fault) = fixup::probe_read_u64(address)
                && fault.vector == 14
                && fault.address == address
            {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        check_eq!(faults.load(Ordering::Relaxed) as usize, online_cpus());
        Ok(())
    }
);

ktest!(
    fn counters_snapshot_reads_another_cpu() {
        let total: u64 = percpu::all_cpus().map(|cpu| cpu.counters.snapshot().timer_ticks).sum();
        check!(total > 0);
        // A job on CPU 0 switches threads there at least once, whatever ran
        // before (a boot running only a few suites may not have switched).
        on_cpu(0, |_| {})?;
        let stamp = Arc::new(AtomicU64::new(0));
        let out = stamp.clone();
        on_cpu((online_cpus() - 1) as u32, move |_| {
            out.store(
                percpu::cpu(0).unwrap().counters.snapshot().context_switches,
                Ordering::Relaxed,
            );
        })?;
        check!(stamp.load(Ordering::Relaxed) > 0);
        Ok(())
    }
);

ktest!(
    fn every_cpu_grew_its_own_software_tlb_under_tcg() {
        use crate::mm::soft_tlb;
        if !soft_tlb::is_tcg() {
            return crate::ktest::skip("not under QEMU's TCG: no software TLB to grow");
        }
        if !soft_tlb::has_range() {
            return crate::ktest::skip("no RAM range large enough to grow the TLB");
        }
        for cpu in 0..online_cpus() {
            check_eq!(soft_tlb::grown_rounds(cpu), soft_tlb::ROUNDS);
        }
        Ok(())
    }
);
