//! Scheduler tests: threads, preemption, guards, wait queues, sleeping and
//! the multi-CPU stress test.

use super::thread::ThreadState;
use super::timer::{self, TICK_US};
use super::{JoinHandle, Placement, SpawnError, WaitQueue, current, spawn, yield_now};
use crate::arch::percpu;
use crate::platform::time;
use crate::smp::online_cpus;
use crate::sync::{IrqSpinLock, PreemptGuard, SpinLock, can_sleep};
use crate::{check, check_eq, ktest};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

fn spawn_ok(placement: Placement, f: impl FnOnce() + Send + 'static) -> JoinHandle {
    spawn("ktest", placement, f).expect("spawn failed")
}

fn this_cpu_counters() -> percpu::CounterSnapshot {
    percpu::this_cpu().counters.snapshot()
}

ktest!(
    fn spawn_and_join_runs_the_closure() {
        let value = Arc::new(AtomicU64::new(0));
        let seen = value.clone();
        spawn_ok(Placement::AnyCpu, move || seen.store(42, Ordering::Release)).join();
        check_eq!(value.load(Ordering::Acquire), 42);
        Ok(())
    }
);

ktest!(
    fn hundred_threads_all_run_once() {
        let runs = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let runs = runs.clone();
                spawn_ok(Placement::AnyCpu, move || {
                    runs.fetch_add(1, Ordering::AcqRel);
                })
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        check_eq!(runs.load(Ordering::Acquire), 100);
        Ok(())
    }
);

ktest!(
    fn joined_thread_is_dead_and_ids_unique() {
        let a = spawn_ok(Placement::AnyCpu, || {});
        let b = spawn_ok(Placement::AnyCpu, || {});
        check!(a.thread().id() != b.thread().id());
        check_eq!(a.thread().name(), "ktest");
        let (ta, tb) = (a.thread().clone(), b.thread().clone());
        a.join();
        b.join();
        check!(ta.has_exited() && tb.has_exited());
        // Dead is set just after the exit flag; give the CPU a moment.
        let deadline = time::uptime_us() + 100_000;
        while ta.state() != ThreadState::Dead && time::uptime_us() < deadline {
            yield_now();
        }
        check_eq!(ta.state(), ThreadState::Dead);
        Ok(())
    }
);

ktest!(
    fn spawn_on_missing_cpu_is_an_error() {
        let result = spawn("nowhere", Placement::Pinned(63), || {});
        check!(matches!(result, Err(SpawnError::NoSuchCpu(63))));
        Ok(())
    }
);

ktest!(
    fn pinned_thread_stays_on_its_cpu() {
        for cpu in 0..online_cpus() as u32 {
            let wrong = Arc::new(AtomicU32::new(0));
            let seen = wrong.clone();
            spawn_ok(Placement::Pinned(cpu), move || {
                for _ in 0..20 {
                    if percpu::cpu_id() != cpu {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    yield_now();
                }
            })
            .join();
            check_eq!(wrong.load(Ordering::Relaxed), 0);
        }
        Ok(())
    }
);

ktest!(
    fn yield_lets_a_thread_on_the_same_cpu_run() {
        let cpu = percpu::cpu_id();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let switches = this_cpu_counters().context_switches;
        let handle = spawn_ok(Placement::Pinned(cpu), move || flag.store(true, Ordering::Release));
        let deadline = time::uptime_us() + 1_000_000;
        while !ran.load(Ordering::Acquire) && time::uptime_us() < deadline {
            yield_now();
        }
        handle.join();
        check!(ran.load(Ordering::Acquire));
        check!(percpu::cpu(cpu as usize).unwrap().counters.snapshot().context_switches > switches);
        Ok(())
    }
);

ktest!(
    fn time_slices_preempt_busy_threads() {
        // Two threads that never yield, pinned to one CPU: both progress only
        // if the timer preempts.
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let handles: Vec<_> = (0..2)
            .map(|index| {
                let (stop, progress) = (stop.clone(), progress.clone());
                spawn_ok(Placement::Pinned(0), move || {
                    while !stop.load(Ordering::Relaxed) {
                        progress[index].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        timer::sleep_us(20 * TICK_US);
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.join();
        }
        check!(progress[0].load(Ordering::Relaxed) > 0 && progress[1].load(Ordering::Relaxed) > 0);
        Ok(())
    }
);

fn read_mxcsr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: stores MXCSR into a local.
    unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &raw mut value, options(nostack)) };
    value
}

fn write_mxcsr(value: u32) {
    // SAFETY: loads MXCSR from a local; callers pass valid values (default
    // with other rounding-control bits).
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &raw const value, options(nostack)) };
}

ktest!(
    fn sse_control_state_is_per_thread() {
        // Three threads on one CPU, each with its own SSE rounding mode
        // (MXCSR bits 13-14): a switch that failed to save and restore the
        // FPU/SSE state would leak one thread's mode into another.
        let failures = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..3u32)
            .map(|mode| {
                let failures = failures.clone();
                spawn_ok(Placement::Pinned(0), move || {
                    let mine = (read_mxcsr() & !(3 << 13)) | (mode << 13);
                    write_mxcsr(mine);
                    for _ in 0..50 {
                        yield_now();
                        if read_mxcsr() != mine {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        check_eq!(failures.load(Ordering::Relaxed), 0);
        Ok(())
    }
);

ktest!(
    fn guard_prevents_preemption_and_defers_reschedule() {
        let cpu = percpu::cpu_id();
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        let before = percpu::cpu(cpu as usize).unwrap().counters.snapshot();
        let guard = PreemptGuard::new();
        check_eq!(guard.cpu_id(), cpu);
        let handle = spawn_ok(Placement::Pinned(cpu), move || flag.store(true, Ordering::Release));
        // Three slices with a runnable thread waiting: no switch may happen.
        time::busy_wait_us(3 * super::timer::SLICE_TICKS as u64 * TICK_US);
        let during = this_cpu_counters();
        let still_here = percpu::cpu_id() == cpu;
        let pending = percpu::need_resched();
        let ran_early = other_ran.load(Ordering::Acquire);
        drop(guard);
        let after = percpu::cpu(cpu as usize).unwrap().counters.snapshot();
        handle.join();
        check!(still_here, "migrated while holding a guard");
        check!(!ran_early, "another thread ran on this CPU under a guard");
        check_eq!(during.context_switches, before.context_switches);
        check!(pending, "no reschedule was requested while the guard was held");
        check!(during.preemptions_deferred > before.preemptions_deferred);
        check!(after.deferred_reschedules_run > before.deferred_reschedules_run);
        check!(other_ran.load(Ordering::Acquire));
        Ok(())
    }
);

ktest!(
    fn nested_guards_reschedule_only_at_the_outermost_drop() {
        let outer = PreemptGuard::new();
        let count = percpu::preempt_count();
        let inner = PreemptGuard::new();
        check_eq!(percpu::preempt_count(), count + 1);
        percpu::set_need_resched();
        let runs = this_cpu_counters().deferred_reschedules_run;
        drop(inner);
        check_eq!(this_cpu_counters().deferred_reschedules_run, runs);
        drop(outer);
        check_eq!(this_cpu_counters().deferred_reschedules_run, runs + 1);
        check!(!percpu::need_resched());
        Ok(())
    }
);

ktest!(
    fn can_sleep_reflects_context() {
        check!(can_sleep());
        let guard = PreemptGuard::new();
        check!(!can_sleep());
        drop(guard);
        let off = x86_64::instructions::interrupts::without_interrupts(can_sleep);
        check!(!off);
        Ok(())
    }
);

ktest!(
    fn spinlocks_raise_preempt_count_and_irq_lock_masks_interrupts() {
        let lock = SpinLock::new(5);
        let base = percpu::preempt_count();
        {
            let value = lock.lock();
            check_eq!(*value, 5);
            check_eq!(percpu::preempt_count(), base + 1);
            check!(x86_64::instructions::interrupts::are_enabled());
        }
        let irq_lock = IrqSpinLock::new(());
        {
            let _held = irq_lock.lock();
            check!(!x86_64::instructions::interrupts::are_enabled());
            check_eq!(percpu::preempt_count(), base + 1);
        }
        check!(x86_64::instructions::interrupts::are_enabled());
        check_eq!(percpu::preempt_count(), base);
        // Taken with interrupts off, it must leave them off.
        let still_off = x86_64::instructions::interrupts::without_interrupts(|| {
            drop(irq_lock.lock());
            !x86_64::instructions::interrupts::are_enabled()
        });
        check!(still_off);
        Ok(())
    }
);

ktest!(
    fn cross_cpu_wakeup_uses_an_ipi() {
        if online_cpus() < 2 {
            return Ok(());
        }
        let target = 1u32;
        let queue = Arc::new(WaitQueue::new());
        let go = Arc::new(AtomicU32::new(0));
        let (waiter_queue, waiter_go) = (queue.clone(), go.clone());
        let handle = spawn("waiter", Placement::Pinned(target), move || {
            waiter_queue.wait_until(|| waiter_go.load(Ordering::Acquire) == 1);
        })
        .expect("spawn failed");
        let deadline = time::uptime_us() + 2_000_000;
        while queue.is_empty() && time::uptime_us() < deadline {
            timer::sleep_us(1_000);
        }
        let received = percpu::cpu(target as usize).unwrap().counters.snapshot().ipis_received;
        go.store(1, Ordering::Release);
        let sent_before = percpu::this_cpu().counters.snapshot().ipis_sent;
        let woke = {
            let _pinned = crate::sync::PreemptGuard::new();
            let sent_before = percpu::this_cpu().counters.snapshot().ipis_sent;
            let woke = queue.wake_one();
            (woke, percpu::this_cpu().counters.snapshot().ipis_sent > sent_before)
        };
        let _ = sent_before;
        handle.join();
        check!(woke.0, "the waiter was not blocked");
        check!(woke.1, "waking a thread on another CPU sent no IPI");
        check!(percpu::cpu(target as usize).unwrap().counters.snapshot().ipis_received > received);
        Ok(())
    }
);

ktest!(
    fn join_after_exit_returns_at_once() {
        let handle = spawn_ok(Placement::AnyCpu, || {});
        let thread = handle.thread().clone();
        let deadline = time::uptime_us() + 1_000_000;
        while !thread.has_exited() && time::uptime_us() < deadline {
            timer::sleep_us(500);
        }
        check!(thread.has_exited());
        handle.join();
        Ok(())
    }
);

ktest!(
    fn sleep_honours_deadline_within_one_tick() {
        // Never early, ever; late by at most one tick. The host may stall a
        // virtual CPU at any moment (TCG threads share two cores), so each
        // duration gets three tries and its best one is judged.
        for requested_us in [1_000, 5_000, 12_000] {
            let mut best_late_us = u64::MAX;
            for _ in 0..3 {
                let start = time::rdtsc();
                timer::sleep_us(requested_us);
                let slept_us = time::ticks_to_us(time::rdtsc() - start);
                check!(slept_us >= requested_us, "woke early: {} < {}", slept_us, requested_us);
                best_late_us = best_late_us.min(slept_us - requested_us);
            }
            check!(
                best_late_us <= TICK_US,
                "{} us sleep woke {} us late (tick {} us)",
                requested_us,
                best_late_us,
                TICK_US
            );
        }
        Ok(())
    }
);

ktest!(
    fn sleepers_wake_in_deadline_order() {
        let order = Arc::new(SpinLock::new(Vec::new()));
        let handles: Vec<_> = [30_000u64, 10_000, 20_000]
            .into_iter()
            .map(|us| {
                let order = order.clone();
                spawn_ok(Placement::Pinned(0), move || {
                    timer::sleep_us(us);
                    order.lock().push(us);
                })
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        check_eq!(*order.lock(), alloc::vec![10_000, 20_000, 30_000]);
        Ok(())
    }
);

ktest!(
    fn current_thread_is_running() {
        let me = current();
        check_eq!(me.state(), ThreadState::Running);
        check!(!me.has_exited());
        Ok(())
    }
);

ktest!(
    fn work_spreads_across_cpus() {
        if online_cpus() < 2 {
            return Ok(());
        }
        let seen = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..2 * online_cpus())
            .map(|_| {
                let seen = seen.clone();
                spawn_ok(Placement::AnyCpu, move || {
                    let end = time::uptime_us() + 20_000;
                    while time::uptime_us() < end {
                        seen.fetch_or(1 << percpu::cpu_id(), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        let cpus_used = seen.load(Ordering::Relaxed).count_ones() as usize;
        check!(cpus_used >= 2, "all threads ran on one CPU ({:#b})", seen.load(Ordering::Relaxed));
        Ok(())
    }
);

ktest!(
    fn idle_cpu_steals_queued_work() {
        if online_cpus() < 2 {
            return Ok(());
        }
        let stolen_before: u64 =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().threads_stolen).sum();
        // Queue several threads on this CPU while it is kept busy: under a
        // guard nothing here can run them, so only stealing can.
        let ran_elsewhere = Arc::new(AtomicUsize::new(0));
        let me = percpu::cpu_id();
        let guard = PreemptGuard::new();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ran = ran_elsewhere.clone();
                spawn_ok(Placement::AnyCpu, move || {
                    if percpu::cpu_id() != me {
                        ran.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        time::busy_wait_us(50_000);
        drop(guard);
        for handle in handles {
            handle.join();
        }
        let stolen_after: u64 =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().threads_stolen).sum();
        check!(ran_elsewhere.load(Ordering::Relaxed) > 0, "no thread ran on another CPU");
        check!(stolen_after >= stolen_before, "steal counter went backwards");
        Ok(())
    }
);

ktest!(
    fn smp_stress_exact_totals_and_no_lost_wakeups() {
        // Threads on every CPU increment shared counters under both lock
        // kinds and pass a token around a ring with wait queues: totals
        // must be exact and the ring must finish (no lost wake-up).
        const THREADS_PER_CPU: usize = 2;
        const INCREMENTS: u64 = 2_000;
        const PASSES: usize = 200;
        let threads = online_cpus() * THREADS_PER_CPU;
        let plain = Arc::new(SpinLock::new(0u64));
        let irq = Arc::new(IrqSpinLock::new(0u64));
        let counters: Vec<_> = (0..threads)
            .map(|index| {
                let (plain, irq) = (plain.clone(), irq.clone());
                let cpu = (index % online_cpus()) as u32;
                spawn_ok(Placement::Pinned(cpu), move || {
                    for _ in 0..INCREMENTS {
                        *plain.lock() += 1;
                        *irq.lock() += 1;
                    }
                })
            })
            .collect();
        // Ring ping-pong: thread i waits for the token to be i, passes it on.
        let token = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(WaitQueue::new());
        let passes = Arc::new(AtomicUsize::new(0));
        let ring: Vec<_> = (0..threads)
            .map(|index| {
                let (token, queue, passes) = (token.clone(), queue.clone(), passes.clone());
                let cpu = (index % online_cpus()) as u32;
                spawn_ok(Placement::Pinned(cpu), move || {
                    for round in 0..PASSES {
                        let mine = round * threads + index;
                        queue.wait_until(|| token.load(Ordering::Acquire) == mine);
                        passes.fetch_add(1, Ordering::Relaxed);
                        token.store(mine + 1, Ordering::Release);
                        queue.wake_all();
                    }
                })
            })
            .collect();
        for handle in counters.into_iter().chain(ring) {
            handle.join();
        }
        check_eq!(*plain.lock(), threads as u64 * INCREMENTS);
        check_eq!(*irq.lock(), threads as u64 * INCREMENTS);
        check_eq!(passes.load(Ordering::Relaxed), threads * PASSES);
        check_eq!(token.load(Ordering::Relaxed), threads * PASSES);
        Ok(())
    }
);

ktest!(
    fn thread_stack_has_a_guard_page() {
        let result = Arc::new(AtomicU64::new(0));
        let out = result.clone();
        spawn_ok(Placement::AnyCpu, move || {
            let here = 0u64;
            let address = &raw const here as u64;
            // Somewhere below our frame lies the guard page: find the first
            // unmapped page below the stack pointer.
            let mut probe = address & !0xfff;
            let mut faulted_at = 0;
            for _ in 0..=super::STACK_PAGES {
                probe -= 4096;
                if crate::arch::fixup::probe_read_u64(probe).is_err() {
                    faulted_at = probe;
                    break;
                }
            }
            out.store(faulted_at, Ordering::Release);
        })
        .join();
        check!(result.load(Ordering::Acquire) != 0, "no unmapped page below the stack");
        Ok(())
    }
);

ktest!(
    fn idle_cpus_halt() {
        // While this thread sleeps nothing runs anywhere: every CPU's idle
        // loop must halt (not spin) until the next interrupt.
        let before: Vec<u64> =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().idle_halts).collect();
        timer::sleep_us(5 * TICK_US);
        for (cpu, halts) in percpu::all_cpus().zip(before) {
            let now = cpu.counters.snapshot().idle_halts;
            check!(now > halts, "CPU {} never halted ({} -> {})", cpu.cpu_id, halts, now);
        }
        Ok(())
    }
);

ktest!(
    fn timer_ticks_on_every_cpu() {
        let before: Vec<u64> =
            percpu::all_cpus().map(|cpu| cpu.counters.snapshot().timer_ticks).collect();
        timer::sleep_us(5 * TICK_US);
        for (cpu, ticks) in percpu::all_cpus().zip(before) {
            let now = cpu.counters.snapshot().timer_ticks;
            check!(now > ticks, "CPU {} did not tick ({} -> {})", cpu.cpu_id, ticks, now);
        }
        Ok(())
    }
);
