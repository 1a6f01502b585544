//! The terminal mode, saved at start and put back on every way out.
//!
//! `-serial mon:stdio` makes QEMU switch the terminal to raw mode (no echo,
//! no line editing, no Ctrl-C). QEMU restores it when it exits normally or
//! on SIGTERM, but not when it is SIGKILLed (a `--timeout`, the runner's
//! signal handler) or crashes, and a raw terminal looks like a hung one. So
//! the runner saves the mode before starting anything and restores it after
//! each attached QEMU, on exit, on a panic and in its signal handler
//! (tested end to end on a pseudo-terminal in xtask/tests/runner.rs).

use std::sync::OnceLock;

/// Stdin's mode at start; unset when stdin is not a terminal.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Remembers stdin's terminal mode (once; later calls do nothing).
pub fn save() {
    if let Some(mode) = read_mode(libc::STDIN_FILENO) {
        let _ = SAVED.set(mode);
    }
}

/// Puts the saved mode back if it changed. Async-signal-safe (an atomic
/// load, tcgetattr, tcsetattr), so the signal handler calls it too.
pub fn restore() {
    if let Some(saved) = SAVED.get() {
        restore_mode(libc::STDIN_FILENO, saved);
    }
}

fn read_mode(fd: libc::c_int) -> Option<libc::termios> {
    // SAFETY: a zeroed termios is valid storage for tcgetattr to fill.
    let mut mode: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `mode` is a valid, writable termios.
    (unsafe { libc::tcgetattr(fd, &mut mode) } == 0).then_some(mode)
}

/// Writes only on a change: a runner in a background process group would be
/// stopped by SIGTTOU for setting the mode.
fn restore_mode(fd: libc::c_int, saved: &libc::termios) {
    if read_mode(fd).is_some_and(|now| !same_mode(&now, saved)) {
        // SAFETY: `saved` is a termios tcgetattr filled in.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, saved) };
    }
}

fn same_mode(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_cc == b.c_cc
}
