//! A double-buffered, damage-tracking framebuffer on scanout 0.
//!
//! The caller draws into the back buffer while the front one is shown;
//! `present` transfers only the damaged rectangle (plus what the back
//! buffer's host resource missed while it was the front), flips the scanout
//! to it and flushes the damage, all as one fenced batch.

use super::protocol::{self, Rect};
use super::{GpuDevice, GpuDeviceError, InFlight};
use core::mem::ManuallyDrop;

/// Two guest-memory buffers shown alternately on scanout 0: the caller
/// draws into the back buffer while the front one is displayed, then
/// [`Framebuffer::present`] sends only the damaged rectangle and flips.
pub struct Framebuffer {
    device: &'static GpuDevice,
    width: u32,
    height: u32,
    /// Freed in `Drop` only once the device no longer scans them out.
    buffers: [ManuallyDrop<crate::mm::dma::DmaBuffer>; 2],
    resources: [u32; 2],
    back: usize,
    /// What the back buffer's host resource missed: the previous frame's
    /// damage, drawn into the other buffer.
    stale_in_back: Rect,
    /// Whether the back buffer's memory still lacks `stale_in_back` (it is
    /// copied over lazily, and not at all before a full redraw).
    needs_sync: bool,
    /// The caller took the back buffer for a full redraw.
    is_full_redraw: bool,
    /// The last frame's batch, still with the device.
    in_flight: Option<InFlight>,
}

impl Framebuffer {
    /// Creates both buffers at scanout 0's size and shows the first.
    ///
    /// # Errors
    /// [`GpuDeviceError`] from the device or for lack of memory.
    pub fn new(device: &'static GpuDevice) -> Result<Self, GpuDeviceError> {
        let Rect { width, height, .. } = device.display();
        let bytes = u64::from(width) * u64::from(height) * 4;
        let pages = bytes.div_ceil(crate::mm::PAGE_SIZE);
        let buffers = [
            ManuallyDrop::new(
                crate::mm::dma::DmaBuffer::new(pages).map_err(|_| GpuDeviceError::OutOfMemory)?,
            ),
            ManuallyDrop::new(
                crate::mm::dma::DmaBuffer::new(pages).map_err(|_| GpuDeviceError::OutOfMemory)?,
            ),
        ];
        let resources = [device.new_resource_id(), device.new_resource_id()];
        for (buffer, &resource) in buffers.iter().zip(&resources) {
            let format = protocol::FORMAT_B8G8R8X8;
            device
                .execute(&protocol::ResourceCreate2d { resource, format, width, height }, None)?;
            let address = buffer.phys().as_u64();
            device.execute(
                &protocol::AttachBacking { resource, address, len_bytes: bytes as u32 },
                None,
            )?;
        }
        let mut framebuffer = Self {
            device,
            width,
            height,
            buffers,
            resources,
            back: 1,
            stale_in_back: Rect::default(),
            needs_sync: false,
            is_full_redraw: false,
            in_flight: None,
        };
        let full = framebuffer.full();
        // Both host resources start from the (zeroed) buffers.
        for &resource in &resources {
            device
                .execute(&protocol::TransferToHost2d { rect: full, offset: 0, resource }, None)?;
        }
        device.execute(
            &protocol::SetScanout { rect: full, scanout: 0, resource: resources[0] },
            None,
        )?;
        device
            .execute(&protocol::ResourceFlush { rect: full, resource: resources[0] }, Some(()))?;
        framebuffer.back = 1;
        Ok(framebuffer)
    }

    /// The whole surface.
    pub fn full(&self) -> Rect {
        Rect { x: 0, y: 0, width: self.width, height: self.height }
    }

    /// The back buffer's pixels (B, G, R, X bytes; `width` per row), equal
    /// to what is on screen: draw the changes, then `present` their damage.
    pub fn back_pixels(&mut self) -> &mut [u32] {
        if self.needs_sync {
            // Bring the back buffer up to date with the last frame, drawn
            // into the other buffer.
            self.copy_rect(1 - self.back, self.stale_in_back);
            self.needs_sync = false;
        }
        self.pixels()
    }

    /// The back buffer for a frame that redraws every pixel: no catch-up
    /// copy is made, so the next `present` must cover the whole surface.
    pub fn back_pixels_for_full_redraw(&mut self) -> &mut [u32] {
        self.needs_sync = false;
        self.is_full_redraw = true;
        self.pixels()
    }

    fn pixels(&mut self) -> &mut [u32] {
        let count = (self.width * self.height) as usize;
        let bytes = self.buffers[self.back].as_mut_slice();
        // SAFETY: the buffer is page aligned, at least width*height*4 bytes
        // long, and any bit pattern is a valid u32.
        unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<u32>(), count) }
    }

    /// Shows the back buffer, of which only `damage` changed since it was
    /// last shown, and makes the other buffer the back one.
    ///
    /// # Errors
    /// [`GpuDeviceError::BadRect`] for damage outside the surface, or a
    /// device error.
    pub fn present(&mut self, damage: Rect) -> Result<(), GpuDeviceError> {
        if damage.is_empty() || !damage.fits(self.width, self.height) {
            return Err(GpuDeviceError::BadRect);
        }
        if self.is_full_redraw && damage != self.full() {
            // Outside `damage` the buffer holds a frame from two flips ago.
            return Err(GpuDeviceError::BadRect);
        }
        let resource = self.resources[self.back];
        let region = damage.union(self.stale_in_back);
        let offset = (u64::from(region.y) * u64::from(self.width) + u64::from(region.x)) * 4;
        // The previous frame must be done: its transfer read the buffer we
        // drew this frame's catch-up from, and the buffer we flip away from
        // next must no longer be read by the host.
        self.wait_idle()?;
        // One batch, one notification, fenced flush (§5.7.6.8); it runs
        // while the caller draws the next frame.
        self.in_flight = Some(self.device.submit_batch(&[
            &protocol::TransferToHost2d { rect: region, offset, resource },
            &protocol::SetScanout { rect: self.full(), scanout: 0, resource },
            &protocol::ResourceFlush { rect: damage, resource },
        ])?);
        // Flip. The new back buffer and its host resource both lack this
        // frame's damage: memory catches up when next drawn into, the host
        // resource at the next present.
        self.back = 1 - self.back;
        self.stale_in_back = damage;
        self.needs_sync = true;
        self.is_full_redraw = false;
        Ok(())
    }

    /// Copies `rect` from buffer `from` into the other one.
    fn copy_rect(&mut self, from: usize, rect: Rect) {
        let stride = self.width as usize * 4;
        let (first, second) = self.buffers.split_at_mut(1);
        let (source, target) =
            if from == 0 { (&first[0], &mut second[0]) } else { (&second[0], &mut first[0]) };
        for row in rect.y as usize..(rect.y + rect.height) as usize {
            let start = row * stride + rect.x as usize * 4;
            let end = start + rect.width as usize * 4;
            target.as_mut_slice()[start..end].copy_from_slice(&source.as_slice()[start..end]);
        }
    }

    /// Waits until the last presented frame is on screen.
    ///
    /// # Errors
    /// The device's error for that frame.
    pub fn wait_idle(&mut self) -> Result<(), GpuDeviceError> {
        self.in_flight.take().map_or(Ok(()), InFlight::wait)
    }

    /// The host resource ids (front, back) for checks.
    pub fn resources(&self) -> (u32, u32) {
        (self.resources[1 - self.back], self.resources[self.back])
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // Stop scanning out our memory before it is freed, then drop the
        // resources; errors leave the memory leaked rather than shown.
        let finished = self.wait_idle().is_ok();
        let detached = finished
            && self
                .device
                .execute(
                    &protocol::SetScanout { rect: Rect::default(), scanout: 0, resource: 0 },
                    None,
                )
                .is_ok();
        for &resource in &self.resources {
            let _ = self.device.execute(&protocol::ResourceUnref { resource }, None);
        }
        if detached {
            for buffer in &mut self.buffers {
                // SAFETY: dropped exactly once, here; the fields are not
                // used after `drop`.
                unsafe { ManuallyDrop::drop(buffer) };
            }
        }
    }
}
