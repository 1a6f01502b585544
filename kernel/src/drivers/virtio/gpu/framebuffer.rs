//! Frames in flight on one scanout, tear-free, one kick and one fence each.
//!
//! Design: one host resource, always on the scanout (SET_SCANOUT once), and
//! one guest backing holding its slots one below the other. A frame is
//! drawn into its slot while up to [`FRAMES_IN_FLIGHT`] (or the depth the
//! caller chose) earlier frames are still with the device; `present`
//! queues TRANSFER_TO_HOST_2D of just the damage from the slot (its byte
//! offset selects the slot, §5.7.6.8) and a fenced RESOURCE_FLUSH, as one
//! batch with one notification.
//!
//! Why this shape: the device runs commands in order and each command
//! runs whole before the display reads the resource again (QEMU processes
//! the control queue and refreshes the display from one main loop), so
//! after every transfer the host resource holds one complete frame: never
//! half drawn, never a mix. The guest never writes a slot the device may
//! still read: a slot is reused only after the frame that used it is
//! answered. Flipping between several resources instead would cost a
//! SET_SCANOUT per frame (QEMU rebuilds its display surface each time) and
//! the union of two frames' damage per transfer.
//!
//! The caller's contract is that the back buffer equals the screen: before
//! a slot is drawn again it is brought up to date by copying, from the
//! newest slot, what the frames since its last use damaged — except what
//! the caller says it will redraw whole ([`Framebuffer::back_pixels_redrawing`]),
//! which it must then present. A full redraw copies nothing.

use super::backing::Backing;
use super::control::{Batch, check_nodata};
use super::protocol::{self, Rect};
use super::{GpuDevice, GpuDeviceError, Scanout};

/// Frames the caller may present before the next draw waits for the
/// oldest, unless it asks for another depth.
pub const FRAMES_IN_FLIGHT: usize = 4;
/// The most frames in flight a framebuffer may be made with.
pub const MAX_FRAMES_IN_FLIGHT: usize = 7;
/// Most slots in a backing: the frames in flight and the one being drawn.
const MAX_SLOTS: usize = MAX_FRAMES_IN_FLIGHT + 1;

/// Counters of one framebuffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames presented.
    pub presented: u64,
    /// Frames the device answered.
    pub completed: u64,
    /// Draws that had to wait for a frame still in flight.
    pub waits: u64,
}

/// Frames shown on one scanout through one resource.
pub struct Framebuffer {
    device: &'static GpuDevice,
    scanout: Scanout,
    resource: u32,
    /// `slots` frames of `width * height` pixels; `None` once leaked.
    memory: Option<Backing>,
    /// The frame being drawn (the next to be presented).
    frame: u64,
    /// Slots in use: frames in flight + 1.
    slots: usize,
    /// Damage of recent frames, by `frame % slots`.
    damage: [Rect; MAX_SLOTS],
    /// The batch of the frame last drawn in each slot, until answered.
    in_flight: [Option<Batch>; MAX_SLOTS],
    /// The back slot has been made equal to the screen (but `redrawn`).
    is_prepared: bool,
    /// What the caller redraws whole in the back slot: the catch-up copy
    /// skipped it, so the next `present` must cover it.
    redrawn: Rect,
    /// An error answer to a frame already presented, reported next.
    late_error: Option<GpuDeviceError>,
    stats: FrameStats,
}

impl Framebuffer {
    /// Creates the resource at the scanout's mode, backs it, shows it.
    ///
    /// # Errors
    /// [`GpuDeviceError`] from the device or for lack of memory.
    pub fn new(device: &'static GpuDevice) -> Result<Self, GpuDeviceError> {
        Self::with_mode(device, device.scanout())
    }

    /// Like [`Framebuffer::new`] at another mode: `scanout.rect` is the
    /// resource's size and what the scanout shows (a mode change driven by
    /// the guest).
    ///
    /// # Errors
    /// [`GpuDeviceError::BadMode`] for an empty or huge mode, else as
    /// [`Framebuffer::new`].
    pub fn with_mode(device: &'static GpuDevice, scanout: Scanout) -> Result<Self, GpuDeviceError> {
        Self::with_depth(device, scanout, FRAMES_IN_FLIGHT)
    }

    /// Like [`Framebuffer::with_mode`], letting the caller run up to
    /// `frames_in_flight` frames ahead of the device (each costs one more
    /// frame of memory).
    ///
    /// # Errors
    /// [`GpuDeviceError::BadDepth`] unless 2 <= `frames_in_flight` <=
    /// [`MAX_FRAMES_IN_FLIGHT`], else as [`Framebuffer::with_mode`].
    pub fn with_depth(
        device: &'static GpuDevice,
        scanout: Scanout,
        frames_in_flight: usize,
    ) -> Result<Self, GpuDeviceError> {
        if !(2..=MAX_FRAMES_IN_FLIGHT).contains(&frames_in_flight) {
            return Err(GpuDeviceError::BadDepth);
        }
        let slots = frames_in_flight + 1;
        let scanout = Scanout { rect: Rect { x: 0, y: 0, ..scanout.rect }, ..scanout };
        let Rect { width, height, .. } = scanout.rect;
        super::check_mode(scanout.rect)?;
        let frame_bytes = width as usize * height as usize * 4;
        let memory = Backing::new(frame_bytes * slots)?;
        let resource = device.new_resource_id();
        let format = protocol::FORMAT_B8G8R8X8;
        device.execute(&protocol::ResourceCreate2d { resource, format, width, height }, false)?;
        let mut framebuffer = Self {
            device,
            scanout,
            resource,
            memory: None,
            frame: 0,
            slots,
            damage: [Rect::default(); MAX_SLOTS],
            in_flight: [None; MAX_SLOTS],
            is_prepared: false,
            redrawn: Rect::default(),
            late_error: None,
            stats: FrameStats::default(),
        };
        let entries = memory.entries();
        let attach = protocol::AttachBacking { resource, entries: &entries };
        // On error, dropping `framebuffer` unrefs the resource; the memory
        // was never the device's.
        device.execute(&attach, false)?;
        framebuffer.memory = Some(memory);
        let full = framebuffer.full();
        let show = protocol::SetScanout { rect: full, scanout: scanout.id, resource };
        device.execute(&show, false)?;
        // The (zeroed) first frame, so the screen starts defined.
        framebuffer.back_pixels_for_full_redraw()?;
        framebuffer.present(full)?;
        Ok(framebuffer)
    }

    /// The whole surface.
    pub fn full(&self) -> Rect {
        self.scanout.rect
    }

    /// The scanout shown on.
    pub fn scanout(&self) -> Scanout {
        self.scanout
    }

    /// Puts this framebuffer back on its scanout (after another one was
    /// shown there) and flushes all of it.
    ///
    /// # Errors
    /// The device's error.
    pub fn show(&mut self) -> Result<(), GpuDeviceError> {
        self.wait_idle()?;
        let (full, resource) = (self.full(), self.resource);
        let show = protocol::SetScanout { rect: full, scanout: self.scanout.id, resource };
        self.device.execute(&show, false)?;
        self.device.execute(&protocol::ResourceFlush { rect: full, resource }, false)?;
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// The host resource id, for checks.
    pub fn resource(&self) -> u32 {
        self.resource
    }

    fn slot(&self, frame: u64) -> usize {
        (frame % self.slots as u64) as usize
    }

    fn frame_pixels(&self) -> usize {
        self.scanout.rect.width as usize * self.scanout.rect.height as usize
    }

    /// Waits (only if the caller ran its frames in flight ahead) until
    /// the device is done with the back slot.
    fn free_back_slot(&mut self) -> Result<(), GpuDeviceError> {
        let slot = self.slot(self.frame);
        self.reap()?;
        if let Some(batch) = self.in_flight[slot].take() {
            self.stats.waits += 1;
            let result = self.device.wait(batch, &mut check_nodata);
            self.stats.completed += 1;
            self.note(result);
        }
        Ok(())
    }

    /// Collects every answered frame without waiting.
    fn reap(&mut self) -> Result<(), GpuDeviceError> {
        for slot in 0..self.slots {
            let Some(mut batch) = self.in_flight[slot] else { continue };
            let done = self.device.try_collect(&mut batch, &mut check_nodata)?;
            if done {
                self.in_flight[slot] = None;
                self.stats.completed += 1;
                self.note(batch.result());
            } else {
                self.in_flight[slot] = Some(batch);
            }
        }
        Ok(())
    }

    fn note(&mut self, result: Result<(), GpuDeviceError>) {
        if let Err(error) = result
            && self.late_error.is_none()
        {
            self.late_error = Some(error);
        }
    }

    /// The back buffer's pixels (B, G, R, X; `width` per row), equal to
    /// what is on screen: draw the changes, then `present` their damage.
    ///
    /// # Errors
    /// A device that stopped answering while a frame was in flight.
    pub fn back_pixels(&mut self) -> Result<&mut [u32], GpuDeviceError> {
        self.back_pixels_redrawing(Rect::default())
    }

    /// The back buffer for a frame that redraws every pixel: no catch-up
    /// copy is made, so the next `present` must cover the whole surface.
    ///
    /// # Errors
    /// As [`Framebuffer::back_pixels`].
    pub fn back_pixels_for_full_redraw(&mut self) -> Result<&mut [u32], GpuDeviceError> {
        self.back_pixels_redrawing(self.full())
    }

    /// The back buffer, equal to the screen except inside `redrawn`, which
    /// the caller promises to draw whole: the catch-up copy skips it (for a
    /// 64x64 rectangle redrawn each frame the copy was a third of the
    /// frame's cost), and the next `present`'s damage must cover it. Asked
    /// again before presenting, the first call's promise stands.
    ///
    /// # Errors
    /// [`GpuDeviceError::BadRect`] if `redrawn` is outside the surface; as
    /// [`Framebuffer::back_pixels`].
    pub fn back_pixels_redrawing(&mut self, redrawn: Rect) -> Result<&mut [u32], GpuDeviceError> {
        let full = self.full();
        if !redrawn.fits(full.width, full.height) {
            return Err(GpuDeviceError::BadRect);
        }
        if !self.is_prepared {
            self.free_back_slot()?;
            if self.frame > 0 {
                // The frames since this slot's last use (up to slots - 1)
                // changed their damage in the other slots; the newest slot
                // holds all of it.
                let newest = self.frame - 1;
                let stale = (1..self.slots as u64)
                    .filter(|back| *back <= self.frame)
                    .map(|back| self.damage[self.slot(self.frame - back)])
                    .fold(Rect::default(), Rect::union);
                self.copy_rect_except(self.slot(newest), self.slot(self.frame), stale, redrawn);
            }
            self.is_prepared = true;
            self.redrawn = redrawn;
        }
        Ok(self.slot_pixels(self.slot(self.frame)))
    }

    fn slot_pixels(&mut self, slot: usize) -> &mut [u32] {
        let count = self.frame_pixels();
        match self.memory.as_mut() {
            Some(memory) => &mut memory.as_mut_pixels()[slot * count..(slot + 1) * count],
            None => &mut [],
        }
    }

    /// Copies `rect` but `skip` from slot `from` to slot `to`: each row
    /// of `rect` that `skip` crosses loses `skip`'s span, leaving at most a
    /// left and a right piece.
    fn copy_rect_except(&mut self, from: usize, to: usize, rect: Rect, skip: Rect) {
        if rect.is_empty() || from == to || skip.contains(rect) {
            return;
        }
        let count = self.frame_pixels();
        let width = self.scanout.rect.width as usize;
        let Some(memory) = self.memory.as_mut() else { return };
        let pixels = memory.as_mut_pixels();
        let (left, right) = (rect.x as usize, (rect.x + rect.width) as usize);
        let skip_rows = skip.y as usize..(skip.y + skip.height) as usize;
        let (skip_left, skip_right) = (skip.x as usize, (skip.x + skip.width) as usize);
        for row in rect.y as usize..(rect.y + rect.height) as usize {
            let pieces = if skip.is_empty() || !skip_rows.contains(&row) {
                [(left, right), (0, 0)]
            } else {
                [(left, skip_left.clamp(left, right)), (skip_right.clamp(left, right), right)]
            };
            for (start, end) in pieces.into_iter().filter(|(start, end)| start < end) {
                let (start, end) = (row * width + start, row * width + end);
                pixels.copy_within(from * count + start..from * count + end, to * count + start);
            }
        }
    }

    /// Shows the back buffer, of which only `damage` changed, and moves on
    /// to the next frame. Returns without waiting for the device.
    ///
    /// # Errors
    /// [`GpuDeviceError::BadRect`] for damage that is empty or outside the
    /// surface (or not the whole surface after a full redraw); the device's
    /// error for this or an earlier frame.
    pub fn present(&mut self, damage: Rect) -> Result<(), GpuDeviceError> {
        let full = self.full();
        if damage.is_empty() || !damage.fits(full.width, full.height) {
            return Err(GpuDeviceError::BadRect);
        }
        if !self.is_prepared || !damage.contains(self.redrawn) {
            // Outside `damage` the slot would hold pixels never shown.
            return Err(GpuDeviceError::BadRect);
        }
        if self.memory.is_none() {
            return Err(GpuDeviceError::OutOfMemory);
        }
        // Answers that had arrived were collected when the back slot was
        // taken (`free_back_slot`): an error among them is reported now.
        // Reaping again here would cost a lock and a used-ring read per
        // frame for answers the next frame collects anyway.
        if let Some(error) = self.late_error.take() {
            return Err(error);
        }
        let slot = self.slot(self.frame);
        let slot_bytes = (self.frame_pixels() * 4 * slot) as u64;
        let offset =
            slot_bytes + (u64::from(damage.y) * u64::from(full.width) + u64::from(damage.x)) * 4;
        let resource = self.resource;
        let batch = self.device.submit(
            &[
                &protocol::TransferToHost2d { rect: damage, offset, resource },
                &protocol::ResourceFlush { rect: damage, resource },
            ],
            true,
        )?;
        self.in_flight[slot] = Some(batch);
        self.damage[slot] = damage;
        self.frame += 1;
        self.stats.presented += 1;
        self.is_prepared = false;
        self.redrawn = Rect::default();
        Ok(())
    }

    /// Waits until every presented frame is on screen.
    ///
    /// # Errors
    /// The device's error for one of them.
    pub fn wait_idle(&mut self) -> Result<(), GpuDeviceError> {
        // Oldest first, so answers arrive in the order they are awaited.
        for back in (1..=self.slots as u64).rev() {
            let Some(frame) = self.frame.checked_sub(back) else { continue };
            let slot = self.slot(frame);
            if let Some(batch) = self.in_flight[slot].take() {
                let result = self.device.wait(batch, &mut check_nodata);
                self.stats.completed += 1;
                self.note(result);
            }
        }
        self.late_error.take().map_or(Ok(()), Err)
    }

    /// Frames presented but not yet answered.
    pub fn frames_in_flight(&self) -> usize {
        self.in_flight.iter().flatten().count()
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // Stop scanning out and detach before the memory is freed; if the
        // device cannot confirm both, the memory is leaked rather than
        // handed back while the device may still read it.
        let finished = self.wait_idle().is_ok() || !self.device.is_broken();
        let id = self.scanout.id;
        let off = protocol::SetScanout { rect: Rect::default(), scanout: id, resource: 0 };
        let detached = finished
            && self.device.execute(&off, false).is_ok()
            && self.memory.is_some()
            && self
                .device
                .execute(&protocol::DetachBacking { resource: self.resource }, false)
                .is_ok();
        let _ = self.device.execute(&protocol::ResourceUnref { resource: self.resource }, false);
        if let Some(memory) = self.memory.take()
            && !detached
        {
            core::mem::forget(memory);
        }
    }
}
