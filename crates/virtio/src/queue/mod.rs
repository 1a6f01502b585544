//! Virtqueues. The API here is layout-free, so a packed ring (§2.8) can sit
//! beside the split ring ([`split`]) behind the same [`Virtqueue`] trait.

pub mod event;
pub mod split;
mod stats;

pub use stats::QueueStats;

use crate::Result;
use crate::hal::PhysAddr;
use crate::reset::{QueueReset, ResetProof};
use crate::transport::{Notifier, Transport};

/// Identifies one in-flight request; returned by `add`, given back by
/// `pop_used`. A token is a plain id: it owns and borrows nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) u16);

impl Token {
    /// The descriptor index of the request's chain head.
    pub fn index(self) -> u16 {
        self.0
    }
}

/// Where a queue's rings live, as the device sees them (the addresses
/// given to [`Transport::queue_set`]), for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddresses {
    /// The descriptor table (split) or descriptor ring (packed).
    pub descriptors: PhysAddr,
    /// The driver area: available ring (split) or driver event suppression.
    pub driver_area: PhysAddr,
    /// The device area: used ring (split) or device event suppression.
    pub device_area: PhysAddr,
    /// The indirect-table pool and its size in bytes, if indirect is on.
    pub indirect_pool: Option<(PhysAddr, usize)>,
}

/// A request the device has finished with.
#[derive(Debug)]
pub struct Used<B> {
    /// The token `add` returned for this request.
    pub token: Token,
    /// Bytes the device says it wrote into the writable segments, checked
    /// (or, under [`split::UsedLenPolicy::Clamp`], clamped) to be no more
    /// than their total size.
    pub written_len: u32,
    /// The request's buffers, back in the driver's hands.
    pub buffers: B,
}

/// A request `add` refused, with its buffers handed back.
#[derive(Debug)]
pub struct Rejected<B> {
    /// Why.
    pub error: crate::Error,
    /// The buffers, untouched.
    pub buffers: B,
}

/// Operations every virtqueue layout provides.
///
/// The intended driver loop: `add` several requests, then one
/// [`Virtqueue::kick`] (or [`Virtqueue::should_notify`] + notify yourself);
/// on interrupt or while polling, `pop_used` until it returns `None`. With
/// interrupts enabled that is enough: a `None` is only returned once the
/// device is sure to interrupt for the next completion. After
/// [`Virtqueue::disable_interrupts`] (polling), turn them back on with
/// [`Virtqueue::enable_interrupts`] and, if it returns `true`, poll again
/// before sleeping.
///
/// Buffers come back only through `pop_used` or, after a proven reset,
/// through [`Virtqueue::reclaim`].
pub trait Virtqueue<B> {
    /// Makes a request available to the device, taking ownership of its
    /// buffers until the device returns them. Does not notify the device.
    ///
    /// # Errors
    ///
    /// [`crate::Error::QueueFull`], [`crate::Error::InvalidRequest`],
    /// [`crate::Error::Broken`] or [`crate::Error::Stopped`], with the
    /// buffers handed back.
    fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>>;

    /// Decides whether the device must be notified about requests added
    /// since the last decision; the caller then notifies if `true`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`] or [`crate::Error::Stopped`].
    fn should_notify(&mut self) -> Result<bool>;

    /// The queue's index on its device.
    fn queue_index(&self) -> u16;

    /// [`Virtqueue::should_notify`] and, if needed, notify through
    /// `transport`. Returns whether a notification was sent.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`] or [`crate::Error::Stopped`].
    fn kick<T: Transport>(&mut self, transport: &mut T) -> Result<bool>;

    /// [`Virtqueue::should_notify`] and, if needed, notify through this
    /// queue's own `notifier` (see [`split::SplitQueue::kick_with`]).
    ///
    /// # Errors
    ///
    /// [`crate::Error::WrongNotifier`], [`crate::Error::Broken`] or
    /// [`crate::Error::Stopped`].
    fn kick_with<N: Notifier + ?Sized>(&mut self, notifier: &N) -> Result<bool>;

    /// Number of descriptors.
    fn size(&self) -> u16;

    /// Descriptors free right now (a request takes one per segment, or one
    /// in all when it goes indirect).
    fn num_free(&self) -> u16;

    /// Requests added and not yet returned.
    fn in_flight(&self) -> u16;

    /// Where the rings live, as the device sees them.
    fn ring_addresses(&self) -> RingAddresses;

    /// Takes the next completed request, if any.
    ///
    /// # Errors
    ///
    /// A protocol violation ([`crate::Error::is_protocol_violation`]; the
    /// queue is then broken), [`crate::Error::Broken`] or
    /// [`crate::Error::Stopped`].
    fn pop_used(&mut self) -> Result<Option<Used<B>>>;

    /// Asks the device for used-buffer interrupts again; returns `true` if
    /// completions raced in, in which case the caller must poll again rather
    /// than sleep (§2.7.14).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`] or [`crate::Error::Stopped`].
    fn enable_interrupts(&mut self) -> Result<bool>;

    /// Asks the device not to interrupt (a hint, §2.7.7).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`] or [`crate::Error::Stopped`].
    fn disable_interrupts(&mut self) -> Result;

    /// Resets this queue alone (`VIRTIO_F_RING_RESET`) and returns the
    /// proof; see [`split::SplitQueue::reset_queue`].
    ///
    /// # Errors
    ///
    /// As [`split::SplitQueue::reset_queue`].
    fn reset_queue<T: Transport>(&mut self, transport: &mut T) -> Result<QueueReset>;

    /// Hands back every request in flight given a reset proof covering this
    /// queue, and stops it; see [`split::SplitQueue::reclaim`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::WrongResetProof`].
    fn reclaim<P: ResetProof>(&mut self, proof: &P, reclaim: impl FnMut(Token, B))
    -> Result<usize>;

    /// Makes a stopped queue live again; see [`split::SplitQueue::restart`].
    ///
    /// # Errors
    ///
    /// As [`split::SplitQueue::restart`].
    fn restart<T: Transport>(&mut self, transport: &mut T) -> Result;

    /// A snapshot of the counters.
    fn stats(&self) -> QueueStats;

    /// Zeroes the counters.
    fn reset_stats(&mut self);
}
