//! The per-CPU tick: time slices and sleeping with a deadline.
//!
//! Each CPU's local APIC timer is armed for the earlier of its next tick and
//! its earliest sleeper's deadline, so a sleeper wakes at its deadline (not
//! up to a tick late) and an idle CPU still ticks to look for work to steal.

use super::thread::{Thread, ThreadState};
use crate::arch::interrupts::InterruptFrame;
use crate::arch::percpu::{self, MAX_CPUS};
use crate::platform::time;
use crate::sync::{IrqSpinLock, might_sleep};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Microseconds between ticks.
pub const TICK_US: u64 = 4_000;
/// Ticks a thread may run while others wait.
pub const SLICE_TICKS: u32 = 2;

struct CpuTimer {
    /// (deadline in TSC ticks, thread), unordered: lists are short.
    sleepers: IrqSpinLock<Vec<(u64, Arc<Thread>)>>,
    next_tick_tsc: AtomicU64,
    ticks_in_slice: AtomicU32,
}

static TIMERS: [CpuTimer; MAX_CPUS] = [const {
    CpuTimer {
        sleepers: IrqSpinLock::new(Vec::new()),
        next_tick_tsc: AtomicU64::new(0),
        ticks_in_slice: AtomicU32::new(0),
    }
}; MAX_CPUS];

fn tick_ticks() -> u64 {
    TICK_US * time::tsc_hz() / 1_000_000
}

/// Arms this CPU's timer for the earlier of the next tick and `sleepers`'
/// first deadline. Interrupts must be off (we must stay on this CPU).
fn rearm(timer: &CpuTimer, sleepers: &[(u64, Arc<Thread>)]) {
    let next_tick = timer.next_tick_tsc.load(Ordering::Relaxed);
    let earliest = sleepers.iter().map(|(deadline, _)| *deadline).min().unwrap_or(u64::MAX);
    crate::platform::apic::lapic::set_deadline_tsc(next_tick.min(earliest));
}

/// Starts ticking on this CPU. Interrupts must be off.
pub fn start_this_cpu() {
    let timer = &TIMERS[percpu::cpu_id() as usize];
    timer.next_tick_tsc.store(time::rdtsc() + tick_ticks(), Ordering::Relaxed);
    rearm(timer, &timer.sleepers.lock());
}

/// The local timer's interrupt handler.
pub fn on_timer_interrupt(_frame: &mut InterruptFrame) {
    crate::count_event!(timer_ticks);
    let timer = &TIMERS[percpu::cpu_id() as usize];
    let now = time::rdtsc();
    let mut sleepers = timer.sleepers.lock();
    // Wake every sleeper whose deadline passed.
    let mut index = 0;
    while index < sleepers.len() {
        if sleepers[index].0 <= now {
            let (_, thread) = sleepers.swap_remove(index);
            super::wake(&thread);
        } else {
            index += 1;
        }
    }
    if now >= timer.next_tick_tsc.load(Ordering::Relaxed) {
        timer.next_tick_tsc.store(now + tick_ticks(), Ordering::Relaxed);
        let ticks = timer.ticks_in_slice.fetch_add(1, Ordering::Relaxed) + 1;
        if ticks >= SLICE_TICKS {
            timer.ticks_in_slice.store(0, Ordering::Relaxed);
            // Slice over: switch if anyone else could run here.
            if super::run_queue_len(percpu::cpu_id()) > 0 || super::current_is_idle() {
                percpu::set_need_resched();
            }
        }
    }
    rearm(timer, &sleepers);
    drop(sleepers);
    crate::platform::apic::lapic::eoi();
}

/// Blocks the calling thread until the TSC reaches `deadline_tsc`.
#[track_caller]
pub fn sleep_until_tsc(deadline_tsc: u64) {
    might_sleep();
    while time::rdtsc() < deadline_tsc {
        {
            // The lock pins us to this CPU and keeps its timer interrupt out
            // until we are listed and Blocked.
            let timer = &TIMERS[percpu::cpu_id() as usize];
            let mut sleepers = timer.sleepers.lock();
            let current = super::current();
            current.set_state(ThreadState::Blocked);
            sleepers.push((deadline_tsc, current));
            rearm(timer, &sleepers);
        }
        super::schedule();
    }
}

/// Lists `thread` (the caller, about to block) to be woken on this CPU
/// when the TSC reaches `deadline_tsc`; returns the CPU whose list it is
/// on, for [`cancel_wake_up`]. Interrupts must be off (we must stay on
/// this CPU until listed).
pub(super) fn wake_up_at(deadline_tsc: u64, thread: Arc<Thread>) -> u32 {
    let cpu = percpu::cpu_id();
    let timer = &TIMERS[cpu as usize];
    let mut sleepers = timer.sleepers.lock();
    sleepers.push((deadline_tsc, thread));
    rearm(timer, &sleepers);
    cpu
}

/// Takes `thread` off `cpu`'s list of [`wake_up_at`] (a no-op if the tick
/// already woke it), so an early wake-up leaves no stale entry behind to
/// wake a later, unrelated sleep.
pub(super) fn cancel_wake_up(cpu: u32, thread: &Arc<Thread>) {
    TIMERS[cpu as usize].sleepers.lock().retain(|(_, listed)| !Arc::ptr_eq(listed, thread));
}

/// Blocks the calling thread for at least `us` microseconds.
#[track_caller]
pub fn sleep_us(us: u64) {
    sleep_until_tsc(time::rdtsc() + us * time::tsc_hz() / 1_000_000);
}
