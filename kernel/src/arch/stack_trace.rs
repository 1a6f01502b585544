//! Stack traces of return addresses, for fault and panic reports.
//!
//! Neither vireo nor the precompiled `core` keeps frame pointers, so the
//! trace scans the stack for words that point into kernel text, as Linux's
//! fallback unwinder does: every real return address is listed, with some
//! stale ones among them. `addr2line -e target/release/vireo` turns them
//! into source lines.

use core::fmt::Write;

/// Words of stack examined.
const SCAN_WORDS: u64 = 512;
/// Return addresses printed at most.
const MAX_FRAMES: usize = 24;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
}

fn is_kernel_text(address: u64) -> bool {
    // Only the addresses of the linker-defined symbols are taken.
    let (start, end) = (&raw const __text_start as u64, &raw const __text_end as u64);
    (start..end).contains(&address)
}

/// Prints `rip`, then return addresses found on the stack from `rsp` up.
pub fn print_from(out: &mut impl Write, rip: u64, rsp: u64) {
    let _ = writeln!(out, "  call trace (addr2line -e target/release/vireo):");
    let _ = writeln!(out, "    {rip:#018x}");
    let mut printed = 0;
    for slot in 0..SCAN_WORDS {
        let address = rsp.wrapping_add(slot * 8) & !7;
        // Stop at the first unmapped word: the end of this stack.
        if !super::upcalls::is_mapped(address) {
            break;
        }
        // SAFETY: the page is mapped (checked just above) and the read is
        // aligned; a stack word may hold any value.
        let word = unsafe { (address as *const u64).read_volatile() };
        if is_kernel_text(word) {
            let _ = writeln!(out, "    {word:#018x}");
            printed += 1;
            if printed == MAX_FRAMES {
                break;
            }
        }
    }
}

/// Prints a trace from the caller's own stack.
#[inline(never)]
pub fn print_here<W: Write>(out: &mut W) {
    let rsp: u64;
    // SAFETY: reads the stack pointer only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    let here = print_here::<W> as *const () as u64;
    print_from(out, here, rsp);
}
