//! In-kernel tests: registered beside the code with `ktest!`, collected from
//! the `.ktests` link section (no central list), run in name order.
//!
//! Output protocol (read by `xtask`):
//! - `test <suite>::<name> ... ` before each test, then `ok (N us)` or
//!   `FAILED (N us)` and the failure message;
//! - `ktest: P passed, F failed` at the end, then exit 0x10 if F == 0, else
//!   0x11.
//!
//! A test fails by returning `Err` (see `check!`); a panic ends the boot, and
//! the runner restarts the kernel with `ktest.after=<crashed test>`: tests
//! run in name order, so the next boot resumes just past the crash.
//!
//! This is the bottom layer: it imports nothing from the kernel. What it
//! needs (console, clock, threads on other CPUs) is registered at boot, see
//! [`harness`].

pub mod harness;

use alloc::string::String;
use alloc::vec::Vec;
use core::panic::Location;
use core::sync::atomic::{AtomicPtr, Ordering};
pub use harness::{Harness, on_cpu, on_each_cpu, on_each_cpu_in_turn};

/// One registered test.
#[repr(C)]
pub struct KTest {
    /// `module_path!()` of the test's module.
    pub module: &'static str,
    /// The test function's name.
    pub name: &'static str,
    /// The test body.
    pub run: fn() -> TestResult,
}

impl KTest {
    /// `suite` is the module path without the crate name and the final
    /// `tests` module: `vireo::mm::frame::tests` becomes `mm::frame`.
    pub fn suite(&self) -> &'static str {
        let path = self.module.strip_prefix("vireo::").unwrap_or(self.module);
        path.strip_suffix("::tests").unwrap_or(path)
    }

    /// `<suite>::<name>`, the name used for filtering and skipping.
    pub fn full_name(&self) -> String {
        alloc::format!("{}::{}", self.suite(), self.name)
    }
}

/// Why a test did not pass, and where.
#[derive(Debug)]
pub struct TestFailure {
    /// What went wrong, or what was missing.
    pub message: String,
    /// The failing check (or the skip).
    pub location: &'static Location<'static>,
    /// A failure, or a skip.
    pub verdict: Verdict,
}

/// How a test that did not pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A check failed.
    Failed,
    /// What it tests is absent (a device, a feature, a second CPU): it did
    /// not run, and says why.
    Skipped,
}

impl TestFailure {
    /// A failure at the caller's location.
    #[track_caller]
    pub fn new(message: String) -> Self {
        Self { message, location: Location::caller(), verdict: Verdict::Failed }
    }
}

/// Ends a test that cannot run here, saying why: `return ktest::skip("no
/// virtio-rng-pci device")`. Printed as `ok (N us) skipped: <why>` (the
/// runner's protocol has no skip verdict yet) and counted in the summary.
#[track_caller]
pub fn skip(why: &str) -> TestResult {
    Err(TestFailure {
        message: why.into(),
        location: Location::caller(),
        verdict: Verdict::Skipped,
    })
}

/// The result every test returns.
pub type TestResult = Result<(), TestFailure>;

/// Registers a test: `ktest!(fn name() { ...; Ok(()) });`
#[macro_export]
macro_rules! ktest {
    (fn $name:ident() $body:block) => {
        const _: () = {
            fn $name() -> $crate::ktest::TestResult $body
            #[used]
            #[unsafe(link_section = ".ktests")]
            static TEST: $crate::ktest::KTest = $crate::ktest::KTest {
                module: module_path!(),
                name: stringify!($name),
                run: $name,
            };
        };
    };
}

/// Fails the test unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::ktest::TestFailure::new(alloc::format!(
                "check failed: {}", stringify!($cond)
            )));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::ktest::TestFailure::new(alloc::format!($($arg)+)));
        }
    };
}

/// Fails the test unless both sides are equal.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::ktest::TestFailure::new(alloc::format!(
                        "{} == {} failed: {:?} != {:?}",
                        stringify!($left),
                        stringify!($right),
                        left,
                        right
                    )));
                }
            }
        }
    };
}

/// Unwraps an `Ok`, or fails the test with the error.
#[macro_export]
macro_rules! check_ok {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(error) => {
                return Err($crate::ktest::TestFailure::new(alloc::format!(
                    "{} returned Err({:?})",
                    stringify!($result),
                    error
                )))
            }
        }
    };
}

unsafe extern "C" {
    static __ktests_start: u8;
    static __ktests_end: u8;
}

/// Every registered test, in name order.
pub fn all_tests() -> Vec<&'static KTest> {
    // SAFETY: the linker script places the `.ktests` input sections, each one
    // `KTest` static (8-byte aligned, no padding between statics of the same
    // type), between these two symbols.
    let tests: &'static [KTest] = unsafe {
        let start = (&raw const __ktests_start).cast::<KTest>();
        let end = (&raw const __ktests_end).cast::<KTest>();
        let count = (end as usize - start as usize) / size_of::<KTest>();
        core::slice::from_raw_parts(start, count)
    };
    let mut sorted: Vec<&'static KTest> = tests.iter().collect();
    sorted.sort_by(|a, b| (a.suite(), a.name).cmp(&(b.suite(), b.name)));
    sorted
}

/// What to run, from the command line (`ktest.filter=`, `ktest.skip=`,
/// `ktest.after=`).
#[derive(Default, Clone, Copy)]
pub struct Selection<'a> {
    /// Only tests whose full name contains this, or one of these
    /// comma-separated substrings (`mm::,pci::`).
    pub filter: Option<&'a str>,
    /// Comma-separated full names not to run.
    pub skip: Option<&'a str>,
    /// Run only the tests that come after this one in run order.
    pub after: Option<&'a str>,
}

impl Selection<'_> {
    /// Whether `full_name` passes the filter and skip list (`after` depends
    /// on the order, see `apply`).
    pub fn selects(&self, full_name: &str) -> bool {
        let filtered =
            self.filter.is_none_or(|filter| filter.split(',').any(|part| full_name.contains(part)));
        let skipped =
            self.skip.is_some_and(|skip| skip.split(',').any(|skipped| skipped == full_name));
        filtered && !skipped
    }

    /// The tests to run, in run order.
    pub fn apply(&self, tests: &[&'static KTest]) -> Vec<&'static KTest> {
        let names: Vec<String> = tests.iter().map(|test| test.full_name()).collect();
        let first = match self.after {
            // An unknown name resumes nowhere: better to run nothing than to
            // run tests twice; the runner notices the missing results.
            Some(after) => {
                names.iter().position(|name| name == after).map_or(tests.len(), |i| i + 1)
            }
            None => 0,
        };
        (first..tests.len()).filter(|&i| self.selects(&names[i])).map(|i| tests[i]).collect()
    }
}

/// The test running now, for the panic handler's report.
static CURRENT_TEST: AtomicPtr<KTest> = AtomicPtr::new(core::ptr::null_mut());

/// The name of the test in progress, if any.
pub fn current_test() -> Option<&'static KTest> {
    // SAFETY: only pointers to `'static` tests from `all_tests` are stored.
    unsafe { CURRENT_TEST.load(Ordering::Relaxed).as_ref() }
}

/// The CPU state every test must leave as it found it, so one test's
/// leftovers cannot break the next.
struct TestContext {
    interrupts_on: bool,
    preempt_count: u32,
}

impl TestContext {
    fn capture() -> Self {
        Self {
            interrupts_on: x86_64::instructions::interrupts::are_enabled(),
            preempt_count: harness::preempt_count(),
        }
    }

    /// Restores what the test changed and fails it for the change.
    fn check_restored(&self) -> TestResult {
        let now = Self::capture();
        if now.preempt_count != self.preempt_count {
            return Err(TestFailure::new(alloc::format!(
                "test left preempt_count at {} (was {})",
                now.preempt_count,
                self.preempt_count
            )));
        }
        if now.interrupts_on != self.interrupts_on {
            if self.interrupts_on {
                x86_64::instructions::interrupts::enable();
            } else {
                x86_64::instructions::interrupts::disable();
            }
            return Err(TestFailure::new(alloc::format!(
                "test left interrupts {}",
                if now.interrupts_on { "on" } else { "off" }
            )));
        }
        Ok(())
    }
}

/// Pass/fail totals of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Tests that returned `Ok`.
    pub passed: usize,
    /// Tests that returned `Err`.
    pub failed: usize,
    /// Tests not selected.
    pub skipped: usize,
    /// Of the passed, those that skipped themselves ([`skip`]).
    pub unavailable: usize,
}

/// Runs the selected tests, printing the protocol lines.
pub fn run(selection: Selection) -> Summary {
    let tests = all_tests();
    let selected = selection.apply(&tests);
    let mut summary = Summary { skipped: tests.len() - selected.len(), ..Summary::default() };
    harness::print(format_args!("ktest: running {} of {} tests\n", selected.len(), tests.len()));
    for test in selected {
        let full_name = test.full_name();
        harness::print(format_args!("test {} ... ", full_name));
        CURRENT_TEST.store(core::ptr::from_ref(test).cast_mut(), Ordering::Relaxed);
        let context = TestContext::capture();
        let start_us = harness::now_us();
        let result = (test.run)();
        let elapsed_us = harness::now_us() - start_us;
        let result = match result {
            Err(skip) if skip.verdict == Verdict::Skipped => {
                context.check_restored().and(Err(skip))
            }
            result => result.and(context.check_restored()),
        };
        CURRENT_TEST.store(core::ptr::null_mut(), Ordering::Relaxed);
        match result {
            Ok(()) => {
                summary.passed += 1;
                harness::print(format_args!("ok ({} us)\n", elapsed_us));
            }
            Err(skip) if skip.verdict == Verdict::Skipped => {
                summary.passed += 1;
                summary.unavailable += 1;
                harness::print(format_args!("ok ({} us) skipped: {}\n", elapsed_us, skip.message));
            }
            Err(failure) => {
                summary.failed += 1;
                harness::print(format_args!("FAILED ({} us)\n", elapsed_us));
                harness::print(format_args!("    {} at {}\n", failure.message, failure.location));
            }
        }
    }
    harness::print(format_args!(
        "ktest: {} passed, {} failed ({} of the passed skipped)\n",
        summary.passed, summary.failed, summary.unavailable
    ));
    summary
}

mod tests {
    use super::Selection;

    ktest!(
        fn selection_filter_and_skip() {
            let selection =
                Selection { filter: Some("mm::"), skip: Some("mm::a,mm::b"), after: None };
            check!(selection.selects("mm::c"));
            check!(!selection.selects("mm::a"));
            check!(!selection.selects("log::x"));
            check!(Selection::default().selects("anything"));
            let either = Selection { filter: Some("mm::,pci::"), ..Selection::default() };
            check!(either.selects("mm::c") && either.selects("platform::pci::x"));
            check!(!either.selects("sched::y"));
            Ok(())
        }
    );

    ktest!(
        fn registry_finds_this_test_once() {
            let count = super::all_tests()
                .iter()
                .filter(|test| test.full_name() == "ktest::registry_finds_this_test_once")
                .count();
            check!(count == 1, "found {} registrations", count);
            Ok(())
        }
    );

    ktest!(
        fn after_resumes_past_the_named_test() {
            let tests = super::all_tests();
            let third = tests[2].full_name();
            let rest = Selection { after: Some(&third), ..Selection::default() }.apply(&tests);
            check!(rest.len() == tests.len() - 3, "{} of {}", rest.len(), tests.len());
            check!(rest[0].full_name() == tests[3].full_name());
            let unknown = Selection { after: Some("no::such_test"), ..Selection::default() };
            check!(unknown.apply(&tests).is_empty());
            Ok(())
        }
    );
}
