//! Writes into a split queue's used ring straight through guest memory
//! (VirtIO 1.2 §2.7.8), for the lies `virtio-queue` refuses to tell: an id
//! past the queue size, a used index that jumps or runs backwards.
//!
//! The ring is addressed by its guest-physical address and size as they
//! were when a request was taken, not as the queue is now: a late write
//! after the driver reset the device lands in the *old* ring, as stale DMA
//! from real hardware would.

use std::sync::atomic::Ordering;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// `struct virtq_used`: flags (2 bytes), idx (2), then the elements.
const HEADER_BYTES: u64 = 4;
/// `struct virtq_used_elem`: id (4 bytes), len (4).
const ELEMENT_BYTES: u64 = 8;

/// Where one used ring lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedRing {
    pub addr: GuestAddress,
    pub size: u16,
}

impl UsedRing {
    /// Writes element `{id, len}` into the slot of ring position `position`
    /// (taken modulo the ring size).
    ///
    /// # Errors
    /// The guest memory write failed (address outside guest RAM).
    pub fn write_element<M: GuestMemory>(
        self,
        mem: &M,
        position: u16,
        id: u32,
        len: u32,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let slot = u64::from(position % self.size.max(1));
        let at = self.addr.unchecked_add(HEADER_BYTES + slot * ELEMENT_BYTES);
        let mut element = [0u8; ELEMENT_BYTES as usize];
        element[..4].copy_from_slice(&id.to_le_bytes());
        element[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&element, at)
    }

    /// Publishes `idx` as the used index. Release: the elements written
    /// before must be visible before the index that exposes them (§2.7.13).
    ///
    /// # Errors
    /// As [`UsedRing::write_element`].
    pub fn write_idx<M: GuestMemory>(
        self,
        mem: &M,
        idx: u16,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        mem.store(idx.to_le(), self.addr.unchecked_add(2), Ordering::Release)
    }

    /// The used index the guest currently sees.
    ///
    /// # Errors
    /// As [`UsedRing::write_element`].
    pub fn read_idx<M: GuestMemory>(self, mem: &M) -> Result<u16, vm_memory::GuestMemoryError> {
        mem.load::<u16>(self.addr.unchecked_add(2), Ordering::Acquire).map(u16::from_le)
    }

    /// Appends `{id, len}` at position `next` and publishes `next + 1`;
    /// returns the new index.
    ///
    /// # Errors
    /// As [`UsedRing::write_element`].
    pub fn push<M: GuestMemory>(
        self,
        mem: &M,
        next: u16,
        id: u32,
        len: u32,
    ) -> Result<u16, vm_memory::GuestMemoryError> {
        self.write_element(mem, next, id, len)?;
        let idx = next.wrapping_add(1);
        self.write_idx(mem, idx)?;
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn push_writes_the_element_then_the_index() {
        let mem = memory();
        let ring = UsedRing { addr: GuestAddress(0x1000), size: 8 };
        assert_eq!(ring.push(&mem, 9, 500, 4097).unwrap(), 10);
        // Position 9 of an 8-entry ring is slot 1: 0x1000 + 4 + 8.
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x100c)).unwrap(), 500);
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1010)).unwrap(), 4097);
        assert_eq!(ring.read_idx(&mem).unwrap(), 10);
    }

    #[test]
    fn index_may_be_set_to_anything() {
        let mem = memory();
        let ring = UsedRing { addr: GuestAddress(0x2000), size: 128 };
        ring.write_idx(&mem, 3).unwrap();
        ring.write_idx(&mem, 1).unwrap();
        assert_eq!(ring.read_idx(&mem).unwrap(), 1);
        assert_eq!(ring.push(&mem, u16::MAX, 0, 0).unwrap(), 0);
    }

    #[test]
    fn outside_guest_memory_is_an_error_not_a_crash() {
        let mem = memory();
        let ring = UsedRing { addr: GuestAddress(0xfff_0000), size: 4 };
        assert!(ring.push(&mem, 0, 1, 1).is_err());
    }
}
