//! The two processes of a hostile boot — the backend and QEMU — and the
//! dialogue with the guest's serial shell.
//!
//! Both children are killed and reaped when their [`Guarded`] handle drops,
//! however the run ends (a failed check, an early `?`, a panic in the
//! runner). They also get `PR_SET_PDEATHSIG`, so even a runner killed with
//! SIGKILL leaves no QEMU or backend behind.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::judge::Step;

/// The guest shell's prompt (kernel/src/shell/mod.rs).
pub const PROMPT: &str = "vireo> ";

/// A child process that is killed and reaped on drop.
pub struct Guarded {
    child: Child,
}

impl Guarded {
    /// Spawns `cmd`; the child dies with the runner.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Self, String> {
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
        Ok(Self { child })
    }

    #[cfg(test)]
    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guarded {
    /// Sends SIGUSR1 (the backend's cue to start lying).
    ///
    /// # Errors
    /// The child is gone.
    pub fn signal_usr1(&mut self) -> Result<(), String> {
        unsafe extern "C" {
            fn kill(pid: i32, signal: i32) -> i32;
        }
        const SIGUSR1: i32 = 10;
        if !self.is_running() {
            return Err("the backend exited".into());
        }
        // SAFETY: kill(2) on our own child's pid, which cannot have been
        // reused: the child is unreaped (we just saw it running) until Drop.
        let sent = unsafe { kill(self.child.id() as i32, SIGUSR1) };
        if sent == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().to_string()) }
    }
}

/// Asks the kernel to SIGKILL the child when the runner's thread that
/// spawned it dies (the runner spawns from its main thread).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    unsafe extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGKILL: u64 = 9;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe and touches no memory of
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            Ok(())
        });
    }
}

/// Waits until `path` exists (the backend is listening) while `backend`
/// keeps running.
pub fn wait_for_socket(
    path: &Path,
    backend: &mut Guarded,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        if !backend.is_running() {
            return Err("the backend exited before listening (see its log)".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no socket at {} after {} s", path.display(), timeout.as_secs()))
}

/// QEMU with its serial console on stdin/stdout.
pub struct Shell {
    /// Held for its `Drop`: QEMU dies with the session.
    _qemu: Guarded,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    /// Everything the guest printed so far.
    pub transcript: String,
    eof: bool,
}

impl Shell {
    pub fn spawn(mut cmd: Command) -> Result<Self, String> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut qemu = Guarded::spawn(cmd, "QEMU")?;
        let stdin = qemu.child.stdin.take();
        let mut out = qemu.child.stdout.take().ok_or("QEMU stdout not piped")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    return;
                }
            }
        });
        Ok(Self { _qemu: qemu, stdin, rx, transcript: String::new(), eof: false })
    }

    /// Reads until the transcript from `from` contains `marker`; returns
    /// how that went and the output between `from` and the marker.
    pub fn wait_for(&mut self, from: usize, marker: &str, timeout: Duration) -> Step {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.transcript[from..].find(marker) {
                return Step::Answered(self.transcript[from..from + at].to_string());
            }
            if self.eof {
                return Step::Died;
            }
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => self.transcript.push_str(&chunk),
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => return Step::Hung(timeout),
            }
        }
    }

    /// Writes `text` to the guest's serial input as it is.
    ///
    /// # Errors
    /// QEMU's input is closed.
    pub fn send(&mut self, text: &str) -> Result<(), String> {
        let sent =
            self.stdin.as_mut().map(|s| s.write_all(text.as_bytes()).and_then(|()| s.flush()));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err("QEMU's serial input is closed".into()),
        }
    }

    /// Types `line` and Enter; false when QEMU's input is gone.
    pub fn type_line(&mut self, line: &str) -> bool {
        let sent = self.stdin.as_mut().map(|s| {
            s.write_all(line.as_bytes()).and_then(|()| s.write_all(b"\n")).and_then(|()| s.flush())
        });
        matches!(sent, Some(Ok(())))
    }

    /// Types `line` at the prompt and waits for the next prompt.
    pub fn command(&mut self, line: &str, timeout: Duration) -> Step {
        let from = self.transcript.len();
        if !self.type_line(line) {
            return Step::Died;
        }
        self.wait_for(from, PROMPT, timeout)
    }

    /// Closes stdin and keeps what is left of the output.
    pub fn finish(&mut self, timeout: Duration) {
        self.stdin = None;
        let _ = self.wait_for(self.transcript.len(), "\u{0}never", timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    #[test]
    fn guarded_children_die_with_their_handle() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let child = Guarded::spawn(cmd, "sleep").unwrap();
        let pid = child.id();
        assert!(pid_alive(pid));
        drop(child);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn usr1_reaches_the_child() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap 'exit 7' USR1; while :; do sleep 0.05; done"]);
        let mut child = Guarded::spawn(cmd, "sh").unwrap();
        thread::sleep(Duration::from_millis(200));
        child.signal_usr1().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.is_running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(!child.is_running());
        assert!(child.signal_usr1().is_err());
    }

    #[test]
    fn a_backend_that_dies_before_listening_is_reported() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut backend = Guarded::spawn(cmd, "fake backend").unwrap();
        let socket = std::env::temp_dir().join(format!("no-such-{}.sock", std::process::id()));
        let err = wait_for_socket(&socket, &mut backend, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("exited before listening"), "{err}");
    }

    #[test]
    fn shell_dialogue_with_a_fake_guest() {
        // A "guest" that prints a prompt, answers one line, then hangs.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf 'boot\\nvireo> '; read l; printf \"$l\\nout\\nvireo> \"; sleep 30",
        ]);
        let mut shell = Shell::spawn(cmd).unwrap();
        assert_eq!(
            shell.wait_for(0, PROMPT, Duration::from_secs(5)),
            Step::Answered("boot\n".into())
        );
        match shell.command("mem", Duration::from_secs(5)) {
            Step::Answered(out) => assert!(out.contains("out"), "{out:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            shell.command("again", Duration::from_millis(300)),
            Step::Hung(Duration::from_millis(300))
        );
        let pid = shell._qemu.id();
        drop(shell);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn a_dead_guest_is_reported_not_waited_for() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf 'panic: x\\n'"]);
        let mut shell = Shell::spawn(cmd).unwrap();
        assert_eq!(shell.wait_for(0, PROMPT, Duration::from_secs(5)), Step::Died);
    }
}
