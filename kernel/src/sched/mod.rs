//! The scheduler: per-CPU run queues, time slices, blocking and wake-ups,
//! work stealing, and the idle loop.
//!
//! Every CPU runs the thread in its per-CPU `current_thread` slot and keeps
//! a FIFO run queue. `schedule()` switches to the next thread in the local
//! queue, else one stolen from the busiest other CPU, else the CPU's idle
//! thread. A thread moves between CPUs only through a run queue, and a CPU
//! never starts a thread whose `on_cpu` flag is still set by the CPU that
//! just switched away from it: that CPU clears the flag in
//! `finish_switch`, after it has left the thread's stack (the same
//! hand-over Linux does with `p->on_cpu`).
//!
//! Preemption: the local timer ticks every `TICK_US`; after
//! `SLICE_TICKS` ticks with other work queued it sets `need_resched`, and the
//! interrupt exit path (or the last `PreemptGuard` drop) calls `schedule()`.
//!
//! Memory ordering (and what x86 emits for it):
//! - Run queues are `IrqSpinLock`s: enqueuing on another CPU's queue and
//!   dequeuing there are ordered by the lock (`lock cmpxchg` / `mov`).
//! - `on_cpu` hand-over: the CPU leaving a thread stores `false` with
//!   `Release` (a plain `mov`; x86 keeps stores in order, so every write to
//!   the thread's stack and `saved_rsp` is visible first); the CPU taking it
//!   over spins on an `Acquire` load (a plain `mov`; x86 never lets later
//!   loads pass it), so it reads the saved stack pointer the switch wrote.
//! - Thread state: Blocked → Ready is a `compare_exchange` (`lock cmpxchg`),
//!   so of a waker and a second waker exactly one enqueues the thread; the
//!   blocking side's store of Blocked happens under the wait-queue lock that
//!   the waker also takes.

mod stack;
mod switch;
pub mod thread;
pub mod timer;
pub mod wait;

mod tests;

use crate::arch::percpu::{self, MAX_CPUS};
use crate::sync::{IrqSpinLock, PreemptGuard, might_sleep};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use thread::{Entry, Thread, ThreadState};
use x86_64::instructions::interrupts;

pub use stack::STACK_PAGES;
pub use wait::WaitQueue;

/// Per-CPU scheduler state, owned by that CPU except the run queue.
struct CpuScheduler {
    run_queue: IrqSpinLock<VecDeque<Arc<Thread>>>,
    idle: IrqSpinLock<Option<Arc<Thread>>>,
    /// The thread switched away from, for `finish_switch` on the other side,
    /// and whether it must go back on a run queue. Touched only by this CPU
    /// with interrupts off.
    switch_from: IrqSpinLock<Option<(Arc<Thread>, bool)>>,
}

static CPUS: [CpuScheduler; MAX_CPUS] = [const {
    CpuScheduler {
        run_queue: IrqSpinLock::new(VecDeque::new()),
        idle: IrqSpinLock::new(None),
        switch_from: IrqSpinLock::new(None),
    }
}; MAX_CPUS];

fn this_scheduler() -> &'static CpuScheduler {
    &CPUS[percpu::cpu_id() as usize]
}

/// The running thread (a new reference).
pub fn current() -> Arc<Thread> {
    let raw = percpu::this_cpu().current_thread.load(Ordering::Relaxed) as *const Thread;
    assert!(!raw.is_null(), "scheduler not started on this CPU");
    // SAFETY: the slot owns one strong count of a live Arc (see
    // `set_current`); we add one for the returned handle.
    unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    }
}

/// Replaces this CPU's current thread, returning the previous one.
fn set_current(next: Arc<Thread>) -> Option<Arc<Thread>> {
    let slot = &percpu::this_cpu().current_thread;
    let previous = slot.swap(Arc::into_raw(next) as usize, Ordering::Relaxed) as *const Thread;
    // SAFETY: the slot held the strong count created by `Arc::into_raw`.
    (!previous.is_null()).then(|| unsafe { Arc::from_raw(previous) })
}

/// Makes the code running now on this CPU a thread named `name`, with the
/// stack it already has. With `is_idle`, it becomes the CPU's idle thread.
pub fn adopt_current_context(name: &str, is_idle: bool) {
    let cpu = percpu::cpu_id();
    let thread = Arc::new(Thread::new(String::from(name), None, None, Some(cpu), is_idle));
    thread.set_state(ThreadState::Running);
    thread.on_cpu.store(true, Ordering::Relaxed);
    thread.last_cpu.store(cpu, Ordering::Relaxed);
    if is_idle {
        *CPUS[cpu as usize].idle.lock() = Some(thread.clone());
    }
    set_current(thread);
}

/// Why a thread could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the stack.
    OutOfMemory,
    /// The requested CPU is not online.
    NoSuchCpu(u32),
}

/// Where a new thread may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Any CPU; starts on the least loaded one and may be stolen.
    AnyCpu,
    /// Only this CPU, for its whole life.
    Pinned(u32),
}

/// A handle to wait for a thread's end.
#[must_use = "dropping the handle detaches the thread"]
pub struct JoinHandle {
    thread: Arc<Thread>,
}

impl JoinHandle {
    /// Blocks until the thread has finished.
    #[track_caller]
    pub fn join(self) {
        let thread = self.thread;
        thread.joiners.wait_until(|| thread.has_exited());
    }

    /// The thread.
    pub fn thread(&self) -> &Arc<Thread> {
        &self.thread
    }
}

/// Starts a kernel thread running `f`.
///
/// # Errors
/// [`SpawnError`] if no stack can be allocated or the CPU does not exist.
pub fn spawn(
    name: &str,
    placement: Placement,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle, SpawnError> {
    let pinned = match placement {
        Placement::Pinned(cpu) if cpu as usize >= crate::smp::online_cpus() => {
            return Err(SpawnError::NoSuchCpu(cpu));
        }
        Placement::Pinned(cpu) => Some(cpu),
        Placement::AnyCpu => None,
    };
    let stack = stack::take().map_err(|_| SpawnError::OutOfMemory)?;
    let entry: Entry = alloc::boxed::Box::new(f);
    let thread = Arc::new(Thread::new(String::from(name), Some(stack), Some(entry), pinned, false));
    let top = thread.stack_top().expect("spawned threads own a stack");
    // SAFETY: the stack was just taken for this thread alone; the Thread
    // outlives its stack frames (the run queue holds a reference).
    let rsp = unsafe { switch::initial_stack(top, Arc::as_ptr(&thread)) };
    thread.saved_rsp.store(rsp, Ordering::Relaxed);
    let cpu = pinned.unwrap_or_else(least_loaded_cpu);
    thread.last_cpu.store(cpu, Ordering::Relaxed);
    enqueue(thread.clone(), cpu);
    Ok(JoinHandle { thread })
}

fn least_loaded_cpu() -> u32 {
    let online = crate::smp::online_cpus();
    (0..online).min_by_key(|&cpu| CPUS[cpu].run_queue.lock().len()).unwrap_or(0) as u32
}

/// Puts a Ready thread on `cpu`'s queue and makes that CPU notice: another
/// CPU gets a reschedule IPI (which also ends its idle halt); on this CPU
/// the thread waits for the current one's slice to end, unless the current
/// one is the idle thread (a wake-up from an interrupt on an idle CPU).
fn enqueue(thread: Arc<Thread>, cpu: u32) {
    CPUS[cpu as usize].run_queue.lock().push_back(thread);
    let guard = PreemptGuard::new();
    if cpu != guard.cpu_id() {
        crate::smp::ipi::send_reschedule(cpu);
    } else if current_is_idle() {
        percpu::set_need_resched();
    }
}

fn current_is_idle() -> bool {
    let raw = percpu::this_cpu().current_thread.load(Ordering::Relaxed) as *const Thread;
    // SAFETY: the slot owns a live Arc (see `set_current`); read one field.
    !raw.is_null() && unsafe { (*raw).is_idle }
}

/// Wakes a blocked thread: it goes on the queue of the CPU it last ran on
/// (or is pinned to). Returns false if it was not blocked.
pub fn wake(thread: &Arc<Thread>) -> bool {
    if !thread.try_unblock() {
        return false;
    }
    let cpu = thread.pinned_cpu.unwrap_or_else(|| thread.last_cpu());
    enqueue(thread.clone(), cpu);
    true
}

/// Gives up the CPU to another ready thread, if any.
pub fn yield_now() {
    might_sleep();
    schedule();
}

/// Ends the calling thread.
pub fn exit() -> ! {
    let current = current();
    current.mark_exited();
    current.joiners.wake_all();
    current.set_state(ThreadState::Dead);
    drop(current);
    schedule();
    unreachable!("a dead thread was scheduled again");
}

/// Takes a thread from the busiest other CPU that has one it may run.
fn steal(cpu: u32) -> Option<Arc<Thread>> {
    let online = crate::smp::online_cpus();
    let victim = (0..online)
        .filter(|&other| other != cpu as usize)
        .max_by_key(|&other| CPUS[other].run_queue.lock().len())?;
    let mut queue = CPUS[victim].run_queue.lock();
    let index = queue.iter().rposition(|thread| thread.pinned_cpu.is_none())?;
    let thread = queue.remove(index)?;
    crate::count_event!(threads_stolen);
    Some(thread)
}

/// Picks the next thread and switches to it, if it is not the current one.
/// Called with preemption enabled (count 0) from thread context, or from the
/// outermost interrupt exit.
pub fn schedule() {
    let interrupts_were_on = interrupts::are_enabled();
    interrupts::disable();
    percpu::preempt_count_inc();
    percpu::take_need_resched();
    let cpu = percpu::cpu_id();
    let scheduler = &CPUS[cpu as usize];
    let prev = current();
    let prev_runnable = prev.state() == ThreadState::Running && !prev.is_idle;

    let queued = scheduler.run_queue.lock().pop_front();
    let next = match queued.or_else(|| steal(cpu)) {
        Some(next) => next,
        None if prev_runnable || (prev.is_idle && prev.state() == ThreadState::Running) => {
            return finish_schedule(interrupts_were_on);
        }
        None => scheduler.idle.lock().clone().expect("CPU has no idle thread"),
    };
    if Arc::ptr_eq(&next, &prev) {
        // Woken onto our own queue before we switched away: keep running.
        prev.set_state(ThreadState::Running);
        return finish_schedule(interrupts_were_on);
    }
    if prev_runnable {
        prev.set_state(ThreadState::Ready);
    }
    // The CPU that last ran `next` may still be on its stack.
    while next.on_cpu.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    next.on_cpu.store(true, Ordering::Relaxed);
    next.set_state(ThreadState::Running);
    next.last_cpu.store(cpu, Ordering::Relaxed);
    let next_rsp = next.saved_rsp.load(Ordering::Relaxed);
    let prev_rsp = prev.saved_rsp.as_ptr();
    let previous = set_current(next).expect("CPU had a current thread");
    *scheduler.switch_from.lock() = Some((previous, prev_runnable));
    drop(prev);
    crate::count_event!(context_switches);
    // SAFETY: interrupts are off; `next_rsp` was saved by a switch away from
    // `next` (whose on_cpu flag we now own) or built by `initial_stack`;
    // `prev_rsp` points into the Thread kept alive by `switch_from` and then
    // by whoever holds it while it is switched out.
    unsafe { switch::switch_context(prev_rsp, next_rsp) };
    finish_switch();
    finish_schedule(interrupts_were_on);
}

fn finish_schedule(interrupts_were_on: bool) {
    // Undo schedule()'s count without preempt_enable: we are the reschedule.
    percpu::preempt_count_dec();
    if interrupts_were_on {
        interrupts::enable();
    }
}

/// Runs on the new thread right after a switch: releases the previous
/// thread to other CPUs and re-queues it if it was preempted.
fn finish_switch() {
    let Some((prev, requeue)) = this_scheduler().switch_from.lock().take() else {
        return;
    };
    // We are off prev's stack now: another CPU may run it.
    prev.on_cpu.store(false, Ordering::Release);
    if requeue {
        let cpu = prev.pinned_cpu.unwrap_or_else(percpu::cpu_id);
        CPUS[cpu as usize].run_queue.lock().push_back(prev);
    }
}

/// First Rust code of a new thread (called by `vireo_thread_start`).
#[unsafe(no_mangle)]
extern "C" fn vireo_thread_entry(thread: *const Thread) -> ! {
    finish_switch();
    // Balance schedule()'s count; the new thread starts preemptible.
    percpu::preempt_count_dec();
    interrupts::enable();
    // SAFETY: the pointer came from `Arc::as_ptr` of a thread that is
    // current on this CPU, so the per-CPU slot keeps it alive.
    let entry = unsafe { &*thread }.entry.lock().take();
    if let Some(entry) = entry {
        entry();
    }
    exit()
}

/// The idle loop: run anything that shows up, else halt until an interrupt.
pub fn idle_loop() -> ! {
    loop {
        interrupts::disable();
        let cpu = percpu::cpu_id() as usize;
        let has_work = !CPUS[cpu].run_queue.lock().is_empty() || percpu::need_resched();
        if has_work || can_steal(cpu) {
            interrupts::enable();
            schedule();
        } else {
            // sti; hlt: the interrupt that ends the halt cannot slip in
            // between the check above and the halt.
            crate::count_event!(idle_halts);
            interrupts::enable_and_hlt();
        }
    }
}

fn can_steal(cpu: usize) -> bool {
    (0..crate::smp::online_cpus())
        .filter(|&other| other != cpu)
        .any(|other| CPUS[other].run_queue.lock().iter().any(|thread| thread.pinned_cpu.is_none()))
}

/// Threads waiting in `cpu`'s run queue.
pub fn run_queue_len(cpu: u32) -> usize {
    CPUS[cpu as usize].run_queue.lock().len()
}

/// Sets up scheduling on the boot CPU: the boot context becomes thread
/// "main", an idle thread is created for CPU 0, and the tick starts (its
/// vector is installed once: the IDT is shared). Interrupts must be off.
pub fn init_boot_cpu() {
    adopt_current_context("main", false);
    let idle = spawn_idle(0).expect("no memory for the boot CPU's idle thread");
    *CPUS[0].idle.lock() = Some(idle);
    crate::arch::interrupts::register_irq(crate::platform::apic::TIMER, timer::on_timer_interrupt)
        .expect("timer vector taken");
    timer::start_this_cpu();
}

/// What each AP runs once `smp` has set up its CPU.
pub const AP_ENTRY: crate::smp::ApEntry =
    crate::smp::ApEntry { prepare: become_idle_thread, run: idle_loop };

/// Makes the code running on a new AP its idle thread and starts its tick.
fn become_idle_thread(cpu_id: u32) {
    timer::start_this_cpu();
    adopt_current_context(&alloc::format!("idle{cpu_id}"), true);
}

fn spawn_idle(cpu: u32) -> Result<Arc<Thread>, SpawnError> {
    let stack = stack::take().map_err(|_| SpawnError::OutOfMemory)?;
    let entry: Entry = alloc::boxed::Box::new(|| idle_loop());
    let thread = Arc::new(Thread::new(
        alloc::format!("idle{cpu}"),
        Some(stack),
        Some(entry),
        Some(cpu),
        true,
    ));
    let top = thread.stack_top().expect("idle thread owns a stack");
    // SAFETY: as in `spawn`.
    let rsp = unsafe { switch::initial_stack(top, Arc::as_ptr(&thread)) };
    thread.saved_rsp.store(rsp, Ordering::Relaxed);
    Ok(thread)
}
