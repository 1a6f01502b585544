//! What the test runner needs from the kernel it tests, registered at boot.
//!
//! `ktest` is the bottom layer: every layer's tests use it, so it may use
//! none of them. The console, the clock, the preemption count and threads
//! on other CPUs come from the kernel through this table instead (`main`
//! fills it in). Tests of a lower layer that need code running on every CPU
//! (IPIs, TLB shootdown, per-CPU data) ask for it here, so they stay beside
//! the code they test without importing the scheduler.

use super::{TestFailure, TestResult};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::panic::Location;

/// A job for several CPUs; it gets the id of the CPU it runs on.
pub type CpuJob = Arc<dyn Fn(u32) + Send + Sync>;

/// The kernel's side of the runner.
#[derive(Clone, Copy)]
pub struct Harness {
    /// Writes protocol output to the console.
    pub print: fn(fmt::Arguments),
    /// A monotonic clock in microseconds, for test durations.
    pub now_us: fn() -> u64,
    /// This CPU's preemption count, which every test must leave as it
    /// found it.
    pub preempt_count: fn() -> u32,
    /// CPUs that can run test threads (ids `0..n`).
    pub online_cpus: fn() -> u32,
    /// Runs `job(cpu)` in a thread pinned to each CPU of `cpus`, all at
    /// once, and returns when every started one has finished; `Err` names
    /// the first CPU where no thread could be started.
    pub run_on_cpus: fn(cpus: &[u32], job: CpuJob) -> Result<(), u32>,
}

static HARNESS: spin::Once<Harness> = spin::Once::new();

/// Installs the kernel's side; the first call wins.
pub fn register(harness: Harness) {
    HARNESS.call_once(|| harness);
}

fn harness() -> &'static Harness {
    HARNESS.get().expect("ktest::harness::register was not called before running tests")
}

pub(super) fn print(args: fmt::Arguments) {
    (harness().print)(args);
}

pub(super) fn now_us() -> u64 {
    (harness().now_us)()
}

pub(super) fn preempt_count() -> u32 {
    (harness().preempt_count)()
}

fn online_cpus() -> u32 {
    (harness().online_cpus)()
}

fn run(cpus: &[u32], job: CpuJob, location: &'static Location<'static>) -> TestResult {
    (harness().run_on_cpus)(cpus, job).map_err(|cpu| TestFailure {
        message: alloc::format!("no test thread could start on CPU {cpu}"),
        location,
        verdict: super::Verdict::Failed,
    })
}

/// Runs `job` on every online CPU at once, each in a thread pinned there,
/// and waits for all of them.
///
/// # Errors
/// A [`TestFailure`] at the caller when a thread could not be started.
#[track_caller]
pub fn on_each_cpu(job: impl Fn(u32) + Send + Sync + 'static) -> TestResult {
    let cpus: Vec<u32> = (0..online_cpus()).collect();
    run(&cpus, Arc::new(job), Location::caller())
}

/// Runs `job` on CPU 0, then on CPU 1, and so on, each run finished before
/// the next starts.
///
/// # Errors
/// As [`on_each_cpu`].
#[track_caller]
pub fn on_each_cpu_in_turn(job: impl Fn(u32) + Send + Sync + 'static) -> TestResult {
    let (job, location): (CpuJob, _) = (Arc::new(job), Location::caller());
    (0..online_cpus()).try_for_each(|cpu| run(&[cpu], job.clone(), location))
}

/// Runs `job` in a thread pinned to `cpu` and waits for it.
///
/// # Errors
/// As [`on_each_cpu`].
#[track_caller]
pub fn on_cpu(cpu: u32, job: impl Fn(u32) + Send + Sync + 'static) -> TestResult {
    run(&[cpu], Arc::new(job), Location::caller())
}
