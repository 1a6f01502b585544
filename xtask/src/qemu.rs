//! Everything about launching QEMU: the one standard device set, accelerator
//! choice, the scratch disk, exit-status decoding, and running the child under
//! a hard timeout.
//!
//! All subcommands go through [`Qemu::command`] (or [`Qemu::command_with`])
//! so that `run`, `test`, `boot-log`, `debug` and `bench` always boot the
//! *same* machine; a bug that only shows up under `test` must be reproducible
//! with `run`. The one deliberate difference, memory and disk for `bench` (and
//! no spare virtio-rng), is spelled out in [`DeviceSet`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The QEMU binary we drive. Only x86_64 is supported.
pub const QEMU_BIN: &str = "qemu-system-x86_64";

/// What a user should run when QEMU is missing (Debian, as on CI).
pub const QEMU_INSTALL_HINT: &str =
    "apt-get update && apt-get install -y --no-install-recommends qemu-system-x86";

/// Size of the scratch virtio-blk disk. Raw and sparse, so it costs nothing
/// on disk until the kernel writes to it.
pub const DISK_SIZE: u64 = 64 * 1024 * 1024;

/// The isa-debug-exit port; the kernel writes `v` there and QEMU exits with
/// `(v << 1) | 1`.
const DEBUG_EXIT_PORT: &str = "iobase=0xf4,iosize=0x04";

/// Hardware acceleration choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` argument value.
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            // Multi-threaded TCG: one host thread per vCPU, so `-smp 4` on a
            // 2-core box still makes progress on every vCPU.
            Accel::Tcg => "tcg,thread=multi",
        }
    }
}

/// Accelerator requested on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when usable and the CPU advertises vmx/svm, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Pick the accelerator and say why.
///
/// `/dev/kvm` existing is not enough: some CI machines expose a nested
/// software hypervisor whose KVM cannot run SSE, and the only reliable tell is
/// the missing `vmx`/`svm` CPU flag. So KVM needs both an openable
/// `/dev/kvm` and one of those flags.
pub fn choose_accel(choice: AccelChoice) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "requested with --accel kvm".into()),
        AccelChoice::Tcg => (Accel::Tcg, "requested with --accel tcg".into()),
        AccelChoice::Auto => {
            let kvm_ok = OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            decide_accel(kvm_ok, &cpuinfo)
        }
    }
}

/// Pure part of [`choose_accel`], split out for unit tests.
pub fn decide_accel(kvm_usable: bool, cpuinfo: &str) -> (Accel, String) {
    let has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm");
    match (kvm_usable, has_virt) {
        (true, true) => (Accel::Kvm, "/dev/kvm usable and CPU has vmx/svm".into()),
        (false, _) => (Accel::Tcg, "/dev/kvm not usable".into()),
        (true, false) => (
            Accel::Tcg,
            "/dev/kvm present but CPU lacks vmx/svm (nested software hypervisor)".into(),
        ),
    }
}

/// Memory and block device of a machine, and whether it has the spare
/// virtio-rng: the only part of the device set that differs between
/// subcommands.
///
/// `bench` must boot what the Linux peer (`../shared/peers/linux-guest`)
/// boots, or "vireo vs Linux" ratios would compare disks rather than
/// drivers; everything else keeps the persistent image so on-disk state
/// survives between boots and can be inspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSet {
    /// `run`, `test`, `boot-log`, `debug`: 512 MiB, the raw scratch image
    /// ([`Qemu::disk`]) and a `virtio-rng-pci` that no driver owns.
    Standard,
    /// `bench`: 1 GiB and a 1 GiB `null-co` disk that reads zeroes, exactly
    /// the peer's flags. No host file I/O, so the numbers measure the guest
    /// driver and QEMU's virtio path, not the host's page cache.
    PeerMatched,
}

impl DeviceSet {
    /// The `-m` value.
    fn memory(self) -> &'static str {
        match self {
            DeviceSet::Standard => "512M",
            DeviceSet::PeerMatched => "1G",
        }
    }

    /// The arguments creating block node `d0`, which virtio-blk attaches to.
    fn disk_args(self, image: &Path) -> [String; 2] {
        match self {
            DeviceSet::Standard => {
                ["-drive".into(), format!("file={},if=none,id=d0,format=raw", image.display())]
            }
            DeviceSet::PeerMatched => [
                "-blockdev".into(),
                "driver=null-co,node-name=d0,size=1073741824,read-zeroes=on".into(),
            ],
        }
    }
}

/// How the serial port is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// Plain `-serial stdio`: output is captured and parsed by the runner.
    Stdio,
    /// `-serial mon:stdio`: interactive; Ctrl-A X quits, Ctrl-A C = monitor.
    MonStdio,
}

/// One configured machine. Built once per subcommand.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// Normally [`QEMU_BIN`]; tests substitute a script.
    pub bin: PathBuf,
    pub kernel: PathBuf,
    pub disk: PathBuf,
    pub smp: u32,
    pub accel: Accel,
}

impl Qemu {
    /// The standard device set. `extra` is appended verbatim (e.g. `-s -S`).
    pub fn command(&self, cmdline: &str, serial: Serial, extra: &[&str]) -> Command {
        self.command_with(DeviceSet::Standard, cmdline, serial, extra)
    }

    /// Like [`Qemu::command`], with memory and disk chosen by `set`.
    pub fn command_with(
        &self,
        set: DeviceSet,
        cmdline: &str,
        serial: Serial,
        extra: &[&str],
    ) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.args_with(set, cmdline, serial)).args(extra);
        c
    }

    /// Arguments of [`Qemu::command_with`], as strings for printing and
    /// tests.
    pub fn args_with(&self, set: DeviceSet, cmdline: &str, serial: Serial) -> Vec<String> {
        let serial = match serial {
            Serial::Stdio => "stdio",
            Serial::MonStdio => "mon:stdio",
        };
        let mut a: Vec<String> = ["-nodefaults", "-machine", "q35", "-cpu", "max", "-smp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(self.smp.to_string());
        a.extend(
            ["-m", set.memory(), "-no-reboot", "-display", "none", "-serial", serial]
                .iter()
                .map(|s| s.to_string()),
        );
        a.push("-device".into());
        a.push(format!("isa-debug-exit,{DEBUG_EXIT_PORT}"));
        a.push("-kernel".into());
        a.push(self.kernel.display().to_string());
        a.push("-append".into());
        a.push(cmdline.into());
        a.extend(set.disk_args(&self.disk));
        a.push("-device".into());
        a.push("virtio-blk-pci,drive=d0,disable-legacy=on".into());
        a.push("-device".into());
        a.push("virtio-gpu-pci".into());
        // A virtio device no driver owns, for the kernel's bring-up failure
        // tests (drivers::virtio::bringup), with MSI-X entries for two queues
        // so one can be live when the other fails; bench keeps the peer's
        // machine.
        if set == DeviceSet::Standard {
            a.extend(["-device".into(), "virtio-rng-pci,disable-legacy=on,vectors=3".into()]);
        }
        a.push("-accel".into());
        a.push(self.accel.arg().into());
        a
    }
}

/// True when `qemu-system-x86_64` is somewhere on `PATH`.
pub fn qemu_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(QEMU_BIN).is_file()))
        .unwrap_or(false)
}

/// Fail with an actionable message when QEMU is missing.
pub fn require_qemu() -> Result<(), String> {
    if qemu_on_path() {
        Ok(())
    } else {
        Err(format!(
            "{QEMU_BIN} not found on PATH. Install it with:\n    {QEMU_INSTALL_HINT}\n\
             (prefix with sudo if not root; `make run`/`make test` do this for you)"
        ))
    }
}

/// Create the scratch disk on first use (sparse, so instant and free).
/// An existing image is kept: state on it may be what you are debugging.
pub fn ensure_disk(path: &Path) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let f = File::create(path)?;
    f.set_len(DISK_SIZE)?;
    println!("created {} ({} MiB, raw)", path.display(), DISK_SIZE >> 20);
    Ok(())
}

/// How the kernel (or QEMU) ended, decoded from QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelExit {
    /// Kernel wrote 0x10 to the debug-exit port: status 33.
    Success,
    /// Kernel wrote 0x11: tests failed or the kernel panicked. Status 35.
    Failure,
    /// Status 0: with `-no-reboot` a reset (triple fault) makes QEMU exit 0.
    /// Also what quitting the monitor (Ctrl-A X) looks like.
    Reset,
    /// Some other odd status: the kernel wrote an unexpected value `v`.
    OtherKernelCode(u32),
    /// Some even, non-zero status: QEMU itself failed (bad args, missing file).
    QemuError(i32),
    /// Killed by a signal (e.g. by our own timeout).
    Signal,
}

impl KernelExit {
    pub fn from_status(status: ExitStatus) -> Self {
        match status.code() {
            Some(c) => Self::from_code(c),
            None => KernelExit::Signal,
        }
    }

    pub fn from_code(code: i32) -> Self {
        match code {
            33 => KernelExit::Success,
            35 => KernelExit::Failure,
            0 => KernelExit::Reset,
            c if c > 0 && c & 1 == 1 => KernelExit::OtherKernelCode((c as u32) >> 1),
            c => KernelExit::QemuError(c),
        }
    }

    /// A few words, for a crashed test's reason.
    pub fn short(self) -> String {
        match self {
            KernelExit::Success => "exited with success mid-test (status 33)".into(),
            KernelExit::Failure => "panic (status 35)".into(),
            KernelExit::Reset => "triple fault (status 0)".into(),
            KernelExit::OtherKernelCode(v) => format!("exit code {v:#x}"),
            KernelExit::QemuError(c) => format!("QEMU error (status {c})"),
            KernelExit::Signal => "QEMU killed by a signal".into(),
        }
    }

    /// A one-line, human explanation.
    pub fn describe(self) -> String {
        match self {
            KernelExit::Success => "kernel exited with success (0x10 -> status 33)".into(),
            KernelExit::Failure => {
                "kernel exited with failure (0x11 -> status 35: tests failed or panic)".into()
            }
            KernelExit::Reset => {
                "QEMU exited with status 0: triple fault / reset (-no-reboot), or monitor quit"
                    .into()
            }
            KernelExit::OtherKernelCode(v) => {
                format!("kernel wrote unexpected exit code {v:#x} to port 0xf4")
            }
            KernelExit::QemuError(c) => format!("QEMU itself failed with status {c}"),
            KernelExit::Signal => "QEMU was killed by a signal".into(),
        }
    }
}

/// Wait for `child`, killing it after `timeout`. `Ok(None)` means timed out.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            kill(child);
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Kill and reap; errors ignored because the child may already be gone.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `cmd` with inherited stdio (interactive) under a hard timeout.
pub fn run_interactive(mut cmd: Command, timeout: Duration) -> Result<KernelExit, String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {QEMU_BIN}: {e}"))?;
    match wait_with_timeout(&mut child, timeout).map_err(|e| e.to_string())? {
        Some(st) => Ok(KernelExit::from_status(st)),
        None => Err(format!("timed out after {}s; QEMU killed", timeout.as_secs())),
    }
}

/// What the serial stream delivered.
pub enum Chunk {
    Data(String),
    Eof,
    /// Nothing arrived before the deadline.
    Timeout,
}

/// A running QEMU whose serial output (stdout) is read on a helper thread so
/// the caller can wait for output *with a deadline* (std has no read timeout
/// on pipes).
pub struct Streaming {
    child: Child,
    rx: Receiver<Option<String>>,
    eof: bool,
}

impl Streaming {
    pub fn spawn(mut cmd: Command) -> Result<Self, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // Named after the program actually run: the Linux peer's script
        // streams through here too.
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
        let mut out = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(n) => {
                        // Serial output may contain non-UTF-8 garbage after a
                        // crash; never let that abort the run.
                        let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if tx.send(Some(s)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Self { child, rx, eof: false })
    }

    /// Next piece of output, or `Timeout` once `deadline` passes.
    pub fn next(&mut self, deadline: Instant) -> Chunk {
        if self.eof {
            return Chunk::Eof;
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(Some(s)) => Chunk::Data(s),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                Chunk::Eof
            }
            Err(RecvTimeoutError::Timeout) => Chunk::Timeout,
        }
    }

    /// Reap after EOF. QEMU closes stdout only when exiting, so this is quick;
    /// the timeout guards against a wedged process anyway.
    pub fn wait(mut self) -> KernelExit {
        match wait_with_timeout(&mut self.child, Duration::from_secs(10)) {
            Ok(Some(st)) => KernelExit::from_status(st),
            _ => KernelExit::Signal,
        }
    }

    /// Kill QEMU (timeouts).
    pub fn kill(mut self) {
        kill(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decode() {
        assert_eq!(KernelExit::from_code(33), KernelExit::Success);
        assert_eq!(KernelExit::from_code(35), KernelExit::Failure);
        assert_eq!(KernelExit::from_code(0), KernelExit::Reset);
        assert_eq!(KernelExit::from_code(1), KernelExit::OtherKernelCode(0));
        assert_eq!(KernelExit::from_code(37), KernelExit::OtherKernelCode(0x12));
        assert_eq!(KernelExit::from_code(2), KernelExit::QemuError(2));
        assert!(KernelExit::Reset.describe().contains("triple fault"));
    }

    #[test]
    fn accel_needs_kvm_and_virt_flag() {
        let with = "processor\t: 0\nflags\t\t: fpu sse2 vmx lm\n";
        let without = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor lm\n";
        assert_eq!(decide_accel(true, with).0, Accel::Kvm);
        assert_eq!(decide_accel(true, without).0, Accel::Tcg);
        assert_eq!(decide_accel(false, with).0, Accel::Tcg);
        // "svm" as a substring of another flag must not count.
        assert_eq!(decide_accel(true, "flags : svm_lock\n").0, Accel::Tcg);
        assert_eq!(decide_accel(true, "flags : svm\n").0, Accel::Kvm);
    }

    #[test]
    fn standard_device_set() {
        let q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "target/release/vireo".into(),
            disk: "target/vireo-disk.img".into(),
            smp: 4,
            accel: Accel::Tcg,
        };
        let a = q.args_with(DeviceSet::Standard, "ktest ktest.skip=a::b", Serial::Stdio).join(" ");
        assert_eq!(
            a,
            "-nodefaults -machine q35 -cpu max -smp 4 -m 512M -no-reboot -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/release/vireo -append ktest ktest.skip=a::b \
             -drive file=target/vireo-disk.img,if=none,id=d0,format=raw \
             -device virtio-blk-pci,drive=d0,disable-legacy=on -device virtio-gpu-pci \
             -device virtio-rng-pci,disable-legacy=on,vectors=3 -accel tcg,thread=multi"
        );
        let interactive = q.args_with(DeviceSet::Standard, "", Serial::MonStdio);
        assert!(interactive.contains(&"mon:stdio".to_string()));
    }

    /// `bench` differs from the standard set only in memory and disk, and
    /// those match the Linux peer's flags word for word.
    #[test]
    fn peer_matched_device_set() {
        let q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "target/release/vireo".into(),
            disk: "target/vireo-disk.img".into(),
            smp: 2,
            accel: Accel::Kvm,
        };
        let a = q.args_with(DeviceSet::PeerMatched, "bench", Serial::Stdio).join(" ");
        assert_eq!(
            a,
            "-nodefaults -machine q35 -cpu max -smp 2 -m 1G -no-reboot -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/release/vireo -append bench \
             -blockdev driver=null-co,node-name=d0,size=1073741824,read-zeroes=on \
             -device virtio-blk-pci,drive=d0,disable-legacy=on -device virtio-gpu-pci \
             -accel kvm"
        );
        assert!(!a.contains("vireo-disk.img"));
    }
}
