//! Wait queues: block until a condition holds, woken by whoever makes it
//! true.
//!
//! The lost-wake-up race is closed by checking the condition under the
//! queue's lock: a waker first makes the condition true, then takes the lock
//! to wake. Either the waiter's check (under the lock) comes after and sees
//! the condition, or the waiter is already queued and marked Blocked and the
//! waker finds it.

use super::thread::{Thread, ThreadState};
use crate::sync::{IrqSpinLock, might_sleep};
use alloc::collections::VecDeque;
use alloc::sync::Arc;

/// Threads waiting for something.
pub struct WaitQueue {
    waiters: IrqSpinLock<VecDeque<Arc<Thread>>>,
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { waiters: IrqSpinLock::new(VecDeque::new()) }
    }

    /// Blocks until `condition()` returns true. The condition is checked
    /// under the queue lock, so it must be cheap and must not block.
    #[track_caller]
    pub fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        might_sleep();
        loop {
            {
                let mut waiters = self.waiters.lock();
                if condition() {
                    return;
                }
                let current = super::current();
                current.set_state(ThreadState::Blocked);
                waiters.push_back(current);
            }
            super::schedule();
        }
    }

    /// Wakes the longest waiter; returns whether there was one.
    pub fn wake_one(&self) -> bool {
        let mut waiters = self.waiters.lock();
        while let Some(thread) = waiters.pop_front() {
            if super::wake(&thread) {
                return true;
            }
        }
        false
    }

    /// Wakes every waiter; returns how many were woken.
    pub fn wake_all(&self) -> usize {
        let mut waiters = self.waiters.lock();
        let mut woken = 0;
        while let Some(thread) = waiters.pop_front() {
            woken += usize::from(super::wake(&thread));
        }
        woken
    }

    /// Threads waiting now.
    pub fn len(&self) -> usize {
        self.waiters.lock().len()
    }

    /// Whether no thread is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}
