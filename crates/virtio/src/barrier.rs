//! The three memory barriers the split ring needs, named as in Linux.
//!
//! The driver and the device are two processors sharing memory, so the Rust
//! memory model alone does not order our plain (volatile) ring accesses with
//! respect to the device: every ordering rule the spec demands is an explicit
//! barrier at the call site, which cites the rule.
//!
//! Why only one of them is a real instruction on x86_64: x86 is TSO. Stores
//! are not reordered with older stores, and loads are not reordered with
//! older loads, so "write barrier" (store→store, §2.7.13.3.1) and "read
//! barrier" (load→load, §2.7.14) only have to stop the *compiler* from
//! reordering: they are compiler fences and cost nothing at run time. The one
//! reordering x86 does perform is store→load: a store can sit in the store
//! buffer while a later load to a different address is satisfied, so the
//! driver can publish `avail.idx` and read a stale `used_event`/`flags`
//! while the device, symmetrically, publishes its event index and reads a
//! stale `avail.idx` — both decide "the other side will notice" and a
//! notification is lost (§2.7.13.4.1, §2.7.14). Only a serialising
//! instruction drains the store buffer: `mfence`, or any `lock`-prefixed
//! read-modify-write. We use a `lock or` of zero just below the stack
//! pointer (the value does not change), as Linux's x86_64 `smp_mb()` does
//! (`lock addl $0,-4(%rsp)`): cheaper than `mfence`, it orders ordinary
//! write-back memory identically, and unlike `[rsp]` it creates no false
//! dependency with the return address or locals the code reads next (with
//! `[rsp]` the ring benchmark ran 25% slower in about a third of runs).
//!
//! On other architectures all three fall back to the corresponding
//! `core::sync::atomic::fence`, which is correct (if possibly stronger than
//! necessary) for cache-coherent DMA.

use core::sync::atomic::Ordering;
#[cfg(target_arch = "x86_64")]
use core::sync::atomic::compiler_fence;

/// Store→store barrier: everything written before is visible to the device
/// before anything written after.
#[inline(always)]
pub fn virtio_wmb() {
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::Release);
    #[cfg(not(target_arch = "x86_64"))]
    core::sync::atomic::fence(Ordering::Release);
}

/// Load→load barrier: nothing read after may be satisfied before what was
/// read before.
#[inline(always)]
pub fn virtio_rmb() {
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::Acquire);
    #[cfg(not(target_arch = "x86_64"))]
    core::sync::atomic::fence(Ordering::Acquire);
}

/// Full barrier, including store→load: all earlier stores are globally
/// visible before any later load reads memory.
#[inline(always)]
pub fn virtio_mb() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a locked OR of zero into the 4 bytes just below the stack
    // pointer atomically reads and writes back the same value, so no memory
    // changes, even if the compiler keeps a red-zone local there (which is
    // why `nostack` still holds in effect: nothing it could observe is
    // written); the slot is always mapped and writable. No `nomem`: this is
    // also a compiler barrier for all memory accesses.
    unsafe {
        core::arch::asm!("lock or dword ptr [rsp - 4], 0", options(nostack));
    }
    #[cfg(not(target_arch = "x86_64"))]
    core::sync::atomic::fence(Ordering::SeqCst);
}
