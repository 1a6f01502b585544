//! Device protocol layers (VirtIO 1.2 §5): the bytes a driver and a device
//! exchange, as plain types with encode and decode functions, every value
//! from the device checked.
//!
//! Nothing here owns a queue, waits or allocates: a driver builds a
//! request's bytes, puts them in buffers it submits through a
//! [`crate::SplitQueue`] (from any executor, or none), and decodes what
//! came back when [`crate::SplitQueue::pop_used`] returns it. That
//! submit/complete split is the whole API; interrupts, wait queues,
//! deadlines and per-CPU queues stay the kernel's.
//!
//! - [`blk`] — virtio-blk (§5.2): features, configuration, request header,
//!   status, discard/write-zeroes ranges, GET_ID, transfer limits.
//! - [`gpu`] — virtio-gpu 2D (§5.7): control and cursor commands and their
//!   responses, EDID.
//! - [`input`] — virtio-input (§5.8): events and configuration queries.

pub mod blk;
pub mod gpu;
pub mod input;
