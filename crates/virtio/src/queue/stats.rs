//! Per-queue counters: plain integers owned by the queue (which is `&mut`
//! on every hot-path call), so counting costs one add and no atomics.

/// A snapshot of one queue's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests accepted by `add`.
    pub added: u64,
    /// Notify decisions that said "kick the device".
    pub kicks: u64,
    /// Notify decisions that found the device did not want a kick.
    pub kicks_suppressed: u64,
    /// Full (store→load) barriers executed.
    pub full_barriers: u64,
    /// Requests returned by the device.
    pub completions: u64,
    /// `pop_used` calls that found nothing (spins while polling).
    pub empty_polls: u64,
    /// `enable_interrupts` calls.
    pub interrupts_enabled: u64,
    /// Calls that turned used-buffer interrupts off.
    pub interrupts_suppressed: u64,
    /// Used lengths beyond the writable bytes, clamped
    /// ([`crate::UsedLenPolicy::Clamp`]).
    pub len_clamped: u64,
    /// Completed per-queue resets (`VIRTIO_F_RING_RESET`).
    pub queue_resets: u64,
    /// Requests handed back by `reclaim` after a reset.
    pub reclaimed: u64,
}
