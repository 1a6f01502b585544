//! The CPU layer's upcalls: every place where code in `arch` must reach a
//! layer above it, registered once at boot instead of imported.
//!
//! `arch` sits at the bottom of the kernel (see `xtask/src/layers.rs`), yet
//! three of its duties end in higher layers: an interrupt exit or the last
//! `PreemptGuard` may have to switch threads (the scheduler), a fatal report
//! must first stop the other CPUs (an NMI broadcast through the local APIC),
//! and a stack trace must stop where the stack's mapping ends (the page
//! tables). `main` registers the three functions first thing; until then
//! each upcall does the safe minimum, which is also what one CPU with no
//! scheduler needs.

/// The functions through which `arch` reaches the layers above it.
#[derive(Clone, Copy)]
pub struct Upcalls {
    /// Switches to the next thread; called with `need_resched` set and
    /// preemption enabled (the scheduler's `schedule`).
    pub reschedule: fn(),
    /// Stops every other CPU, even one with interrupts off, before this one
    /// prints a fatal report (an NMI to all but self).
    pub halt_other_cpus: fn(),
    /// Whether a virtual address is mapped, found without taking a lock or
    /// a fault (a page-table walk).
    pub is_mapped: fn(u64) -> bool,
}

static UPCALLS: spin::Once<Upcalls> = spin::Once::new();

/// Installs the upcalls; later calls are ignored (they are wired once, at
/// boot, before any of them can be needed).
pub fn register(upcalls: Upcalls) {
    UPCALLS.call_once(|| upcalls);
}

/// Switches threads if a scheduler is registered (none runs before it).
pub fn reschedule() {
    if let Some(upcalls) = UPCALLS.get() {
        (upcalls.reschedule)();
    }
}

/// Stops the other CPUs; before registration only this CPU runs.
pub fn halt_other_cpus() {
    if let Some(upcalls) = UPCALLS.get() {
        (upcalls.halt_other_cpus)();
    }
}

/// Whether `address` is mapped; `false` before registration, so a stack
/// trace that early stops at its first word instead of risking a fault.
pub fn is_mapped(address: u64) -> bool {
    UPCALLS.get().is_some_and(|upcalls| (upcalls.is_mapped)(address))
}
