//! Taking completions off the used ring (VirtIO 1.2 §2.7.14) and used
//! buffer notification suppression (§2.7.7).
//!
//! Every value read here comes from the device and is checked before use:
//! `used.idx` must move forward by no more than the requests in flight, and
//! each entry must name a request in flight with a plausible length. A
//! violation breaks the queue with an error naming exactly what was wrong.
//!
//! No lost interrupt, whatever the caller's loop shape: with interrupts on,
//! a `None` from `pop_used` is only returned after the device can see a
//! `used_event` (or `avail.flags`) asking for the next completion — so a
//! handler that pops until `None` and returns is as safe as one that calls
//! `enable_interrupts` and rechecks.

use super::layout::VIRTQ_AVAIL_F_NO_INTERRUPT;
use super::{SplitQueue, UsedLenPolicy};
use crate::barrier::{Site, virtio_mb, virtio_rmb};
use crate::hal::Hal;
use crate::queue::{Token, Used};
use crate::{Error, Result};

/// With interrupts off under EVENT_IDX, `used_event` is parked just behind
/// `last_used`; re-park once we are this far ahead of it, long before the
/// device's index (at most 32768 beyond ours) could wrap around onto it.
const REPARK_DISTANCE: u16 = 0x4000;

impl<H: Hal, B> SplitQueue<H, B> {
    /// Reads `used.idx` and checks it against what we know.
    #[inline(always)]
    fn read_used_idx(&mut self) -> Result<u16> {
        let used_idx = self.ring.used_idx();
        // §2.7.8: the device only ever increments `used.idx`; a value
        // behind one we saw is a lie (mod 2^16: "behind" = negative i16).
        if (used_idx.wrapping_sub(self.seen_used) as i16) < 0 {
            return Err(self.fail(Error::DeviceIdxBackwards));
        }
        // The device cannot have returned more requests than are in flight.
        if used_idx.wrapping_sub(self.last_used) > self.in_flight {
            return Err(self.fail(Error::DeviceIdxOverrun));
        }
        self.seen_used = used_idx;
        Ok(used_idx)
    }

    /// Takes the next completed request, see [`crate::Virtqueue::pop_used`].
    ///
    /// # Errors
    ///
    /// [`Error::DeviceIdxBackwards`], [`Error::DeviceIdxOverrun`],
    /// [`Error::DeviceIdOutOfRange`], [`Error::DeviceIdNotInFlight`] or
    /// [`Error::DeviceBadLength`] (the queue is then broken);
    /// [`Error::Broken`]; [`Error::Stopped`].
    #[inline]
    pub fn pop_used(&mut self) -> Result<Option<Used<B>>> {
        self.check_usable()?;
        let mut used_idx = self.read_used_idx()?;
        if used_idx == self.last_used {
            if !(self.event_idx && self.irq_on && !self.used_event_fenced) {
                self.stats.empty_polls += 1;
                return Ok(None);
            }
            // §2.7.7.2: `used_event` = last_used was stored (by the last
            // pop) but may still sit in our store buffer. Make it visible
            // before re-reading `used.idx`, or the device can publish the
            // next entry, read the stale `used_event` and not interrupt,
            // while we read a stale `used.idx` and return "empty" to a
            // handler that then waits for that interrupt forever.
            virtio_mb(Site::EmptyRecheck);
            self.stats.full_barriers += 1;
            self.used_event_fenced = true;
            used_idx = self.read_used_idx()?;
            if used_idx == self.last_used {
                self.stats.empty_polls += 1;
                return Ok(None);
            }
        }
        // §2.7.14 (and §2.7.8.1 for the device's matching write barrier):
        // read the used entry only after observing used.idx cover it.
        virtio_rmb(Site::ReadUsedEntry);
        let (id, len) = self.ring.used_entry(self.last_used);
        if id >= u32::from(self.size) {
            return Err(self.fail(Error::DeviceIdOutOfRange));
        }
        let slot = &self.slots[id as usize];
        // Not a head in flight: a body descriptor, a free one, or a duplicate.
        if slot.owner.is_none() {
            return Err(self.fail(Error::DeviceIdNotInFlight));
        }
        // §2.7.8: the device returns only buffers it was given. An entry the
        // device had published before this chain was made available names
        // the head's previous request (a duplicate completion that arrived
        // with the first), not this one; taking it would hand this request's
        // buffers back while the device may still be using them.
        if (self.last_used.wrapping_sub(slot.available_after) as i16) < 0 {
            return Err(self.fail(Error::DeviceIdNotInFlight));
        }
        // §2.7.8.1: len is the number of bytes written into the buffer; a
        // larger value is a lie we must not pass on as is.
        let written_len = if len <= slot.writable {
            len
        } else if self.used_len == UsedLenPolicy::Clamp {
            self.stats.len_clamped += 1;
            slot.writable
        } else {
            return Err(self.fail(Error::DeviceBadLength));
        };
        let slot = &mut self.slots[id as usize];
        let Some(buffers) = slot.owner.take() else {
            return Err(self.fail(Error::DeviceIdNotInFlight));
        };
        let (tail, chain_len) = (slot.tail, slot.chain_len);
        // The device returned it: end its sharing (a bounce copies the
        // device's bytes back here, ordered after `used.idx` by the read
        // barrier above) before the buffers go back to the driver, and
        // while the chain's private links are still intact.
        self.unshare_request(id as u16);
        // Return the chain to the end of the free list with its private
        // links intact: O(1), and reused last (see `free_head`).
        if self.num_free == 0 {
            self.free_head = id as u16;
        } else {
            self.slots[usize::from(self.free_tail)].next = id as u16;
        }
        self.free_tail = tail;
        self.num_free += chain_len;
        self.in_flight -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        self.stats.completions += 1;
        if self.event_idx {
            if self.irq_on {
                // §2.7.7: ask for an interrupt when the device passes the
                // next entry; fenced before any "empty" answer (above).
                self.ring.set_used_event(self.last_used);
                self.used_event = self.last_used;
                self.used_event_fenced = false;
            } else if self.last_used.wrapping_sub(self.used_event) > REPARK_DISTANCE {
                self.park_used_event();
            }
        }
        Ok(Some(Used { token: Token(id as u16), written_len, buffers }))
    }

    /// With EVENT_IDX: point `used_event` at an entry the device has already
    /// passed, so no completion crosses it (§2.7.7.2) — "no interrupt".
    fn park_used_event(&mut self) {
        let passed = self.last_used.wrapping_sub(1);
        self.ring.set_used_event(passed);
        self.used_event = passed;
        self.used_event_fenced = false;
    }

    /// Re-enables used-buffer interrupts and reports whether completions
    /// raced in, see [`crate::Virtqueue::enable_interrupts`].
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] or [`Error::Stopped`].
    pub fn enable_interrupts(&mut self) -> Result<bool> {
        self.check_usable()?;
        self.stats.interrupts_enabled += 1;
        let published = self.irq_on
            && (!self.event_idx || (self.used_event == self.last_used && self.used_event_fenced));
        if !published {
            self.irq_on = true;
            if self.event_idx {
                // §2.7.7.2: interrupt when used.idx passes last_used.
                self.ring.set_used_event(self.last_used);
                self.used_event = self.last_used;
            } else {
                self.ring.set_avail_flags(0);
            }
            // §2.7.14 / §2.7.7.2: the re-enable store must be visible before
            // we re-read used.idx (store→load), otherwise the device can
            // publish an entry, read our stale "no interrupt" and stay
            // silent while we read a stale used.idx and go to sleep.
            virtio_mb(Site::EnableRecheck);
            self.stats.full_barriers += 1;
            self.used_event_fenced = true;
        }
        // Already published and fenced (e.g. by the `None` of `pop_used`):
        // a fresh read of used.idx is all the recheck needs.
        Ok(self.ring.used_idx() != self.last_used)
    }

    /// Asks the device not to interrupt (a hint, §2.7.7): `avail.flags`
    /// `NO_INTERRUPT`, or under EVENT_IDX a `used_event` the device has
    /// already passed.
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] or [`Error::Stopped`].
    pub fn disable_interrupts(&mut self) -> Result {
        self.check_usable()?;
        if self.irq_on {
            self.irq_on = false;
            self.stats.interrupts_suppressed += 1;
            if self.event_idx {
                self.park_used_event();
            } else {
                self.ring.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
            }
        }
        Ok(())
    }
}
