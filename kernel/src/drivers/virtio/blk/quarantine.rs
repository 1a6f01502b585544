//! Memory a misbehaving device may still write: kept, never reused.
//!
//! VirtIO 1.2 §2.4 promises that a device uses no buffer after its reset
//! completes, and an honest device keeps that promise, but a device that
//! had to be reset was already breaking the protocol (a missed deadline, a
//! lie on the used ring). The hostile device's fuzzer showed what trusting
//! it costs: a completion held back across several resets landed in pages
//! the kernel had freed. So the data buffers of every request a reset took
//! back unfinished stay here for the life of the device, and the submitter
//! gets a copy (same size, same contents as of the reset) in fresh memory:
//! whatever the device writes later lands in memory the driver owns.
//! The cost is a copy and the pages held, only on resets; the held pages
//! are reported (`quarantined_frames`, the shell's `blk`), and a device
//! that made the driver hold more than [`MAX_FRAMES`] is given up.

use super::{BlkDevice, Data, Request};
use crate::mm::PAGE_SIZE;
use crate::mm::dma::DmaBuffer;
use alloc::vec::Vec;

/// Frames held for one device before the driver stops resetting it.
pub(super) const MAX_FRAMES: u64 = 2048;

/// Buffers a reset took back from a device that may still write them.
#[derive(Default)]
pub(super) struct Quarantine {
    buffers: Vec<DmaBuffer>,
}

impl Quarantine {
    /// Frames held.
    pub(super) fn frames(&self) -> u64 {
        self.buffers.iter().map(|buffer| pages(buffer.len_bytes())).sum()
    }
}

fn pages(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(PAGE_SIZE)
}

/// A fresh buffer with `original`'s contents, or `None` without memory.
fn copy_of(original: &DmaBuffer) -> Option<DmaBuffer> {
    let mut copy = DmaBuffer::new(pages(original.len_bytes())).ok()?;
    copy.as_mut_slice().copy_from_slice(original.as_slice());
    Some(copy)
}

impl BlkDevice {
    /// Keeps `request`'s data buffers and gives it copies instead (its
    /// submitter gets those). Without memory for a copy the submitter gets
    /// fewer buffers back (no data at all for a single buffer).
    pub(super) fn quarantine_data(&self, request: &mut Request) {
        let originals = request.take_all_data();
        let copies: Option<Vec<DmaBuffer>> = originals.buffers().iter().map(copy_of).collect();
        let replacement = match (copies, &originals) {
            (None, _) | (_, Data::None) => Data::None,
            (Some(mut copies), Data::One(_)) => copies.pop().map_or(Data::None, Data::One),
            (Some(copies), Data::Many(_)) => Data::Many(copies),
        };
        request.restore_data(replacement);
        self.quarantine.lock().buffers.extend(originals.into_vec());
    }

    /// Frames held back from the device because it may still write them
    /// (see the module description); they count as neither free nor leaked.
    pub fn quarantined_frames(&self) -> u64 {
        self.quarantine.lock().frames()
    }
}
