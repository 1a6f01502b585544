//! DMA buffers: physically contiguous, page-aligned, zeroed memory with both
//! its physical address (for the device) and a virtual one (for the CPU).
//!
//! The memory comes straight from the frame allocator and is reached through
//! the write-back direct map: x86 DMA is cache-coherent, so no uncached alias
//! is needed. Dropping the buffer frees the frames; code that hands a buffer
//! to a device must keep it alive until the device gives it back (the virtio
//! crate enforces that for its queues).

use super::{OutOfMemory, PAGE_SIZE, PhysAddr, VirtAddr, frame, phys_to_virt};

/// An owned, contiguous DMA region.
#[derive(Debug)]
pub struct DmaBuffer {
    phys: PhysAddr,
    pages: u64,
}

impl DmaBuffer {
    /// Allocates `pages` zeroed, contiguous pages.
    ///
    /// # Errors
    /// [`OutOfMemory`] when no contiguous run is free (or `pages` is 0).
    pub fn new(pages: u64) -> Result<Self, OutOfMemory> {
        let phys = frame::alloc_contiguous(pages, 1)?;
        let buffer = Self { phys, pages };
        // SAFETY: the frames were just allocated for this buffer and are
        // mapped by the direct map.
        unsafe { buffer.virt().as_mut_ptr::<u8>().write_bytes(0, buffer.len_bytes()) };
        Ok(buffer)
    }

    /// The device-visible address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The CPU-visible address of the first byte.
    pub fn virt(&self) -> VirtAddr {
        phys_to_virt(self.phys)
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        (self.pages * PAGE_SIZE) as usize
    }

    /// The contents, for the CPU. Only valid while no device is writing.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer owns these mapped bytes for its lifetime.
        unsafe { core::slice::from_raw_parts(self.virt().as_ptr(), self.len_bytes()) }
    }

    /// The contents, mutable, for the CPU.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the view unique.
        unsafe { core::slice::from_raw_parts_mut(self.virt().as_mut_ptr(), self.len_bytes()) }
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        frame::free(self.phys, self.pages);
    }
}

mod tests {
    use super::*;
    use crate::mm::paging::translate;
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn buffer_is_contiguous_and_aligned() {
            let buffer = check_ok!(DmaBuffer::new(8));
            check!(buffer.phys().is_aligned(PAGE_SIZE));
            check!(buffer.virt().is_aligned(PAGE_SIZE));
            for page in 0..8u64 {
                let virt = buffer.virt() + page * PAGE_SIZE;
                check_eq!(translate(virt), Some(buffer.phys() + page * PAGE_SIZE));
            }
            Ok(())
        }
    );

    ktest!(
        fn buffer_is_zeroed_and_writable() {
            let mut buffer = check_ok!(DmaBuffer::new(2));
            check!(buffer.as_slice().iter().all(|&byte| byte == 0));
            buffer.as_mut_slice()[8191] = 0x5a;
            check_eq!(buffer.as_slice()[8191], 0x5a);
            check_eq!(buffer.len_bytes(), 8192);
            Ok(())
        }
    );

    ktest!(
        fn drop_frees_frames() {
            let before = frame::stats().free;
            let buffer = check_ok!(DmaBuffer::new(16));
            let phys = buffer.phys();
            check_eq!(frame::stats().free, before - 16);
            drop(buffer);
            check_eq!(frame::stats().free, before);
            check!(!frame::is_allocated(phys));
            Ok(())
        }
    );

    ktest!(
        fn oversized_buffer_is_an_error() {
            let usable = frame::stats().usable;
            check_eq!(DmaBuffer::new(usable + 1).map(drop), Err(OutOfMemory));
            check_eq!(DmaBuffer::new(0).map(drop), Err(OutOfMemory));
            Ok(())
        }
    );
}
