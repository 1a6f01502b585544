//! A queue's notify register as a handle used without the transport, so
//! each queue kicks under its own lock. Transports make it from a window
//! they have bounds-checked and mapped for good, so it stays valid.

use crate::mm::VirtAddr;

/// How wide the register is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    /// virtio-pci's `queue_notify` data is 16 bits (§4.1.4.4).
    U16,
    /// virtio-mmio allows only 32-bit control register accesses (§4.2.2.2).
    U32,
}

/// Notifies one queue: writes the queue index to its notify address
/// (§4.1.4.4, §4.2.3.4).
#[derive(Debug, Clone, Copy)]
pub struct QueueNotifier {
    address: VirtAddr,
    queue: u16,
    width: Width,
}

impl QueueNotifier {
    /// A 16-bit notify register (virtio-pci).
    ///
    /// # Safety
    /// `address` is an aligned u16 register inside a mapped, uncached
    /// window that is never unmapped.
    pub unsafe fn new_u16(address: VirtAddr, queue: u16) -> Self {
        Self { address, queue, width: Width::U16 }
    }

    /// A 32-bit notify register (virtio-mmio).
    ///
    /// # Safety
    /// As for [`QueueNotifier::new_u16`], for an aligned u32 register.
    pub unsafe fn new_u32(address: VirtAddr, queue: u16) -> Self {
        Self { address, queue, width: Width::U32 }
    }

    /// Sends the available-buffer notification.
    pub fn notify(&self) {
        match self.width {
            // SAFETY: the constructor's promise: an aligned register of this
            // width in a mapped, uncached window that stays mapped.
            Width::U16 => unsafe { self.address.as_mut_ptr::<u16>().write_volatile(self.queue) },
            // SAFETY: as above.
            Width::U32 => unsafe {
                self.address.as_mut_ptr::<u32>().write_volatile(u32::from(self.queue))
            },
        }
    }
}
