//! VirtIO on vireo: the kernel's [`Hal`](vireo_virtio::Hal) (DMA through
//! the frame allocator) and the modern virtio-pci transport.

pub mod blk;
pub mod gpu;
pub mod hal;
pub mod pci;
