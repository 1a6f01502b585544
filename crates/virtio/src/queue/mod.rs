//! Virtqueues. The API here is layout-free, so a packed ring (§2.8) can sit
//! beside the split ring ([`split`]) behind the same [`Virtqueue`] trait.

pub mod event;
pub mod split;
mod stats;

pub use stats::QueueStats;

use crate::Result;
use crate::transport::Transport;

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

/// A request the device has finished with.
#[derive(Debug)]
pub struct Used<B> {
    /// The token `add` returned for this request.
    pub token: Token,
    /// Bytes the device says it wrote into the writable segments, already
    /// checked to be no more than their total size.
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
/// on interrupt or while polling, `pop_used` until it returns `None`, then
/// [`Virtqueue::enable_interrupts`] and, if it returns `true`, poll again.
pub trait Virtqueue<B> {
    /// Makes a request available to the device, taking ownership of its
    /// buffers until the device returns them. Does not notify the device.
    ///
    /// # Errors
    ///
    /// [`crate::Error::QueueFull`], [`crate::Error::InvalidRequest`] or
    /// [`crate::Error::Broken`], with the buffers handed back.
    fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>>;

    /// Decides whether the device must be notified about requests added
    /// since the last decision; the caller then notifies if `true`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`].
    fn should_notify(&mut self) -> Result<bool>;

    /// The queue's index on its device.
    fn queue_index(&self) -> u16;

    /// [`Virtqueue::should_notify`] and, if needed, notify through
    /// `transport`. Returns whether a notification was sent.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`].
    fn kick<T: Transport>(&mut self, transport: &mut T) -> Result<bool> {
        let kick = self.should_notify()?;
        if kick {
            transport.notify(self.queue_index());
        }
        Ok(kick)
    }

    /// Takes the next completed request, if any.
    ///
    /// # Errors
    ///
    /// A `Device*` error if the device broke the protocol (the queue is then
    /// broken), or [`crate::Error::Broken`].
    fn pop_used(&mut self) -> Result<Option<Used<B>>>;

    /// Asks the device for used-buffer interrupts again; returns `true` if
    /// completions raced in, in which case the caller must poll again rather
    /// than sleep (§2.7.14).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`].
    fn enable_interrupts(&mut self) -> Result<bool>;

    /// Asks the device not to interrupt (a hint, §2.7.7).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Broken`].
    fn disable_interrupts(&mut self) -> Result;

    /// A snapshot of the counters.
    fn stats(&self) -> QueueStats;

    /// Zeroes the counters.
    fn reset_stats(&mut self);
}
