//! CPU exceptions: breakpoints return, probe faults are fixed up, anything
//! else is reported once, whole, and ends the run with a failure code.

use super::interrupts::{InterruptFrame, PAGE_FAULT_VECTOR};
use super::serial::RawSerial;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const BREAKPOINT_VECTOR: u8 = 3;

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static REPORTING: AtomicBool = AtomicBool::new(false);

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 FPU error",
    "alignment check",
    "machine check",
    "SIMD exception",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Breakpoints (`int3`) taken since boot.
pub fn breakpoint_count() -> u64 {
    BREAKPOINTS.load(Ordering::Relaxed)
}

/// Claims the right to print the one fatal report of this run (panic or
/// fault) and stops the other CPUs. False if another CPU got there first.
pub fn begin_fatal_report() -> bool {
    if REPORTING.swap(true, Ordering::AcqRel) {
        return false;
    }
    super::upcalls::halt_other_cpus();
    true
}

pub(super) fn handle(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    if vector == super::interrupts::NMI_VECTOR && REPORTING.load(Ordering::Acquire) {
        // Another CPU is reporting a panic or fatal fault: stop here, so its
        // report comes out whole.
        super::halt_forever();
    }
    if vector == BREAKPOINT_VECTOR {
        // RIP already points past the int3: returning continues execution.
        BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let address =
        if vector == PAGE_FAULT_VECTOR { x86_64::registers::control::Cr2::read_raw() } else { 0 };
    if let Some(fixup) = super::fixup::fixup_for(frame.rip, vector, address) {
        frame.rip = fixup;
        return;
    }
    report_fatal(frame, address);
}

fn report_fatal(frame: &InterruptFrame, cr2: u64) -> ! {
    // One report, whole: a second fault (or CPU) waits here forever.
    if !begin_fatal_report() {
        super::halt_forever();
    }
    let vector = frame.vector as usize;
    let out = &mut RawSerial;
    let _ = writeln!(
        out,
        "\nEXCEPTION: {} (vector {}) error={:#x}\n  rip={:#018x} cr2={:#018x} rsp={:#018x} rflags={:#x}",
        NAMES[vector % 32],
        vector,
        frame.error_code,
        frame.rip,
        cr2,
        frame.rsp,
        frame.rflags
    );
    let _ = writeln!(
        out,
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    if let Some(test) = crate::ktest::current_test() {
        let _ = writeln!(out, "  in test {}::{}", test.suite(), test.name);
    }
    super::stack_trace::print_from(out, frame.rip, frame.rsp);
    super::qemu_exit::exit_qemu(super::qemu_exit::ExitCode::Failure)
}
