//! The non-test subcommands and the context they share (paths, cargo,
//! accelerator).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::BootArgs;
use crate::qemu::{self, AccelChoice, Chunk, KernelExit, Qemu, Serial, Streaming};

/// Paths and tools every subcommand needs.
pub struct Ctx {
    pub root: PathBuf,
    pub target: PathBuf,
    pub cargo: String,
    accel: AccelChoice,
    /// `--kernel`: boot this ELF instead of building one.
    kernel_override: Option<PathBuf>,
}

impl Ctx {
    pub fn new(accel: AccelChoice, kernel_override: Option<PathBuf>) -> Self {
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
        Self {
            root,
            target,
            cargo,
            accel,
            kernel_override: kernel_override
                .map(|k| std::env::current_dir().map(|d| d.join(&k)).unwrap_or(k)),
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
        let st = Command::new(&self.cargo)
            .args(["build", "-p", "vireo-kernel", "--release"])
            .current_dir(&self.root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err(format!("kernel build failed ({st})"));
        }
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
        qemu::require_qemu()?;
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
        println!("==> accel: {} ({why}), smp {smp}", accel.arg());
        Ok(Qemu {
            bin: qemu::QEMU_BIN.into(),
            kernel: self.relative(&self.kernel_path()),
            disk: self.relative(&self.disk_path()),
            smp,
            accel,
        })
    }

    /// Shorter paths in printed command lines; QEMU runs in `root`.
    fn relative(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.root).unwrap_or(p).to_path_buf()
    }

    fn qemu_cmd(&self, q: &Qemu, cmdline: &str, serial: Serial, extra: &[&str]) -> Command {
        let mut c = q.command(cmdline, serial, extra);
        c.current_dir(&self.root);
        c
    }

    pub fn run(&self, b: &BootArgs, timeout: u64) -> Result<(), String> {
        let q = self.machine(b.smp, !b.no_build)?;
        println!("==> booting (cmdline {:?}); Ctrl-A X quits", b.append);
        let cmd = self.qemu_cmd(&q, &b.append, Serial::MonStdio, &[]);
        let exit = qemu::run_interactive(cmd, Duration::from_secs(timeout))?;
        println!("==> {}", exit.describe());
        Ok(())
    }

    pub fn debug(&self, b: &BootArgs, timeout: u64) -> Result<(), String> {
        let q = self.machine(b.smp, !b.no_build)?;
        println!("==> QEMU halted at reset, gdb stub on :1234. Attach with:");
        println!(
            "    gdb {} -ex 'target remote :1234'",
            self.relative(&self.kernel_path()).display()
        );
        let cmd = self.qemu_cmd(&q, &b.append, Serial::MonStdio, &["-s", "-S"]);
        let exit = qemu::run_interactive(cmd, Duration::from_secs(timeout))?;
        println!("==> {}", exit.describe());
        Ok(())
    }

    pub fn boot_log(&self, b: &BootArgs, timeout: u64, echo: bool) -> Result<(), String> {
        let q = self.machine(b.smp, !b.no_build)?;
        let path = self.target.join("boot.log");
        let mut log =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let cmd = self.qemu_cmd(&q, &b.append, Serial::Stdio, &[]);
        let exit = stream(cmd, timeout, |s| {
            let _ = log.write_all(s.as_bytes());
            if echo {
                print!("{s}");
            }
        })?;
        println!("==> serial log: {}", path.display());
        match exit {
            None => {
                println!("==> stopped after {timeout} s (kernel did not signal exit)");
                Ok(())
            }
            Some(KernelExit::Success) => {
                println!("==> {}", KernelExit::Success.describe());
                Ok(())
            }
            Some(k) => Err(k.describe()),
        }
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
/// (then it is killed). Returns how it exited; `None` = timed out.
pub fn stream(
    cmd: Command,
    timeout: u64,
    mut sink: impl FnMut(&str),
) -> Result<Option<KernelExit>, String> {
    let mut q = Streaming::spawn(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        match q.next(deadline) {
            Chunk::Data(s) => sink(&s),
            Chunk::Eof => return Ok(Some(q.wait())),
            Chunk::Timeout => {
                q.kill();
                return Ok(None);
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
