//! Spinlocks that cooperate with preemption and interrupts.
//!
//! Both are `lock_api` mutexes over a raw lock written here:
//! - [`SpinLock`] raises the preemption count while held, so the holder is
//!   never switched out with the lock taken (another thread on the same CPU
//!   would spin on it for a whole time slice, or forever if it had
//!   preemption off itself).
//! - [`IrqSpinLock`] also disables interrupts, for data an interrupt handler
//!   touches; it restores the caller's interrupt state on unlock. The heap
//!   uses it, so allocating in any context is safe.
//!
//! Memory ordering: acquiring is a `compare_exchange` with `Acquire` (on
//! x86 a `lock cmpxchg`, a full barrier), releasing is a `store` with
//! `Release` (a plain `mov`: x86 never reorders a store before earlier loads
//! or stores), so the critical section's accesses stay inside. Waiting spins
//! on a `Relaxed` load (no bus locking) before retrying the exchange.

use super::preempt::{preempt_disable, preempt_enable};
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::interrupts;

struct RawSpin(AtomicBool);

impl RawSpin {
    const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    fn try_acquire(&self) -> bool {
        self.0.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    fn acquire(&self) {
        while !self.try_acquire() {
            while self.0.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    fn release(&self) {
        self.0.store(false, Ordering::Release);
    }

    fn is_locked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Raw lock of [`SpinLock`]: spin plus preemption disabled.
pub struct RawPreemptSpin(RawSpin);

// SAFETY: `lock` returns only once the flag was exchanged from false to true
// by this caller, so at most one holder exists; `unlock` requires the lock.
unsafe impl lock_api::RawMutex for RawPreemptSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Self(RawSpin::new());
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        preempt_disable();
        self.0.acquire();
    }

    fn try_lock(&self) -> bool {
        preempt_disable();
        let locked = self.0.try_acquire();
        if !locked {
            preempt_enable();
        }
        locked
    }

    unsafe fn unlock(&self) {
        self.0.release();
        preempt_enable();
    }

    fn is_locked(&self) -> bool {
        self.0.is_locked()
    }
}

/// Raw lock of [`IrqSpinLock`]: interrupts off, preemption off, spin.
pub struct RawIrqSpin {
    lock: RawSpin,
    /// The holder's interrupt state before it locked; written only by the
    /// holder, after acquiring.
    interrupts_were_on: AtomicBool,
}

// SAFETY: as for `RawPreemptSpin`; the saved interrupt flag is written only
// while the lock is held and read by the holder in `unlock`.
unsafe impl lock_api::RawMutex for RawIrqSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Self { lock: RawSpin::new(), interrupts_were_on: AtomicBool::new(false) };
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        let were_on = interrupts::are_enabled();
        interrupts::disable();
        preempt_disable();
        self.lock.acquire();
        self.interrupts_were_on.store(were_on, Ordering::Relaxed);
    }

    fn try_lock(&self) -> bool {
        let were_on = interrupts::are_enabled();
        interrupts::disable();
        preempt_disable();
        if self.lock.try_acquire() {
            self.interrupts_were_on.store(were_on, Ordering::Relaxed);
            return true;
        }
        preempt_enable();
        if were_on {
            interrupts::enable();
        }
        false
    }

    unsafe fn unlock(&self) {
        let were_on = self.interrupts_were_on.load(Ordering::Relaxed);
        self.lock.release();
        if were_on {
            interrupts::enable();
        }
        // After interrupts are back on, so a deferred reschedule may run.
        preempt_enable();
    }

    fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }
}

/// Access to the value of a locked [`IrqSpinLock`].
pub type IrqSpinLockGuard<'a, T> = lock_api::MutexGuard<'a, RawIrqSpin, T>;

/// A spinlock that disables preemption while held.
pub type SpinLock<T> = lock_api::Mutex<RawPreemptSpin, T>;
/// Access to the value of a locked [`SpinLock`].
pub type SpinLockGuard<'a, T> = lock_api::MutexGuard<'a, RawPreemptSpin, T>;
/// A spinlock that disables interrupts and preemption while held.
pub type IrqSpinLock<T> = lock_api::Mutex<RawIrqSpin, T>;
