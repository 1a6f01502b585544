//! The kernel's log: the `log` facade, a console, and an in-memory ring.
//!
//! Every line goes to COM1 and into a 64 KiB ring that the shell (`log`) and
//! crash reports can dump. Lines carry microseconds since boot:
//! `[     0.012345] INFO  vireo::mm: ...`. The level comes from the command
//! line (`log=debug`); the default is `info`.

mod ring;

use crate::arch::serial;
use core::fmt::{self, Write};
pub use ring::LogRing;

/// Bytes of log history kept in memory.
pub const RING_BYTES: usize = 64 * 1024;

struct Console {
    ring: LogRing<RING_BYTES>,
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        serial::write_bytes(text.as_bytes());
        self.ring.write(text.as_bytes());
        Ok(())
    }
}

static CONSOLE: spin::Mutex<Console> = spin::Mutex::new(Console { ring: LogRing::new() });

/// Runs `f` on the console with interrupts off, so an interrupt handler that
/// logs can never spin on a lock its own CPU holds.
fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut CONSOLE.lock()))
}

/// Prints to the console (serial and ring) without a log prefix.
pub fn print(args: fmt::Arguments) {
    with_console(|console| {
        let _ = console.write_fmt(args);
    });
}

/// Calls `sink` with the retained log text, oldest first.
pub fn dump(sink: impl FnMut(&[u8])) {
    with_console(|console| console.ring.for_each_chunk(sink));
}

/// Total bytes logged since boot.
pub fn total_logged_bytes() -> u64 {
    with_console(|console| console.ring.total_written())
}

/// Prints to the console, like `print!`.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::klog::print(format_args!($($arg)*)) };
}

/// Prints a line to the console, like `println!`.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::klog::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct KernelLogger;

impl log::Log for KernelLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = crate::platform::time::uptime_us();
        with_console(|console| {
            let _ = writeln!(
                console,
                "[{:6}.{:06}] {:<5} {}: {}",
                us / 1_000_000,
                us % 1_000_000,
                record.level(),
                record.target(),
                record.args()
            );
        });
    }

    fn flush(&self) {}
}

static LOGGER: KernelLogger = KernelLogger;

/// Installs the logger with the given maximum level.
pub fn init(level: log::LevelFilter) {
    // A second call only changes the level; set_logger's error is expected.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

mod tests {
    use super::LogRing;
    use crate::{check, check_eq, ktest};
    use alloc::vec::Vec;

    fn contents<const N: usize>(ring: &LogRing<N>) -> Vec<u8> {
        let mut out = Vec::new();
        ring.for_each_chunk(|chunk| out.extend_from_slice(chunk));
        out
    }

    ktest!(
        fn ring_keeps_everything_until_full() {
            let mut ring = LogRing::<64>::new();
            ring.write(b"one\n");
            ring.write(b"two\n");
            check_eq!(contents(&ring), b"one\ntwo\n".to_vec());
            Ok(())
        }
    );

    ktest!(
        fn ring_wrap_keeps_newest_whole_lines() {
            let mut ring = LogRing::<14>::new();
            for line in [&b"aaaa\n"[..], b"bbbb\n", b"cccc\n", b"dddd\n"] {
                ring.write(line);
            }
            // 20 bytes into 14: "aaaa\n" is gone and the torn "bbb" is dropped.
            check_eq!(contents(&ring), b"cccc\ndddd\n".to_vec());
            check_eq!(ring.total_written(), 20);
            Ok(())
        }
    );

    ktest!(
        fn ring_oversized_write_keeps_tail() {
            let mut ring = LogRing::<8>::new();
            ring.write(b"0123456789abcdef\nxyz\n");
            let text = contents(&ring);
            check!(text.ends_with(b"xyz\n"));
            check!(text.len() <= 8);
            Ok(())
        }
    );

    ktest!(
        fn kernel_log_lands_in_ring() {
            let before = super::total_logged_bytes();
            log::warn!("ktest marker 7f3a");
            check!(super::total_logged_bytes() > before);
            let mut found = false;
            let mut tail = Vec::new();
            super::dump(|chunk| tail.extend_from_slice(chunk));
            if tail.windows(17).any(|w| w == b"ktest marker 7f3a") {
                found = true;
            }
            check!(found, "marker line not found in the log ring");
            Ok(())
        }
    );

    ktest!(
        fn log_level_filters_lower_levels() {
            let level = log::max_level();
            log::set_max_level(log::LevelFilter::Warn);
            let before = super::total_logged_bytes();
            log::info!("this must be filtered");
            let filtered = super::total_logged_bytes() == before;
            log::set_max_level(level);
            check!(filtered, "an info line got through a warn filter");
            Ok(())
        }
    );
}
