//! Test doubles for drivers built on this crate (feature `fake`, which
//! needs `std`): HALs over host memory and a fake device behind the
//! [`Transport`](crate::Transport) trait, so a driver's logic can run in
//! `cargo test` on the host.
//!
//! - [`FakeHal`]: coherent memory, like a kernel on x86 without an IOMMU
//!   (the ring's zero-cost path).
//! - [`BounceHal`]: the device sees nothing that was not shared, and every
//!   request buffer is bounced — what a confidential guest or an IOMMU
//!   does. A driver that works under it shares correctly.
//! - [`FakeTransport`] with a [`DeviceModel`]: the device side of the split
//!   ring, serving each queue when notified. Models answer honestly or
//!   [lie](Lie), or hold requests like a stalled device; resets, per-queue
//!   resets and MSI-X vectors behave like virtio-pci's.
//!
//! Both HALs record every region they hand out, and the device reaches
//! memory only through [`DeviceMemory`], which refuses (and records as a
//! [`DmaFault`]) any access to memory that is not allocated and shared at
//! that moment: a driver that hands the device freed or unshared memory
//! is caught, not silently corrupted.
//!
//! ```
//! use vireo_virtio::fake::{Echo, FakeHal, FakeTransport};
//! use vireo_virtio::{
//!     DeviceStatus, Dma, DmaChain, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy,
//!     negotiate_features,
//! };
//!
//! # fn main() -> vireo_virtio::Result {
//! let hal = FakeHal::new();
//! let mut transport = FakeTransport::new(hal.memory(), Echo, &[16]);
//! let features = negotiate_features(&mut transport, Features::EVENT_IDX)?;
//! let config =
//!     QueueConfig { index: 0, size: 16, features, indirect_max: 0, used_len: UsedLenPolicy::Strict };
//! let mut queue: SplitQueue<FakeHal, DmaChain<FakeHal>> =
//!     SplitQueue::new(&hal, &mut transport, config)?;
//! transport.set_status(transport.status() | DeviceStatus::DRIVER_OK);
//!
//! let mut request = DmaChain::new(Dma::new(hal.clone(), 1)?);
//! request.region_mut()[..5].copy_from_slice(b"hello");
//! request.set_segments(&[(0, 5)], &[(64, 5)])?;
//! queue.add(request).map_err(|rejected| rejected.error)?;
//! queue.kick(&mut transport)?; // the fake device echoes at once
//! let used = queue.pop_used()?.expect("echoed");
//! assert_eq!((used.written_len, used.buffers.bytes(1)), (5, &b"hello"[..]));
//!
//! let stopped = transport.reset()?;
//! queue.reclaim(&stopped, |_, _| {})?;
//! drop(queue);
//! assert!(hal.memory().faults().is_empty());
//! # Ok(()) }
//! ```

mod device;
mod memory;
mod transport;

pub use device::{DeviceError, DeviceModel, Echo, Lie, Reply, Request};
pub use memory::{BounceHal, DeviceMemory, DmaFault, FakeHal, MemoryStats};
pub use transport::{FakeNotifier, FakeTransport};
