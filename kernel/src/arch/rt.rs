//! The freestanding runtime the compiler expects: memory intrinsics and the
//! unwinding stubs referenced by the precompiled `core`.
//!
//! `core` and `compiler_builtins` for the host target call `memcpy` and
//! friends through the C ABI; with `-nostdlib` nothing else provides them.
//! They are written in assembly so the compiler cannot turn their bodies
//! back into calls to themselves. The forward copy and the fill move 32
//! bytes per iteration with plain 64-bit moves and finish with `rep movsb` /
//! `rep stosb`: under QEMU's TCG a `rep` string instruction runs one element
//! per emulated iteration, so a byte-wide `rep` over a 4 MiB frame costs
//! millions of iterations where the wide loop costs 131 072.

use core::arch::asm;

/// Copies `len` bytes forward; regions must not overlap (C `memcpy`).
///
/// # Safety
/// `dst` and `src` must be valid for `len` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint. The
    // loop copies 32-byte blocks forward while at least 32 bytes remain,
    // then `rep movsb` copies the rest (direction flag clear, SysV ABI);
    // together exactly `len` bytes.
    unsafe {
        asm!(
            "cmp rcx, 32",
            "jb 3f",
            "2:",
            "mov r8, [rsi]",
            "mov r9, [rsi + 8]",
            "mov r10, [rsi + 16]",
            "mov r11, [rsi + 24]",
            "mov [rdi], r8",
            "mov [rdi + 8], r9",
            "mov [rdi + 16], r10",
            "mov [rdi + 24], r11",
            "add rsi, 32",
            "add rdi, 32",
            "sub rcx, 32",
            "cmp rcx, 32",
            "jae 2b",
            "3:",
            "rep movsb",
            inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") len => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    dst
}

/// Copies `len` bytes between possibly overlapping regions (C `memmove`).
///
/// # Safety
/// `dst` and `src` must be valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= len {
        // The destination starts before the source or past its end: a
        // forward copy never reads a byte it already overwrote.
        // SAFETY: forwarded caller guarantee; the check above makes the
        // forward copy correct for overlapping ranges.
        return unsafe { memcpy(dst, src, len) };
    }
    // SAFETY: copy backwards (direction flag set, then restored) from the
    // last byte, so overlapping source bytes are read before being written.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rdi") dst.add(len).wrapping_sub(1) => _,
             inout("rsi") src.add(len).wrapping_sub(1) => _,
             inout("rcx") len => _, options(nostack));
    }
    dst
}

/// Fills `len` bytes with `value` (C `memset`).
///
/// # Safety
/// `dst` must be valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, len: usize) -> *mut u8 {
    // The byte repeated across a 64-bit word.
    let word = u64::from(value as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range is valid. The loop stores
    // 32-byte blocks while at least 32 bytes remain, then `rep stosb` writes
    // the rest (its `al` is the low byte of `word`); exactly `len` bytes.
    unsafe {
        asm!(
            "cmp rcx, 32",
            "jb 3f",
            "2:",
            "mov [rdi], rax",
            "mov [rdi + 8], rax",
            "mov [rdi + 16], rax",
            "mov [rdi + 24], rax",
            "add rdi, 32",
            "sub rcx, 32",
            "cmp rcx, 32",
            "jae 2b",
            "3:",
            "rep stosb",
            inout("rdi") dst => _, inout("rcx") len => _, in("rax") word,
            options(nostack),
        );
    }
    dst
}

/// Compares `len` bytes (C `memcmp`): negative, zero or positive.
///
/// # Safety
/// `a` and `b` must be valid for reads of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
    let mut index = 0;
    while index < len {
        // SAFETY: `index < len` and the caller guarantees `len` readable bytes.
        let (x, y) = unsafe { (a.add(index).read(), b.add(index).read()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        index += 1;
    }
    0
}

/// Equality-only comparison (C `bcmp`): zero when equal.
///
/// # Safety
/// As for [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
    // SAFETY: forwarded caller guarantee.
    unsafe { memcmp(a, b, len) }
}

/// Never called: panics abort, so nothing unwinds. Present because the
/// precompiled `core` references the symbol.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called, as above.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}

mod tests {
    use crate::{check, check_eq, ktest};

    ktest!(
        fn memmove_handles_both_overlaps() {
            let mut bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
            // SAFETY: both ranges lie inside `bytes`.
            unsafe { super::memmove(bytes.as_mut_ptr().add(2), bytes.as_ptr(), 10) };
            check_eq!(bytes[..12], [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
            let mut bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
            // SAFETY: as above.
            unsafe { super::memmove(bytes.as_mut_ptr(), bytes.as_ptr().add(3), 10) };
            check_eq!(bytes[..10], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
            Ok(())
        }
    );

    ktest!(
        fn wide_memcpy_and_memset_cover_every_length() {
            let source: [u8; 100] = core::array::from_fn(|i| i as u8 ^ 0x5a);
            for len in [0usize, 1, 31, 32, 33, 63, 64, 65, 96, 99] {
                let mut target = [0u8; 100];
                // SAFETY: both ranges lie inside their arrays, disjoint.
                unsafe { super::memcpy(target.as_mut_ptr().add(1), source.as_ptr(), len) };
                check_eq!(target[1..1 + len], source[..len]);
                check!(target[0] == 0 && target[1 + len..].iter().all(|&b| b == 0));
                let mut filled = [0u8; 100];
                // SAFETY: inside the array.
                unsafe { super::memset(filled.as_mut_ptr().add(1), 0x3c, len) };
                check!(filled[1..1 + len].iter().all(|&b| b == 0x3c));
                check!(filled[0] == 0 && filled[1 + len..].iter().all(|&b| b == 0));
            }
            Ok(())
        }
    );

    ktest!(
        fn memset_and_memcmp() {
            let mut bytes = [0u8; 40];
            // SAFETY: the ranges lie inside `bytes`.
            unsafe { super::memset(bytes.as_mut_ptr().add(3), 0x1ab, 30) };
            check!(bytes[3..33].iter().all(|&b| b == 0xab) && bytes[33] == 0 && bytes[2] == 0);
            let (a, b) = (*b"abcd", *b"abce");
            // SAFETY: four readable bytes each.
            let (less, equal) = unsafe {
                (super::memcmp(a.as_ptr(), b.as_ptr(), 4), super::bcmp(a.as_ptr(), a.as_ptr(), 4))
            };
            check!(less < 0);
            check_eq!(equal, 0);
            Ok(())
        }
    );
}
