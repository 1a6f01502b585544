//! In-kernel benchmarks, run by the `bench` command-line mode (`make bench`).
//!
//! Each prints one machine-readable line:
//! `BENCH <name> samples=N median_ns=M p99_ns=P` (plus extra fields), so
//! `xtask bench` can collect them and README numbers can be reproduced.
//! `bench=blk` (or `gpu`, `sched`, or a comma list) runs one group per boot:
//! the runner boots vireo once per group and round, right beside the Linux
//! peer's run of the same workloads. `bench.secs=N` sets how long each timed
//! workload runs, as the peer's `bench_secs` does; what each does is fixed.

mod blk;
mod gpu;
mod sched;

use crate::cmdline::BenchGroups;
use crate::platform::time;

/// Summary statistics of latency samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Number of samples.
    pub samples: usize,
    /// Median.
    pub median_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Smallest sample.
    pub min_ns: u64,
}

impl Stats {
    /// Median and 99th percentile of TSC-tick samples in microseconds
    /// (zeros when there are none).
    pub fn percentiles_us(samples: &mut [u64]) -> (u64, u64) {
        Self::from_ticks(samples).map_or((0, 0), |s| (s.median_ns / 1000, s.p99_ns / 1000))
    }

    /// Statistics of TSC-tick samples (sorted in place).
    pub fn from_ticks(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |fraction_percent: usize| {
            let index = (samples.len() * fraction_percent / 100).min(samples.len() - 1);
            time::ticks_to_ns(samples[index])
        };
        Some(Self { samples: samples.len(), median_ns: at(50), p99_ns: at(99), min_ns: at(0) })
    }
}

/// Prints a `BENCH` line for `name`.
pub fn report(name: &str, samples: &mut [u64]) {
    match Stats::from_ticks(samples) {
        Some(stats) => crate::kprintln!(
            "BENCH {} samples={} median_ns={} p99_ns={} min_ns={}",
            name,
            stats.samples,
            stats.median_ns,
            stats.p99_ns,
            stats.min_ns
        ),
        None => crate::kprintln!("BENCH {} skipped (no samples)", name),
    }
}

/// Runs the benchmarks of `groups`, each timed workload for `secs` seconds,
/// then prints the per-CPU counters (the runner keeps them with the figures).
pub fn run(groups: BenchGroups, secs: u32) {
    crate::kprintln!(
        "bench: {} CPUs, TSC {} MHz, {} s per timed workload",
        crate::smp::online_cpus(),
        time::tsc_hz() / 1_000_000,
        secs
    );
    let run_us = u64::from(secs) * 1_000_000;
    if groups.sched {
        sched::context_switch();
        sched::ipi_round_trip();
        sched::cross_cpu_wakeup();
    }
    if groups.blk {
        blk::all(run_us);
    }
    if groups.gpu {
        gpu::all(run_us);
    }
    for cpu in crate::arch::percpu::all_cpus() {
        crate::kprintln!("bench: cpu{} {:?}", cpu.cpu_id, cpu.counters.snapshot());
    }
}

mod tests {
    use super::Stats;
    use crate::{check, check_eq, ktest};

    ktest!(
        fn stats_pick_median_and_p99() {
            let hz = crate::platform::time::tsc_hz();
            // 100 samples of 1..=100 microseconds, shuffled.
            let mut samples: alloc::vec::Vec<u64> =
                (1..=100u64).map(|us| (us * 37 % 101) * hz / 1_000_000).collect();
            let stats = check_ok_stats(&mut samples)?;
            check_eq!(stats.samples, 100);
            check!(stats.median_ns.abs_diff(51_000) < 2_000, "median {}", stats.median_ns);
            check!(stats.p99_ns.abs_diff(100_000) < 2_000, "p99 {}", stats.p99_ns);
            check!(Stats::from_ticks(&mut []).is_none());
            Ok(())
        }
    );

    fn check_ok_stats(samples: &mut [u64]) -> Result<Stats, crate::ktest::TestFailure> {
        Stats::from_ticks(samples).ok_or_else(|| crate::ktest::TestFailure::new("no stats".into()))
    }
}
