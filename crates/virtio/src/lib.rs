//! VirtIO driver core for vireo: an exact, hardened split virtqueue
//! (VirtIO 1.2 §2.7) behind small hardware-access traits, usable by any
//! `no_std` kernel. The crate's README has the guide (implementing
//! [`Hal`] and [`Transport`], recovering from a device error, testing a
//! driver on the host) and a comparison with `virtio-drivers`.
//!
//! - [`hal::Hal`] — DMA memory and how the device sees it (coherent by
//!   default; IOMMU or bounce buffers through [`Hal::share`]).
//! - [`transport::Transport`] — device registers and the device's
//!   identity; [`Notifier`]s kick one queue without it. The crate's own:
//!   [`transport::pci::PciTransport`] and [`transport::mmio::MmioTransport`]
//!   over a [`transport::RegisterWindow`] the kernel maps.
//! - [`queue::split::SplitQueue`] — the ring; drive it through its own
//!   methods or the layout-free [`queue::Virtqueue`] trait.
//! - [`buffer::DmaBuffers`] — what a request owns while the device has it.
//! - [`reset`] — proofs that a device, or one of its queues, stopped.
//! - [`config`] — device configuration read consistently (§2.5.1).
//! - [`device`] — protocol layers for virtio-blk, virtio-gpu 2D and
//!   virtio-input: the bytes of requests and answers, every device value
//!   checked, usable from any executor (the queue handling stays yours).
//! - `fake` (feature `fake`) — a fake device, a coherent and a bouncing
//!   HAL for drivers' host tests.
//!
//! # Ownership model
//!
//! A request's buffers belong to the queue from `add` until the device
//! returns them through `pop_used`; the token `add` gives back is only an
//! id. The device reaches memory only through rings a queue programmed
//! ([`Transport::queue_set`] is unsafe to call), and only what the HAL
//! shared: the rings for their whole life, each buffer from `add` until it
//! comes back. A queue lets go of buffers the device has not returned, and
//! of its rings, only against proof that the device stopped using them: a
//! [`DeviceReset`] from [`Transport::reset`] or a [`QueueReset`] from
//! [`SplitQueue::reset_queue`], bound to that device (and queue) and taken
//! after the rings were programmed ([`SplitQueue::reclaim`]). Without such
//! proof — a queue dropped while live, a reset that timed out — everything
//! the device might still touch is leaked, never freed nor unshared, and
//! counted ([`leak_counts`], [`Hal::dma_leaked`]): leaking is safe, a
//! device writing freed memory is not. The ring itself never trusts shared
//! memory: it keeps its own copy of every descriptor and checks every
//! index, id and length the device writes.
//!
//! # Typical use
//!
//! ```
//! # use vireo_virtio::*;
//! fn demo<H: Hal, T: Transport>(hal: &H, transport: &mut T, request: DmaChain<H>) -> Result {
//!     let features = negotiate_features(transport, Features::INDIRECT_DESC | Features::EVENT_IDX)?;
//!     let used_len = UsedLenPolicy::Strict;
//!     let config = QueueConfig { index: 0, size: 256, features, indirect_max: 16, used_len };
//!     let mut q: SplitQueue<H, DmaChain<H>> = SplitQueue::new(hal, transport, config)?;
//!     transport.set_status(transport.status() | DeviceStatus::DRIVER_OK);
//!     let token = q.add(request).map_err(|r| r.error)?; // the queue owns `request` now
//!     q.kick(transport)?; // one notify decision per batch
//!     // Interrupt handler: with interrupts on, popping until `None` is enough.
//!     while let Some(used) = q.pop_used()? {
//!         assert_eq!(used.token, token);
//!         // complete(used.token, used.written_len, used.buffers)
//!     }
//!     // Shutting down: reset the device, then each queue gives back what the
//!     // device still had and frees its rings.
//!     let stopped = transport.reset()?;
//!     q.reclaim(&stopped, |_token, buffers| drop(buffers))?;
//!     Ok(())
//! }
//! # let hal = fake::FakeHal::new();
//! # let mut transport = fake::FakeTransport::new(hal.memory(), fake::Echo, &[256]);
//! # let mut request = DmaChain::new(Dma::new(hal.clone(), 1)?);
//! # request.set_segments(&[(0, 8)], &[(8, 8)])?;
//! # demo(&hal, &mut transport, request)?;
//! # Ok::<(), Error>(())
//! ```
//!
//! The crate is `no_std` and uses `alloc` only in [`queue::split::SplitQueue::new`]
//! (the driver-private per-descriptor array); adding, kicking, popping and
//! interrupt control never allocate.
#![cfg_attr(not(any(test, feature = "loom", feature = "fake")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;

pub mod barrier;
pub mod buffer;
pub mod config;
pub mod device;
mod error;
#[cfg(any(test, feature = "fake"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fake")))]
pub mod fake;
pub mod features;
pub mod hal;
#[cfg(test)]
mod hot_path_tests;
mod leaks;
pub mod queue;
pub mod reset;
#[cfg(test)]
mod testing;
pub mod transport;

pub use buffer::{DmaBuffers, DmaChain, Segment};
pub use error::{Error, Result};
pub use features::Features;
pub use hal::{Dma, Hal, PAGE_SIZE, PhysAddr, Sharing};
pub use leaks::{LeakCounts, leak_counts};
pub use queue::split::{QueueConfig, SplitQueue, UsedLenPolicy};
pub use queue::{QueueStats, Rejected, RingAddresses, Token, Used, Virtqueue};
pub use reset::{DeviceId, DeviceReset, QueueReset, ResetProof};
pub use transport::{
    DeviceStatus, InterruptStatus, NO_VECTOR, Notifier, QueueNotifiers, Transport,
    negotiate_features,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
