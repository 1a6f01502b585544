//! The freestanding runtime the compiler expects: memory intrinsics and the
//! unwinding stubs referenced by the precompiled `core`.
//!
//! `core` and `compiler_builtins` for the host target call `memcpy` and
//! friends through the C ABI; with `-nostdlib` nothing else provides them.
//! They are written in assembly (`rep movsb` / `rep stosb`, fast on every CPU
//! with ERMSB) so the compiler cannot turn their bodies back into calls to
//! themselves.

use core::arch::asm;

/// Copies `len` bytes forward; regions must not overlap (C `memcpy`).
///
/// # Safety
/// `dst` and `src` must be valid for `len` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; `rep movsb` copies
    // exactly `len` bytes forward with the direction flag clear (SysV ABI).
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _,
             inout("rcx") len => _, options(nostack, preserves_flags));
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
    // SAFETY: the caller guarantees the range is valid; `rep stosb` writes
    // exactly `len` copies of the low byte of `value`.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") len => _,
             in("al") value as u8, options(nostack, preserves_flags));
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
