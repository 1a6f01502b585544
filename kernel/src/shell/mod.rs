//! A small serial shell: inspect the running kernel and run tests.
//!
//! Input is polled from COM1 and edited by `vireo-line-editor` (arrows,
//! Home/End, history, Tab completion of command names, Ctrl-C); commands
//! check their arguments and answer a wrong call with their usage.

mod blk;

use crate::arch::qemu_exit::{ExitCode, exit_qemu};
use crate::arch::serial;
use crate::kprintln;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use vireo_line_editor::{Editor, Limits, Outcome, vt100::Terminal};

mod demo;

const PROMPT: &str = "vireo> ";
const LIMITS: Limits = Limits { line_bytes: 256, history_lines: 32 };
const POLL_INTERVAL_US: u64 = 1_000;

/// What a command accepts after its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arguments {
    None,
    /// At most one word.
    Optional(&'static str),
    /// The rest of the line, trimmed (`None` when empty); the command parses
    /// it and prints its own usage on a bad call. The text is the usage shown
    /// by `help` after the name.
    Rest(&'static str),
}

struct Command {
    name: &'static str,
    arguments: Arguments,
    help: &'static str,
    run: fn(Option<&str>),
}

const COMMANDS: &[Command] = &[
    Command { name: "help", arguments: Arguments::None, help: "list commands", run: |_| help() },
    Command {
        name: "mem",
        arguments: Arguments::None,
        help: "frame and heap usage",
        run: |_| mem(),
    },
    Command {
        name: "log",
        arguments: Arguments::Optional("error|warn|info|debug|trace"),
        help: "log records kept in memory, at this level or more severe",
        run: show_log,
    },
    Command {
        name: "uptime",
        arguments: Arguments::None,
        help: "time since boot",
        run: |_| uptime(),
    },
    Command { name: "cpus", arguments: Arguments::None, help: "per-CPU counters", run: |_| cpus() },
    Command {
        name: "pci",
        arguments: Arguments::None,
        help: "PCI functions found at boot",
        run: |_| pci(),
    },
    Command {
        name: "virtio",
        arguments: Arguments::None,
        help: "virtio devices and per-queue ring counters",
        run: |_| virtio(),
    },
    Command {
        name: "demo",
        arguments: Arguments::Rest(demo::USAGE),
        help: "animate the framebuffer with an fps/kicks/fences overlay (a key returns)",
        run: demo::run,
    },
    Command {
        name: "blk",
        arguments: Arguments::Rest(blk::USAGE),
        help: "the disk: info; a sector as a hexdump; write text; flush; random-read bench",
        run: blk::run,
    },
    Command {
        name: "cmdline",
        arguments: Arguments::None,
        help: "the kernel command line",
        run: |_| cmdline(),
    },
    Command {
        name: "tests",
        arguments: Arguments::Optional("filter"),
        help: "list in-kernel tests (whose name contains filter)",
        run: list_tests,
    },
    Command {
        name: "ktest",
        arguments: Arguments::Optional("filter"),
        help: "run in-kernel tests (whose name contains filter)",
        run: run_tests,
    },
    Command {
        name: "int3",
        arguments: Arguments::None,
        help: "take a breakpoint exception and return",
        run: |_| int3(),
    },
    Command {
        name: "exit",
        arguments: Arguments::None,
        help: "power off (ends QEMU)",
        run: |_| exit_qemu(ExitCode::Success),
    },
];

impl Command {
    fn usage(&self) -> String {
        match self.arguments {
            Arguments::None => String::from(self.name),
            Arguments::Optional(word) => format!("{} [{}]", self.name, word),
            Arguments::Rest(words) => format!("{} {}", self.name, words),
        }
    }
}

/// Runs the shell forever.
pub fn run() -> ! {
    kprintln!(
        "vireo shell: 'help' lists commands, Tab completes, Up/Down recall; 'exit' or Ctrl-A X quits"
    );
    let names: Vec<&str> = COMMANDS.iter().map(|command| command.name).collect();
    let mut editor = Editor::new(PROMPT, LIMITS);
    let mut terminal = Terminal(crate::klog::write_console);
    editor.start(&mut terminal);
    loop {
        let Some(byte) = read_byte() else {
            // Poll at 1 kHz and let the CPU halt in between; a paste is read
            // byte after byte without sleeping.
            crate::sched::timer::sleep_us(POLL_INTERVAL_US);
            continue;
        };
        match editor.feed(byte, &names, &mut terminal) {
            Outcome::Pending => continue,
            Outcome::Line(line) => execute(&line),
            Outcome::TooLong { len_bytes, limit_bytes } => {
                kprintln!("line too long ({len_bytes} bytes, limit {limit_bytes}): not run");
            }
            Outcome::Cancelled => {}
            Outcome::EndOfInput => {
                kprintln!("(Ctrl-D: there is nothing to end; 'exit' powers off)")
            }
        }
        editor.start(&mut terminal);
    }
}

/// The next byte typed on the serial port or the window's keyboard.
fn read_byte() -> Option<u8> {
    serial::try_read_byte().or_else(|| {
        crate::drivers::virtio::input::device().and_then(|keyboard| keyboard.read_byte())
    })
}

fn execute(line: &str) {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else { return };
    let Some(command) = COMMANDS.iter().find(|command| command.name == name) else {
        kprintln!("unknown command '{}'; 'help' lists commands", name);
        return;
    };
    if let Arguments::Rest(_) = command.arguments {
        let rest = line[name.len()..].trim();
        (command.run)(if rest.is_empty() { None } else { Some(rest) });
        return;
    }
    let argument = words.next();
    let extra = match command.arguments {
        Arguments::None => argument,
        Arguments::Optional(_) => words.next(),
        Arguments::Rest(_) => None,
    };
    if let Some(extra) = extra {
        kprintln!("{}: unexpected argument '{}'", name, extra);
        kprintln!("usage: {}", command.usage());
        return;
    }
    (command.run)(argument);
}

fn help() {
    let width = COMMANDS.iter().map(|command| command.usage().len()).max().unwrap_or(0);
    for command in COMMANDS {
        kprintln!("  {:<width$}  {}", command.usage(), command.help);
    }
    kprintln!(
        "keys: Left/Right Home/End, Ctrl-U/Ctrl-K/Ctrl-W delete, Up/Down history, Tab, Ctrl-C"
    );
}

/// Prints rows under a header, each column as wide as its widest cell: the
/// first `text_columns` left-aligned (names), the rest right-aligned (counts).
fn print_table(header: &[&str], text_columns: usize, rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let print_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::from(" ");
        for (column, (cell, &width)) in cells.zip(&widths).enumerate() {
            text.push(' ');
            if column < text_columns {
                text.push_str(&format!("{cell:<width$}"));
            } else {
                text.push_str(&format!("{cell:>width$}"));
            }
        }
        kprintln!("{}", text.trim_end());
    };
    debug_assert!(
        rows.iter().all(|row| row.len() == header.len()),
        "a row with the wrong column count"
    );
    print_row(&mut header.iter().copied());
    for row in rows {
        print_row(&mut row.iter().map(String::as_str));
    }
}

fn mem() {
    // Outcomes of dropped blk requests are freed lazily (when their request
    // is reused); free them now so the count shows what is really in use.
    if let Some(blk) = crate::drivers::virtio::blk::device() {
        blk.release_abandoned();
    }
    let frames = crate::mm::frame::stats();
    let heap = crate::mm::heap::stats();
    kprintln!(
        "frames: {} free of {} ({} MiB free)",
        frames.free,
        frames.usable,
        (frames.free * crate::mm::PAGE_SIZE) >> 20
    );
    kprintln!(
        "heap:   {} KiB in {} allocations, {} KiB claimed",
        heap.allocated_bytes >> 10,
        heap.allocation_count,
        heap.claimed_bytes >> 10
    );
    let held = crate::drivers::virtio::blk::device().map_or(0, |blk| blk.quarantined_frames());
    if held > 0 {
        kprintln!("held:   {} frames quarantined from a device that may still write them", held);
    }
    let canaries = crate::mm::frame::verify_free();
    if canaries.enabled || canaries.checked > 0 {
        let first = canaries.first_changed.map(|phys| format!(", first at {:#x}", phys.as_u64()));
        kprintln!(
            "canary: {}, {} free frames marked, {} checked, {} changed{}",
            if canaries.enabled { "on" } else { "off" },
            canaries.marked,
            canaries.checked,
            canaries.changed,
            first.unwrap_or_default()
        );
    }
}

fn show_log(level: Option<&str>) {
    let min_level = match level.map(str::parse::<log::LevelFilter>) {
        None => log::LevelFilter::Trace,
        Some(Ok(level)) if level != log::LevelFilter::Off => level,
        Some(_) => {
            kprintln!("log: unknown level '{}'", level.unwrap_or_default());
            kprintln!("usage: log [error|warn|info|debug|trace]");
            return;
        }
    };
    let shown = crate::klog::for_each_record(min_level, crate::klog::write_console);
    let name = |level: log::LevelFilter| level.as_str().to_ascii_lowercase();
    if shown == 0 {
        kprintln!("(no log records at {} or above)", name(min_level));
    }
    if level.is_some() && min_level > log::max_level() {
        kprintln!(
            "(records below {} were never kept: boot with --append log={} to see them)",
            name(log::max_level()),
            name(min_level)
        );
    }
}

fn uptime() {
    let us = crate::platform::time::uptime_us();
    kprintln!("up {}.{:06} s", us / 1_000_000, us % 1_000_000);
}

fn cpus() {
    let header = [
        "cpu",
        "switches",
        "ticks",
        "ipis-out",
        "ipis-in",
        "deferred",
        "resched",
        "stolen",
        "shootdowns",
        "halts",
        "queued",
    ];
    let rows: Vec<Vec<String>> = crate::arch::percpu::all_cpus()
        .map(|cpu| {
            let counters = cpu.counters.snapshot();
            [
                u64::from(cpu.cpu_id),
                counters.context_switches,
                counters.timer_ticks,
                counters.ipis_sent,
                counters.ipis_received,
                counters.preemptions_deferred,
                counters.deferred_reschedules_run,
                counters.threads_stolen,
                counters.tlb_shootdowns,
                counters.idle_halts,
                crate::sched::run_queue_len(cpu.cpu_id) as u64,
            ]
            .iter()
            .map(|value| format!("{value}"))
            .collect()
        })
        .collect();
    print_table(&header, 0, &rows);
}

fn pci() {
    let rows: Vec<Vec<String>> = crate::platform::pci::functions()
        .iter()
        .map(|function| {
            let (class, subclass, interface) = function.class;
            alloc::vec![
                format!("{}", function.address),
                format!("{:04x}", function.vendor_id),
                format!("{:04x}", function.device_id),
                format!("{class:02x}{subclass:02x}{interface:02x}"),
            ]
        })
        .collect();
    print_table(&["address", "vendor", "device", "class"], 4, &rows);
}

fn virtio() {
    use crate::drivers::virtio::{blk, gpu};
    match blk::device() {
        Some(device) => {
            kprintln!(
                "virtio-blk: {} sectors ({} MiB), {} queues",
                device.capacity_sectors(),
                device.capacity_sectors() >> 11,
                device.queue_count()
            );
            let rows: Vec<Vec<String>> = (0..device.queue_count())
                .filter_map(|queue| Some((queue, device.queue_stats(queue)?)))
                .map(|(queue, stats)| {
                    [
                        queue as u64,
                        stats.added,
                        stats.kicks,
                        stats.kicks_suppressed,
                        stats.full_barriers,
                        stats.completions,
                        stats.empty_polls,
                        stats.interrupts_enabled,
                        stats.interrupts_suppressed,
                    ]
                    .iter()
                    .map(|value| format!("{value}"))
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "queue",
                    "added",
                    "kicks",
                    "no-kick",
                    "barriers",
                    "completions",
                    "empty-polls",
                    "irq-on",
                    "irq-off",
                ],
                0,
                &rows,
            );
        }
        None => kprintln!("virtio-blk: none"),
    }
    match gpu::device() {
        Some(device) => {
            let scanout = device.scanout();
            kprintln!(
                "virtio-gpu: scanout {} {}x{}, {} display changes ({}), console frames {}",
                scanout.id,
                scanout.rect.width,
                scanout.rect.height,
                device.display_changes(),
                if device.signals_display_changes() { "signalled" } else { "not signalled" },
                crate::klog::screen::frames()
            );
        }
        None => kprintln!("virtio-gpu: none"),
    }
}

fn cmdline() {
    kprintln!("{:?}", crate::arch::boot_info::get().cmdline().unwrap_or("<not UTF-8>"));
}

/// Names of the tests whose full name contains `filter`; says so when none
/// does, so a typo is not mistaken for an empty run.
fn matching_tests(command: &str, filter: Option<&str>) -> Option<Vec<String>> {
    let tests = crate::ktest::all_tests();
    let names: Vec<String> = tests
        .iter()
        .map(|test| test.full_name())
        .filter(|name| filter.is_none_or(|filter| name.contains(filter)))
        .collect();
    if names.is_empty() {
        kprintln!(
            "{}: no test name contains '{}' ({} tests; 'tests' lists them)",
            command,
            filter.unwrap_or_default(),
            tests.len()
        );
        return None;
    }
    Some(names)
}

fn list_tests(filter: Option<&str>) {
    for name in matching_tests("tests", filter).unwrap_or_default() {
        kprintln!("  {}", name);
    }
}

fn run_tests(filter: Option<&str>) {
    if matching_tests("ktest", filter).is_some() {
        crate::ktest::run(crate::ktest::Selection { filter, ..Default::default() });
    }
}

fn int3() {
    x86_64::instructions::interrupts::int3();
    kprintln!("breakpoint returned ({} taken)", crate::arch::exceptions::breakpoint_count());
}
