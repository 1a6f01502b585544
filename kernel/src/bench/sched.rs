//! Scheduler and IPI benchmarks.

use super::report;
use crate::platform::time::rdtsc;
use crate::sched::timer::sleep_us;
use crate::sched::{Placement, WaitQueue, spawn, yield_now};
use crate::smp::{ipi, online_cpus};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

const SWITCH_ROUNDS: usize = 2_000;
const IPI_ROUNDS: usize = 1_000;
const WAKE_ROUNDS: usize = 300;

/// Two threads on one CPU yield to each other; a round trip is two
/// switches, so each sample is halved.
pub fn context_switch() {
    let stop = Arc::new(AtomicBool::new(false));
    let partner_stop = stop.clone();
    let partner = spawn("bench-partner", Placement::Pinned(0), move || {
        while !partner_stop.load(Ordering::Relaxed) {
            yield_now();
        }
    })
    .expect("spawn failed");
    let samples = Arc::new(crate::sync::SpinLock::new(Vec::with_capacity(SWITCH_ROUNDS)));
    let out = samples.clone();
    let measurer = spawn("bench-switch", Placement::Pinned(0), move || {
        let mut local = Vec::with_capacity(SWITCH_ROUNDS);
        for _ in 0..SWITCH_ROUNDS {
            let start = rdtsc();
            yield_now();
            local.push((rdtsc() - start) / 2);
        }
        *out.lock() = local;
    })
    .expect("spawn failed");
    measurer.join();
    stop.store(true, Ordering::Relaxed);
    partner.join();
    report("context_switch", &mut samples.lock());
}

/// An IPI to another CPU whose handler answers with an IPI.
pub fn ipi_round_trip() {
    if online_cpus() < 2 {
        crate::kprintln!("BENCH ipi_round_trip skipped (one CPU)");
        return;
    }
    let samples = Arc::new(crate::sync::SpinLock::new(Vec::with_capacity(IPI_ROUNDS)));
    let out = samples.clone();
    spawn("bench-ipi", Placement::Pinned(0), move || {
        let mut local = Vec::with_capacity(IPI_ROUNDS);
        for _ in 0..IPI_ROUNDS {
            if let Some(ticks) = ipi::echo_round_trip(1) {
                local.push(ticks);
            }
        }
        *out.lock() = local;
    })
    .expect("spawn failed")
    .join();
    report("ipi_round_trip", &mut samples.lock());
}

/// A thread on CPU 0 wakes one blocked on CPU 1; the sample is from the
/// wake call to the woken thread running.
pub fn cross_cpu_wakeup() {
    if online_cpus() < 2 {
        crate::kprintln!("BENCH wakeup_latency skipped (one CPU)");
        return;
    }
    let queue = Arc::new(WaitQueue::new());
    let round = Arc::new(AtomicUsize::new(0));
    let woke_at = Arc::new(AtomicU64::new(0));
    let (waiter_queue, waiter_round, waiter_woke_at) =
        (queue.clone(), round.clone(), woke_at.clone());
    let waiter = spawn("bench-waiter", Placement::Pinned(1), move || {
        for expected in 1..=WAKE_ROUNDS {
            waiter_queue.wait_until(|| waiter_round.load(Ordering::Acquire) >= expected);
            waiter_woke_at.store(rdtsc(), Ordering::Release);
        }
    })
    .expect("spawn failed");
    let mut samples = Vec::with_capacity(WAKE_ROUNDS);
    for current in 1..=WAKE_ROUNDS {
        // Let the waiter block again before the next wake.
        while queue.is_empty() {
            sleep_us(200);
        }
        woke_at.store(0, Ordering::Release);
        let start = rdtsc();
        round.store(current, Ordering::Release);
        queue.wake_one();
        loop {
            let at = woke_at.load(Ordering::Acquire);
            if at != 0 {
                samples.push(at.saturating_sub(start));
                break;
            }
            core::hint::spin_loop();
        }
    }
    waiter.join();
    report("wakeup_latency", &mut samples);
}
