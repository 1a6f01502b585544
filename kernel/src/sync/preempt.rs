//! Preemption control: the per-CPU preemption count and its RAII guard.
//!
//! While a CPU's count is non-zero the scheduler never switches threads on
//! it, so the running thread can neither be preempted nor migrated. A
//! reschedule requested meanwhile (by the timer or a wake-up IPI) is left in
//! `need_resched` and performed when the last guard drops: the "deferred
//! reschedule". It is performed only where sleeping is allowed (interrupts
//! on, not inside an interrupt handler); otherwise the next interrupt exit
//! picks it up.

use crate::arch::percpu;
use core::marker::PhantomData;

/// Proof that the current thread cannot be preempted or migrated.
///
/// Not `Send`: it must be dropped on the CPU that created it.
#[must_use = "preemption is re-enabled as soon as the guard is dropped"]
pub struct PreemptGuard {
    cpu_id: u32,
    _not_send: PhantomData<*const ()>,
}

impl PreemptGuard {
    /// Disables preemption on this CPU until the guard drops.
    #[inline]
    pub fn new() -> Self {
        percpu::preempt_count_inc();
        // The count is raised: from here the CPU id cannot change.
        Self { cpu_id: percpu::cpu_id(), _not_send: PhantomData }
    }

    /// The CPU this guard pins the thread to.
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id
    }
}

impl Default for PreemptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PreemptGuard {
    #[inline]
    fn drop(&mut self) {
        // One gs load: cheap enough to check always.
        assert_eq!(percpu::cpu_id(), self.cpu_id, "PreemptGuard dropped on another CPU");
        preempt_enable();
    }
}

/// Raises the preemption count without a guard (for lock implementations,
/// which pair it with `preempt_enable` in their unlock).
#[inline]
pub(crate) fn preempt_disable() {
    percpu::preempt_count_inc();
}

/// Lowers the preemption count; at zero, runs a pending reschedule if this
/// context may sleep.
#[inline]
pub(crate) fn preempt_enable() {
    if percpu::preempt_count_dec() && percpu::need_resched() {
        deferred_reschedule();
    }
}

// Out of line, so the unlock fast path of every spinlock stays a few
// instructions (inlined, the upcall's indirect call would cost each one a
// stack frame).
#[cold]
#[inline(never)]
fn deferred_reschedule() {
    if x86_64::instructions::interrupts::are_enabled() && percpu::irq_depth() == 0 {
        crate::count_event!(deferred_reschedules_run);
        crate::arch::upcalls::reschedule();
    }
}

/// Whether the current context may block: preemption enabled, interrupts
/// on, and not inside an interrupt handler.
pub fn can_sleep() -> bool {
    percpu::preempt_count() == 0
        && x86_64::instructions::interrupts::are_enabled()
        && percpu::irq_depth() == 0
}

/// Panics when called where sleeping is not allowed; call it at the top of
/// every function that may block.
#[track_caller]
pub fn might_sleep() {
    assert!(
        can_sleep(),
        "might_sleep() in atomic context: preempt_count={}, interrupts {}, irq depth {}",
        percpu::preempt_count(),
        if x86_64::instructions::interrupts::are_enabled() { "on" } else { "off" },
        percpu::irq_depth()
    );
}
