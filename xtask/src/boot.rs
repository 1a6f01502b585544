//! The subcommands that boot one kernel for a person: `run` and `debug`
//! (QEMU attached to this terminal) and `boot-log` (one boot, captured).
//! Each ends with one sentence saying how the boot ended and an exit status
//! that agrees with it (see `exit.rs`).

use std::fs::File;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::BootArgs;
use crate::cmds::{Ctx, Streamed, stream_until};
use crate::exit::{self, Code, Ending, Failure, KernelExit};
use crate::process::{Console, Supervised};
use crate::qemu::Serial;
use crate::qmp::QmpListener;
use crate::terminal;

/// What ends a `boot-log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// The kernel's `boot: ready in N us` line.
    Ready,
    /// `--until TEXT`: the first time TEXT appears.
    Text(String),
    /// `--until-exit`: the kernel ending the run.
    Exit,
}

/// What the kernel prints once it has booted (kernel/src/main.rs).
const READY_MARKER: &str = "boot: ready in ";

impl StopAt {
    fn describe(&self) -> String {
        match self {
            StopAt::Ready => format!("when the kernel reports ready (`{}N us`)", READY_MARKER),
            StopAt::Text(text) => format!("at the first {text:?}"),
            StopAt::Exit => "when the kernel exits".into(),
        }
    }

    /// Where the stop is in `output`, as the text that matched (for the
    /// ready line, the whole line, once it is complete).
    fn find(&self, output: &str) -> Option<String> {
        match self {
            StopAt::Ready => {
                let at = output.find(READY_MARKER)?;
                let line_start = output[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = at + output[at..].find('\n')?;
                Some(output[line_start..line_end].trim().to_string())
            }
            StopAt::Text(text) => output.contains(text.as_str()).then(|| text.clone()),
            StopAt::Exit => None,
        }
    }
}

impl Ctx {
    pub fn run(
        &self,
        b: &BootArgs,
        timeout: Option<u64>,
        screen: crate::display::Screen,
    ) -> Result<String, Failure> {
        let q = self.machine(b.smp, !b.no_build)?;
        println!("==> booting (cmdline {:?}); Ctrl-A X quits", b.append);
        println!("==> screen: {}", crate::display::describe(&screen));
        let screen_args = crate::display::qemu_args(&screen);
        let screen_args: Vec<&str> = screen_args.iter().map(String::as_str).collect();
        let cmd = self.qemu_cmd(&q, &b.append, Serial::MonStdio, &screen_args);
        judge_attached(&run_attached(cmd, timeout)?)
    }

    pub fn debug(
        &self,
        b: &BootArgs,
        timeout: Option<u64>,
        gdb_port: u16,
    ) -> Result<String, Failure> {
        check_port_free(gdb_port)?;
        let q = self.machine(b.smp, !b.no_build)?;
        println!("==> QEMU halted at reset, gdb stub on :{gdb_port}. Attach with:");
        println!(
            "    gdb {} -ex 'target remote :{gdb_port}'",
            self.relative(&self.kernel_path()).display()
        );
        println!("==> gdb's `kill` or Ctrl-A X ends the session");
        let stub = format!("tcp::{gdb_port}");
        let cmd = self.qemu_cmd(&q, &b.append, Serial::MonStdio, &["-gdb", &stub, "-S"]);
        judge_attached(&run_attached(cmd, timeout)?)
    }

    pub fn boot_log(
        &self,
        b: &BootArgs,
        stop: &StopAt,
        timeout: u64,
        echo: bool,
    ) -> Result<String, Failure> {
        let q = self.machine(b.smp, !b.no_build)?;
        let path = self.target.join("boot.log");
        let mut log =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        println!("==> one boot, stopping {} or after {timeout} s", stop.describe());
        let cmd = self.qemu_cmd(&q, &b.append, Serial::Stdio, &[]);
        let mut output = String::new();
        let mut seen = None;
        let streamed = stream_until(cmd, timeout, |s| {
            let _ = log.write_all(s.as_bytes());
            if echo {
                print!("{s}");
            }
            output.push_str(s);
            seen = stop.find(&output);
            seen.is_some()
        })?;
        println!("==> serial log: {}", self.relative(&path).display());
        judge_boot_log(stop, &streamed, seen.as_deref(), timeout)
    }
}

fn judge_attached(ending: &Ending) -> Result<String, Failure> {
    // A QEMU that was killed left the cursor after the shell's prompt.
    if matches!(ending.exit, None | Some(KernelExit::Signal(_))) {
        println!();
    }
    exit::judge_interactive(ending).into_result()
}

/// `boot-log` succeeds when it saw what it waited for.
fn judge_boot_log(
    stop: &StopAt,
    streamed: &Streamed,
    seen: Option<&str>,
    timeout: u64,
) -> Result<String, Failure> {
    if let Some(text) = seen {
        return Ok(match stop {
            StopAt::Ready => format!("kernel ready ({text}); QEMU stopped after one boot"),
            _ => format!("saw {text:?}; QEMU stopped after one boot"),
        });
    }
    let failed = |code, message: String| Err(Failure { message, code });
    match streamed.exit {
        None => failed(
            Code::Failed,
            format!("nothing {} within {timeout} s; QEMU killed", stop.describe()),
        ),
        Some(KernelExit::Success) if *stop == StopAt::Exit => Ok(KernelExit::Success.describe()),
        Some(k) if k.is_qemu_failure() => {
            let ending = Ending {
                exit: Some(k),
                stderr_tail: streamed.stderr_tail.clone(),
                ..Default::default()
            };
            failed(Code::QemuFailed, exit::judge_interactive(&ending).message)
        }
        Some(k) if *stop == StopAt::Exit => failed(Code::Failed, k.describe()),
        Some(k) => failed(
            Code::Failed,
            format!("the boot ended before stopping {}: {}", stop.describe(), k.describe()),
        ),
    }
}

/// Runs QEMU on this terminal until it exits (or is killed after
/// `timeout_secs`), then puts the terminal mode back and collects why it
/// ended.
pub fn run_attached(mut cmd: Command, timeout_secs: Option<u64>) -> Result<Ending, Failure> {
    let qmp = QmpListener::bind()
        .map_err(|e| format!("cannot open a port for QEMU's QMP monitor: {e}"))?;
    cmd.args(qmp.qemu_args());
    let watch = qmp.watch();
    let mut qemu = Supervised::spawn(cmd, Console::Attached)
        .map_err(|message| Failure { message, code: Code::QemuFailed })?;
    let status = qemu.wait_timeout(timeout_secs.map(Duration::from_secs));
    // QEMU restores the mode itself unless it was killed or crashed.
    terminal::restore();
    let status = status.map_err(|e| format!("waiting for QEMU: {e}"))?;
    Ok(Ending {
        exit: status.map(KernelExit::from_status),
        timeout_secs: timeout_secs.unwrap_or_default(),
        shutdown_reason: watch.reason(),
        stderr_tail: qemu.stderr_tail(),
    })
}

/// `debug` fails early, and says why, when another QEMU (an earlier `make
/// debug`) still holds the gdb port.
fn check_port_free(port: u16) -> Result<(), Failure> {
    std::net::TcpListener::bind(("0.0.0.0", port)).map(drop).map_err(|e| {
        Failure::from(format!(
            "gdb port {port} is not free ({e}): another `make debug`? Pick another with --gdb-port"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_qemu::FakeQemu;

    #[test]
    fn ready_needs_the_whole_line() {
        let stop = StopAt::Ready;
        assert_eq!(stop.find("[0.1] INFO vireo: boot: ready in 12"), None);
        assert_eq!(
            stop.find("x\n[0.1] INFO vireo: boot: ready in 1234 us\r\nvireo> ").as_deref(),
            Some("[0.1] INFO vireo: boot: ready in 1234 us")
        );
        assert_eq!(StopAt::Text("vireo> ".into()).find("ok\nvireo> ").as_deref(), Some("vireo> "));
        assert_eq!(StopAt::Exit.find("boot: ready in 1 us\n"), None);
    }

    fn streamed(exit: Option<KernelExit>) -> Streamed {
        Streamed { exit, stderr_tail: vec!["qemu: no such file".into()] }
    }

    #[test]
    fn boot_log_verdicts() {
        let ready =
            judge_boot_log(&StopAt::Ready, &streamed(None), Some("boot: ready in 5 us"), 60);
        assert!(ready.unwrap().contains("one boot"));
        let silent = judge_boot_log(&StopAt::Ready, &streamed(None), None, 60).unwrap_err();
        assert_eq!(silent.code, Code::Failed);
        assert!(silent.message.contains("within 60 s"), "{}", silent.message);
        let qemu =
            judge_boot_log(&StopAt::Ready, &streamed(Some(KernelExit::QemuError(1))), None, 60)
                .unwrap_err();
        assert_eq!(qemu.code, Code::QemuFailed);
        assert!(qemu.message.ends_with("qemu: no such file"), "{}", qemu.message);
        let early = judge_boot_log(&StopAt::Ready, &streamed(Some(KernelExit::Success)), None, 60)
            .unwrap_err();
        assert_eq!(early.code, Code::Failed);
        assert!(
            judge_boot_log(&StopAt::Exit, &streamed(Some(KernelExit::Success)), None, 60).is_ok()
        );
        let panic = judge_boot_log(&StopAt::Exit, &streamed(Some(KernelExit::Failure)), None, 60);
        assert_eq!(panic.unwrap_err().code, Code::Failed);
    }

    /// A fake QEMU whose behaviour is picked by `$FAKE`; for QMP it talks to
    /// the runner's port with bash's /dev/tcp, as QEMU would.
    const ATTACHED: &str = r#"#!/bin/bash
port=
while [ $# -gt 0 ]; do
  case "$1" in -chardev) port="${2##*port=}"; port="${port%%,*}" ;; esac
  shift
done
qmp() {
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '{"QMP": {"version": {}}}\n' >&3
  read -r caps <&3
  printf '{"return": {}}\n{"event": "SHUTDOWN", "data": {"guest": %s, "reason": "%s"}}\n' "$1" "$2" >&3
}
case "$FAKE" in
  success) exit 33 ;;
  panic) echo 'panic: boom' ; exit 35 ;;
  bad-kernel) echo "qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note" >&2; exit 1 ;;
  segv) kill -SEGV $$ ;;
  quit) qmp false host-qmp-quit; exit 0 ;;
  triple-fault) qmp true guest-reset; exit 0 ;;
  gdb-kill) echo "qemu-system-x86_64: QEMU: Terminated via GDBstub" >&2; exit 0 ;;
  hang) exec sleep 30 ;;
esac
"#;

    fn attached(fake: &FakeQemu, case: &str, timeout: Option<u64>) -> exit::Verdict {
        let mut cmd = Command::new(&fake.bin);
        cmd.env("FAKE", case)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        exit::judge_interactive(&run_attached(cmd, timeout).unwrap())
    }

    #[test]
    fn every_way_an_attached_qemu_ends() {
        let fake = FakeQemu::new("attached", ATTACHED);
        for (case, code, words) in [
            ("success", Code::Ok, "success"),
            ("panic", Code::Failed, "status 35"),
            (
                "bad-kernel",
                Code::QemuFailed,
                "QEMU failed (status 1): qemu-system-x86_64: Error loading",
            ),
            ("segv", Code::QemuFailed, "SIGSEGV"),
            ("quit", Code::Ok, "Ctrl-A X"),
            ("triple-fault", Code::Failed, "triple fault"),
            ("gdb-kill", Code::Ok, "gdb"),
        ] {
            let verdict = attached(&fake, case, None);
            assert_eq!(verdict.code, code, "{case}: {}", verdict.message);
            assert!(verdict.message.contains(words), "{case}: {}", verdict.message);
        }
    }

    #[test]
    fn an_attached_timeout_kills_qemu() {
        let fake = FakeQemu::new("attached-timeout", ATTACHED);
        let started = std::time::Instant::now();
        let verdict = attached(&fake, "hang", Some(1));
        assert_eq!(verdict.code, Code::Failed);
        assert!(verdict.message.contains("timed out after 1 s"), "{}", verdict.message);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
