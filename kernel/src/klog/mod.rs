//! The kernel's log: the `log` facade, a console, and an in-memory ring.
//!
//! Everything printed goes to COM1; log records (not shell output, prompts or
//! test protocol lines) also go into a 64 KiB ring that the shell's `log`
//! command replays, filtered by level. Records carry microseconds since boot:
//! `[     0.012345] INFO  vireo::mm: ...`. The level comes from the command
//! line (`log=debug`); the default is `info`.

mod ring;
pub mod screen;

use crate::arch::serial;
use core::fmt::{self, Write};
pub use ring::LogRing;

/// Bytes of log history kept in memory.
pub const RING_BYTES: usize = 64 * 1024;

/// The console lock's data: holding the lock also orders serial output.
struct Console {
    records: LogRing<RING_BYTES>,
}

/// Console output that is not a log record: serial only.
struct SerialOnly;

impl Write for SerialOnly {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        serial::write_bytes(text.as_bytes());
        screen::feed(text.as_bytes());
        Ok(())
    }
}

/// A log record: serial and the ring.
struct Record<'a>(&'a mut LogRing<RING_BYTES>);

impl Write for Record<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        serial::write_bytes(text.as_bytes());
        screen::feed(text.as_bytes());
        self.0.write(text.as_bytes());
        Ok(())
    }
}

static CONSOLE: spin::Mutex<Console> = spin::Mutex::new(Console { records: LogRing::new() });

/// Runs `f` on the console with interrupts off, so an interrupt handler that
/// logs can never spin on a lock its own CPU holds.
fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut CONSOLE.lock()))
}

/// Prints to the console without a log prefix; not kept in the ring.
pub fn print(args: fmt::Arguments) {
    with_console(|_| {
        let _ = SerialOnly.write_fmt(args);
    });
}

/// Writes raw bytes to the console (terminal control sequences from the
/// shell's line editor); not kept in the ring.
pub fn write_console(bytes: &[u8]) {
    with_console(|_| {
        serial::write_bytes(bytes);
        screen::feed(bytes);
    });
}

/// Calls `sink` with each retained log line of a record at `min_level` or
/// more severe, oldest first, and returns how many lines it passed on.
/// Lines of a multi-line record follow their record's level.
pub fn for_each_record(min_level: log::LevelFilter, mut sink: impl FnMut(&[u8])) -> usize {
    // Copied out first: `sink` usually prints, which takes the console lock.
    let mut text = alloc::vec::Vec::with_capacity(RING_BYTES);
    with_console(|console| console.records.for_each_chunk(|chunk| text.extend_from_slice(chunk)));
    let mut is_shown = false;
    let mut shown = 0;
    for line in text.split_inclusive(|&byte| byte == b'\n') {
        if let Some(level) = record_level(line) {
            is_shown = level <= min_level;
        }
        if is_shown {
            sink(line);
            shown += 1;
        }
    }
    shown
}

/// The level of a record's first line, as [`KernelLogger`] formats it:
/// `[seconds.micros] LEVEL target: message`; `None` for other lines.
fn record_level(line: &[u8]) -> Option<log::Level> {
    let line = core::str::from_utf8(line).ok()?;
    let (_, rest) = line.strip_prefix('[')?.split_once("] ")?;
    rest.split(' ').next()?.parse().ok()
}

/// Total bytes of log records since boot.
pub fn total_logged_bytes() -> u64 {
    with_console(|console| console.records.total_written())
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
        // `record_level` parses this format back.
        with_console(|console| {
            let _ = writeln!(
                Record(&mut console.records),
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
            check!(records_contain(log::LevelFilter::Trace, b"ktest marker 7f3a"));
            Ok(())
        }
    );

    fn records_contain(min_level: log::LevelFilter, marker: &[u8]) -> bool {
        let mut found = false;
        super::for_each_record(min_level, |line| {
            found |= line.windows(marker.len()).any(|window| window == marker);
        });
        found
    }

    ktest!(
        fn console_output_is_not_a_record() {
            crate::kprintln!("console marker 51c9");
            check!(!records_contain(log::LevelFilter::Trace, b"console marker 51c9"));
            Ok(())
        }
    );

    ktest!(
        fn records_filter_by_level() {
            log::warn!("level marker 0d17 warn");
            log::error!("level marker 0d17 error");
            check!(records_contain(log::LevelFilter::Warn, b"marker 0d17 warn"));
            check!(records_contain(log::LevelFilter::Warn, b"marker 0d17 error"));
            check!(!records_contain(log::LevelFilter::Error, b"marker 0d17 warn"));
            Ok(())
        }
    );

    ktest!(
        fn record_level_reads_the_logger_format() {
            check_eq!(
                super::record_level(b"[     0.012345] WARN  vireo::mm: x\n"),
                Some(log::Level::Warn)
            );
            check_eq!(super::record_level(b"[ 12.000001] TRACE t: y"), Some(log::Level::Trace));
            check_eq!(super::record_level(b"    continuation\n"), None);
            check_eq!(super::record_level(b"vireo> log\n"), None);
            check_eq!(super::record_level(b"[x] LOUD t: z\n"), None);
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
