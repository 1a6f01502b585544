//! `xtask test`: host tests, extra host commands, then the in-kernel suite
//! once per configured vCPU count. Ends with exactly one line
//! `total: X passed, Y failed`; the exit code is non-zero iff Y > 0.
//!
//! Problems that are not a single failing test (build error, crash outside
//! a test, no kernel tests at all) are counted as failures too, so the total
//! line and the exit code never disagree.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;

use crate::cmds::{Ctx, join_cmdline};
use crate::host;
use crate::ktest::{self, Limits, Outcome, QemuBooter, SuiteOptions};
use crate::progress;
use crate::qemu::Accel;

// ======================================================================
// KERNEL SUITE CONFIGURATIONS: the in-kernel tests run once per entry
// (vCPU count) unless `--smp` is given: the standard 2 vCPUs, and 4 so that
// SMP code meets more CPUs than the host has cores.
// ======================================================================
pub const KTEST_SMP: &[u32] = &[2, 4];

/// Per-test wall-clock limit. TCG is slow; KVM gets less slack.
const PER_TEST_TCG_SECS: u64 = 60;
const PER_TEST_KVM_SECS: u64 = 30;
/// The panic self-test boots, logs for 20 ms and stops.
const PANIC_SELFTEST_SECS: u64 = 60;

#[derive(Args, Clone, Debug)]
pub struct TestArgs {
    /// vCPU counts (1 to 64) to run the kernel suite with; repeat for
    /// several runs (`--smp 2 --smp 4` or `--smp 2,4`). Default: KTEST_SMP
    /// in test_cmd.rs.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=crate::MAX_SMP))]
    pub smp: Vec<u32>,
    /// Only run kernel tests whose name contains this (`ktest.filter=`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip this kernel test (full name); repeatable.
    #[arg(long)]
    pub skip: Vec<String>,
    /// Extra kernel command line words.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Per-test time limit in seconds (default 60 under TCG, 30 under KVM).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub test_timeout: Option<u64>,
    /// Kill a boot that makes no test progress for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Hide kernel log lines (results and panics are still shown).
    #[arg(long, short)]
    pub quiet: bool,
    /// Skip host tests (cargo test and extra host commands).
    #[arg(long)]
    pub no_host: bool,
    /// Skip the in-kernel tests.
    #[arg(long)]
    pub no_kernel: bool,
    /// Run only these compatibility-matrix boots (names as in
    /// `check boot-<name>`, e.g. `--matrix microvm`; repeat or comma-separate),
    /// not the kernel suites.
    #[arg(long, value_delimiter = ',', value_name = "NAME", value_parser = matrix_name)]
    pub matrix: Vec<String>,
    /// Leave the compatibility matrix out.
    #[arg(long, conflicts_with = "matrix")]
    pub no_matrix: bool,
    /// Extra QEMU arguments (like --qemu-arg), e.g. `-- -d int`.
    #[arg(last = true, value_name = "QEMU_ARGS")]
    pub qemu_args: Vec<String>,
}

fn matrix_name(value: &str) -> Result<String, String> {
    if crate::matrix::MATRIX.iter().any(|boot| boot.name == value) {
        Ok(value.into())
    } else {
        let names: Vec<&str> = crate::matrix::MATRIX.iter().map(|boot| boot.name).collect();
        Err(format!("no such matrix boot; there are {}", names.join(", ")))
    }
}

/// Running tally across all phases.
#[derive(Default)]
pub struct Tally {
    pub passed: u64,
    /// One entry per failure, already formatted for the final list.
    pub failed: Vec<String>,
}

pub fn test(ctx: &Ctx, args: &TestArgs) -> i32 {
    let mut t = Tally::default();
    if !args.no_host {
        host_phase(ctx, &mut t);
    }
    if !args.no_kernel {
        kernel_phase(ctx, args, &mut t);
    }
    if !t.failed.is_empty() {
        println!("failed:");
        for f in &t.failed {
            println!("    {f}");
        }
    }
    println!("total: {} passed, {} failed", t.passed, t.failed.len());
    i32::from(!t.failed.is_empty())
}

fn host_phase(ctx: &Ctx, t: &mut Tally) {
    let started = Instant::now();
    let failed_before = t.failed.len();
    let run = host::cargo_test(&ctx.cargo, &ctx.root);
    t.passed += run.totals.passed;
    let named = run.totals.failed_names.len() as u64;
    t.failed.extend(run.totals.failed_names.iter().map(|n| format!("host: {n}")));
    // Failures whose names we could not parse still count.
    for _ in named..run.totals.failed {
        t.failed.push("host: (unnamed failing test)".into());
    }
    if let Some(e) = run.error {
        t.failed.push(format!("host: {e}"));
    }
    let (p, failed) = host::run_commands(host::HOST_TESTS, &ctx.root);
    t.passed += p;
    t.failed.extend(failed.into_iter().map(|n| format!("host: {n}")));
    crate::barrier_mutants::check(ctx, t);
    println!(
        "==> host phase: {} failure(s), {}",
        t.failed.len() - failed_before,
        progress::since(started)
    );
}

fn kernel_phase(ctx: &Ctx, args: &TestArgs, t: &mut Tally) {
    if let Err(e) = ctx.build_kernel() {
        t.failed.push(format!("kernel: {e}"));
        return;
    }
    record_selftest(t, "kernel_stack_frames_fit", crate::stack_frames::check(&ctx.kernel_path()));
    if !args.matrix.is_empty() {
        matrix_phase(ctx, &args.matrix, t);
        return;
    }
    let smps = if args.smp.is_empty() { KTEST_SMP.to_vec() } else { args.smp.clone() };
    let mut words = String::from("ktest");
    if let Some(f) = &args.filter {
        words.push_str(&format!(" ktest.filter={f}"));
    }
    let base = join_cmdline(&words, &args.append);
    for smp in smps {
        let label = format!("kernel smp={smp}");
        let q = match ctx.machine(smp, false) {
            Ok(q) => q,
            Err(e) => {
                t.failed.push(format!("{label}: {e}"));
                continue;
            }
        };
        let per_test = args.test_timeout.unwrap_or(match q.accel {
            Accel::Kvm => PER_TEST_KVM_SECS,
            Accel::Tcg => PER_TEST_TCG_SECS,
        });
        println!("==> in-kernel tests ({label}, {per_test} s per test)");
        let limits = Limits {
            per_test: Duration::from_secs(per_test),
            stall: Duration::from_secs(args.stall_timeout),
        };
        let started = Instant::now();
        let mut booter = QemuBooter::new(q, limits, ctx.target.clone());
        let opts = SuiteOptions {
            base_cmdline: vec![base.clone()],
            skip: args.skip.iter().cloned().collect::<BTreeSet<_>>(),
            // Restarts add a name each, so this only trips on a runaway.
            max_boots: 500,
            quiet: args.quiet,
        };
        let res = ktest::run_suite(&mut booter, &opts, &mut |l| println!("{l}"));
        println!(
            "==> {label}: {} passed, {} failed, {} boot(s) in {}; serial logs in {}/ktest-smp{smp}-boot*.log",
            res.passed(),
            res.failed().count(),
            res.boots,
            progress::since(started),
            ctx.target.display()
        );
        if let Some(first) = res.failed().next() {
            println!(
                "==> reproduce: cargo xtask run --smp {smp} --append \"ktest ktest.filter={}\"",
                first.name
            );
        }
        t.passed += res.passed() as u64;
        for r in res.failed() {
            if let Outcome::Failed(why) = &r.outcome {
                t.failed.push(format!("{label}: {} ({why})", r.name));
            }
        }
        t.failed.extend(res.errors.iter().map(|e| format!("{label}: {e}")));
        boot_time_check(ctx, smp, t);
    }
    if args.filter.is_none() {
        panic_selftest(ctx, t);
        // The kernel against the lying vhost-user device (hostile/mod.rs),
        // which QEMU attaches as a PCI device.
        if ctx.machine_type.has_pci() {
            for (name, outcome) in crate::hostile::make_test_checks(ctx, KTEST_SMP[0]) {
                match outcome {
                    Ok(_) => t.passed += 1,
                    Err(why) => t.failed.push(format!("check: {name} ({why})")),
                }
            }
        } else {
            println!("==> hostile-blk checks left out: vhost-user-blk-pci needs a PCI machine");
        }
        // The disk judged from outside (blk_checks/): image, kill, errors.
        for (name, outcome) in crate::blk_checks::make_test_checks(ctx, KTEST_SMP[0]) {
            match outcome {
                Ok(_) => t.passed += 1,
                Err(why) => t.failed.push(format!("check: {name} ({why})")),
            }
        }
        // What QEMU shows, compared pixel for pixel (pixels/).
        for (name, outcome) in crate::pixels::make_test_checks(ctx) {
            match outcome {
                Ok(_) => t.passed += 1,
                Err(why) => t.failed.push(format!("check: {name} ({why})")),
            }
        }
        if !args.no_matrix {
            matrix_phase(ctx, &[], t);
        }
    }
}

/// The compatibility matrix (matrix.rs): the boots named in `only`, or all.
fn matrix_phase(ctx: &Ctx, only: &[String], t: &mut Tally) {
    let started = Instant::now();
    println!("==> compatibility matrix (serial logs in {}/matrix/)", ctx.target.display());
    for (name, outcome) in crate::matrix::run(ctx, only) {
        match outcome {
            Ok(_) => t.passed += 1,
            Err(why) => t.failed.push(format!("check: {name} ({why})")),
        }
    }
    println!("==> compatibility matrix: {}", progress::since(started));
}

/// Issue 2's budget: the first boot of each suite must reach `boot: ready`
/// within `BOOT_BUDGET_US` of guest time.
fn boot_time_check(ctx: &Ctx, smp: u32, t: &mut Tally) {
    let name = format!("boot_ready_within_150ms_smp{smp}");
    let log = std::fs::read_to_string(ctx.target.join(format!("ktest-smp{smp}-boot1.log")))
        .map_err(|e| format!("no serial log: {e}"));
    let outcome = log
        .and_then(|log| crate::selftest::check_boot_time(&log, crate::selftest::BOOT_BUDGET_US))
        .map(|us| format!(" ({us} us)"));
    record_selftest(t, &name, outcome);
}

/// Prints and tallies one outside check; `Ok` carries a detail for the line.
fn record_selftest(t: &mut Tally, name: &str, outcome: Result<String, String>) {
    match outcome {
        Ok(detail) => {
            println!("selftest {name} ... ok{detail}");
            t.passed += 1;
        }
        Err(why) => {
            println!("selftest {name} ... FAILED ({why})");
            t.failed.push(format!("selftest: {name} ({why})"));
        }
    }
}

/// The panic-report self-test, on the most CPUs the suite uses.
fn panic_selftest(ctx: &Ctx, t: &mut Tally) {
    let smp = KTEST_SMP.iter().copied().max().unwrap_or(2);
    println!(
        "==> selftest: panic report with {smp} CPUs logging (serial log in target/selftest-panic.log)"
    );
    let outcome = ctx.panic_selftest(smp, PANIC_SELFTEST_SECS).map(|()| String::new());
    record_selftest(t, "panic_report_is_whole", outcome);
}
