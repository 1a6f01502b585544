//! The compatibility matrix: vireo booted the ways people start QEMU, one
//! short boot each (seven), running only the kernel suites that apply to that
//! machine. Each boot is one outside check, `check boot-<name> ... ok`,
//! counted in `make test`'s total.
//!
//! A boot passes when every selected test passes, the log lines that prove
//! the machine was really driven appear (a device found, every CPU
//! online: otherwise its tests could all have skipped), and the guest's
//! clock kept pace with the host's wall clock over the boot (a TSC
//! calibrated 340x wrong, as microvm's PIT once made it, fails here even if
//! every test inside passed). README's "runs on" table lists the same rows.

use std::time::{Duration, Instant};

use crate::cmds::Ctx;
use crate::ktest::{self, Limits, QemuBooter, SuiteOptions};
use crate::qemu::{DeviceSet, Machine};

/// One machine of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatrixBoot {
    /// `check boot-<name>`.
    pub name: &'static str,
    pub machine: Machine,
    pub devices: DeviceSet,
    /// `-m`, when not the device set's.
    pub memory: Option<&'static str>,
    pub smp: u32,
    pub cpu: &'static str,
    /// `ktest.filter=`: the suites that apply.
    pub suites: &'static str,
    /// Log text that must appear (each a substring of some line).
    pub expect: &'static [&'static str],
    /// More QEMU arguments (QEMU merges a second `-machine` into the first).
    pub qemu_args: &'static [&'static str],
}

const DEVICES_UP: [&str; 2] = ["virtio-blk: ", "virtio-gpu: scanout"];

/// The matrix, in the order it runs.
pub const MATRIX: &[MatrixBoot] = &[
    // QEMU's default virtio-blk-pci on q35 is transitional (1af4:1001).
    MatrixBoot {
        name: "q35-qemu-defaults",
        machine: Machine::Q35,
        devices: DeviceSet::QemuDefaults,
        memory: None,
        smp: 2,
        cpu: "max",
        suites: "platform::pci::,drivers::virtio::,platform::time::",
        expect: &["functions (ECAM)", DEVICES_UP[0], DEVICES_UP[1]],
        qemu_args: &[],
    },
    MatrixBoot {
        name: "pc",
        machine: Machine::Pc,
        devices: DeviceSet::Standard,
        memory: None,
        smp: 2,
        cpu: "max",
        suites: "platform::,drivers::virtio::",
        expect: &["configuration ports 0xCF8/0xCFC", DEVICES_UP[0], DEVICES_UP[1]],
        qemu_args: &[],
    },
    MatrixBoot {
        name: "microvm",
        machine: Machine::Microvm,
        devices: DeviceSet::Standard,
        memory: None,
        smp: 2,
        cpu: "max",
        suites: "platform::,drivers::virtio::,smp::",
        expect: &[
            "virtio-mmio: 0x",
            "virtio-blk: 64 MiB, 2 queues",
            DEVICES_UP[1],
            "smp: 2 of 2 CPUs online",
        ],
        qemu_args: &[],
    },
    // Without ACPI: devices from `virtio_mmio.device=` on the command line,
    // CPUs and the I/O APIC from the MP tables.
    MatrixBoot {
        name: "microvm-acpi-off",
        machine: Machine::Microvm,
        devices: DeviceSet::Standard,
        memory: None,
        smp: 2,
        cpu: "max",
        suites: "platform::,drivers::virtio::,smp::",
        expect: &[
            "the MP tables describe the CPUs and I/O APICs",
            "(from Cmdline): device type 2",
            "virtio-blk: 64 MiB, 2 queues",
            DEVICES_UP[1],
            "smp: 2 of 2 CPUs online",
        ],
        qemu_args: &["-machine", "acpi=off"],
    },
    MatrixBoot {
        name: "4g-smp8",
        machine: Machine::Q35,
        devices: DeviceSet::Standard,
        memory: Some("4G"),
        smp: 8,
        cpu: "max",
        suites: "mm::,smp::,arch::boot_info::,platform::acpi::",
        expect: &["smp: 8 of 8 CPUs online"],
        qemu_args: &[],
    },
    MatrixBoot {
        name: "96m-smp1",
        machine: Machine::Q35,
        devices: DeviceSet::Standard,
        memory: Some("96M"),
        smp: 1,
        cpu: "max",
        suites: "mm::,arch::boot_info::,drivers::virtio::blk::",
        expect: &["smp: 1 of 1 CPUs online", DEVICES_UP[0]],
        qemu_args: &[],
    },
    MatrixBoot {
        name: "qemu64",
        machine: Machine::Q35,
        devices: DeviceSet::Standard,
        memory: None,
        smp: 2,
        cpu: "qemu64",
        suites: "arch::,platform::apic::,platform::time::,sched::",
        expect: &["smp: 2 of 2 CPUs online"],
        qemu_args: &[],
    },
];

/// Per-test and stall limits of a matrix boot (TCG).
const PER_TEST: Duration = Duration::from_secs(60);
const STALL: Duration = Duration::from_secs(60);
/// How far the guest clock may run from the host's over a boot.
const CLOCK_TOLERANCE: f64 = 0.25;
/// A boot shorter than this (wall time) is too short to judge the clock:
/// the serial pipe delays a line by a millisecond or so.
const CLOCK_MIN_SPAN: Duration = Duration::from_millis(200);

/// Runs the boots named in `only` (all when empty); returns one
/// `(check name, outcome)` per boot, already printed.
pub fn run(ctx: &Ctx, only: &[String]) -> Vec<(String, Result<String, String>)> {
    let chosen: Vec<&MatrixBoot> =
        MATRIX.iter().filter(|b| only.is_empty() || only.iter().any(|o| o == b.name)).collect();
    let mut checks = Vec::new();
    for boot in chosen {
        let name = format!("boot-{}", boot.name);
        let started = Instant::now();
        let outcome = run_one(ctx, boot)
            .map(|detail| format!("{detail}, {}", crate::progress::since(started)));
        match &outcome {
            Ok(detail) => println!("check {name} ... ok ({detail})"),
            Err(why) => {
                println!("check {name} ... FAILED: {why}");
                println!("==> reproduce: cargo xtask test --no-host --matrix {}", boot.name);
            }
        }
        checks.push((name, outcome));
    }
    checks
}

fn run_one(ctx: &Ctx, boot: &MatrixBoot) -> Result<String, String> {
    let mut q = ctx.machine(boot.smp, false)?;
    q.machine = boot.machine;
    q.devices = boot.devices;
    q.cpu = boot.cpu.into();
    q.memory = boot.memory.map(Into::into);
    q.extra_args.extend(boot.qemu_args.iter().map(|arg| arg.to_string()));
    let log_dir = ctx.target.join("matrix").join(boot.name);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    println!(
        "==> matrix boot-{}: -machine {} -cpu {} -smp {}{}{} ({})",
        boot.name,
        boot.machine.arg(),
        boot.cpu,
        boot.smp,
        boot.memory.map(|m| format!(" -m {m}")).unwrap_or_default(),
        boot.qemu_args.iter().map(|arg| format!(" {arg}")).collect::<String>(),
        boot.suites
    );
    let mut booter =
        QemuBooter::new(q, Limits { per_test: PER_TEST, stall: STALL }, log_dir.clone());
    let opts = SuiteOptions {
        base_cmdline: vec![format!("ktest ktest.filter={}", boot.suites)],
        max_boots: 5,
        // Log lines reach the callback (the clock check needs them); it
        // prints only what failed.
        quiet: false,
        ..Default::default()
    };
    let mut clock = ClockCheck::default();
    let result = ktest::run_suite(&mut booter, &opts, &mut |line| {
        clock.observe(line, Instant::now());
        if line.starts_with("test ") && !line.contains(" ... ok") {
            println!("    {line}");
        }
    });
    let log_path = log_dir.join(format!("ktest-smp{}-boot1.log", boot.smp));
    let log = std::fs::read_to_string(&log_path)
        .map_err(|e| format!("no serial log {}: {e}", log_path.display()))?;
    judge(boot, &result, &log, clock.ratio())
}

/// The verdict on one boot's results, serial log and clock ratio.
fn judge(
    boot: &MatrixBoot,
    result: &ktest::SuiteResult,
    log: &str,
    clock: Option<f64>,
) -> Result<String, String> {
    let failed: Vec<String> = result
        .failed()
        .map(|r| match &r.outcome {
            ktest::Outcome::Failed(why) => format!("{} ({why})", r.name),
            ktest::Outcome::Passed => r.name.clone(),
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("{} failed: {}", failed.len(), failed.join("; ")));
    }
    if let Some(error) = result.errors.first() {
        return Err(error.clone());
    }
    if let Some(missing) = boot.expect.iter().find(|text| !log.contains(*text)) {
        return Err(format!("no {missing:?} in the serial log"));
    }
    let skipped = log.lines().filter(|line| line.contains(") skipped: ")).count();
    let clock = match clock {
        Some(ratio) if (ratio - 1.0).abs() > CLOCK_TOLERANCE => {
            return Err(format!(
                "the guest clock ran at {ratio:.2}x the host's wall clock (TSC calibration wrong?)"
            ));
        }
        Some(ratio) => format!("guest clock {ratio:.2}x wall"),
        None => "boot too short to judge the clock".into(),
    };
    Ok(format!("{} tests, {skipped} skipped, {clock}", result.passed()))
}

/// Compares the guest's log timestamps (`[    12.345678]`) with when their
/// lines arrived, over the first boot.
#[derive(Default)]
struct ClockCheck {
    first: Option<(f64, Instant)>,
    last: Option<(f64, Instant)>,
    /// A later boot (after a crash) restarts the guest clock.
    done: bool,
}

impl ClockCheck {
    fn observe(&mut self, line: &str, now: Instant) {
        if line.starts_with("ktest: boot #") {
            self.done = true;
        }
        if self.done {
            return;
        }
        if let Some(guest) = guest_seconds(line) {
            self.first.get_or_insert((guest, now));
            self.last = Some((guest, now));
        }
    }

    /// Guest seconds per host second, if the span was long enough.
    fn ratio(&self) -> Option<f64> {
        let ((guest0, host0), (guest1, host1)) = (self.first?, self.last?);
        let host = host1.duration_since(host0);
        (host >= CLOCK_MIN_SPAN).then(|| (guest1 - guest0) / host.as_secs_f64())
    }
}

/// The timestamp of a kernel log line, in seconds.
fn guest_seconds(line: &str) -> Option<f64> {
    let inner = line.strip_prefix('[')?.split_once(']')?.0;
    inner.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktest::{Outcome, SuiteResult, TestRecord};

    fn passed(names: &[&str]) -> SuiteResult {
        SuiteResult {
            records: names
                .iter()
                .map(|n| TestRecord { name: n.to_string(), outcome: Outcome::Passed, micros: None })
                .collect(),
            errors: vec![],
            boots: 1,
        }
    }

    #[test]
    fn matrix_names_are_unique_and_machines_fit_their_devices() {
        let mut names: Vec<&str> = MATRIX.iter().map(|b| b.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MATRIX.len());
        assert!(MATRIX.iter().any(|b| b.machine == Machine::Microvm));
        assert!(MATRIX.iter().any(|b| b.machine == Machine::Pc));
        assert!(MATRIX.iter().all(|b| !b.suites.is_empty() && !b.suites.contains(' ')));
    }

    #[test]
    fn a_boot_fails_on_a_failed_test_a_missing_line_or_a_wrong_clock() {
        let boot = MATRIX.iter().find(|b| b.name == "microvm").unwrap();
        let log = "virtio-mmio: 0xfeb02e00\nvirtio-blk: 64 MiB, 2 queues\nvirtio-gpu: scanout 0\n\
                   smp: 2 of 2 CPUs online\ntest a::b ... ok (3 us) skipped: no HPET\n";
        let ok = judge(boot, &passed(&["a::b"]), log, Some(1.02)).unwrap();
        assert!(ok.contains("1 tests, 1 skipped, guest clock 1.02x wall"), "{ok}");
        let slow = judge(boot, &passed(&["a::b"]), log, Some(0.003)).unwrap_err();
        assert!(slow.contains("0.00x"), "{slow}");
        let missing =
            judge(boot, &passed(&["a::b"]), &log.replace("smp: 2 of 2", "smp: 1 of 2"), None)
                .unwrap_err();
        assert!(missing.contains("smp: 2 of 2 CPUs online"), "{missing}");
        let mut failed = passed(&["a::b"]);
        failed.records[0].outcome = Outcome::Failed("failed: x".into());
        assert!(judge(boot, &failed, log, None).unwrap_err().starts_with("1 failed: a::b"));
    }

    #[test]
    fn the_clock_is_judged_on_the_first_boot_only() {
        let start = Instant::now();
        let mut clock = ClockCheck::default();
        clock.observe("[     0.100000] INFO  vireo: booting", start);
        clock.observe("test a::b ... ok (1 us)", start + Duration::from_millis(50));
        clock.observe("[     2.100000] INFO  x", start + Duration::from_secs(2));
        clock.observe("ktest: boot #2: ktest", start + Duration::from_secs(3));
        clock.observe("[     0.050000] INFO  again", start + Duration::from_secs(4));
        let ratio = clock.ratio().unwrap();
        assert!((ratio - 1.0).abs() < 1e-9, "{ratio}");
        let mut short = ClockCheck::default();
        short.observe("[ 0.1] a", start);
        short.observe("[ 0.2] b", start + Duration::from_millis(100));
        assert!(CLOCK_MIN_SPAN > Duration::from_millis(100));
        assert_eq!(short.ratio(), None);
        assert_eq!(guest_seconds("[    12.500000] x"), Some(12.5));
        assert_eq!(guest_seconds("test x"), None);
    }
}
