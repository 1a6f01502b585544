//! Synchronization: preemption control and spinlocks.
//!
//! Lock order (outer first): run-queue locks are never held while taking a
//! wait-queue lock; the heap and frame-allocator locks are leaves.

pub mod preempt;
pub mod spinlock;

pub use preempt::{PreemptGuard, can_sleep, might_sleep};
pub use spinlock::{IrqSpinLock, IrqSpinLockGuard, SpinLock, SpinLockGuard};
