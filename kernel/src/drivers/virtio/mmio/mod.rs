//! virtio-mmio version 2 (VirtIO 1.2 §4.2) in the kernel: the register
//! logic is the crate's (`vireo_virtio::transport::mmio`); the kernel maps
//! each window the platform lists, names the device, and adds what a
//! running device needs without its transport (per-queue doorbells, the
//! shared line's interrupt acknowledgement). See [`window`].

pub mod window;

pub use vireo_virtio::transport::mmio::MmioError;
