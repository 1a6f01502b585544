//! A device register window as the kernel maps it: an uncached MMIO region
//! behind the crate's [`RegisterWindow`], so the crate's virtio-pci and
//! virtio-mmio transports run on kernel mappings.

use crate::mm::VirtAddr;
use crate::mm::mmio::MmioRegion;
use vireo_virtio::transport::RegisterWindow;

/// A mapped register window. Accesses outside it, or misaligned, read as
/// all ones (what a missing device reads as) and write nothing.
#[derive(Debug, Clone, Copy)]
pub struct KernelWindow {
    region: MmioRegion,
}

impl KernelWindow {
    /// A window over `region`, an uncached mapping of device registers
    /// that is never unmapped.
    pub fn new(region: MmioRegion) -> Self {
        Self { region }
    }

    /// The mapping (its physical base names a virtio-mmio device).
    pub fn region(&self) -> MmioRegion {
        self.region
    }

    /// The virtual address of register `offset`, if a `width`-byte aligned
    /// register there lies inside the window (for doorbells a queue rings
    /// without its transport).
    pub fn register(&self, offset: usize, width: usize) -> Option<VirtAddr> {
        let fits = offset.is_multiple_of(width)
            && offset.checked_add(width).is_some_and(|end| end <= self.region.len_bytes());
        fits.then(|| self.region.virt() + offset as u64)
    }

    fn pointer<T>(&self, offset: usize) -> Option<*mut T> {
        self.register(offset, size_of::<T>()).map(VirtAddr::as_mut_ptr)
    }

    fn read<T: Copy + Default + core::ops::Not<Output = T>>(&self, offset: usize) -> T {
        match self.pointer::<T>(offset) {
            // SAFETY: inside the mapped, uncached window (checked), aligned.
            Some(pointer) => unsafe { pointer.read_volatile() },
            None => !T::default(),
        }
    }

    fn write<T: Copy>(&self, offset: usize, value: T) {
        if let Some(pointer) = self.pointer::<T>(offset) {
            // SAFETY: inside the mapped, uncached window (checked), aligned.
            unsafe { pointer.write_volatile(value) };
        }
    }
}

// SAFETY: the region is an uncached mapping of device registers, never
// unmapped; `pointer` keeps every access inside it and aligned (outside:
// reads all-ones, writes dropped), one volatile access each, touching no
// other memory. x86 is little-endian, as virtio registers are.
unsafe impl RegisterWindow for KernelWindow {
    fn len(&self) -> usize {
        self.region.len_bytes()
    }
    fn read_u8(&self, offset: usize) -> u8 {
        self.read(offset)
    }
    fn read_u16(&self, offset: usize) -> u16 {
        self.read(offset)
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.read(offset)
    }
    fn write_u8(&self, offset: usize, value: u8) {
        self.write(offset, value);
    }
    fn write_u16(&self, offset: usize, value: u16) {
        self.write(offset, value);
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.write(offset, value);
    }
}
