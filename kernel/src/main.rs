//! vireo: a small SMP x86_64 kernel built around a VirtIO driver stack.
//!
//! Boot path: `arch::boot` (PVH, 32-bit) → `kernel_entry` (here) → CPU
//! tables → TSC calibration → boot info → memory → the mode the command line
//! asks for: the shell, the in-kernel tests or the benchmarks.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod arch;
mod bench;
mod checks;
mod cmdline;
mod drivers;
mod klog;
mod ktest;
mod mm;
mod platform;
mod sched;
mod shell;
mod smp;
mod sync;

use arch::boot_info::{self, BootInfo};
use arch::qemu_exit::{ExitCode, exit_qemu};
use arch::serial::RawSerial;
use cmdline::{Mode, Options, Problem};
use core::fmt::Write;
use platform::{acpi, apic, hpet, pci, time};

#[unsafe(no_mangle)]
extern "C" fn kernel_entry(start_info_phys: u64, boot_tsc: u64) -> ! {
    time::set_boot_tsc(boot_tsc);
    // The CPU layer's only ways up (see `arch::upcalls`).
    arch::upcalls::register(arch::upcalls::Upcalls {
        reschedule: sched::schedule,
        halt_other_cpus: smp::ipi::halt_others,
        is_mapped: mm::paging::is_mapped,
    });
    // GS first: locks (the heap's included) use the per-CPU block.
    arch::percpu::init_boot_cpu();
    arch::serial::init();
    arch::init_boot_cpu();
    let first_guess = time::calibrate_roughly();

    let info = match BootInfo::parse(mm::PhysAddr::new(start_info_phys), |phys| {
        mm::phys_to_virt(phys).as_ptr()
    }) {
        Ok(info) => boot_info::set(info),
        Err(error) => {
            let _ = writeln!(RawSerial, "vireo: unusable PVH start info: {error:?}");
            exit_qemu(ExitCode::Failure)
        }
    };
    let cmdline = info.cmdline().unwrap_or("");
    let options = Options::parse(cmdline);
    klog::init(options.log_level);
    ktest::harness::register(ktest::Harness {
        print: klog::print,
        now_us: time::uptime_us,
        preempt_count: arch::percpu::preempt_count,
        online_cpus: || smp::online_cpus() as u32,
        run_on_cpus: run_test_job,
    });
    log::info!(
        "vireo {} booting: TSC {} MHz ({}), command line {:?}",
        env!("CARGO_PKG_VERSION"),
        time::tsc_hz() / 1_000_000,
        first_guess.map_or("assumed: no plausible first reference", |choice| choice.source.name()),
        cmdline
    );
    report_cmdline_problems(info, &options);

    mm::init(info);
    if mm::soft_tlb::grow_on_this_cpu(0) > 0 {
        log::info!(
            "mm: TCG detected: software TLB grown to {} entries on each CPU",
            mm::soft_tlb::ENTRIES
        );
    }
    let frames = mm::frame::stats();
    log::info!("memory: {} MiB usable, {} MiB free", frames.usable >> 8, frames.free >> 8);
    if options.canaries {
        match mm::frame::set_canaries(true) {
            Ok(()) => log::info!("mm: canary frames on: freed frames are checked for writes"),
            Err(_) => log::warn!("mm: no memory for canary marks; canaries stay off"),
        }
    }

    let platform = acpi::init();
    // The HPET's failure is logged by `init`; calibration does without it.
    let _ = hpet::init();
    time::calibrate();
    apic::init_bsp();
    let bsp_apic_id = apic::lapic::id();
    let ap_apic_ids: alloc::vec::Vec<u32> = platform
        .usable_cpus()
        .map(|cpu| cpu.apic_id)
        .filter(|&apic_id| apic_id != bsp_apic_id)
        .collect();
    smp::init();
    sched::init_boot_cpu();
    let online = smp::start_aps(&ap_apic_ids, sched::AP_ENTRY);
    log::info!("smp: {} of {} CPUs online", online, ap_apic_ids.len() + 1);
    x86_64::instructions::interrupts::enable();
    pci::init();
    if let Some(ms) = options.blk_timeout_ms {
        drivers::virtio::blk::set_timeout_ms(ms);
    }
    drivers::virtio::blk::init();
    drivers::virtio::gpu::init();
    drivers::virtio::input::init();
    log::info!("boot: ready in {} us", time::uptime_us());

    match options.mode {
        Mode::Test => {
            let summary = ktest::run(ktest::Selection {
                filter: options.test_filter,
                skip: options.test_skip,
                after: options.test_after,
            });
            // A timestamped last line: the runner compares the guest clock
            // over the whole run with its own (xtask/src/matrix.rs).
            log::info!("tests done at {} us", time::uptime_us());
            exit_qemu(if summary.failed == 0 { ExitCode::Success } else { ExitCode::Failure })
        }
        Mode::Bench => {
            bench::run(options.bench_groups, options.bench_secs);
            exit_qemu(ExitCode::Success)
        }
        Mode::BlkCheck(check) => checks::run(check, options.blkcheck_seed),
        Mode::PanicSelfTest => panic_while_others_log(),
        Mode::Shell => {
            // The window shows the log and the shell too (serial stays).
            if let Err(error) = klog::screen::start() {
                log::info!("console: serial only ({error:?})");
            }
            shell::run()
        }
    }
}

/// `selftest=panic`: every other CPU logs as fast as it can (holding the
/// console lock much of the time) while this one panics. The panic report
/// must still come out once and whole: the runner checks that no log line
/// follows the `panic:` line.
fn panic_while_others_log() -> ! {
    for cpu in 1..smp::online_cpus() as u32 {
        let spawned = sched::spawn("chatter", sched::Placement::Pinned(cpu), move || {
            for line in 0u64.. {
                log::info!("selftest chatter from CPU {cpu}, line {line}");
            }
        });
        if let Err(error) = spawned {
            log::error!("selftest: no chatter thread on CPU {cpu}: {error:?}");
        }
    }
    sched::timer::sleep_us(20_000);
    panic!("selftest: deliberate panic while other CPUs log");
}

/// The test harness's threads: `job` on each CPU of `cpus` at once, pinned
/// there; waits for every thread it started.
fn run_test_job(cpus: &[u32], job: ktest::harness::CpuJob) -> Result<(), u32> {
    let mut started = alloc::vec::Vec::with_capacity(cpus.len());
    let mut result = Ok(());
    for &cpu in cpus {
        let job = job.clone();
        match sched::spawn("ktest-cpu", sched::Placement::Pinned(cpu), move || job(cpu)) {
            Ok(handle) => started.push(handle),
            Err(_) => {
                result = Err(cpu);
                break;
            }
        }
    }
    for handle in started {
        handle.join();
    }
    result
}

fn report_cmdline_problems(info: &BootInfo, options: &Options) {
    if info.cmdline().is_err() {
        log::warn!("cmdline: not UTF-8, ignored");
    }
    if info.cmdline_truncated {
        log::warn!("cmdline: longer than {} bytes, truncated", boot_info::MAX_CMDLINE_BYTES);
    }
    for problem in options.problems() {
        match problem {
            Problem::UnknownOption(word) => log::warn!("cmdline: unknown option '{word}' ignored"),
            Problem::BadValue { key, value } => {
                log::warn!("cmdline: bad value '{value}' for '{key}' ignored")
            }
        }
    }
    if options.extra_problems > 0 {
        log::warn!("cmdline: {} more problems ignored", options.extra_problems);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    if !arch::exceptions::begin_fatal_report() {
        arch::halt_forever();
    }
    // Straight to the UART: the console lock may be held by the panicking code.
    let out = &mut RawSerial;
    // One line, so the runner can quote the whole reason.
    match info.location() {
        Some(location) => {
            let _ = writeln!(out, "\npanic: {} at {}", info.message(), location);
        }
        None => {
            let _ = writeln!(out, "\npanic: {}", info.message());
        }
    }
    if let Some(test) = ktest::current_test() {
        let _ = writeln!(out, "  in test {}::{}", test.suite(), test.name);
    }
    arch::stack_trace::print_here(out);
    exit_qemu(ExitCode::Failure)
}
