//! Recoverable faults: probe a memory access and get an error, not a crash.
//!
//! Each probe is a tiny assembly routine whose one memory access is listed in
//! the `.fixup_table` section together with a fixup address. When that
//! access faults, the exception handler finds its RIP in the table, records
//! the fault and resumes at the fixup, which returns an error. Tests use this
//! to prove that a page really is unmapped; crash reports use it to read
//! stacks that might not be mapped.

use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(
    r#"
    .section .text
    .global vireo_probe_read_u64
vireo_probe_read_u64:              /* (addr, out) -> 0 ok, 1 faulted */
1:  movq (%rdi), %rax
    movq %rax, (%rsi)
    xorl %eax, %eax
    ret
2:  movl $1, %eax
    ret

    .global vireo_probe_write_u64
vireo_probe_write_u64:             /* (addr, value) -> 0 ok, 1 faulted */
3:  movq %rsi, (%rdi)
    xorl %eax, %eax
    ret
4:  movl $1, %eax
    ret

    .section .fixup_table, "a"
    .p2align 3
    .quad 1b, 2b
    .quad 3b, 4b
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn vireo_probe_read_u64(address: u64, out: *mut u64) -> u64;
    fn vireo_probe_write_u64(address: u64, value: u64) -> u64;
}

#[repr(C)]
struct FixupEntry {
    fault_rip: u64,
    fixup_rip: u64,
}

unsafe extern "C" {
    static __fixup_table_start: FixupEntry;
    static __fixup_table_end: FixupEntry;
}

/// A fault taken by a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The exception vector (14 for a page fault).
    pub vector: u8,
    /// CR2 for page faults, 0 otherwise.
    pub address: u64,
}

// The last probe fault. Probes run with the fault on the same CPU and no
// sleep in between; issue 4 moves this into per-CPU data.
static LAST_FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static LAST_FAULT_ADDRESS: AtomicU64 = AtomicU64::new(0);

/// The fixup address for a fault at `rip`, recording the fault, if `rip` is
/// a probe's access.
pub fn fixup_for(rip: u64, vector: u8, address: u64) -> Option<u64> {
    // SAFETY: the linker script brackets the table with these symbols and
    // every entry is two 8-byte words (see the assembly above).
    let table = unsafe {
        let start = &raw const __fixup_table_start;
        let count =
            (&raw const __fixup_table_end as usize - start as usize) / size_of::<FixupEntry>();
        core::slice::from_raw_parts(start, count)
    };
    let entry = table.iter().find(|entry| entry.fault_rip == rip)?;
    LAST_FAULT_VECTOR.store(u64::from(vector), Ordering::Relaxed);
    LAST_FAULT_ADDRESS.store(address, Ordering::Relaxed);
    Some(entry.fixup_rip)
}

fn last_fault() -> Fault {
    Fault {
        vector: LAST_FAULT_VECTOR.load(Ordering::Relaxed) as u8,
        address: LAST_FAULT_ADDRESS.load(Ordering::Relaxed),
    }
}

/// Reads a u64 at `address`, or reports the fault the read took.
///
/// # Errors
/// The [`Fault`] if the address is not readable.
pub fn probe_read_u64(address: u64) -> Result<u64, Fault> {
    let mut value = 0;
    // SAFETY: the probe either reads 8 bytes (the caller accepts any value)
    // or faults and is fixed up; it writes only `value`.
    match unsafe { vireo_probe_read_u64(address, &mut value) } {
        0 => Ok(value),
        _ => Err(last_fault()),
    }
}

/// Writes a u64 at `address`, or reports the fault the write took.
///
/// # Safety
/// If the address is mapped, the write must not break any Rust invariant
/// (for example, it targets memory the caller owns).
///
/// # Errors
/// The [`Fault`] if the address is not writable.
pub unsafe fn probe_write_u64(address: u64, value: u64) -> Result<(), Fault> {
    // SAFETY: the caller vouches for the write; a fault is fixed up.
    match unsafe { vireo_probe_write_u64(address, value) } {
        0 => Ok(()),
        _ => Err(last_fault()),
    }
}
