//! How a boot ended, and what the runner's own exit status says about it.
//!
//! QEMU's exit status is overloaded: the kernel's `isa-debug-exit` write `v`
//! becomes `(v << 1) | 1`, QEMU's own errors are status 1, a triple fault
//! under `-no-reboot` and a user's Ctrl-A X are both status 0. The runner
//! decodes the status ([`KernelExit`]), adds what QMP and QEMU's stderr say
//! ([`Ending`]), and reports one [`Verdict`]: a sentence and the exit code
//! of `cargo xtask` ([`Code`]).

use std::process::ExitStatus;

/// `cargo xtask`'s exit status. `2` is clap's: a bad command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The kernel did what was asked, or the user quit.
    Ok = 0,
    /// The kernel failed (panic, failed tests, reset, timeout), or the runner
    /// could not do its part (build error, missing file).
    Failed = 1,
    /// QEMU itself failed: it refused its arguments or a file, or died of a
    /// signal. The kernel may never have run.
    QemuFailed = 3,
}

/// An error on its way to `main`: what to print and how to exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: Code,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, code: Code::Failed }
    }
}

/// How the kernel (or QEMU) ended, decoded from QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelExit {
    /// Kernel wrote 0x10 to the debug-exit port: status 33.
    Success,
    /// Kernel wrote 0x11: tests failed or the kernel panicked. Status 35.
    Failure,
    /// Status 0: with `-no-reboot` a reset (triple fault) makes QEMU exit 0.
    /// So do a monitor quit (Ctrl-A X) and gdb's `kill`; interactive runs
    /// tell them apart with [`Ending`].
    Reset,
    /// Some other odd status: the kernel wrote an unexpected value `v`.
    OtherKernelCode(u32),
    /// Status 1 (QEMU's error exit: a bad option, a missing or locked file)
    /// or any even status: QEMU itself failed.
    QemuError(i32),
    /// QEMU was killed by this signal.
    Signal(i32),
}

impl KernelExit {
    pub fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::from_code(code),
            (None, Some(signal)) => KernelExit::Signal(signal),
            (None, None) => KernelExit::Signal(0),
        }
    }

    pub fn from_code(code: i32) -> Self {
        match code {
            33 => KernelExit::Success,
            35 => KernelExit::Failure,
            0 => KernelExit::Reset,
            // The kernel never writes 0, so 1 is QEMU's own `exit(1)`.
            c if c > 1 && c & 1 == 1 => KernelExit::OtherKernelCode((c as u32) >> 1),
            c => KernelExit::QemuError(c),
        }
    }

    /// True when QEMU, not the kernel, ended the run.
    pub fn is_qemu_failure(self) -> bool {
        matches!(self, KernelExit::QemuError(_) | KernelExit::Signal(_))
    }

    /// A few words, for a crashed test's reason.
    pub fn short(self) -> String {
        match self {
            KernelExit::Success => "exited with success mid-test (status 33)".into(),
            KernelExit::Failure => "panic (status 35)".into(),
            KernelExit::Reset => "triple fault (status 0)".into(),
            KernelExit::OtherKernelCode(v) => format!("exit code {v:#x}"),
            KernelExit::QemuError(c) => format!("QEMU failed (status {c})"),
            KernelExit::Signal(s) => format!("QEMU killed by {}", signal_name(s)),
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
            KernelExit::QemuError(c) => format!("QEMU failed (status {c})"),
            KernelExit::Signal(s) => format!("QEMU was killed by {}", signal_name(s)),
        }
    }
}

/// `SIGSEGV (signal 11)`, for the signals a dying QEMU meets.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("{name} (signal {signal})")
}

/// Everything known about how one interactive QEMU ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// `None`: the runner killed QEMU after `--timeout` seconds.
    pub exit: Option<KernelExit>,
    pub timeout_secs: u64,
    /// The `reason` of QEMU's QMP `SHUTDOWN` event (QAPI `ShutdownCause`),
    /// if it sent one: `guest-reset`, `host-qmp-quit`, `host-signal`, ...
    pub shutdown_reason: Option<String>,
    /// QEMU's last stderr lines, oldest first.
    pub stderr_tail: Vec<String>,
}

/// The runner's last word on a boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub message: String,
    pub code: Code,
}

impl Verdict {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }

    pub fn into_result(self) -> Result<String, Failure> {
        match self.code {
            Code::Ok => Ok(self.message),
            code => Err(Failure { message: self.message, code }),
        }
    }
}

/// What QEMU printed last on stderr, usually the reason it failed: its
/// last `qemu-system-x86_64: ...` message with any lines after it (`Is
/// another process using the image?`), else the last line.
fn qemu_said(ending: &Ending) -> String {
    let lines: Vec<&str> =
        ending.stderr_tail.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return " (it printed nothing on stderr)".into();
    }
    let start = lines.iter().rposition(|l| l.starts_with("qemu-system")).unwrap_or(lines.len() - 1);
    format!(": {}", lines[start..].join(" "))
}

/// Judges an interactive run (`run`, `debug`): a user's quit is fine, the
/// kernel failing or resetting is not, and QEMU failing is said to be QEMU.
pub fn judge_interactive(ending: &Ending) -> Verdict {
    let Some(exit) = ending.exit else {
        return Verdict::new(
            Code::Failed,
            format!("timed out after {} s (--timeout); QEMU killed", ending.timeout_secs),
        );
    };
    match exit {
        KernelExit::Success => Verdict::new(Code::Ok, exit.describe()),
        KernelExit::Failure | KernelExit::OtherKernelCode(_) => {
            Verdict::new(Code::Failed, exit.describe())
        }
        KernelExit::QemuError(_) | KernelExit::Signal(_) => {
            Verdict::new(Code::QemuFailed, format!("{}{}", exit.describe(), qemu_said(ending)))
        }
        KernelExit::Reset => judge_status_zero(ending),
    }
}

/// Status 0 means a reset, a quit, or gdb's `kill`; QMP's `SHUTDOWN` event
/// (sent for everything but gdb) says which.
fn judge_status_zero(ending: &Ending) -> Verdict {
    match ending.shutdown_reason.as_deref() {
        Some("guest-reset") => Verdict::new(
            Code::Failed,
            "kernel reset the machine (triple fault?); QEMU exited because of -no-reboot",
        ),
        Some("host-qmp-quit" | "host-ui") => Verdict::new(Code::Ok, "quit (Ctrl-A X)"),
        Some("guest-shutdown") => Verdict::new(Code::Ok, "kernel powered the machine off"),
        Some("host-signal") => Verdict::new(
            Code::Failed,
            "QEMU was stopped by a signal from outside the runner (SIGTERM/SIGINT/SIGHUP)",
        ),
        Some("guest-panic") => Verdict::new(Code::Failed, "kernel reported a panic to QEMU"),
        Some(other) => Verdict::new(Code::Failed, format!("QEMU shut down: {other}")),
        None if ending.stderr_tail.iter().any(|line| line.contains("Terminated via GDBstub")) => {
            Verdict::new(Code::Ok, "quit (gdb killed the session)")
        }
        None => Verdict::new(Code::Ok, "QEMU exited with status 0 and no shutdown event (quit)"),
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
        assert_eq!(KernelExit::from_code(1), KernelExit::QemuError(1));
        assert_eq!(KernelExit::from_code(3), KernelExit::OtherKernelCode(1));
        assert_eq!(KernelExit::from_code(37), KernelExit::OtherKernelCode(0x12));
        assert_eq!(KernelExit::from_code(2), KernelExit::QemuError(2));
        assert!(KernelExit::Reset.describe().contains("triple fault"));
        assert_eq!(KernelExit::Signal(11).describe(), "QEMU was killed by SIGSEGV (signal 11)");
        assert_eq!(signal_name(63), "signal 63");
    }

    fn judged(exit: Option<KernelExit>, reason: Option<&str>, stderr: &[&str]) -> Verdict {
        judge_interactive(&Ending {
            exit,
            timeout_secs: 5,
            shutdown_reason: reason.map(String::from),
            stderr_tail: stderr.iter().map(|line| line.to_string()).collect(),
        })
    }

    #[test]
    fn quits_are_fine_and_resets_are_not() {
        let zero = Some(KernelExit::Reset);
        assert_eq!(judged(zero, Some("host-qmp-quit"), &[]).code, Code::Ok);
        assert_eq!(judged(zero, Some("guest-reset"), &[]).code, Code::Failed);
        assert!(judged(zero, Some("guest-reset"), &[]).message.contains("triple fault"));
        assert_eq!(judged(zero, Some("host-signal"), &[]).code, Code::Failed);
        let gdb = judged(zero, None, &["qemu-system-x86_64: QEMU: Terminated via GDBstub"]);
        assert_eq!((gdb.code, gdb.message.contains("gdb")), (Code::Ok, true));
    }

    #[test]
    fn kernel_and_qemu_failures_are_told_apart() {
        assert_eq!(judged(Some(KernelExit::Success), None, &[]).code, Code::Ok);
        assert_eq!(judged(Some(KernelExit::Failure), None, &[]).code, Code::Failed);
        let locked = judged(
            Some(KernelExit::QemuError(1)),
            None,
            &[
                "qemu-system-x86_64: warning: something else",
                "qemu-system-x86_64: -device virtio-blk-pci: Failed to get \"write\" lock",
                "Is another process using the image [d.img]?",
                "",
            ],
        );
        assert_eq!(locked.code, Code::QemuFailed);
        assert_eq!(
            locked.message,
            "QEMU failed (status 1): qemu-system-x86_64: -device virtio-blk-pci: Failed to get \"write\" lock \
             Is another process using the image [d.img]?"
        );
        let killed = judged(Some(KernelExit::Signal(libc::SIGSEGV)), None, &[]);
        assert_eq!(killed.code, Code::QemuFailed);
        assert!(killed.message.contains("SIGSEGV"), "{}", killed.message);
        let timeout = judged(None, None, &[]);
        assert_eq!(
            (timeout.code, timeout.message.contains("timed out after 5 s")),
            (Code::Failed, true)
        );
    }
}
