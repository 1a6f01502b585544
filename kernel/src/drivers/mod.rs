//! Device drivers: glue between the `vireo-virtio` crate and the kernel.

pub mod virtio;
