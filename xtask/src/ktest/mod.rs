//! In-kernel test runner: boots the kernel with `ktest`, collects results,
//! and restarts after crashes so one bad test cannot hide the rest.
//!
//! Restart logic: a boot that ends while a test is in progress (panic, triple
//! fault, or per-test timeout) marks that test FAILED and boots again with
//! `ktest.after=<crashed test>`: the kernel runs its tests in a fixed (name)
//! order and starts after that one, so the command line stays short however
//! many tests ran. The runner still tracks every test already reported; a
//! test reported twice or a crash in a test that should have been passed
//! over stops the suite. Each restart moves past at least one test, so the
//! loop ends after at most (number of tests + 1) boots. A boot that goes wrong with no
//! test in progress cannot be made progress on by restarting: it is reported
//! as an error and the suite stops.
//!
//! The booting itself sits behind [`Booter`] so the restart logic is unit
//! tested with canned serial transcripts instead of QEMU; the real one,
//! with its timeouts, is [`QemuBooter`].

mod qemu_booter;

use std::collections::BTreeSet;
use std::time::Duration;

pub use qemu_booter::{Limits, QemuBooter};

use crate::exit::KernelExit;
use crate::serial::{Event, Verdict};

/// How one boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootEnd {
    /// QEMU exited by itself.
    Exited(KernelExit),
    /// A test ran longer than the per-test limit; QEMU was killed.
    TestTimeout(Duration),
    /// No test started/finished for too long; QEMU was killed.
    Stalled(Duration),
    /// QEMU could not be started at all.
    LaunchError(String),
}

/// Boots the kernel once with a command line, reporting serial events live.
pub trait Booter {
    fn boot(&mut self, cmdline: &str, on_event: &mut dyn FnMut(&Event)) -> BootEnd;
}

/// Final outcome of one kernel test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Reason: "failed", "crashed: ...", "timeout ...".
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub name: String,
    pub outcome: Outcome,
    pub micros: Option<u64>,
}

/// What the suite should run.
#[derive(Clone, Debug, Default)]
pub struct SuiteOptions {
    /// Command line words before the skip list (`ktest`, filter, extras).
    pub base_cmdline: Vec<String>,
    /// Tests to skip from the first boot on.
    pub skip: BTreeSet<String>,
    /// Hard cap on boots, a second guard behind the skip-list growth rule.
    pub max_boots: usize,
    /// Hide kernel log lines (results are always shown).
    pub quiet: bool,
}

/// Everything one suite run produced.
#[derive(Clone, Debug, Default)]
pub struct SuiteResult {
    pub records: Vec<TestRecord>,
    /// Problems not attributable to a single test (crash outside a test,
    /// missing summary, zero tests, ...). Each one fails the run.
    pub errors: Vec<String>,
    pub boots: usize,
}

impl SuiteResult {
    pub fn passed(&self) -> usize {
        self.records.iter().filter(|r| r.outcome == Outcome::Passed).count()
    }
    pub fn failed(&self) -> impl Iterator<Item = &TestRecord> {
        self.records.iter().filter(|r| r.outcome != Outcome::Passed)
    }
}

/// The kernel command line for one boot: the user's skip list, and after a
/// crash the test to resume after.
pub fn cmdline(base: &[String], skip: &BTreeSet<String>, after: Option<&str>) -> String {
    let mut words: Vec<String> = base.iter().filter(|w| !w.is_empty()).cloned().collect();
    if !skip.is_empty() {
        let list: Vec<&str> = skip.iter().map(String::as_str).collect();
        words.push(format!("ktest.skip={}", list.join(",")));
    }
    if let Some(after) = after {
        words.push(format!("ktest.after={after}"));
    }
    words.join(" ")
}

/// Per-boot bookkeeping fed by serial events.
#[derive(Default)]
struct BootState {
    in_progress: Option<String>,
    summary: Option<(u64, u64)>,
    panic: Option<String>,
    results_this_boot: u64,
    /// Index in `records` of a test that just FAILED, waiting for the
    /// kernel's indented failure message on the next line.
    awaiting_message: Option<usize>,
}

/// What to do after a boot.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The run finished normally.
    Done,
    /// Test crashed or timed out: record it and boot again.
    Restart { name: String, reason: String },
    /// Stop with an error not attributable to a test.
    Stop(String),
}

fn decide(end: &BootEnd, st: &BootState) -> Decision {
    let panic = st.panic.as_deref().map(|p| format!(": {p}")).unwrap_or_default();
    if let Some(name) = &st.in_progress {
        let reason = match end {
            BootEnd::TestTimeout(d) => format!("timeout after {} s", d.as_secs()),
            BootEnd::Stalled(d) => format!("stalled for {} s", d.as_secs()),
            BootEnd::Exited(k) => format!("crashed: {}{panic}", k.short()),
            BootEnd::LaunchError(e) => format!("QEMU error: {e}"),
        };
        return Decision::Restart { name: name.clone(), reason };
    }
    match (end, st.summary) {
        (BootEnd::Exited(KernelExit::Success), Some((_, 0))) => Decision::Done,
        (BootEnd::Exited(KernelExit::Failure), Some((_, f))) if f > 0 => Decision::Done,
        (BootEnd::Exited(KernelExit::Success), Some((_, f))) => {
            Decision::Stop(format!("kernel summary says {f} failed but it exited with success"))
        }
        (BootEnd::Exited(k), Some(_)) => {
            Decision::Stop(format!("kernel printed its summary, then: {}{panic}", k.describe()))
        }
        (BootEnd::Exited(KernelExit::Success), None) => Decision::Stop(
            "kernel exited with success but printed no `ktest:` summary \
             (does it understand the `ktest` command line?)"
                .into(),
        ),
        (BootEnd::Exited(k), None) => {
            Decision::Stop(format!("boot ended with no test in progress: {}{panic}", k.describe()))
        }
        (BootEnd::TestTimeout(d) | BootEnd::Stalled(d), _) => Decision::Stop(format!(
            "no test progress for {} s with no test in progress; QEMU killed",
            d.as_secs()
        )),
        (BootEnd::LaunchError(e), _) => Decision::Stop(e.clone()),
    }
}

/// Run the suite to completion, restarting after crashes. `out` receives
/// every line meant for the user (results, kernel logs, restart notes).
pub fn run_suite(
    booter: &mut dyn Booter,
    opts: &SuiteOptions,
    out: &mut dyn FnMut(&str),
) -> SuiteResult {
    let mut res = SuiteResult::default();
    let mut skip = opts.skip.clone();
    let mut resume_after: Option<String> = None;
    loop {
        if res.boots >= opts.max_boots.max(1) {
            res.errors.push(format!("gave up after {} boots (restart loop?)", res.boots));
            break;
        }
        res.boots += 1;
        let line = cmdline(&opts.base_cmdline, &opts.skip, resume_after.as_deref());
        if res.boots > 1 {
            out(&format!("ktest: boot #{}: {line}", res.boots));
        }
        let mut st = BootState::default();
        let skipped_before = skip.clone();
        let end = booter.boot(&line, &mut |ev| {
            on_event(ev, &mut st, &mut res, &skipped_before, opts.quiet, out)
        });
        match decide(&end, &st) {
            Decision::Done => {
                if let Some((p, f)) = st.summary
                    && p + f != st.results_this_boot
                {
                    out(&format!(
                        "ktest: warning: kernel summary counts {} tests but {} results were printed",
                        p + f,
                        st.results_this_boot
                    ));
                }
                break;
            }
            Decision::Stop(msg) => {
                out(&format!("ktest: error: {msg}"));
                res.errors.push(msg);
                break;
            }
            Decision::Restart { name, reason } => {
                if skipped_before.contains(&name) {
                    let msg = format!(
                        "kernel crashed in {name} although it already ran or was skipped; not restarting again"
                    );
                    out(&format!("ktest: error: {msg}"));
                    res.errors.push(msg);
                    break;
                }
                out(&format!("test {name} ... FAILED ({reason})"));
                res.records.push(TestRecord {
                    name: name.clone(),
                    outcome: Outcome::Failed(reason),
                    micros: None,
                });
                skip.extend(res.records.iter().map(|r| r.name.clone()));
                out(&format!(
                    "ktest: restarting the kernel after {name} ({} test(s) already run)",
                    res.records.len()
                ));
                resume_after = Some(name);
            }
        }
    }
    // Only when nothing else already explains the empty run.
    if res.records.is_empty() && res.errors.is_empty() {
        res.errors.push("zero kernel tests ran".into());
    }
    res
}

fn on_event(
    ev: &Event,
    st: &mut BootState,
    res: &mut SuiteResult,
    skipped: &BTreeSet<String>,
    quiet: bool,
    out: &mut dyn FnMut(&str),
) {
    let awaiting = st.awaiting_message.take();
    match ev {
        Event::Started(name) => st.in_progress = Some(name.clone()),
        Event::Result { name, verdict, micros } => {
            st.in_progress = None;
            st.results_this_boot += 1;
            let time = micros.map(|m| format!(" ({m} us)")).unwrap_or_default();
            let word = match verdict {
                Verdict::Ok => "ok",
                Verdict::Failed => "FAILED",
            };
            out(&format!("test {name} ... {word}{time}"));
            if skipped.contains(name) || res.records.iter().any(|r| &r.name == name) {
                let msg = format!("kernel reported {name} twice (ktest.skip/ktest.after ignored?)");
                out(&format!("ktest: error: {msg}"));
                res.errors.push(msg);
                return;
            }
            if *verdict == Verdict::Failed {
                st.awaiting_message = Some(res.records.len());
            }
            res.records.push(TestRecord {
                name: name.clone(),
                outcome: match verdict {
                    Verdict::Ok => Outcome::Passed,
                    Verdict::Failed => Outcome::Failed("failed".into()),
                },
                micros: *micros,
            });
        }
        Event::Summary { passed, failed } => {
            st.summary = Some((*passed, *failed));
            out(&format!("ktest: {passed} passed, {failed} failed (this boot)"));
        }
        Event::Log(line) => {
            // The kernel prints `    <message> at <file:line>` right after
            // FAILED; timestamped lines are other CPUs' logs.
            if let Some(i) = awaiting {
                if line.starts_with('[') || line.trim().is_empty() {
                    st.awaiting_message = Some(i);
                } else {
                    res.records[i].outcome = Outcome::Failed(format!("failed: {}", line.trim()));
                }
            }
            // The kernel's fatal reports: `panic: ...` and `EXCEPTION: ...`.
            let is_fatal = line.to_ascii_lowercase().contains("panic")
                || line.trim_start().starts_with("EXCEPTION:");
            if st.panic.is_none() && is_fatal {
                st.panic = Some(line.trim().to_string());
            }
            // Panic text is always shown: it is the one log line that matters.
            if !quiet || st.panic.as_deref() == Some(line.trim()) {
                out(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::Parser;

    /// Replays canned transcripts, one per boot, and records command lines.
    struct Fake {
        boots: Vec<(&'static str, BootEnd)>,
        cmdlines: Vec<String>,
    }

    impl Booter for Fake {
        fn boot(&mut self, cmdline: &str, on_event: &mut dyn FnMut(&Event)) -> BootEnd {
            self.cmdlines.push(cmdline.to_string());
            let (text, end) = self.boots.remove(0);
            let mut p = Parser::new();
            for ev in p.feed(text).into_iter().chain(p.finish()) {
                on_event(&ev);
            }
            end
        }
    }

    fn run(boots: Vec<(&'static str, BootEnd)>) -> (SuiteResult, Vec<String>, Vec<String>) {
        let mut fake = Fake { boots, cmdlines: vec![] };
        let opts = SuiteOptions {
            base_cmdline: vec!["ktest".into()],
            max_boots: 20,
            ..Default::default()
        };
        let mut lines = vec![];
        let res = run_suite(&mut fake, &opts, &mut |l| lines.push(l.to_string()));
        (res, fake.cmdlines, lines)
    }

    const OK: BootEnd = BootEnd::Exited(KernelExit::Success);
    const FAIL: BootEnd = BootEnd::Exited(KernelExit::Failure);
    const RESET: BootEnd = BootEnd::Exited(KernelExit::Reset);

    #[test]
    fn clean_run() {
        let (res, cmds, lines) = run(vec![(
            "[0.1] boot\ntest a::x ... ok (3 us)\ntest a::y ... ok (4 us)\nktest: 2 passed, 0 failed\n",
            OK,
        )]);
        assert_eq!(cmds, vec!["ktest"]);
        assert_eq!(res.passed(), 2);
        assert!(res.errors.is_empty());
        assert!(lines.contains(&"test a::y ... ok (4 us)".to_string()));
    }

    #[test]
    fn failures_with_normal_exit() {
        let (res, cmds, _) = run(vec![(
            "test a::x ... FAILED (3 us)\n[0.1] cpu1 log\n    x == 1 failed: 2 != 1 at kernel/src/a.rs:4:9\n\
             test a::y ... ok (1 us)\nktest: 1 passed, 1 failed\n",
            FAIL,
        )]);
        assert_eq!(cmds.len(), 1);
        assert_eq!(res.passed(), 1);
        let f = res.failed().next().unwrap();
        assert_eq!(f.name, "a::x");
        assert_eq!(
            f.outcome,
            Outcome::Failed("failed: x == 1 failed: 2 != 1 at kernel/src/a.rs:4:9".into())
        );
        assert!(res.errors.is_empty());
    }

    #[test]
    fn panic_restarts_with_skip_list() {
        let (res, cmds, _) = run(vec![
            ("test a::x ... ok (3 us)\ntest a::boom ... \npanicked at src/a.rs:3:5: boom\n", FAIL),
            ("test b::tf ... ", RESET),
            ("test c::z ... ok (2 us)\nktest: 1 passed, 0 failed\n", OK),
        ]);
        assert_eq!(cmds, vec!["ktest", "ktest ktest.after=a::boom", "ktest ktest.after=b::tf",]);
        assert!(res.errors.is_empty(), "{:?}", res.errors);
        assert_eq!(res.passed(), 2);
        let failed: Vec<_> = res.failed().collect();
        assert_eq!(failed.len(), 2);
        match &failed[0].outcome {
            Outcome::Failed(r) => assert!(r.contains("crashed") && r.contains("boom"), "{r}"),
            o => panic!("{o:?}"),
        }
        match &failed[1].outcome {
            Outcome::Failed(r) => assert_eq!(r, "crashed: triple fault (status 0)"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn exception_report_is_the_crash_reason() {
        let (res, cmds, _) = run(vec![
            ("test a::pf ... \nEXCEPTION: page fault (vector 14) error=0x2\n  rip=0x1\n", FAIL),
            ("test a::next ... ok (1 us)\nktest: 1 passed, 0 failed\n", OK),
        ]);
        assert_eq!(cmds[1], "ktest ktest.after=a::pf");
        match &res.failed().next().unwrap().outcome {
            Outcome::Failed(r) => assert!(r.contains("EXCEPTION: page fault"), "{r}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn timeout_marks_test_and_restarts() {
        let (res, cmds, _) = run(vec![
            ("test a::hang ... ", BootEnd::TestTimeout(Duration::from_secs(60))),
            ("test a::next ... ok (1 us)\nktest: 1 passed, 0 failed\n", OK),
        ]);
        assert_eq!(cmds[1], "ktest ktest.after=a::hang");
        assert_eq!(
            res.failed().next().unwrap().outcome,
            Outcome::Failed("timeout after 60 s".into())
        );
        assert!(res.errors.is_empty());
    }

    #[test]
    fn crash_outside_test_stops() {
        let (res, cmds, _) = run(vec![("test a::x ... ok (1 us)\n[0.2] page fault\n", RESET)]);
        assert_eq!(cmds.len(), 1);
        assert_eq!(res.errors.len(), 1);
        assert!(res.errors[0].contains("no test in progress"));
    }

    #[test]
    fn kernel_ignoring_skip_does_not_loop() {
        // The kernel keeps crashing in the same test despite ktest.after.
        let crash = || ("test a::boom ... \npanic\n", FAIL);
        let (res, cmds, _) = run(vec![crash(), crash(), crash()]);
        assert_eq!(cmds.len(), 2);
        assert!(!res.errors.is_empty());
    }

    #[test]
    fn zero_tests_is_an_error() {
        let (res, _, _) = run(vec![("ktest: 0 passed, 0 failed\n", OK)]);
        assert_eq!(res.errors, vec!["zero kernel tests ran"]);
        let (res, _, _) = run(vec![("hello\n", OK)]);
        assert!(res.errors[0].contains("no `ktest:` summary"));
    }

    #[test]
    fn inconsistent_exit_is_an_error() {
        let (res, _, _) =
            run(vec![("test a::x ... FAILED (1 us)\nktest: 0 passed, 1 failed\n", OK)]);
        assert_eq!(res.errors.len(), 1);
        let (res, _, _) = run(vec![(
            "test a::x ... ok (1 us)\nktest: 1 passed, 0 failed\npanic in shutdown\n",
            FAIL,
        )]);
        assert!(res.errors[0].contains("panic in shutdown"), "{:?}", res.errors);
    }

    #[test]
    fn cmdline_building() {
        let base = vec!["ktest".to_string(), "ktest.filter=virtio".to_string()];
        let skip: BTreeSet<String> = ["b::y".to_string(), "a::x".to_string()].into();
        assert_eq!(cmdline(&base, &skip, None), "ktest ktest.filter=virtio ktest.skip=a::x,b::y");
        assert_eq!(
            cmdline(&base, &BTreeSet::new(), Some("c::z")),
            "ktest ktest.filter=virtio ktest.after=c::z"
        );
    }
}
