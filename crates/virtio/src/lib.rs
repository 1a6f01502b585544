//! VirtIO driver core for vireo: an exact, hardened split virtqueue
//! (VirtIO 1.2 §2.7) behind small hardware-access traits, usable by any
//! `no_std` kernel.
//!
//! - [`hal::Hal`] — DMA memory (the kernel's DMA API; host tests fake it).
//! - [`transport::Transport`] — device registers (PCI / MMIO).
//! - [`queue::split::SplitQueue`] — the ring; drive it through the
//!   layout-free [`queue::Virtqueue`] trait.
//! - [`buffer::DmaBuffers`] — what a request owns while the device has it.
//!
//! # Typical use
//!
//! ```ignore
//! let features = negotiate_features(&mut transport, Features::INDIRECT_DESC | Features::EVENT_IDX)?;
//! let mut q: SplitQueue<KernelHal, DmaChain<KernelHal>> = SplitQueue::new(
//!     &hal, &mut transport, QueueConfig { index: 0, size: 256, features, indirect_max: 16 })?;
//! transport.set_status(transport.status() | DeviceStatus::DRIVER_OK);
//! let token = q.add(request).map_err(|r| r.error)?;   // queue owns `request` now
//! q.kick(&mut transport)?;                             // one notify decision per batch
//! // interrupt handler / poll loop:
//! loop {
//!     while let Some(used) = q.pop_used()? { complete(used.token, used.written_len, used.buffers) }
//!     if !q.enable_interrupts()? { break }             // nothing raced in: safe to sleep
//! }
//! ```
//!
//! The crate is `no_std` and uses `alloc` only in [`queue::split::SplitQueue::new`]
//! (the driver-private per-descriptor array); adding, kicking, popping and
//! interrupt control never allocate.
#![cfg_attr(not(any(test, feature = "loom")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod barrier;
pub mod buffer;
mod error;
pub mod features;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hal;
#[cfg(test)]
mod hot_path_tests;
mod leaks;
pub mod queue;
pub mod reset;
pub mod transport;

pub use buffer::{DmaBuffers, DmaChain, Segment};
pub use error::{Error, Result};
pub use features::Features;
pub use hal::{Dma, Hal, PAGE_SIZE, PhysAddr};
pub use leaks::{LeakCounts, leak_counts};
pub use queue::split::{QueueConfig, SplitQueue, UsedLenPolicy};
pub use queue::{QueueStats, Rejected, Token, Used, Virtqueue};
pub use reset::{DeviceId, DeviceReset, QueueReset, ResetProof};
pub use transport::{DeviceStatus, InterruptStatus, Transport, negotiate_features};
