//! Proofs that a device stopped using a queue's memory.
//!
//! A queue gives its in-flight buffers back ([`crate::SplitQueue::reclaim`])
//! and frees its rings only against a proof that *its* device, or *its*
//! queue, was reset after the rings were programmed. Two kinds exist:
//! - [`DeviceReset`], from [`crate::Transport::reset`] (VirtIO 1.2 §2.4):
//!   every queue of that device consumes it;
//! - [`QueueReset`], from [`crate::SplitQueue::reset_queue`]
//!   (`VIRTIO_F_RING_RESET`, §2.6.1): only that queue.
//!
//! Neither can be built outside this crate. Each carries the device's
//! [`DeviceId`] and a *ticket* from one global, strictly increasing counter,
//! drawn just before the reset starts; a queue draws a ticket just after it
//! programs its rings. A proof covers a queue iff device (and, for a queue
//! reset, queue index) match and the proof's ticket is the larger: the reset
//! began after the rings were programmed, so the device has forgotten them.
//! A proof from another device, another queue, or an earlier reset is
//! refused with [`crate::Error::WrongResetProof`].

use core::sync::atomic::{AtomicU64, Ordering};

/// Identifies one device instance, as promised by
/// [`crate::Transport::device_id`] (e.g. its PCI segment/bus/device/function).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(u64);

impl DeviceId {
    /// An id from a value unique to the device.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A point in the global order of queue programming and resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

impl Ticket {
    /// The next ticket. `SeqCst` so tickets drawn on different CPUs are
    /// ordered like the register accesses around them (on x86 uncached
    /// MMIO is not reordered with locked instructions).
    pub(crate) fn draw() -> Self {
        Self(NEXT_TICKET.fetch_add(1, Ordering::SeqCst))
    }
}

/// Proof that a device was reset (status read back 0) after every queue
/// programmed before [`crate::Transport::reset`] began.
#[derive(Debug)]
pub struct DeviceReset {
    device: DeviceId,
    ticket: Ticket,
}

impl DeviceReset {
    /// Draws the ticket; only [`crate::Transport::reset`] calls this, before
    /// it writes status 0, and returns the proof only if the reset completes.
    pub(crate) fn begin(device: DeviceId) -> Self {
        Self { device, ticket: Ticket::draw() }
    }

    /// The device that was reset.
    pub fn device(&self) -> DeviceId {
        self.device
    }
}

/// Proof that one queue of a device was reset (VIRTIO_F_RING_RESET).
#[derive(Debug)]
pub struct QueueReset {
    device: DeviceId,
    queue: u16,
    ticket: Ticket,
}

impl QueueReset {
    /// Draws the ticket just before the queue reset is requested.
    pub(crate) fn begin(device: DeviceId, queue: u16) -> Self {
        Self { device, queue, ticket: Ticket::draw() }
    }

    /// The device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The queue index that was reset.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

mod sealed {
    use super::DeviceId;

    /// The check itself, kept out of the public API.
    pub trait Sealed {
        /// Whether the proof covers queue `queue` of `device` whose rings
        /// were programmed at ticket `programmed`.
        fn covers(&self, device: DeviceId, queue: u16, programmed: u64) -> bool;
    }

    impl Sealed for super::DeviceReset {
        fn covers(&self, device: DeviceId, _queue: u16, programmed: u64) -> bool {
            self.device == device && self.ticket.0 > programmed
        }
    }

    impl Sealed for super::QueueReset {
        fn covers(&self, device: DeviceId, queue: u16, programmed: u64) -> bool {
            self.device == device && self.queue == queue && self.ticket.0 > programmed
        }
    }
}

/// A proof that a device stopped using some queues: [`DeviceReset`] or
/// [`QueueReset`]. Sealed: no other type can claim it.
pub trait ResetProof: sealed::Sealed {}
impl ResetProof for DeviceReset {}
impl ResetProof for QueueReset {}

impl Ticket {
    /// Whether `proof` shows the device stopped queue `queue` of `device`
    /// after it was programmed at `self`.
    pub(crate) fn covered_by<P: ResetProof>(self, proof: &P, device: DeviceId, queue: u16) -> bool {
        sealed::Sealed::covers(proof, device, queue, self.0)
    }
}
