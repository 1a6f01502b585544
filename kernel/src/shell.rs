//! A small serial shell: inspect the running kernel and run tests.
//!
//! Input is polled from COM1; lines are edited with backspace only.

use crate::arch::qemu_exit::{ExitCode, exit_qemu};
use crate::arch::serial;
use crate::{kprint, kprintln};
use alloc::string::String;

const PROMPT: &str = "vireo> ";
const MAX_LINE_BYTES: usize = 256;
const POLL_INTERVAL_US: u64 = 1_000;

struct Command {
    name: &'static str,
    help: &'static str,
    run: fn(&str),
}

const COMMANDS: &[Command] = &[
    Command { name: "help", help: "list commands", run: |_| help() },
    Command { name: "mem", help: "frame and heap usage", run: |_| mem() },
    Command { name: "log", help: "dump the in-memory log ring", run: |_| dump_log() },
    Command { name: "uptime", help: "time since boot", run: |_| uptime() },
    Command { name: "cpus", help: "per-CPU counters", run: |_| cpus() },
    Command { name: "pci", help: "PCI functions found at boot", run: |_| pci() },
    Command {
        name: "virtio",
        help: "virtio devices and per-queue ring counters",
        run: |_| virtio(),
    },
    Command { name: "cmdline", help: "the kernel command line", run: |_| cmdline() },
    Command { name: "tests", help: "list in-kernel tests", run: |_| list_tests() },
    Command { name: "ktest", help: "ktest [filter]: run in-kernel tests", run: run_tests },
    Command { name: "int3", help: "take a breakpoint exception and return", run: |_| int3() },
    Command { name: "exit", help: "power off (ends QEMU)", run: |_| exit_qemu(ExitCode::Success) },
];

/// Runs the shell forever.
pub fn run() -> ! {
    kprintln!("vireo shell: type 'help' for commands, 'exit' (or Ctrl-A X) to quit");
    let mut line = String::new();
    loop {
        kprint!("{}", PROMPT);
        line.clear();
        read_line(&mut line);
        let line = line.trim();
        let (name, args) = line.split_once(' ').unwrap_or((line, ""));
        if name.is_empty() {
            continue;
        }
        match COMMANDS.iter().find(|command| command.name == name) {
            Some(command) => (command.run)(args.trim()),
            None => kprintln!("unknown command '{}'; try 'help'", name),
        }
    }
}

fn read_line(line: &mut String) {
    loop {
        let Some(byte) = serial::try_read_byte() else {
            // Poll at 1 kHz and let the CPU halt in between.
            crate::sched::timer::sleep_us(POLL_INTERVAL_US);
            continue;
        };
        match byte {
            b'\r' | b'\n' => {
                kprintln!();
                return;
            }
            0x08 | 0x7f if !line.is_empty() => {
                line.pop();
                kprint!("\x08 \x08");
            }
            0x20..=0x7e if line.len() < MAX_LINE_BYTES => {
                line.push(char::from(byte));
                kprint!("{}", char::from(byte));
            }
            _ => {}
        }
    }
}

fn help() {
    for command in COMMANDS {
        kprintln!("  {:<8} {}", command.name, command.help);
    }
}

fn mem() {
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
}

fn dump_log() {
    crate::klog::dump(serial::write_bytes);
}

fn uptime() {
    let us = crate::platform::time::uptime_us();
    kprintln!("up {}.{:06} s", us / 1_000_000, us % 1_000_000);
}

fn cpus() {
    kprintln!(
        "{:>4} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>6}",
        "cpu",
        "switches",
        "ticks",
        "ipis-out",
        "ipis-in",
        "deferred",
        "resched",
        "stolen",
        "queued"
    );
    for cpu in crate::arch::percpu::all_cpus() {
        let counters = cpu.counters.snapshot();
        kprintln!(
            "{:>4} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>6}",
            cpu.cpu_id,
            counters.context_switches,
            counters.timer_ticks,
            counters.ipis_sent,
            counters.ipis_received,
            counters.preemptions_deferred,
            counters.deferred_reschedules_run,
            counters.threads_stolen,
            counters.idle_halts,
            crate::sched::run_queue_len(cpu.cpu_id)
        );
    }
}

fn pci() {
    for function in crate::platform::pci::functions() {
        let (class, subclass, interface) = function.class;
        kprintln!(
            "  {} {:04x}:{:04x} class {:02x}{:02x}{:02x}",
            function.address,
            function.vendor_id,
            function.device_id,
            class,
            subclass,
            interface
        );
    }
}

fn virtio() {
    use crate::drivers::virtio::{blk, gpu};
    match blk::device() {
        Some(device) => {
            kprintln!(
                "virtio-blk: {} sectors, {} queues",
                device.capacity_sectors(),
                device.queue_count()
            );
            for queue in 0..device.queue_count() {
                if let Some(stats) = device.queue_stats(queue) {
                    kprintln!("  queue {}: {:?}", queue, stats);
                }
            }
        }
        None => kprintln!("virtio-blk: none"),
    }
    match gpu::device() {
        Some(device) => {
            let display = device.display();
            kprintln!("virtio-gpu: scanout 0 {}x{}", display.width, display.height);
        }
        None => kprintln!("virtio-gpu: none"),
    }
}

fn cmdline() {
    kprintln!("{:?}", crate::arch::boot_info::get().cmdline().unwrap_or("<not UTF-8>"));
}

fn list_tests() {
    for test in crate::ktest::all_tests() {
        kprintln!("  {}", test.full_name());
    }
}

fn run_tests(filter: &str) {
    let filter = (!filter.is_empty()).then_some(filter);
    crate::ktest::run(crate::ktest::Selection { filter, ..Default::default() });
}

fn int3() {
    x86_64::instructions::interrupts::int3();
    kprintln!("breakpoint returned ({} taken)", crate::arch::exceptions::breakpoint_count());
}
