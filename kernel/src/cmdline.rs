//! Kernel command-line options.
//!
//! Options are whitespace-separated `key` or `key=value` words. Unknown keys
//! and bad values are collected as problems to report once logging is up;
//! they never stop the boot.

/// What this boot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The interactive shell (default).
    Shell,
    /// Run in-kernel tests and exit.
    Test,
    /// Run in-kernel benchmarks and exit.
    Bench,
    /// Panic on purpose while every other CPU logs (`selftest=panic`): the
    /// runner checks that the report comes out once and whole.
    PanicSelfTest,
    /// `blkcheck=<name>`: one disk workload judged from outside the guest
    /// (kernel/src/checks, xtask/src/blk_checks); the runner prepared the
    /// drive it needs.
    BlkCheck(BlkCheck),
}

/// The outside blk checks' kernel workloads (`blkcheck=<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkCheck {
    /// Verify the runner's stamped image, then write patterns over it.
    HostImage,
    /// Write, flush, announce the flush; the runner kills QEMU then.
    FlushDurable,
    /// Reads, writes and flushes the runner's blkdebug rules fail.
    Eio,
    /// A read-only drive: writes refused, reads served.
    ReadOnly,
    /// Requests against a drive the runner throttles to a halt.
    Stall,
    /// A capacity the runner changes with QMP `block_resize`.
    Resize,
    /// A drive with 4096-byte logical blocks: unaligned I/O refused.
    FourK,
}

impl BlkCheck {
    /// Every workload with its command-line name.
    pub const ALL: [(&'static str, Self); 7] = [
        ("host-image", Self::HostImage),
        ("flush-durable", Self::FlushDurable),
        ("eio", Self::Eio),
        ("readonly", Self::ReadOnly),
        ("stall", Self::Stall),
        ("resize", Self::Resize),
        ("4k", Self::FourK),
    ];

    /// The name on the command line and in the check's output.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, check)| *check == self).map_or("?", |(name, _)| name)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(known, _)| *known == name).map(|(_, check)| *check)
    }
}

/// Something wrong on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem<'a> {
    /// A key vireo does not know.
    UnknownOption(&'a str),
    /// A known key with a value it cannot take.
    BadValue {
        /// The option.
        key: &'a str,
        /// What was given.
        value: &'a str,
    },
}

/// `bench=<group,group,...>`: which benchmark groups a `bench` boot runs, so
/// the runner can boot once per group and interleave each with the Linux
/// peer's run of the same workloads. Plain `bench` runs them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchGroups {
    /// `sched`: context switch, IPI round trip, cross-CPU wake-up.
    pub sched: bool,
    /// `blk`: the four virtio-blk workloads.
    pub blk: bool,
    /// `gpu`: full-frame and 64x64-damage frames.
    pub gpu: bool,
}

impl BenchGroups {
    /// Every group (plain `bench`).
    pub const ALL: Self = Self { sched: true, blk: true, gpu: true };

    /// Parses a comma-separated list of group names; `None` when it names
    /// an unknown group or none at all.
    fn parse(list: &str) -> Option<Self> {
        let mut groups = Self { sched: false, blk: false, gpu: false };
        for name in list.split(',') {
            match name {
                "sched" => groups.sched = true,
                "blk" => groups.blk = true,
                "gpu" => groups.gpu = true,
                _ => return None,
            }
        }
        Some(groups)
    }
}

/// Longest `bench.secs=` accepted: a typo must not keep a boot busy for hours.
const MAX_BENCH_SECS: u32 = 600;

/// Longest `blk.timeout_ms=` accepted (10 minutes).
const MAX_BLK_TIMEOUT_MS: u64 = 600_000;

/// Problems kept for reporting; more are counted.
const MAX_PROBLEMS: usize = 8;

/// Parsed options; string values borrow the command line.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// `log=<level>`.
    pub log_level: log::LevelFilter,
    /// `ktest` / `bench`.
    pub mode: Mode,
    /// `ktest.filter=<substring>[,<substring>...]`.
    pub test_filter: Option<&'a str>,
    /// `ktest.skip=<name,name,...>`.
    pub test_skip: Option<&'a str>,
    /// `ktest.after=<name>`: resume after this test (used after a crash).
    pub test_after: Option<&'a str>,
    /// `bench=<groups>`: the groups a `bench` boot runs (all by default).
    pub bench_groups: BenchGroups,
    /// `bench.secs=<n>`: seconds each timed workload runs (1 by default),
    /// like the Linux peer's `bench_secs`.
    pub bench_secs: u32,
    /// `mm.canary`: fill every freed frame with a canary and check it
    /// (`mm::canary`); for hostile-device runs.
    pub canaries: bool,
    /// `blkcheck.seed=<n>`: the seed the runner derived the image's
    /// expected content from.
    pub blkcheck_seed: u64,
    /// `blk.timeout_ms=<n>`: the deadline of each virtio-blk request
    /// (1 ms – 10 min; the driver's default without it).
    pub blk_timeout_ms: Option<u64>,
    problems: [Option<Problem<'a>>; MAX_PROBLEMS],
    /// Problems beyond the ones kept.
    pub extra_problems: usize,
}

impl<'a> Options<'a> {
    /// Parses a command line; never fails.
    pub fn parse(cmdline: &'a str) -> Self {
        let mut options = Options {
            log_level: log::LevelFilter::Info,
            mode: Mode::Shell,
            test_filter: None,
            test_skip: None,
            test_after: None,
            bench_groups: BenchGroups::ALL,
            bench_secs: 1,
            canaries: false,
            blkcheck_seed: 1,
            blk_timeout_ms: None,
            problems: [None; MAX_PROBLEMS],
            extra_problems: 0,
        };
        for word in cmdline.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word, None),
            };
            match (key, value) {
                ("log", Some(level)) => match level.parse() {
                    Ok(level) => options.log_level = level,
                    Err(_) => options.report(Problem::BadValue { key, value: level }),
                },
                ("ktest", None) => options.mode = Mode::Test,
                ("bench", None) => options.mode = Mode::Bench,
                ("bench", Some(list)) => match BenchGroups::parse(list) {
                    Some(groups) => {
                        options.mode = Mode::Bench;
                        options.bench_groups = groups;
                    }
                    None => options.report(Problem::BadValue { key, value: list }),
                },
                ("bench.secs", Some(secs)) => match secs.parse() {
                    Ok(secs @ 1..=MAX_BENCH_SECS) => options.bench_secs = secs,
                    _ => options.report(Problem::BadValue { key, value: secs }),
                },
                ("blkcheck", Some(name)) => match BlkCheck::parse(name) {
                    Some(check) => options.mode = Mode::BlkCheck(check),
                    None => options.report(Problem::BadValue { key, value: name }),
                },
                ("blkcheck.seed", Some(seed)) => match seed.parse() {
                    Ok(seed) => options.blkcheck_seed = seed,
                    Err(_) => options.report(Problem::BadValue { key, value: seed }),
                },
                ("blk.timeout_ms", Some(ms)) => match ms.parse() {
                    Ok(ms @ 1..=MAX_BLK_TIMEOUT_MS) => options.blk_timeout_ms = Some(ms),
                    _ => options.report(Problem::BadValue { key, value: ms }),
                },
                ("selftest", Some("panic")) => options.mode = Mode::PanicSelfTest,
                ("ktest.filter", Some(filter)) => options.test_filter = Some(filter),
                ("ktest.skip", Some(skip)) => options.test_skip = Some(skip),
                ("ktest.after", Some(after)) => options.test_after = Some(after),
                ("mm.canary", None) => options.canaries = true,
                // The platform layer reads these itself (`platform::virtio_mmio`).
                (crate::platform::virtio_mmio::CMDLINE_KEY, Some(_)) => {}
                _ => options.report(Problem::UnknownOption(word)),
            }
        }
        options
    }

    fn report(&mut self, problem: Problem<'a>) {
        match self.problems.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(problem),
            None => self.extra_problems += 1,
        }
    }

    /// The problems found, in command-line order.
    pub fn problems(&self) -> impl Iterator<Item = Problem<'a>> + '_ {
        self.problems.iter().flatten().copied()
    }
}

mod tests {
    use super::*;
    use crate::{check, check_eq, ktest};

    ktest!(
        fn empty_cmdline_gives_defaults() {
            let options = Options::parse("");
            check_eq!(options.mode, Mode::Shell);
            check_eq!(options.log_level, log::LevelFilter::Info);
            check_eq!(options.problems().count(), 0);
            Ok(())
        }
    );

    ktest!(
        fn known_options_parse() {
            let options = Options::parse(
                "  log=debug ktest ktest.skip=a::b,c::d ktest.filter=mm ktest.after=x::y",
            );
            check_eq!(options.mode, Mode::Test);
            check_eq!(options.log_level, log::LevelFilter::Debug);
            check_eq!(options.test_skip, Some("a::b,c::d"));
            check_eq!(options.test_filter, Some("mm"));
            check_eq!(options.test_after, Some("x::y"));
            check_eq!(options.problems().count(), 0);
            Ok(())
        }
    );

    ktest!(
        fn unknown_and_bad_options_are_reported_and_ignored() {
            check_eq!(Options::parse("selftest=panic").mode, Mode::PanicSelfTest);
            let options = Options::parse("frobnicate=1 log=loud bench quiet");
            check_eq!(options.mode, Mode::Bench);
            check_eq!(options.log_level, log::LevelFilter::Info);
            let problems: alloc::vec::Vec<_> = options.problems().collect();
            check_eq!(problems.len(), 3);
            check_eq!(problems[0], Problem::UnknownOption("frobnicate=1"));
            check_eq!(problems[1], Problem::BadValue { key: "log", value: "loud" });
            check_eq!(problems[2], Problem::UnknownOption("quiet"));
            Ok(())
        }
    );

    ktest!(
        fn bench_groups_and_duration_parse() {
            let options = Options::parse("bench");
            check_eq!(options.mode, Mode::Bench);
            check_eq!(options.bench_groups, BenchGroups::ALL);
            check_eq!(options.bench_secs, 1);
            let options = Options::parse("bench=gpu,blk bench.secs=3");
            check_eq!(options.mode, Mode::Bench);
            check_eq!(options.bench_groups, BenchGroups { sched: false, blk: true, gpu: true });
            check_eq!(options.bench_secs, 3);
            check_eq!(options.problems().count(), 0);
            Ok(())
        }
    );

    ktest!(
        fn bad_bench_values_are_reported_and_ignored() {
            let options = Options::parse("bench=blk,disk bench= bench.secs=0 bench.secs=9999");
            check_eq!(options.mode, Mode::Shell);
            check_eq!(options.bench_groups, BenchGroups::ALL);
            check_eq!(options.bench_secs, 1);
            let problems: alloc::vec::Vec<_> = options.problems().collect();
            check_eq!(problems.len(), 4);
            check_eq!(problems[0], Problem::BadValue { key: "bench", value: "blk,disk" });
            check_eq!(problems[1], Problem::BadValue { key: "bench", value: "" });
            check_eq!(problems[3], Problem::BadValue { key: "bench.secs", value: "9999" });
            let options = Options::parse("blk.timeout_ms=250 blk.timeout_ms=0");
            check_eq!(options.blk_timeout_ms, Some(250));
            check_eq!(options.problems().count(), 1);
            Ok(())
        }
    );

    ktest!(
        fn blk_checks_parse_and_bad_names_are_reported() {
            let options = Options::parse("blkcheck=host-image blkcheck.seed=77");
            check_eq!(options.mode, Mode::BlkCheck(BlkCheck::HostImage));
            check_eq!(options.blkcheck_seed, 77);
            check_eq!(options.problems().count(), 0);
            for (name, check) in BlkCheck::ALL {
                check_eq!(Options::parse(name).mode, Mode::Shell);
                let word = alloc::format!("blkcheck={name}");
                check_eq!(Options::parse(&word).mode, Mode::BlkCheck(check));
                check_eq!(check.name(), name);
            }
            let options = Options::parse("blkcheck=disk blkcheck.seed=x");
            check_eq!(options.mode, Mode::Shell);
            let problems: alloc::vec::Vec<_> = options.problems().collect();
            check_eq!(problems[0], Problem::BadValue { key: "blkcheck", value: "disk" });
            check_eq!(problems[1], Problem::BadValue { key: "blkcheck.seed", value: "x" });
            Ok(())
        }
    );

    ktest!(
        fn problem_overflow_is_counted() {
            let options = Options::parse("a b c d e f g h i j");
            check_eq!(options.problems().count(), 8);
            check_eq!(options.extra_problems, 2);
            check!(options.problems().all(|p| matches!(p, Problem::UnknownOption(_))));
            Ok(())
        }
    );
}
