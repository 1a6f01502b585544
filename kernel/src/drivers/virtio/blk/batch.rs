//! Submitting many requests with one notification (VirtIO 1.2 §2.7.13).
//!
//! Each notification is an exit to the device (under TCG, a write the
//! device's thread must pick up), so a caller that has several requests
//! ready — a QD32 workload refilling what just completed — should publish
//! them all and then decide once whether the device needs telling. A
//! [`Batch`] defers that decision: its submissions are added to the ring
//! (the device may already see them, §2.7.13.3) and the notification
//! decision for every queue it touched is taken when it finishes or is
//! dropped. The ring counts what was added since its last decision, so the
//! one decision covers them all. A batch that is leaked instead of dropped
//! leaves its requests unannounced; their deadlines then reset the device,
//! so even that cannot hang a caller.

use super::submit::Notify;
use super::{BlkDevice, BlkError, BlkQueue, Operation, Pending};
use crate::mm::dma::DmaBuffer;
use crate::sync::IrqSpinLockGuard;

/// Submissions whose notification is sent once, when the batch ends.
#[must_use = "a batch announces its requests when it is dropped or finished"]
pub struct Batch {
    device: &'static BlkDevice,
    /// Queues with requests added since their last notification decision,
    /// one bit per queue index (queues past 63 are told at once).
    touched: u64,
}

impl BlkDevice {
    /// Starts a batch of submissions that share one notification per queue.
    pub fn batch(&'static self) -> Batch {
        Batch { device: self, touched: 0 }
    }

    /// Tells the device of the requests added to the locked queue since
    /// the last decision, if it asks to be told (EVENT_IDX or NO_NOTIFY).
    pub(super) fn notify_if_asked(&self, state: &mut IrqSpinLockGuard<'_, BlkQueue>) {
        match state.queue.should_notify() {
            Ok(true) => state.notifier.notify(),
            Ok(false) => {}
            Err(_) => self.health.needs_reset(),
        }
    }

    /// The notification decision for queue `index`, under its lock.
    fn notify_queue(&self, index: usize) {
        if let Some(slot) = self.queues.get(index) {
            let mut state = slot.state.lock();
            self.notify_if_asked(&mut state);
        }
    }
}

impl Batch {
    /// As [`BlkDevice::submit`], without the notification.
    ///
    /// # Errors
    /// As [`BlkDevice::submit`].
    pub fn submit(
        &mut self,
        operation: Operation,
        sector: u64,
        buffer: Option<DmaBuffer>,
        len_bytes: usize,
    ) -> Result<Pending, (BlkError, Option<DmaBuffer>)> {
        let pending =
            self.device.submit_one(operation, sector, buffer, len_bytes, Notify::Deferred)?;
        match u32::try_from(pending.queue_index()).ok().filter(|&bit| bit < u64::BITS) {
            Some(bit) => self.touched |= 1 << bit,
            None => self.device.notify_queue(pending.queue_index()),
        }
        Ok(pending)
    }

    /// Ends the batch: one notification decision per queue it used.
    pub fn finish(self) {}
}

impl Drop for Batch {
    fn drop(&mut self) {
        while self.touched != 0 {
            let index = self.touched.trailing_zeros() as usize;
            self.touched &= self.touched - 1;
            self.device.notify_queue(index);
        }
    }
}
