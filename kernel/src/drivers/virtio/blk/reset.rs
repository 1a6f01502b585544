//! Resetting one virtio-blk queue while the others keep running
//! (`VIRTIO_F_RING_RESET`, VirtIO 1.2 §2.6.1), e.g. to recover a queue or
//! change its setup.
//!
//! What QEMU 7.2 does (hw/virtio/virtio-pci.c, hw/virtio/virtio.c): a write
//! of 1 to `queue_reset` runs `virtio_queue_reset` synchronously, which
//! calls the device's `queue_reset` hook — virtio-blk has none — and then
//! forgets the rings and indices and sets the queue's MSI-X vector to
//! NO_VECTOR; `queue_reset` reads 0 right away. Requests virtio-blk already
//! took from the ring stay in its block layer: they finish later, writing
//! their data and status into guest memory after the reset "completed", and
//! `virtqueue_push` then writes their used entries into whatever ring is
//! programmed by then (the re-enabled one), underflowing the queue's
//! in-use count. Reclaiming those buffers would hand memory the device is
//! about to write back to the kernel. So the driver first waits (bounded)
//! for the device to answer every request it was told about, and resets a
//! quiet queue; reclaim then returns only requests the device never took.

use super::{BlkDevice, BlkError, BlkQueue};
use crate::drivers::virtio::bringup::{BringUpTransport, KernelTransport};
use crate::drivers::virtio::pci::NO_VECTOR;
use crate::platform::time::uptime_us;
use alloc::vec::Vec;

/// How long a reset waits for the device to answer what it was given.
const DRAIN_US: u64 = 1_000_000;

impl BlkDevice {
    /// Whether single queues can be reset ([`BlkDevice::reset_queue`]).
    pub fn has_queue_reset(&self) -> bool {
        self.has_queue_reset
    }

    /// Resets queue `index` alone and re-enables it; the other queues keep
    /// running. Requests still waiting for the device come back to their
    /// submitters as [`BlkError::Cancelled`]; returns how many.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without `VIRTIO_F_RING_RESET` or with no
    /// such queue; [`BlkError::DeviceFailed`] if the device broke the ring,
    /// did not answer its requests within a second (they stay with it:
    /// nothing it may still write is handed back) or did not finish the
    /// reset.
    pub fn reset_queue(&self, index: usize) -> Result<usize, BlkError> {
        let slot = self.queues.get(index).filter(|_| self.has_queue_reset);
        let slot = slot.ok_or(BlkError::Unsupported)?;
        let mut freed = 0;
        let result = self.reset_locked(&mut slot.state.lock(), &mut freed);
        slot.wake_submitters(freed);
        result
    }

    /// `reset_queue` with the queue's lock held; counts in `freed` the
    /// requests that went back to the pool.
    fn reset_locked(&self, state: &mut BlkQueue, freed: &mut usize) -> Result<usize, BlkError> {
        self.drain_locked(state, freed)?;
        let mut transport = self.virtio.transport();
        let failed = |_| BlkError::DeviceFailed;
        let proof = state.queue.reset_queue(&mut *transport).map_err(failed)?;
        // The used ring no longer changes: take what the device finished.
        while let Some(used) = state.queue.pop_used().map_err(failed)? {
            *freed += state.recycle(used.buffers);
        }
        let mut cancelled = Vec::new();
        state.queue.reclaim(&proof, |_, request| cancelled.push(request)).map_err(failed)?;
        let count = cancelled.len();
        for mut request in cancelled {
            request.mark_cancelled();
            self.quarantine_data(&mut request);
            *freed += state.recycle(request);
        }
        self.restart_locked(state, &mut transport)?;
        Ok(count)
    }

    /// Completes requests until none is in flight, or fails after
    /// `DRAIN_US` (the caller holds the queue's lock, so none are added).
    /// Counts in `freed` the requests that went back to the pool.
    pub(super) fn drain_locked(
        &self,
        state: &mut BlkQueue,
        freed: &mut usize,
    ) -> Result<(), BlkError> {
        let deadline = uptime_us() + DRAIN_US;
        while state.queue.in_flight() > 0 {
            match state.queue.pop_used() {
                Ok(Some(used)) => *freed += state.recycle(used.buffers),
                Ok(None) if uptime_us() > deadline => return Err(BlkError::DeviceFailed),
                Ok(None) => core::hint::spin_loop(),
                Err(_) => return Err(BlkError::DeviceFailed),
            }
        }
        Ok(())
    }

    /// Re-enables a reclaimed queue: the MSI-X vector first (QEMU's queue
    /// reset cleared it; a queue on a shared line has none), then the
    /// zeroed rings.
    pub(super) fn restart_locked(
        &self,
        state: &mut BlkQueue,
        transport: &mut KernelTransport,
    ) -> Result<(), BlkError> {
        let index = state.queue.queue_index();
        if state.msix_entry != NO_VECTOR
            && !transport.set_queue_msix_vector(index, state.msix_entry)
        {
            return Err(BlkError::DeviceFailed);
        }
        state.queue.restart(transport).map_err(|_| BlkError::DeviceFailed)
    }
}
