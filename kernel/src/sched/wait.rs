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

mod tests {
    use super::WaitQueue;
    use crate::platform::time;
    use crate::sched::timer;
    use crate::sched::{JoinHandle, Placement, spawn};
    use crate::{check, check_eq, ktest};
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicUsize, Ordering};

    fn spawn_ok(placement: Placement, f: impl FnOnce() + Send + 'static) -> JoinHandle {
        spawn("ktest", placement, f).expect("spawn failed")
    }

    ktest!(
        fn wait_until_true_returns_at_once() {
            let queue = WaitQueue::new();
            queue.wait_until(|| true);
            check!(queue.is_empty());
            check!(!queue.wake_one());
            check_eq!(queue.wake_all(), 0);
            Ok(())
        }
    );

    fn start_waiters(
        queue: &Arc<WaitQueue>,
        count: usize,
    ) -> (Vec<JoinHandle>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let tokens = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let handles = (0..count)
            .map(|_| {
                let (queue, tokens, done) = (queue.clone(), tokens.clone(), done.clone());
                spawn_ok(Placement::AnyCpu, move || {
                    queue.wait_until(|| {
                        // Take one token if there is one.
                        tokens
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
                            .is_ok()
                    });
                    done.fetch_add(1, Ordering::AcqRel);
                })
            })
            .collect();
        (handles, tokens, done)
    }

    fn wait_for_waiters(queue: &WaitQueue, count: usize) -> bool {
        let deadline = time::uptime_us() + 2_000_000;
        while queue.len() < count {
            if time::uptime_us() > deadline {
                return false;
            }
            timer::sleep_us(1000);
        }
        true
    }

    ktest!(
        fn wake_one_wakes_exactly_one() {
            let queue = Arc::new(WaitQueue::new());
            let (handles, tokens, done) = start_waiters(&queue, 3);
            check!(wait_for_waiters(&queue, 3), "waiters never blocked");
            tokens.fetch_add(1, Ordering::AcqRel);
            check!(queue.wake_one());
            timer::sleep_us(20_000);
            check_eq!(done.load(Ordering::Acquire), 1);
            check_eq!(queue.len(), 2);
            tokens.fetch_add(2, Ordering::AcqRel);
            check_eq!(queue.wake_all(), 2);
            for handle in handles {
                handle.join();
            }
            check_eq!(done.load(Ordering::Acquire), 3);
            Ok(())
        }
    );

    ktest!(
        fn wake_all_wakes_everyone() {
            let queue = Arc::new(WaitQueue::new());
            let (handles, tokens, done) = start_waiters(&queue, 4);
            check!(wait_for_waiters(&queue, 4), "waiters never blocked");
            tokens.fetch_add(4, Ordering::AcqRel);
            check_eq!(queue.wake_all(), 4);
            for handle in handles {
                handle.join();
            }
            check_eq!(done.load(Ordering::Acquire), 4);
            check!(queue.is_empty());
            Ok(())
        }
    );
}
