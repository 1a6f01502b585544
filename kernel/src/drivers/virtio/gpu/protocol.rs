//! virtio-gpu 2D commands and responses (VirtIO 1.2 §5.7.6): the crate's
//! protocol layer (`vireo_virtio::device::gpu`), under the path the driver
//! has always used.

pub use vireo_virtio::device::gpu::*;
