//! The cursor queue (VirtIO 1.2 §5.7.6.10): UPDATE_CURSOR sets the image
//! (a 64x64 resource) and position, MOVE_CURSOR only the position. The
//! device answers nothing but returns each buffer; a command is done once
//! its buffer is back.

use super::control::Page;
use super::protocol::{self, Command, Rect};
use super::{GpuDevice, GpuDeviceError};
use crate::drivers::virtio::bringup::Queue;
use crate::drivers::virtio::hal::KernelHal;
use crate::drivers::virtio::pci::QueueNotifier;
use crate::mm::dma::DmaBuffer;
use alloc::vec::Vec;
use vireo_virtio::SplitQueue;

/// A cursor image is 64 x 64 pixels (§5.7.6.10).
pub const CURSOR_SIZE: u32 = 64;
/// Command pages for the cursor queue.
pub(super) const PAGES: usize = 4;
const TIMEOUT_US: u64 = 2_000_000;

/// The queue, its command pages and the cursor image resource.
pub(super) struct CursorQueue {
    ring: SplitQueue<KernelHal, Page>,
    notifier: QueueNotifier,
    pages: Vec<Page>,
    /// The image resource and its backing, made on first use.
    image: Option<(u32, DmaBuffer)>,
}

impl CursorQueue {
    /// Takes the queue and its command pages.
    pub(super) fn new(queue: Queue<Page>, pages: Vec<Page>) -> Self {
        let Queue { ring, notifier, .. } = queue;
        Self { ring, notifier, pages, image: None }
    }

    pub(super) fn into_ring(self) -> SplitQueue<KernelHal, Page> {
        self.ring
    }

    /// Sends one cursor command and waits for its buffer to come back.
    fn send(&mut self, cursor: &protocol::Cursor) -> Result<(), GpuDeviceError> {
        let mut page = self.pages.pop().ok_or(GpuDeviceError::QueueFull)?;
        let len = cursor.encode_into(page.region_mut());
        if page.set_segments(&[(0, len)], &[]).is_err() {
            self.pages.push(page);
            return Err(GpuDeviceError::InvalidBatch);
        }
        if let Err(rejected) = self.ring.add(page) {
            self.pages.push(rejected.buffers);
            return Err(GpuDeviceError::QueueBroken);
        }
        if self.ring.should_notify().map_err(|_| GpuDeviceError::QueueBroken)? {
            self.notifier.notify();
        }
        let deadline = crate::platform::time::uptime_us() + TIMEOUT_US;
        loop {
            match self.ring.pop_used() {
                Ok(Some(used)) => {
                    self.pages.push(used.buffers);
                    return Ok(());
                }
                Ok(None) if crate::platform::time::uptime_us() > deadline => {
                    return Err(GpuDeviceError::Timeout);
                }
                // The device runs cursor commands from its main loop within
                // microseconds; the lock is a spinlock, so no sleeping here.
                Ok(None) => core::hint::spin_loop(),
                Err(_) => return Err(GpuDeviceError::QueueBroken),
            }
        }
    }
}

impl GpuDevice {
    /// Shows `image` (64 x 64 B, G, R, A pixels) as the cursor at (x, y) on
    /// the driver's scanout, with its hot spot at (hot_x, hot_y).
    ///
    /// # Errors
    /// [`GpuDeviceError::BadRect`] for a wrong image size or hot spot, the
    /// device's error otherwise.
    pub fn set_cursor(
        &self,
        image: &[u32],
        (x, y): (u32, u32),
        (hot_x, hot_y): (u32, u32),
    ) -> Result<(), GpuDeviceError> {
        let pixels = (CURSOR_SIZE * CURSOR_SIZE) as usize;
        if image.len() != pixels || hot_x >= CURSOR_SIZE || hot_y >= CURSOR_SIZE {
            return Err(GpuDeviceError::BadRect);
        }
        let rect = Rect { x: 0, y: 0, width: CURSOR_SIZE, height: CURSOR_SIZE };
        let mut cursor = self.cursor.lock();
        if cursor.image.is_none() {
            let buffer = DmaBuffer::new(4).map_err(|_| GpuDeviceError::OutOfMemory)?;
            let resource = self.new_resource_id();
            let format = protocol::FORMAT_B8G8R8A8;
            let create = protocol::ResourceCreate2d {
                resource,
                format,
                width: CURSOR_SIZE,
                height: CURSOR_SIZE,
            };
            self.execute(&create, false)?;
            let entries = [(buffer.phys().as_u64(), buffer.len_bytes() as u32)];
            if let Err(error) =
                self.execute(&protocol::AttachBacking { resource, entries: &entries }, false)
            {
                let _ = self.execute(&protocol::ResourceUnref { resource }, false);
                return Err(error);
            }
            cursor.image = Some((resource, buffer));
        }
        let Some((resource, buffer)) = cursor.image.as_mut() else {
            return Err(GpuDeviceError::OutOfMemory);
        };
        let resource = *resource;
        for (chunk, pixel) in buffer.as_mut_slice().chunks_exact_mut(4).zip(image) {
            chunk.copy_from_slice(&pixel.to_le_bytes());
        }
        self.execute(&protocol::TransferToHost2d { rect, offset: 0, resource }, false)?;
        let scanout = self.scanout().id;
        cursor.send(&protocol::Cursor {
            command: Command::UpdateCursor,
            scanout,
            x,
            y,
            resource,
            hot_x,
            hot_y,
        })
    }

    /// Moves the cursor set by [`GpuDevice::set_cursor`].
    ///
    /// # Errors
    /// The device's error.
    pub fn move_cursor(&self, x: u32, y: u32) -> Result<(), GpuDeviceError> {
        let scanout = self.scanout().id;
        let mut cursor = self.cursor.lock();
        let resource = cursor.image.as_ref().map_or(0, |(resource, _)| *resource);
        cursor.send(&protocol::Cursor {
            command: Command::MoveCursor,
            scanout,
            x,
            y,
            resource,
            hot_x: 0,
            hot_y: 0,
        })
    }

    /// Hides the cursor.
    ///
    /// # Errors
    /// The device's error.
    pub fn hide_cursor(&self) -> Result<(), GpuDeviceError> {
        let scanout = self.scanout().id;
        self.cursor.lock().send(&protocol::Cursor {
            command: Command::UpdateCursor,
            scanout,
            x: 0,
            y: 0,
            resource: 0,
            hot_x: 0,
            hot_y: 0,
        })
    }
}
