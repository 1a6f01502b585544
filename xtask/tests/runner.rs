//! The runner binary end to end, against a fake QEMU (a shell script named
//! with `--qemu`): exit statuses, flags, and what is left when the runner
//! is killed. No real QEMU or kernel is needed.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Behaviour picked by `$FAKE`. It records its pid and arguments so the
/// tests can look for it afterwards.
const FAKE_QEMU: &str = r#"#!/bin/bash
echo $$ > "$FAKE_DIR/pid"
printf '%s\n' "$@" > "$FAKE_DIR/args"
case "$FAKE" in
  success) exit 33 ;;
  panic) echo 'panic: boom'; exit 35 ;;
  bad-kernel) echo "qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note" >&2; exit 1 ;;
  segv) kill -SEGV $$ ;;
  ready) printf '[0.1] INFO vireo: boot: ready in 5 us\nvireo> '; exec sleep 30 ;;
  raw) stty raw -echo; exec sleep 30 ;;
  hang) exec sleep 30 ;;
esac
"#;

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-runner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let qemu = dir.join("fake-qemu");
        std::fs::write(&qemu, FAKE_QEMU).unwrap();
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("vireo.elf"), b"\x7fELF fake kernel").unwrap();
        Self { dir }
    }

    /// `cargo xtask --qemu fake --kernel fake <args>` with `$FAKE = case`.
    fn runner(&self, case: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.arg("--qemu").arg(self.dir.join("fake-qemu"));
        cmd.arg("--kernel").arg(self.dir.join("vireo.elf"));
        cmd.args(args);
        cmd.env("FAKE", case)
            .env("FAKE_DIR", &self.dir)
            .env("CARGO_TARGET_DIR", self.dir.join("target"));
        cmd.env_remove("VIREO_QEMU");
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, case: &str, args: &[&str]) -> Output {
        let output = self.runner(case, args).output().unwrap();
        eprintln!(
            "runner {args:?} with {case}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The fake's pid, once it has started.
    fn fake_pid(&self) -> i32 {
        let path = self.dir.join("pid");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) =
                std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "the fake QEMU never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Running and not a zombie.
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn run_exit_status_tells_the_truth() {
    let sandbox = Sandbox::new("status");
    for (case, code, words) in [
        ("success", 0, "kernel exited with success"),
        ("panic", 1, "kernel exited with failure"),
        ("bad-kernel", 3, "QEMU failed (status 1): qemu-system-x86_64: Error loading"),
        ("segv", 3, "SIGSEGV"),
    ] {
        let output = sandbox.run(case, &["run", "--no-build"]);
        assert_eq!(output.status.code(), Some(code), "{case}");
        assert!(text(&output).contains(words), "{case}: {}", text(&output));
    }
    let output = sandbox.run("panic", &["debug", "--no-build", "--gdb-port", "34567"]);
    assert_eq!(output.status.code(), Some(1), "a kernel failure under debug");
}

#[test]
fn bad_flags_get_clear_messages() {
    let sandbox = Sandbox::new("flags");
    for (args, words) in [
        (&["run", "--smp", "0"][..], "0 is not in 1..=64"),
        (&["run", "--smp", "999"], "999 is not in 1..=64"),
        (&["test", "--smp", "2,65"], "65 is not in 1..=64"),
        (&["rn"], "similar subcommand"),
        (&["run", "--no-buld"], "similar argument"),
        (&["debug", "--gdb-port", "0"], "0 is not in 1..=65535"),
        (&["run", "--timeout", "0"], "--timeout"),
    ] {
        let output = sandbox.run("success", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(text(&output).contains(words), "{args:?}: {}", text(&output));
    }
    let mut not_elf = sandbox.runner("success", &["run"]);
    not_elf.args(["--kernel", "Cargo.toml"]);
    let output = not_elf.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("not an ELF file"), "{}", text(&output));
}

#[test]
fn extra_qemu_arguments_and_verbose() {
    let sandbox = Sandbox::new("extra");
    let output = sandbox.run(
        "success",
        &[
            "-v",
            "run",
            "--no-build",
            "--cmdline",
            "log=debug",
            "--qemu-arg",
            "-d",
            "--qemu-arg=int",
            "--",
            "-x",
            "y z",
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let args = std::fs::read_to_string(sandbox.dir.join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let append = args.iter().position(|&a| a == "-append").unwrap();
    assert_eq!(args[append + 1], "log=debug", "--cmdline is --append");
    let d = args.iter().position(|&a| a == "-d").unwrap();
    assert_eq!(&args[d..d + 4], ["-d", "int", "-x", "y z"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("==> $ ") && stdout.contains("-d int -x 'y z'"), "{stdout}");
}

#[test]
fn boot_log_is_one_boot() {
    let sandbox = Sandbox::new("bootlog");
    let started = Instant::now();
    let output = sandbox.run("ready", &["boot-log", "--no-build"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).contains("kernel ready"), "{}", text(&output));
    assert!(started.elapsed() < Duration::from_secs(20), "it waited for the timeout");
    assert!(wait_gone(sandbox.fake_pid()));
    let output = sandbox.run("ready", &["boot-log", "--no-build", "--until", "vireo> "]);
    assert!(text(&output).contains("saw \"vireo> \""), "{}", text(&output));
    let output = sandbox.run("hang", &["boot-log", "--no-build", "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1), "no ready line is a failure");
}

/// Starts the runner on `case`, waits for the fake QEMU, kills the runner
/// with `signal`, and says whether the fake is gone.
fn fake_dies_with_runner(name: &str, args: &[&str], signal: i32) -> bool {
    let sandbox = Sandbox::new(name);
    let mut runner: Child =
        sandbox.runner("hang", args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let fake = sandbox.fake_pid();
    assert!(is_alive(fake));
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(runner.id() as i32, signal) };
    let status = runner.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(signal), "the runner dies of the signal it got");
    wait_gone(fake)
}

#[test]
fn no_stray_qemu_after_sigterm() {
    assert!(fake_dies_with_runner("term-run", &["run", "--no-build"], libc::SIGTERM));
    assert!(fake_dies_with_runner(
        "term-debug",
        &["debug", "--no-build", "--gdb-port", "34568"],
        libc::SIGTERM
    ));
    assert!(fake_dies_with_runner("term-bootlog", &["boot-log", "--no-build"], libc::SIGTERM));
}

#[test]
fn no_stray_qemu_after_sigkill() {
    assert!(fake_dies_with_runner("kill-run", &["run", "--no-build"], libc::SIGKILL));
    assert!(fake_dies_with_runner("kill-bootlog", &["boot-log", "--no-build"], libc::SIGKILL));
}

/// A pseudo-terminal for the runner's stdin, as a person's terminal is.
struct Pty {
    controller: i32,
    device: i32,
}

impl Pty {
    fn open() -> Self {
        let (mut controller, mut device) = (0, 0);
        // SAFETY: openpty writes two fds; the other arguments may be null.
        let opened = unsafe {
            libc::openpty(
                &mut controller,
                &mut device,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0);
        Self { controller, device }
    }

    fn is_canonical(&self) -> bool {
        // SAFETY: a zeroed termios is valid storage; `device` is open.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(self.device, &mut mode) }, 0);
        mode.c_lflag & libc::ICANON != 0 && mode.c_lflag & libc::ECHO != 0
    }

    fn stdin(&self) -> Stdio {
        // SAFETY: dup returns a new fd that the Stdio then owns.
        let fd = unsafe { libc::dup(self.device) };
        // SAFETY: `fd` is a fresh, owned descriptor.
        unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // SAFETY: both fds came from openpty and are closed once.
        unsafe {
            libc::close(self.device);
            libc::close(self.controller);
        }
    }
}

fn raw_then(name: &str, args: &[&str], kill_with: Option<i32>) -> bool {
    let sandbox = Sandbox::new(name);
    let pty = Pty::open();
    assert!(pty.is_canonical());
    let mut runner = sandbox
        .runner("raw", args)
        .stdin(pty.stdin())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sandbox.fake_pid();
    // Let `stty raw` take effect before checking on the runner.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pty.is_canonical() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pty.is_canonical(), "the fake QEMU did not set raw mode");
    if let Some(signal) = kill_with {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(runner.id() as i32, signal) };
    }
    runner.wait().unwrap();
    pty.is_canonical()
}

#[test]
fn terminal_mode_is_restored_after_a_timeout_kill() {
    assert!(raw_then("raw-timeout", &["run", "--no-build", "--timeout", "1"], None));
}

#[test]
fn terminal_mode_is_restored_when_the_runner_is_killed() {
    assert!(raw_then("raw-sigterm", &["run", "--no-build"], Some(libc::SIGTERM)));
    assert!(raw_then("raw-sighup", &["run", "--no-build"], Some(libc::SIGHUP)));
}
