//! How busy the rest of the host is: waiting for it to be quiet before a
//! round, and measuring the CPU time other processes took during each run.
//!
//! `/proc/stat` says how much CPU time the whole machine spent busy;
//! `/proc/self/stat` says how much this runner and the children it waited
//! for (QEMU, the peer's script, cargo) spent. The difference is everybody
//! else: other builds, other QEMUs, the page cache flusher. Divided by the
//! wall time it is "cores other processes kept busy", the unit of every
//! threshold here.
//!
//! Thresholds, for this 2-core machine where a TCG guest with 2 vCPUs (two
//! host threads plus QEMU's I/O thread) wants both cores to itself:
//! - [`QUIET_CORES`] 0.15: with nothing else running, runs here measure
//!   0.00–0.1 (kernel threads, the session's own machinery); a build or
//!   another QEMU shows as half a core to two.
//! - [`DISTURBED_CORES`] 0.3: what others take comes straight out of the
//!   guest's time. Seen on 2026-12-02: vireo's 4 KiB QD32 reads made 74.5k
//!   IOPS while others held 0.43 cores and 119k a minute later at 0.00. The
//!   rule looks at the worst run of a group-round, not the average: a ratio
//!   goes wrong when one side was slowed and the other was not.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Other processes below this many cores: the host is quiet.
pub const QUIET_CORES: f64 = 0.15;

/// A run during which other processes averaged this many cores or more
/// disturbs its group-round, which is then redone once.
pub const DISTURBED_CORES: f64 = 0.3;

/// Longest wait for a quiet host before a round; after it the round runs
/// anyway and its disturbance is measured as usual.
pub const QUIET_WAIT_MAX: Duration = Duration::from_secs(20);

/// One quiet-host sample.
const QUIET_SAMPLE: Duration = Duration::from_secs(1);

/// Clock ticks per second of `/proc/stat` and `/proc/<pid>/stat` (USER_HZ,
/// fixed at 100 by the kernel ABI on x86).
const USER_HZ: f64 = 100.0;

/// CPU time counters at one instant, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Busy time of all CPUs together (`/proc/stat`'s `cpu` line).
    pub machine_busy: u64,
    /// This process and its waited-for children (`/proc/self/stat`).
    pub own: u64,
}

impl CpuTimes {
    /// The counters now; `None` where `/proc` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(Self { machine_busy: machine_busy_ticks(&stat)?, own: own_ticks(&own)? })
    }

    /// Cores other processes kept busy, on average, from `self` to `later`
    /// over `wall`.
    pub fn others_cores(self, later: Self, wall: Duration) -> f64 {
        let machine = later.machine_busy.saturating_sub(self.machine_busy);
        let own = later.own.saturating_sub(self.own);
        // Tick rounding can make own time exceed the machine's by a tick.
        let others = machine.saturating_sub(own) as f64 / USER_HZ;
        others / wall.as_secs_f64().max(0.001)
    }
}

/// Busy ticks of the first (`cpu`, all CPUs) line of `/proc/stat`: user,
/// nice, system, irq, softirq and steal; idle and iowait are not busy, and
/// guest time is already inside user and nice.
pub fn machine_busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().next()?;
    let mut words = line.split_whitespace();
    if words.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = words.map(|w| w.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal ...
    (v.len() >= 4).then(|| at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// utime + stime + cutime + cstime of a `/proc/<pid>/stat` line: fields 14
/// to 17, counted after the `(comm)` field, which may contain spaces.
pub fn own_ticks(pid_stat: &str) -> Option<u64> {
    let after_comm = &pid_stat[pid_stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so field k is fields[k - 3].
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

/// CPU time others used over one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Cores other processes kept busy on average (`None`: no /proc).
    pub others_cores: Option<f64>,
}

/// Measures `work` and the CPU time others used meanwhile.
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Load) {
    let before = CpuTimes::now();
    let start = Instant::now();
    let result = work();
    let wall = start.elapsed();
    let others_cores = before.zip(CpuTimes::now()).map(|(b, a)| b.others_cores(a, wall));
    (result, Load { wall_s: wall.as_secs_f64(), others_cores })
}

/// How the wait for a quiet host went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuietWait {
    /// Seconds spent waiting.
    pub waited_s: f64,
    /// Others' cores in the last sample.
    pub last_others_cores: Option<f64>,
    /// Whether the host was quiet when the round started.
    pub quiet: bool,
}

/// Samples the host each second until other processes use less than
/// [`QUIET_CORES`] or `max` has passed.
pub fn wait_for_quiet(max: Duration) -> QuietWait {
    let start = Instant::now();
    loop {
        let (_, load) = measure(|| std::thread::sleep(QUIET_SAMPLE));
        let quiet = load.others_cores.is_none_or(|c| c < QUIET_CORES);
        if quiet || start.elapsed() + QUIET_SAMPLE > max {
            return QuietWait {
                waited_s: start.elapsed().as_secs_f64(),
                last_others_cores: load.others_cores,
                quiet,
            };
        }
    }
}

/// The worst run's disturbance in a group-round (0 when nothing measured).
pub fn worst_cores(loads: &[Load]) -> f64 {
    loads.iter().filter_map(|l| l.others_cores).fold(0.0, f64::max)
}

/// True when some run of a group-round was disturbed.
pub fn is_disturbed(loads: &[Load]) -> bool {
    worst_cores(loads) >= DISTURBED_CORES
}

/// Which attempt of a redone group-round the summary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    First,
    Redo,
}

/// The redo, unless it was disturbed worse than the first attempt: a redo
/// exists to get a cleaner round, and a worse one is not cleaner.
pub fn keep_after_redo(first: &[Load], redo: &[Load]) -> Keep {
    if worst_cores(redo) <= worst_cores(first) { Keep::Redo } else { Keep::First }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_busy_time() {
        let stat = "cpu  100 5 50 9000 40 3 2 7 11 0\ncpu0 50 2 25 4500 20 1 1 3 0 0\nintr 1\n";
        assert_eq!(machine_busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2 + 7));
        // Old kernels print fewer columns.
        assert_eq!(machine_busy_ticks("cpu 1 2 3 4\n"), Some(6));
        assert_eq!(machine_busy_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(machine_busy_ticks("cpu 1 x 3 4\n"), None);
        assert_eq!(machine_busy_ticks(""), None);
    }

    #[test]
    fn reads_own_and_children_time_past_a_tricky_comm() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime ...
        let stat = "4242 (x (task) ) S 1 4242 4242 0 -1 4194560 10 20 0 0 \
                    30 7 1200 300 20 0 4 0 123 456";
        assert_eq!(own_ticks(stat), Some(30 + 7 + 1200 + 300));
        assert_eq!(own_ticks("4242 (short) S 1 2"), None);
        assert!(own_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap()).is_some());
    }

    #[test]
    fn others_is_machine_minus_own_per_second() {
        let before = CpuTimes { machine_busy: 1000, own: 400 };
        // Over 2 s the machine was busy 3.0 CPU-s, this runner 2.0 CPU-s.
        let after = CpuTimes { machine_busy: 1300, own: 600 };
        let cores = before.others_cores(after, Duration::from_secs(2));
        assert!((cores - 0.5).abs() < 1e-9, "{cores}");
        // Own time a tick ahead of the machine's is not negative load.
        let after = CpuTimes { machine_busy: 1100, own: 501 };
        assert_eq!(before.others_cores(after, Duration::from_secs(1)), 0.0);
    }

    fn load(cores: f64) -> Load {
        Load { wall_s: 10.0, others_cores: Some(cores) }
    }

    #[test]
    fn one_disturbed_run_disturbs_the_round() {
        assert!(!is_disturbed(&[load(0.1), load(0.2), load(0.29)]));
        assert!(is_disturbed(&[load(0.1), load(0.3), load(0.0)]));
        assert!(is_disturbed(&[load(1.2)]));
        assert!(!is_disturbed(&[]));
        assert!(!is_disturbed(&[Load { wall_s: 1.0, others_cores: None }]));
        assert_eq!(worst_cores(&[load(0.2), load(0.7), load(0.4)]), 0.7);
    }

    #[test]
    fn redo_is_kept_unless_it_was_worse() {
        assert_eq!(keep_after_redo(&[load(0.9)], &[load(0.1)]), Keep::Redo);
        assert_eq!(keep_after_redo(&[load(0.9)], &[load(0.9)]), Keep::Redo);
        assert_eq!(keep_after_redo(&[load(0.6)], &[load(0.1), load(1.4)]), Keep::First);
    }

    #[test]
    fn measure_counts_wall_time() {
        let ((), load) = measure(|| std::thread::sleep(Duration::from_millis(30)));
        assert!(load.wall_s >= 0.03, "{load:?}");
        assert!(load.others_cores.is_some_and(|c| c >= 0.0));
    }
}
