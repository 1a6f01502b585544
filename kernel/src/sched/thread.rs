//! Kernel threads: identity, state, stack and the join protocol.

use super::stack::{self, KernelStack};
use super::wait::WaitQueue;
use crate::sync::SpinLock;
use alloc::boxed::Box;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Where a thread is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ThreadState {
    /// On a run queue (or about to be put on one).
    Ready = 0,
    /// Running on a CPU.
    Running = 1,
    /// Waiting for a wake-up (wait queue, sleep, join).
    Blocked = 2,
    /// Finished; its stack is released when the last reference goes.
    Dead = 3,
}

impl ThreadState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Ready,
            1 => Self::Running,
            2 => Self::Blocked,
            _ => Self::Dead,
        }
    }
}

/// What a thread runs.
pub type Entry = Box<dyn FnOnce() + Send + 'static>;

/// A kernel thread.
pub struct Thread {
    id: u64,
    name: String,
    state: AtomicU8,
    /// True while a CPU is executing on this thread's stack; a CPU that
    /// wants to run the thread waits for it to clear (see `sched::schedule`).
    pub(super) on_cpu: AtomicBool,
    /// Stack pointer saved by the last switch away from this thread.
    pub(super) saved_rsp: AtomicU64,
    /// The CPU the thread last ran on (where a wake-up queues it).
    pub(super) last_cpu: AtomicU32,
    /// If set, the only CPU this thread may run on.
    pub(super) pinned_cpu: Option<u32>,
    /// The per-CPU idle thread: never queued, runs when nothing else can.
    pub(super) is_idle: bool,
    stack: Option<KernelStack>,
    pub(super) entry: SpinLock<Option<Entry>>,
    exited: AtomicBool,
    pub(super) joiners: WaitQueue,
}

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

impl Thread {
    pub(super) fn new(
        name: String,
        stack: Option<KernelStack>,
        entry: Option<Entry>,
        pinned_cpu: Option<u32>,
        is_idle: bool,
    ) -> Self {
        Self {
            id: NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed),
            name,
            state: AtomicU8::new(ThreadState::Ready as u8),
            on_cpu: AtomicBool::new(false),
            saved_rsp: AtomicU64::new(0),
            last_cpu: AtomicU32::new(pinned_cpu.unwrap_or(0)),
            pinned_cpu,
            is_idle,
            stack,
            entry: SpinLock::new(entry),
            exited: AtomicBool::new(false),
            joiners: WaitQueue::new(),
        }
    }

    /// Unique id (never reused).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current state.
    pub fn state(&self) -> ThreadState {
        ThreadState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn set_state(&self, state: ThreadState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Moves Blocked → Ready; false if the thread was not blocked (already
    /// woken, or never slept), so each block is paired with one wake-up.
    pub(super) fn try_unblock(&self) -> bool {
        self.state
            .compare_exchange(
                ThreadState::Blocked as u8,
                ThreadState::Ready as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The CPU the thread last ran on.
    pub fn last_cpu(&self) -> u32 {
        self.last_cpu.load(Ordering::Relaxed)
    }

    /// Whether the thread has finished.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    pub(super) fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    pub(super) fn stack_top(&self) -> Option<u64> {
        self.stack.as_ref().map(|stack| stack.top().as_u64())
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        if let Some(stack) = self.stack.take() {
            stack::give_back(stack);
        }
    }
}

impl core::fmt::Debug for Thread {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Thread({} '{}', {:?})", self.id, self.name, self.state())
    }
}
