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

    /// Blocks until `condition()` returns true or the TSC reaches
    /// `deadline_tsc`, whichever is first; returns whether the condition
    /// held. Listed on the queue and on the CPU's timer at once: whichever
    /// wakes the thread first wins (`try_unblock`), and the other entry is
    /// removed before returning, so neither can wake a later sleep.
    #[track_caller]
    pub fn wait_until_deadline(
        &self,
        deadline_tsc: u64,
        mut condition: impl FnMut() -> bool,
    ) -> bool {
        might_sleep();
        let current = super::current();
        loop {
            let timer_cpu = {
                let mut waiters = self.waiters.lock();
                if condition() {
                    return true;
                }
                if crate::platform::time::rdtsc() >= deadline_tsc {
                    return false;
                }
                current.set_state(ThreadState::Blocked);
                waiters.push_back(current.clone());
                // Still under the queue's lock (interrupts off): listed on
                // this CPU's timer before anyone can wake us.
                super::timer::wake_up_at(deadline_tsc, current.clone())
            };
            super::schedule();
            self.waiters.lock().retain(|waiter| !Arc::ptr_eq(waiter, &current));
            super::timer::cancel_wake_up(timer_cpu, &current);
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
        fn wait_until_deadline_times_out_then_wakes_on_the_condition() {
            let queue = Arc::new(WaitQueue::new());
            // Nobody wakes it: it returns false at the deadline, not before,
            // and leaves nothing queued behind.
            let start = time::rdtsc();
            let deadline = start + time::tsc_hz() / 1000 * 20;
            check!(!queue.wait_until_deadline(deadline, || false));
            check!(time::rdtsc() >= deadline);
            check!(queue.is_empty());
            // Woken by the condition long before its deadline.
            let flag = Arc::new(AtomicUsize::new(0));
            let (waiter_queue, waiter_flag) = (queue.clone(), flag.clone());
            let result = Arc::new(AtomicUsize::new(0));
            let waiter_result = result.clone();
            let handle = spawn_ok(Placement::AnyCpu, move || {
                let far = time::rdtsc() + time::tsc_hz() * 10;
                let held = waiter_queue
                    .wait_until_deadline(far, || waiter_flag.load(Ordering::Acquire) == 1);
                waiter_result.store(if held { 1 } else { 2 }, Ordering::Release);
            });
            check!(wait_for_waiters(&queue, 1), "the waiter never blocked");
            flag.store(1, Ordering::Release);
            check!(queue.wake_one());
            let woken_by = time::uptime_us() + 2_000_000;
            while result.load(Ordering::Acquire) == 0 && time::uptime_us() < woken_by {
                timer::sleep_us(1000);
            }
            check_eq!(result.load(Ordering::Acquire), 1);
            handle.join();
            check!(queue.is_empty());
            // The cancelled timer entry does not cut a later sleep short.
            let before = time::uptime_us();
            timer::sleep_us(5_000);
            check!(time::uptime_us() >= before + 5_000);
            Ok(())
        }
    );

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
