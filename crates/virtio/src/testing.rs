//! Bare test doubles for the crate's own unit tests: a heap HAL with
//! physical = virtual address and a transport that only records where the
//! ring lives, so tests poke the rings by hand. (Users get the richer,
//! checked ones in [`crate::fake`].)

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{
    DeviceId, DeviceStatus, Error, Features, Hal, InterruptStatus, PAGE_SIZE, PhysAddr, Result,
    Transport,
};

/// Heap-backed [`Hal`] with physical address = virtual address.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapHal;

// SAFETY: allocations come from the global allocator, page aligned, zeroed
// and exclusively owned until `dma_dealloc`; the "device" in these harnesses
// accesses them by the same address.
unsafe impl Hal for HeapHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: layout has non-zero size (pages >= 1 checked by `Dma`).
        let p = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some((p.as_ptr() as PhysAddr, p))
    }

    unsafe fn dma_dealloc(&self, _paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("layout");
        // SAFETY: caller passes back an allocation made with this layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) }
    }
}

static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1 << 40);

/// A transport that only records where the ring lives. Each value is its
/// own device (a fresh [`DeviceId`]); per-queue reset completes at once.
#[derive(Debug)]
pub struct RecordingTransport {
    /// `(size, desc, driver, device)` from the last `queue_set`.
    pub queue: Option<(u16, PhysAddr, PhysAddr, PhysAddr)>,
    /// Notifications sent.
    pub notifies: u64,
    /// Models a broken device that never completes a reset.
    pub refuses_reset: bool,
    /// Queue resets requested.
    pub queue_resets: u64,
    id: DeviceId,
    status: u8,
}

impl Default for RecordingTransport {
    fn default() -> Self {
        Self {
            queue: None,
            notifies: 0,
            refuses_reset: false,
            queue_resets: 0,
            id: DeviceId::new(NEXT_DEVICE.fetch_add(1, Ordering::Relaxed)),
            status: 0,
        }
    }
}

// SAFETY: there is no device behind it: nothing ever accesses the rings, so
// every reset trivially stops all DMA; ids are unique per value.
unsafe impl Transport for RecordingTransport {
    fn device_id(&self) -> DeviceId {
        self.id
    }
    fn read_device_features(&mut self) -> u64 {
        Features::SUPPORTED_BY_RING.bits()
    }
    fn write_driver_features(&mut self, _features: u64) {}
    fn max_queue_size(&mut self, _queue: u16) -> u16 {
        32768
    }
    fn queue_used(&mut self, _queue: u16) -> bool {
        false
    }
    unsafe fn queue_set(&mut self, _q: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        self.queue = Some((size, d, a, u));
    }
    fn queue_unset(&mut self, _queue: u16) {
        self.queue = None;
    }
    fn notify(&mut self, _queue: u16) {
        self.notifies += 1;
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.status)
    }
    fn set_status(&mut self, status: DeviceStatus) {
        if !(self.refuses_reset && status.is_empty()) {
            self.status = status.bits();
        }
    }
    fn read_config(&self, _offset: usize, _buf: &mut [u8]) -> Result {
        Err(Error::ConfigOutOfRange)
    }
    fn write_config(&mut self, _offset: usize, _data: &[u8]) -> Result {
        Err(Error::ConfigOutOfRange)
    }
    fn config_generation(&self) -> u32 {
        0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
    fn has_queue_reset(&self) -> bool {
        true
    }
    fn start_queue_reset(&mut self, _queue: u16) {
        self.queue_resets += 1;
    }
    fn queue_reset_done(&mut self, _queue: u16) -> bool {
        !self.refuses_reset
    }
}
