//! Child processes (QEMU, the Linux peer) that never outlive the runner.
//!
//! Three layers, because no single one covers every way the runner ends:
//! - [`Supervised`] kills and reaps its child when dropped (errors, early
//!   returns, timeouts);
//! - a handler for SIGINT/SIGTERM/SIGHUP/SIGQUIT kills every registered child
//!   and restores the terminal before the runner dies of the signal, and the
//!   panic hook in `main` does the same (the workspace builds with
//!   `panic = "abort"`, so no destructor runs on a panic);
//! - `PR_SET_PDEATHSIG` makes the kernel signal the child when the runner
//!   dies of anything, SIGKILL included.
//!
//! QEMU's stderr is always piped through the runner, which copies it to its
//! own stderr as it arrives and keeps the last lines: they are usually the
//! reason QEMU failed, and go into the runner's final message.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::exit::KernelExit;
use crate::progress::Heartbeat;
use crate::terminal;

/// How the child's standard streams are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// stdin and stdout are this terminal (`run`, `debug`). If the runner
    /// dies the child gets SIGTERM, on which QEMU restores the terminal
    /// mode it changed.
    Attached,
    /// stdin is empty and stdout is piped to the runner. The child gets
    /// SIGKILL if the runner dies.
    Captured,
}

/// `-v`: print each command before running it.
static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(is_verbose: bool) {
    VERBOSE.store(is_verbose, Ordering::Relaxed);
}

/// Pids the signal handler kills; 0 is a free slot. A pid is registered
/// right after spawning and removed right after reaping, so the handler
/// never signals a reaped pid that the system may have handed to someone
/// else (only the instant between the two could, far too short for the pid
/// space to wrap).
static CHILDREN: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];

fn register(pid: u32) -> Option<usize> {
    let pid = i32::try_from(pid).ok()?;
    CHILDREN
        .iter()
        .position(|slot| slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Kills every registered child. Async-signal-safe: atomics and `kill(2)`.
pub fn kill_all_children() {
    for slot in &CHILDREN {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

extern "C" fn on_fatal_signal(signal: libc::c_int) {
    kill_all_children();
    terminal::restore();
    // SA_RESETHAND put the default action back; the signal is blocked while
    // this handler runs, so it is delivered (and ends the runner, with the
    // usual 128 + n status) as soon as the handler returns.
    // SAFETY: raise(3) is async-signal-safe.
    unsafe { libc::raise(signal) };
}

/// Installs [`on_fatal_signal`] for the signals that end a runner from the
/// keyboard, `kill` or a closed terminal.
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: a zeroed sigaction is valid; the handler only calls
        // async-signal-safe functions (atomics, kill, tcgetattr/tcsetattr,
        // raise).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The command as one shell line, for `-v` and error messages.
pub fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| shell_word(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(word: &str) -> String {
    let is_plain = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if is_plain { word.into() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// Lines of stderr kept for the final message.
const STDERR_LINES_KEPT: usize = 20;

/// A child that is killed and reaped when dropped.
pub struct Supervised {
    child: Child,
    slot: Option<usize>,
    status: Option<ExitStatus>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_copier: Option<JoinHandle<()>>,
}

impl Supervised {
    pub fn spawn(mut cmd: Command, console: Console) -> Result<Self, String> {
        // Named after the program actually run: the Linux peer's script
        // comes through here too.
        let program = cmd.get_program().to_string_lossy().into_owned();
        if VERBOSE.load(Ordering::Relaxed) {
            println!("==> $ {}", shell_line(&cmd));
        }
        let death_signal = match console {
            Console::Attached => libc::SIGTERM,
            Console::Captured => {
                cmd.stdin(Stdio::null()).stdout(Stdio::piped());
                libc::SIGKILL
            }
        };
        cmd.stderr(Stdio::piped());
        let runner = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner died before prctl took effect: nobody would
                // ever signal this child.
                // (No allocation here: another thread may hold malloc's lock.)
                if libc::getppid() != runner {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child =
            spawn_retrying(&mut cmd).map_err(|e| format!("cannot start {program}: {e}"))?;
        let slot = register(child.id());
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let tail = Arc::clone(&stderr_tail);
        let stderr_copier = thread::spawn(move || copy_stderr(stderr, &tail));
        Ok(Self { child, slot, status: None, stderr_tail, stderr_copier: Some(stderr_copier) })
    }

    #[cfg(test)]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdout, once (captured children only).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        if let Some(slot) = self.slot.take() {
            CHILDREN[slot].store(0, Ordering::SeqCst);
        }
        self.status = Some(status);
        status
    }

    /// Waits for the child; after `timeout` it is killed and `Ok(None)`
    /// returned. `None` waits for ever.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(self.reaped(status)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill();
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills and reaps; the child may be gone already.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.reaped(status);
        }
    }

    /// QEMU's last stderr lines, once its stderr has closed (or after a
    /// second: a grandchild could keep the pipe open).
    pub fn stderr_tail(&mut self) -> Vec<String> {
        if let Some(copier) = self.stderr_copier.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !copier.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if copier.is_finished() {
                let _ = copier.join();
            }
        }
        self.stderr_tail.lock().map(|tail| tail.iter().cloned().collect()).unwrap_or_default()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `spawn`, tried again on ETXTBSY: a script written just before (the
/// tests' fake QEMU) can be busy while another thread's fork still holds
/// the writer's descriptor, until that child's exec closes it.
fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Copies the child's stderr to ours line by line and keeps the last lines.
fn copy_stderr(stderr: impl Read, tail: &Mutex<VecDeque<String>>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                // eprint! rather than a raw write: the test harness captures it.
                eprint!("{text}");
                let text = text.trim_end().to_string();
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == STDERR_LINES_KEPT {
                        tail.pop_front();
                    }
                    tail.push_back(text);
                }
            }
        }
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
    child: Supervised,
    rx: Receiver<Option<String>>,
    eof: bool,
}

impl Streaming {
    pub fn spawn(cmd: Command) -> Result<Self, String> {
        let mut child = Supervised::spawn(cmd, Console::Captured)?;
        let mut out = child.take_stdout().expect("stdout is piped");
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

    /// Like [`Streaming::next`], printing `heartbeat`'s line whenever the
    /// child stays quiet for its period before `deadline`.
    pub fn next_or_beat(&mut self, deadline: Instant, heartbeat: &mut Heartbeat) -> Chunk {
        loop {
            match self.next(deadline.min(heartbeat.due())) {
                Chunk::Timeout if Instant::now() < deadline => {
                    if let Some(line) = heartbeat.beat() {
                        println!("{line}");
                    }
                }
                chunk => {
                    heartbeat.output();
                    return chunk;
                }
            }
        }
    }

    /// Reap after EOF. QEMU closes stdout only when exiting, so this is quick;
    /// the timeout guards against a wedged process anyway.
    pub fn wait(&mut self) -> KernelExit {
        match self.child.wait_timeout(Some(Duration::from_secs(10))) {
            Ok(Some(status)) => KernelExit::from_status(status),
            _ => KernelExit::Signal(libc::SIGKILL),
        }
    }

    /// QEMU's last stderr lines (see [`Supervised::stderr_tail`]).
    pub fn stderr_tail(&mut self) -> Vec<String> {
        self.child.stderr_tail()
    }

    /// Kill QEMU (timeouts).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-append", "log=debug ktest", "-smp", "2", "it's", ""]);
        assert_eq!(
            shell_line(&cmd),
            r"qemu-system-x86_64 -append 'log=debug ktest' -smp 2 'it'\''s' ''"
        );
    }

    #[test]
    fn dropping_kills_and_unregisters() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let child = Supervised::spawn(sleep, Console::Captured).unwrap();
        let pid = child.id() as i32;
        assert!(CHILDREN.iter().any(|slot| slot.load(Ordering::SeqCst) == pid));
        drop(child);
        assert!(!CHILDREN.iter().any(|slot| slot.load(Ordering::SeqCst) == pid));
        // SAFETY: kill with signal 0 only checks that the pid exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "the child outlived its Supervised");
    }

    #[test]
    fn stderr_is_kept_and_timeouts_kill() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first >&2; echo 'qemu: it broke' >&2; exec sleep 30"]);
        let mut child = Supervised::spawn(cmd, Console::Captured).unwrap();
        assert_eq!(child.wait_timeout(Some(Duration::from_millis(300))).unwrap(), None);
        assert_eq!(child.stderr_tail(), ["first", "qemu: it broke"]);
    }
}
