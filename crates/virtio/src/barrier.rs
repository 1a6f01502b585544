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
//!
//! # Proven on the real code
//!
//! Every call names its [`Site`]. With the crate's `loom` feature (tests
//! only) the three barriers become loom's `fence(Release)`,
//! `fence(Acquire)` and `fence(SeqCst)` — their C11 meaning — and the ring
//! memory becomes loom cells and atomics, so `tests/loom_ring.rs` model-
//! checks the real `SplitQueue`. Setting `VIREO_BARRIER_MUTANT=<site name>`
//! then removes that one barrier; `make test` runs the model once per site
//! and requires each removal to make a test fail.

use core::sync::atomic::Ordering;
#[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
use core::sync::atomic::compiler_fence;

/// Each place the split ring orders its shared-memory accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// `add`: descriptors and ring entry before `avail.idx` (§2.7.13.3.1).
    PublishAvail,
    /// `should_notify`: `avail.idx` before reading the device's
    /// suppression state (§2.7.13.4.1).
    NotifyDecision,
    /// `pop_used`: `used.idx` before the used entry it covers (§2.7.14).
    ReadUsedEntry,
    /// `pop_used` finding the ring empty with EVENT_IDX interrupts on:
    /// `used_event` before re-reading `used.idx` (§2.7.7.2).
    EmptyRecheck,
    /// `enable_interrupts`: the re-enable store before re-reading
    /// `used.idx` (§2.7.7.2, §2.7.14).
    EnableRecheck,
}

impl Site {
    /// Every site, for the mutation check.
    pub const ALL: [Site; 5] = [
        Site::PublishAvail,
        Site::NotifyDecision,
        Site::ReadUsedEntry,
        Site::EmptyRecheck,
        Site::EnableRecheck,
    ];

    /// The name `VIREO_BARRIER_MUTANT` selects it by.
    pub fn name(self) -> &'static str {
        match self {
            Site::PublishAvail => "publish_avail",
            Site::NotifyDecision => "notify_decision",
            Site::ReadUsedEntry => "read_used_entry",
            Site::EmptyRecheck => "empty_recheck",
            Site::EnableRecheck => "enable_recheck",
        }
    }
}

/// Whether the mutation check removed the barrier at `site` (read once
/// from `VIREO_BARRIER_MUTANT`; loom builds only).
#[cfg(feature = "loom")]
fn removed(site: Site) -> bool {
    static MUTANT: std::sync::OnceLock<Option<std::string::String>> = std::sync::OnceLock::new();
    MUTANT.get_or_init(|| std::env::var("VIREO_BARRIER_MUTANT").ok()).as_deref()
        == Some(site.name())
}

/// Store→store barrier: everything written before is visible to the device
/// before anything written after.
#[inline(always)]
pub fn virtio_wmb(site: Site) {
    let _ = site;
    #[cfg(feature = "loom")]
    if !removed(site) {
        loom::sync::atomic::fence(Ordering::Release);
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
    compiler_fence(Ordering::Release);
    #[cfg(not(any(target_arch = "x86_64", feature = "loom")))]
    core::sync::atomic::fence(Ordering::Release);
}

/// Load→load barrier: nothing read after may be satisfied before what was
/// read before.
#[inline(always)]
pub fn virtio_rmb(site: Site) {
    let _ = site;
    #[cfg(feature = "loom")]
    if !removed(site) {
        loom::sync::atomic::fence(Ordering::Acquire);
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
    compiler_fence(Ordering::Acquire);
    #[cfg(not(any(target_arch = "x86_64", feature = "loom")))]
    core::sync::atomic::fence(Ordering::Acquire);
}

/// Full barrier, including store→load: all earlier stores are globally
/// visible before any later load reads memory.
#[inline(always)]
pub fn virtio_mb(site: Site) {
    let _ = site;
    #[cfg(feature = "loom")]
    if !removed(site) {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
    // SAFETY: a locked OR of zero into the 4 bytes just below the stack
    // pointer atomically reads and writes back the same value, so no memory
    // changes, even if the compiler keeps a red-zone local there (which is
    // why `nostack` still holds in effect: nothing it could observe is
    // written); the slot is always mapped and writable. No `nomem`: this is
    // also a compiler barrier for all memory accesses.
    unsafe {
        core::arch::asm!("lock or dword ptr [rsp - 4], 0", options(nostack));
    }
    #[cfg(not(any(target_arch = "x86_64", feature = "loom")))]
    core::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::Site;

    /// Every barrier call in the ring names a distinct site, and every site
    /// is used exactly once: a barrier added without a site (or a site
    /// without its barrier) would escape the mutation check.
    #[test]
    fn each_barrier_call_has_its_own_site() {
        let sources = [
            include_str!("queue/split.rs"),
            include_str!("queue/split/used.rs"),
            include_str!("queue/split/lifecycle.rs"),
        ];
        let calls: usize = sources
            .iter()
            .map(|s| {
                ["virtio_wmb(", "virtio_rmb(", "virtio_mb("]
                    .iter()
                    .map(|c| s.matches(c).count())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(calls, Site::ALL.len(), "barrier calls vs sites");
        for site in Site::ALL {
            let variant = alloc::format!("Site::{site:?})");
            let uses: usize = sources.iter().map(|s| s.matches(variant.as_str()).count()).sum();
            assert_eq!(uses, 1, "{variant} used {uses} times");
        }
    }
}
