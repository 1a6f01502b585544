//! Guest memory behind a resource: single pages from the frame allocator,
//! mapped side by side in kernel virtual memory for the CPU and described
//! to the device as a scatter list (RESOURCE_ATTACH_BACKING, §5.7.6.8), so
//! a framebuffer of tens of megabytes needs no contiguous physical run.

use super::GpuDeviceError;
use crate::mm::{PAGE_SIZE, PhysAddr, VirtAddr, frame, paging, vmap};
use alloc::vec::Vec;
use x86_64::structures::paging::PageTableFlags;

/// Pages mapped at one virtual range, and the physical runs they form.
pub struct Backing {
    virt: VirtAddr,
    frames: Vec<PhysAddr>,
}

impl Backing {
    /// `bytes` of zeroed memory (rounded up to pages).
    ///
    /// # Errors
    /// [`GpuDeviceError::OutOfMemory`] when frames or page tables run out;
    /// whatever was taken is given back.
    pub fn new(bytes: usize) -> Result<Self, GpuDeviceError> {
        let pages = (bytes as u64).div_ceil(PAGE_SIZE);
        let virt = vmap::reserve(pages);
        let mut backing = Self { virt, frames: Vec::new() };
        backing
            .frames
            .try_reserve_exact(pages as usize)
            .map_err(|_| GpuDeviceError::OutOfMemory)?;
        let flags = PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
        for page in 0..pages {
            let phys = frame::alloc().map_err(|_| GpuDeviceError::OutOfMemory)?;
            if paging::map_page(virt + page * PAGE_SIZE, phys, flags).is_err() {
                frame::free(phys, 1);
                return Err(GpuDeviceError::OutOfMemory);
            }
            backing.frames.push(phys);
        }
        backing.as_mut_bytes().fill(0);
        Ok(backing)
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.frames.len() * PAGE_SIZE as usize
    }

    /// The memory, for the CPU.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `frames.len()` pages are mapped from `virt` for as long as
        // `self` lives, owned by it alone.
        unsafe { core::slice::from_raw_parts(self.virt.as_ptr(), self.len()) }
    }

    /// The memory, for the CPU, mutable.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes the view unique.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_mut_ptr(), self.len()) }
    }

    /// As 32-bit pixels.
    pub fn as_mut_pixels(&mut self) -> &mut [u32] {
        let count = self.len() / 4;
        // SAFETY: page-aligned, `len` bytes mapped and owned, any bit
        // pattern is a valid u32; `&mut self` makes the view unique.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_mut_ptr::<u32>(), count) }
    }

    /// The scatter list: runs of physically consecutive pages, each at most
    /// 1 GiB (the entry length is 32 bits).
    pub fn entries(&self) -> Vec<(u64, u32)> {
        let mut runs: Vec<(u64, u32)> = Vec::new();
        for phys in &self.frames {
            match runs.last_mut() {
                Some((start, len))
                    if *start + u64::from(*len) == phys.as_u64() && *len < (1 << 30) =>
                {
                    *len += PAGE_SIZE as u32;
                }
                _ => runs.push((phys.as_u64(), PAGE_SIZE as u32)),
            }
        }
        runs
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // Unmap every page on every CPU before its frame can be reused.
        for page in 0..self.frames.len() as u64 {
            let _ = paging::unmap_page(self.virt + page * PAGE_SIZE);
        }
        if !self.frames.is_empty() {
            crate::smp::tlb::shootdown(self.virt, self.frames.len() as u64);
        }
        for phys in self.frames.drain(..) {
            frame::free(phys, 1);
        }
    }
}
