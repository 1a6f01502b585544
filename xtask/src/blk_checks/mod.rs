//! The outside blk checks (issue 9): the kernel's disk I/O judged from
//! where the guest cannot lie, the image file on the host, QEMU's own
//! error injection and QMP. Each boots the kernel once with a drive made
//! for it and prints `check blk-<name> ... ok (<detail>)` or
//! `check blk-<name> ... FAILED: <why>`; `make test` counts them.
//!
//! The kernel side is `blkcheck=<name>` (kernel/src/checks), except
//! `blk-shell`, which types commands at the serial shell. Logs stay in
//! `target/blk-checks/<name>.{serial,qemu}.log`, images beside them.
//!
//!     cargo xtask blk-check                     # every check
//!     cargo xtask blk-check --check blk-stall   # one

mod checks;
mod four_k;
mod pattern;
mod qcow2;
mod shell_check;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Args;

use crate::cmds::Ctx;
use crate::hostile::judge::Step;
use crate::hostile::session::Shell;
use crate::qemu::{DeviceSet, Qemu, Serial};
pub use crate::qmp_control::QmpControl;

/// One check: its name and what runs it.
pub struct BlkCheck {
    pub name: &'static str,
    pub summary: &'static str,
    run: fn(&mut Env) -> Result<String, String>,
}

/// Every check, in the order they run.
pub const CHECKS: &[BlkCheck] = &[
    BlkCheck {
        name: "blk-host-image",
        summary: "random reads of a stamped image from every CPU, then >= 64 MiB of writes; the image compared byte for byte",
        run: checks::host_image,
    },
    BlkCheck {
        name: "blk-flush-durable",
        summary: "QEMU killed (SIGKILL) right after a flush is acknowledged; the flushed blocks are in the qcow2 image",
        run: checks::flush_durable,
    },
    BlkCheck {
        name: "blk-eio",
        summary: "blkdebug fails a read, a write and a flush: BlkError::Io each time, later I/O works",
        run: checks::eio,
    },
    BlkCheck {
        name: "blk-readonly",
        summary: "readonly=on: writes refused with ReadOnly, reads served, the image unchanged",
        run: checks::read_only,
    },
    BlkCheck {
        name: "blk-shell",
        summary: "the shell's blk commands against the image: write seen on the host, host data seen by read",
        run: shell_check::run,
    },
    BlkCheck {
        name: "blk-stall",
        summary: "the drive throttled to a halt (QMP): callers back by their deadline (Timeout, Cancelled or the real data), the driver logs a reset, I/O recovers",
        run: checks::stall,
    },
    BlkCheck {
        name: "blk-resize",
        summary: "QMP block_resize: the kernel sees the new capacity through the config interrupt",
        run: checks::resize,
    },
    BlkCheck {
        name: "blk-4k",
        summary: "4096-byte logical blocks: unaligned I/O refused with Unaligned, aligned writes at sector * 512 in the image",
        run: four_k::run,
    },
];

#[derive(Args, Clone, Debug)]
pub struct BlkCheckArgs {
    /// Run only this check (repeatable); default: all of them.
    #[arg(long)]
    pub check: Vec<String>,
    /// List the checks and exit.
    #[arg(long)]
    pub list: bool,
    /// vCPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Seed of the images' content.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Do not rebuild the kernel.
    #[arg(long)]
    pub no_build: bool,
}

/// `(check name, Ok(detail) | Err(why))` per check run.
pub type Checks = Vec<(String, Result<String, String>)>;

/// What a check works with.
pub struct Env<'a> {
    ctx: &'a Ctx,
    q: &'a Qemu,
    dir: PathBuf,
    name: &'static str,
    seed: u64,
}

impl Env<'_> {
    /// A file of this check in `target/blk-checks/`.
    fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.name))
    }

    /// Boots with `cmdline` and `drive` as the `-drive` of node `d0`; with
    /// `qmp`, also a QMP socket the runner controls.
    fn boot(&self, cmdline: &str, drive: &str, qmp: bool) -> Result<Guest, String> {
        self.boot_with(cmdline, drive, qmp, "")
    }

    /// As [`Env::boot`], with `device_options` appended to the drive's
    /// `-device` (e.g. `,logical_block_size=4096`).
    fn boot_with(
        &self,
        cmdline: &str,
        drive: &str,
        qmp: bool,
        device_options: &str,
    ) -> Result<Guest, String> {
        let standard = self.q.args_with(DeviceSet::Standard, cmdline, Serial::Stdio);
        let mut args = with_device_options(&with_drive(&standard, drive)?, device_options)?;
        let socket = self.path("qmp");
        if qmp {
            let _ = fs::remove_file(&socket);
            args.extend(QmpControl::qemu_args(&socket));
        }
        let mut cmd = Command::new(&self.q.bin);
        cmd.args(&args).current_dir(&self.ctx.root);
        let log = self.path("qemu.log");
        cmd.stderr(
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?,
        );
        let shell = Shell::spawn(cmd)?;
        let qmp =
            if qmp { Some(QmpControl::connect(&socket, Duration::from_secs(10))?) } else { None };
        Ok(Guest { shell, qmp, serial_log: self.path("serial.log") })
    }
}

/// A booted check: the serial line, and QMP when asked for.
pub struct Guest {
    pub shell: Shell,
    pub qmp: Option<QmpControl>,
    serial_log: PathBuf,
}

impl Guest {
    /// Waits for a line starting with `prefix`; returns the rest of it.
    fn line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        match self.shell.wait_for(0, prefix, timeout) {
            Step::Answered(before) => {
                let at = before.len() + prefix.len();
                let _ = self.shell.wait_for(at, "\n", Duration::from_secs(5));
                let rest = &self.shell.transcript[at..];
                Ok(rest.lines().next().unwrap_or("").trim().to_string())
            }
            Step::Died => Err(format!("QEMU ended before printing {prefix:?}{}", self.panic())),
            Step::Hung(after) => Err(format!("no {prefix:?} within {} s", after.as_secs())),
            Step::Skipped => Err("skipped".into()),
        }
    }

    /// The kernel's verdict on `blkcheck=<kernel_name>`: its summary.
    fn verdict(&mut self, kernel_name: &str, timeout: Duration) -> Result<String, String> {
        let line = self.line(&format!("blkcheck: {kernel_name} "), timeout)?;
        if let Some(summary) = line.strip_prefix("passed: ") {
            Ok(summary.to_string())
        } else {
            Err(format!("the kernel says {line}"))
        }
    }

    /// ` (panic: ...)` when the guest panicked.
    fn panic(&self) -> String {
        self.shell
            .transcript
            .lines()
            .find(|line| line.trim_start().starts_with("panic:"))
            .map(|line| format!(" ({})", line.trim()))
            .unwrap_or_default()
    }

    /// Waits for QEMU to exit by itself (the kernel powered off), keeps
    /// the serial log, and kills it if it did not.
    fn finish(mut self, timeout: Duration) -> Result<(), String> {
        self.shell.finish(timeout);
        self.save();
        match self.panic() {
            panic if panic.is_empty() => Ok(()),
            panic => Err(format!("the guest panicked{panic}")),
        }
    }

    fn save(&self) {
        let _ = fs::write(&self.serial_log, &self.shell.transcript);
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.save();
    }
}

/// `standard` with the value of the `-drive` that defines node `d0`
/// replaced by `drive`.
fn with_drive(standard: &[String], drive: &str) -> Result<Vec<String>, String> {
    let at = standard
        .windows(2)
        .position(|pair| pair[0] == "-drive" && pair[1].contains("id=d0"))
        .ok_or("no -drive for d0 in the standard machine")?;
    let mut args = standard.to_vec();
    args[at + 1] = drive.to_string();
    Ok(args)
}

/// `args` with `options` appended to the `-device` that uses drive `d0`.
fn with_device_options(args: &[String], options: &str) -> Result<Vec<String>, String> {
    let at = args
        .windows(2)
        .position(|pair| pair[0] == "-device" && pair[1].split(',').any(|o| o == "drive=d0"))
        .ok_or("no -device for drive d0 in the standard machine")?;
    let mut args = args.to_vec();
    args[at + 1].push_str(options);
    Ok(args)
}

/// A plain raw `-drive` of `image` for node `d0`, plus `extra` options.
fn raw_drive(image: &Path, extra: &str) -> String {
    format!("file={},if=none,id=d0,format=raw{extra}", image.display())
}

/// `cargo xtask blk-check`: returns the process exit code.
pub fn command(ctx: &Ctx, args: &BlkCheckArgs) -> i32 {
    if args.list {
        for check in CHECKS {
            println!("{:<18} {}", check.name, check.summary);
        }
        return 0;
    }
    let names: Vec<&str> = args.check.iter().map(String::as_str).collect();
    let checks = match run(ctx, args, &names) {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let failed = checks.iter().filter(|(_, outcome)| outcome.is_err()).count();
    println!("blk-check: {} passed, {failed} failed", checks.len() - failed);
    i32::from(failed > 0)
}

/// `make test`'s part: every check.
pub fn make_test_checks(ctx: &Ctx, smp: u32) -> Checks {
    let args = BlkCheckArgs { check: vec![], list: false, smp, seed: 1, no_build: true };
    run(ctx, &args, &[]).unwrap_or_else(|e| vec![("blk-checks".into(), Err(e))])
}

/// Runs the checks named (all when none); prints one `check` line each.
fn run(ctx: &Ctx, args: &BlkCheckArgs, names: &[&str]) -> Result<Checks, String> {
    let chosen: Vec<&BlkCheck> = if names.is_empty() {
        CHECKS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| CHECKS.iter().find(|c| c.name == *n).ok_or(format!("no check {n:?}")))
            .collect::<Result<_, _>>()?
    };
    let q = ctx.machine(args.smp, !args.no_build)?;
    let dir = ctx.target.join("blk-checks");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut results = vec![];
    for check in chosen {
        let started = std::time::Instant::now();
        let mut env = Env { ctx, q: &q, dir: dir.clone(), name: check.name, seed: args.seed };
        let outcome = (check.run)(&mut env)
            .map(|detail| format!("{detail}; {}", crate::progress::since(started)));
        match &outcome {
            Ok(detail) => println!("check {} ... ok ({detail})", check.name),
            Err(why) => println!(
                "check {} ... FAILED: {why} (logs: {}; rerun: cargo xtask blk-check --check {})",
                check.name,
                env.path("*.log").display(),
                check.name
            ),
        }
        results.push((check.name.to_string(), outcome));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drive_of_d0_is_replaced_and_nothing_else() {
        let standard: Vec<String> =
            ["-m", "512M", "-drive", "file=a.img,if=none,id=d0,format=raw", "-device", "x"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let args = with_drive(&standard, &raw_drive(Path::new("b.img"), ",readonly=on")).unwrap();
        assert_eq!(args[3], "file=b.img,if=none,id=d0,format=raw,readonly=on");
        assert_eq!(args.len(), standard.len());
        assert!(with_drive(&args[..2], "x").is_err());
    }

    #[test]
    fn device_options_go_to_the_device_of_d0() {
        let args: Vec<String> =
            ["-device", "virtio-gpu-pci", "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let with = with_device_options(&args, ",logical_block_size=4096").unwrap();
        assert_eq!(with[1], "virtio-gpu-pci");
        assert_eq!(with[3], "virtio-blk-pci,drive=d0,disable-legacy=on,logical_block_size=4096");
        assert!(with_device_options(&args[..2], ",x").is_err());
    }

    #[test]
    fn check_names_are_unique_and_all_six_of_the_issue_are_there() {
        let mut names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
        for name in [
            "blk-host-image",
            "blk-flush-durable",
            "blk-eio",
            "blk-stall",
            "blk-readonly",
            "blk-resize",
        ] {
            assert!(names.contains(&name), "{name} missing");
        }
    }
}
