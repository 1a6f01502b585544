//! VirtIO on vireo: the kernel's [`Hal`](vireo_virtio::Hal) (DMA through
//! the frame allocator), the virtio-pci (modern and transitional devices,
//! through the modern interface) and virtio-mmio (version 2) transports,
//! the one bring-up path every driver goes through, and the drivers.
//!
//! A new driver is a directory here whose `VirtioDriver` implementation
//! states its device id, required and optional features, configuration
//! struct and queues (see `bringup`, and `blk` or `gpu` as examples); its
//! `init` calls `bringup::probe` and builds its state from the queues it
//! gets back, handing them to `VirtioDevice::fail` if that goes wrong.

pub mod blk;
pub mod bringup;
pub mod gpu;
pub mod hal;
pub mod input;
pub mod mmio;
pub mod notifier;
pub mod pci;
pub mod window;
