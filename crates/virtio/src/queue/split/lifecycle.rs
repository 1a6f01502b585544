//! Programming, resetting, reclaiming and dropping a split queue: the only
//! code that decides when the device may no longer use the rings and the
//! in-flight buffers (see [`crate::reset`] for the proofs).

use super::{SplitQueue, State};
use crate::features::Features;
use crate::hal::Hal;
use crate::queue::Token;
use crate::reset::{QueueReset, ResetProof, Ticket};
use crate::transport::{RESET_POLL_LIMIT, Transport};
use crate::{Error, Result, leaks};

impl<H: Hal, B> SplitQueue<H, B> {
    /// Puts the driver state back to "empty ring at index 0" and programs
    /// the (zeroed) rings into the device, making the queue live.
    pub(super) fn program<T: Transport>(&mut self, transport: &mut T) {
        self.free_all();
        self.avail_idx = 0;
        self.kicked_avail = 0;
        self.pending = 0;
        self.last_used = 0;
        self.seen_used = 0;
        // Zeroed rings: `avail.flags` 0 and `used_event` 0 both ask for
        // interrupts, and the device cannot have seen anything else yet.
        self.irq_on = true;
        self.used_event = 0;
        self.used_event_fenced = true;
        let (desc, driver, device) = self.ring.addresses();
        let size = self.size;
        // SAFETY: the three areas are this queue's ring memory for `size`
        // entries. It stays allocated until a reset proof covering this
        // programming stops the queue (then the device has forgotten it),
        // and is leaked, never freed, if the queue is dropped before that.
        unsafe { transport.queue_set(self.index, size, desc, driver, device) };
        // Drawn after programming: only resets that begin later cover it.
        self.programmed = Ticket::draw();
        self.state = State::Live;
    }

    /// Every descriptor free, in index order; no request in flight.
    fn free_all(&mut self) {
        debug_assert!(self.slots.iter().all(|s| s.owner.is_none()));
        let size = self.size;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.next = (i as u16).wrapping_add(1) & (size - 1);
            slot.tail = i as u16;
            slot.chain_len = 0;
            slot.writable = 0;
        }
        self.free_head = 0;
        self.free_tail = size - 1;
        self.num_free = size;
        self.in_flight = 0;
    }

    /// Resets this queue alone (`VIRTIO_F_RING_RESET`, VirtIO 1.2 §2.6.1)
    /// while the device's other queues keep running, and returns the proof
    /// that it stopped. The queue stays as it was: `pop_used` still returns
    /// what the device completed before the reset (the used ring no longer
    /// changes); [`SplitQueue::reclaim`] then hands back the rest.
    ///
    /// # Errors
    ///
    /// [`Error::QueueResetUnsupported`] without `RING_RESET` or a transport
    /// that can reset queues; [`Error::WrongResetProof`] if `transport`
    /// drives another device; [`Error::Stopped`];
    /// [`Error::QueueResetTimeout`] if the device never completes the reset
    /// (its buffers then stay with the queue).
    pub fn reset_queue<T: Transport>(&mut self, transport: &mut T) -> Result<QueueReset> {
        if !self.features.contains(Features::RING_RESET) || !transport.has_queue_reset() {
            return Err(Error::QueueResetUnsupported);
        }
        if transport.device_id() != self.device {
            return Err(Error::WrongResetProof);
        }
        if self.state == State::Stopped {
            return Err(Error::Stopped);
        }
        let proof = QueueReset::begin(self.device, self.index);
        transport.start_queue_reset(self.index);
        // §4.1.4.3.2: the reset is complete only once `queue_reset` reads
        // back 0; bounded, so a device that never finishes is an error.
        for _ in 0..RESET_POLL_LIMIT {
            if transport.queue_reset_done(self.index) {
                self.stats.queue_resets += 1;
                return Ok(proof);
            }
            core::hint::spin_loop();
        }
        Err(Error::QueueResetTimeout)
    }

    /// Hands every request still in flight to `reclaim` and stops the
    /// queue, given proof that its device ([`crate::Transport::reset`]) or
    /// this queue ([`SplitQueue::reset_queue`]) was reset after the rings
    /// were programmed. Returns how many requests came back. Requests the
    /// device completed before the reset can be popped first, with their
    /// lengths; `reclaim` gets the others, which the device may or may not
    /// have started (a read's buffer may be partly written).
    ///
    /// A stopped queue refuses I/O ([`Error::Stopped`]) until
    /// [`SplitQueue::restart`]; dropping it frees the rings.
    ///
    /// # Errors
    ///
    /// [`Error::WrongResetProof`] if the proof is for another device or
    /// queue, or for a reset that began before this queue was (re)programmed;
    /// nothing is handed back and the queue stays live.
    pub fn reclaim<P: ResetProof>(
        &mut self,
        proof: &P,
        mut reclaim: impl FnMut(Token, B),
    ) -> Result<usize> {
        if !self.programmed.covered_by(proof, self.device, self.index) {
            return Err(Error::WrongResetProof);
        }
        self.state = State::Stopped;
        let mut count = 0;
        for i in 0..self.size {
            if let Some(buffers) = self.slots[usize::from(i)].owner.take() {
                count += 1;
                // The reset proved the device stopped: end the sharing
                // (copying back what it wrote) before handing them back.
                self.unshare_request(i);
                reclaim(Token(i), buffers);
            }
        }
        self.free_all();
        self.stats.reclaimed += count as u64;
        Ok(count)
    }

    /// Programs the (zeroed) rings into the device again and makes the
    /// stopped queue live with every descriptor free, its broken flag
    /// cleared. After a queue reset this re-enables it (§2.6.1.2); after a
    /// device reset, call it during the new initialisation, before
    /// `DRIVER_OK`. Transport-level queue settings the reset cleared (e.g.
    /// the PCI MSI-X vector) are the caller's to restore first.
    ///
    /// # Errors
    ///
    /// [`Error::NotStopped`] if the queue is live; [`Error::WrongResetProof`]
    /// if `transport` drives another device; [`Error::QueueUnavailable`] if
    /// the device already has a queue enabled at this index.
    pub fn restart<T: Transport>(&mut self, transport: &mut T) -> Result {
        if self.state != State::Stopped {
            return Err(Error::NotStopped);
        }
        if transport.device_id() != self.device {
            return Err(Error::WrongResetProof);
        }
        if transport.queue_used(self.index) {
            return Err(Error::QueueUnavailable);
        }
        // The device has forgotten the rings (the proof said so), so
        // nothing else accesses them while we clear them.
        self.ring.zero();
        self.program(transport);
        Ok(())
    }
}

impl<H: Hal, B> Drop for SplitQueue<H, B> {
    /// A stopped queue unshares and frees its rings (the device has
    /// forgotten them). A live one may still be used by the device — PCI
    /// cannot even disable a queue without a reset (§4.1.4.3.2) — so its
    /// rings and every in-flight buffer are leaked, never freed, and
    /// counted, and everything shared stays shared (unsharing would let
    /// the HAL reuse a bounce slot or an IOVA for other memory while the
    /// device may still write there).
    fn drop(&mut self) {
        if self.state == State::Stopped {
            return;
        }
        self.ring.leak_on_drop();
        let mut requests = 0;
        for slot in self.slots.iter_mut() {
            if let Some(buffers) = slot.owner.take() {
                requests += 1;
                core::mem::forget(buffers);
            }
        }
        leaks::count_queue(requests);
    }
}
