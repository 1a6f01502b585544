//! The context every subcommand shares (paths, cargo, accelerator, QEMU
//! options) and the bench subcommand; `boot.rs` has `run`, `debug` and
//! `boot-log`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::exit::KernelExit;
use crate::process::{Chunk, Streaming};
use crate::progress::{self, Heartbeat};
use crate::qemu::{self, AccelChoice, DeviceSet, Machine, Qemu, Serial};

/// The global command-line options.
#[derive(Clone, Debug, Default)]
pub struct RunnerOptions {
    pub accel: Option<AccelChoice>,
    /// `--kernel`: boot this ELF instead of building one.
    pub kernel: Option<PathBuf>,
    /// `--qemu`: run this instead of `qemu-system-x86_64` from PATH.
    pub qemu: Option<PathBuf>,
    /// `--qemu-arg` and `-- ARGS`: extra arguments for every QEMU.
    pub qemu_args: Vec<String>,
    /// `--machine`.
    pub machine: Machine,
}

/// Paths and tools every subcommand needs.
pub struct Ctx {
    pub root: PathBuf,
    pub target: PathBuf,
    pub cargo: String,
    accel: AccelChoice,
    /// `--kernel`: boot this ELF instead of building one.
    kernel_override: Option<PathBuf>,
    qemu_bin: Option<PathBuf>,
    qemu_args: Vec<String>,
    /// `--machine`.
    pub machine_type: Machine,
}

impl Ctx {
    pub fn new(options: RunnerOptions) -> Self {
        // xtask lives in <root>/xtask; everything is relative to <root> so
        // the runner works from any directory.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is inside the workspace")
            .to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        // `cargo xtask` sets CARGO to the cargo that launched us; reuse it
        // so rustup toolchain overrides stay consistent.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Relative paths mean the caller's directory; QEMU runs in `root`.
        let absolute = |p: PathBuf| std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p);
        Self {
            root,
            target,
            cargo,
            accel: options.accel.unwrap_or(AccelChoice::Auto),
            kernel_override: options.kernel.map(absolute),
            qemu_bin: options.qemu.map(absolute),
            qemu_args: options.qemu_args,
            machine_type: options.machine,
        }
    }

    pub fn kernel_path(&self) -> PathBuf {
        if let Some(k) = &self.kernel_override {
            return k.clone();
        }
        self.target.join("release").join("vireo")
    }

    pub fn disk_path(&self) -> PathBuf {
        self.target.join("vireo-disk.img")
    }

    /// `cargo build -p vireo-kernel --release` (host target; the kernel's
    /// build.rs supplies the linker arguments).
    pub fn build_kernel(&self) -> Result<(), String> {
        if let Some(k) = &self.kernel_override {
            println!("==> using prebuilt kernel {} (--kernel)", k.display());
            return if k.is_file() {
                Ok(())
            } else {
                Err(format!("{} does not exist", k.display()))
            };
        }
        println!("==> building kernel: cargo build -p vireo-kernel --release");
        let started = Instant::now();
        let st = Command::new(&self.cargo)
            .args(["build", "-p", "vireo-kernel", "--release"])
            .current_dir(&self.root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err(format!("kernel build failed ({st}) after {}", progress::since(started)));
        }
        println!("==> kernel built in {}", progress::since(started));
        if !self.kernel_path().is_file() {
            return Err(format!(
                "kernel build succeeded but {} is missing",
                self.kernel_path().display()
            ));
        }
        Ok(())
    }

    /// Everything needed before booting: QEMU present, kernel built, disk
    /// created, accelerator chosen (and printed, so logs say which).
    pub fn machine(&self, smp: u32, build: bool) -> Result<Qemu, String> {
        qemu::require_qemu(self.qemu_bin.as_deref())?;
        if build {
            self.build_kernel()?;
        } else if !self.kernel_path().is_file() {
            return Err(format!(
                "{} not found; run `cargo xtask build`",
                self.kernel_path().display()
            ));
        }
        qemu::ensure_disk(&self.disk_path())
            .map_err(|e| format!("cannot create {}: {e}", self.disk_path().display()))?;
        let (accel, why) = qemu::choose_accel(self.accel);
        let machine = match self.machine_type {
            Machine::Q35 => String::new(),
            other => format!(", machine {}", other.arg()),
        };
        println!("==> accel: {} ({why}), smp {smp}{machine}", accel.arg());
        Ok(Qemu {
            bin: self.qemu_bin.clone().unwrap_or_else(|| qemu::QEMU_BIN.into()),
            kernel: self.relative(&self.kernel_path()),
            disk: self.relative(&self.disk_path()),
            smp,
            accel,
            machine: self.machine_type,
            cpu: "max".into(),
            memory: None,
            devices: DeviceSet::Standard,
            extra_args: self.qemu_args.clone(),
        })
    }

    /// Shorter paths in printed command lines; QEMU runs in `root`.
    pub fn relative(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.root).unwrap_or(p).to_path_buf()
    }

    pub fn qemu_cmd(&self, q: &Qemu, cmdline: &str, serial: Serial, extra: &[&str]) -> Command {
        let mut c = q.command(cmdline, serial, extra);
        c.current_dir(&self.root);
        c
    }

    /// Boots with `selftest=panic` on `smp` CPUs and judges the report.
    pub fn panic_selftest(&self, smp: u32, timeout: u64) -> Result<(), String> {
        let q = self.machine(smp, false)?;
        let cmd = self.qemu_cmd(&q, "selftest=panic", Serial::Stdio, &[]);
        let mut output = String::new();
        let exit = stream(cmd, timeout, |s| output.push_str(s))?;
        let _ = std::fs::write(self.target.join("selftest-panic.log"), &output);
        crate::selftest::check_panic_report(&output, exit)
    }

    pub fn clean(&self) -> Result<(), String> {
        let st = Command::new(&self.cargo)
            .arg("clean")
            .current_dir(&self.root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        st.success().then_some(()).ok_or_else(|| format!("cargo clean failed ({st})"))
    }
}

/// `words` then the user's `--append`, without stray spaces.
pub fn join_cmdline(words: &str, append: &str) -> String {
    [words.trim(), append.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run QEMU with captured serial until it exits or `timeout` seconds pass
/// (then it is killed). Returns how it exited; `None` = timed out. While
/// the child prints nothing a heartbeat line says it is still running (the
/// Linux peer's first run downloads for a minute without a word).
pub fn stream(
    cmd: Command,
    timeout: u64,
    mut sink: impl FnMut(&str),
) -> Result<Option<KernelExit>, String> {
    stream_until(cmd, timeout, |s| {
        sink(s);
        false
    })
    .map(|streamed| streamed.exit)
}

/// How a [`stream_until`] ended.
#[derive(Clone, Debug)]
pub struct Streamed {
    /// `None`: killed, on timeout or because the sink asked to stop.
    pub exit: Option<KernelExit>,
    /// QEMU's last stderr lines.
    pub stderr_tail: Vec<String>,
}

/// Like [`stream`], but `sink` returns true to stop early (QEMU is killed).
pub fn stream_until(
    cmd: Command,
    timeout: u64,
    mut sink: impl FnMut(&str) -> bool,
) -> Result<Streamed, String> {
    let program =
        Path::new(cmd.get_program()).file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut heartbeat = Heartbeat::new(program);
    let mut q = Streaming::spawn(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        match q.next_or_beat(deadline, &mut heartbeat) {
            Chunk::Data(s) => {
                if sink(&s) {
                    q.kill();
                    return Ok(Streamed { exit: None, stderr_tail: q.stderr_tail() });
                }
            }
            Chunk::Eof => {
                let exit = q.wait();
                return Ok(Streamed { exit: Some(exit), stderr_tail: q.stderr_tail() });
            }
            Chunk::Timeout => {
                q.kill();
                return Ok(Streamed { exit: None, stderr_tail: q.stderr_tail() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_join() {
        assert_eq!(join_cmdline("bench", ""), "bench");
        assert_eq!(join_cmdline("ktest", " log=debug "), "ktest log=debug");
        assert_eq!(join_cmdline("", ""), "");
    }
}
