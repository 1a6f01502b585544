//! VirtIO driver core for vireo (placeholder until the split virtqueue lands).
#![no_std]
