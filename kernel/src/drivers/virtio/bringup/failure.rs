//! Giving a device up after bring-up touched it.
//!
//! The device may hold the addresses of everything it was given — the
//! rings of every queue created so far, and the buffers in them — and may
//! write them until it has reset (§2.4: after a reset the device uses no
//! buffers). Only a reset whose status reads back 0 proves that; the
//! crate's reset gives up after a bounded number of reads, and hands out a
//! [`vireo_virtio::DeviceReset`] proof only when it completes. So:
//! - reset proven: each queue reclaims its buffers against that proof and
//!   frees its rings; the interrupt vectors are released;
//! - reset not proven: the queues are dropped unreclaimed, which makes the
//!   crate leak their rings and buffers (counted in `leak_counts`), and the
//!   vectors stay installed so that a late message still gets its EOI.
//!   Leaking is safe; memory the device writes after it was freed is not.
//!
//! Either way MSI-X is switched off (or the shared line masked) first, so
//! no interrupt is routed to a vector that is being released.

use super::{BringUpError, BringUpTransport, VirtioDevice, interrupts};
use crate::drivers::virtio::hal::KernelHal;
use alloc::vec::Vec;
use core::fmt;
use vireo_virtio::{DeviceStatus, SplitQueue};

/// What became of a device whose bring-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// It was never touched (not found, or no usable transport).
    Untouched,
    /// FAILED was set and the device reset; nothing it was given is in use.
    Reset,
    /// FAILED was set but the reset never completed: its queues (this many)
    /// were leaked with everything in them.
    ResetIncomplete {
        /// Queues leaked.
        leaked_queues: usize,
    },
}

/// A failed bring-up: why, and what was done about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// The cause.
    pub error: BringUpError,
    /// The device's state afterwards.
    pub teardown: Teardown,
}

impl Failed {
    pub(super) fn untouched(error: BringUpError) -> Self {
        Self { error, teardown: Teardown::Untouched }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.teardown {
            Teardown::Untouched => write!(f, "{:?}", self.error),
            Teardown::Reset => write!(f, "{:?}; device marked FAILED and reset", self.error),
            Teardown::ResetIncomplete { leaked_queues } => write!(
                f,
                "{:?}; device marked FAILED but did not reset: {leaked_queues} queues leaked",
                self.error
            ),
        }
    }
}

impl<T: BringUpTransport> VirtioDevice<T> {
    /// Gives the device up: sets FAILED (§2.1.2: the driver has given up on
    /// the device; §3.1.1: it SHOULD set it when a step goes irrecoverably
    /// wrong), switches MSI-X off or masks its line, resets the device,
    /// then frees `queues` only if the reset completed (see the module
    /// description). `queues` must be every queue created on this device,
    /// the driver's included.
    pub fn fail<B>(mut self, queues: Vec<SplitQueue<KernelHal, B>>, error: BringUpError) -> Failed {
        let status = self.transport.get_mut().status();
        self.transport.get_mut().set_status(status | DeviceStatus::FAILED);
        if let Some(msix) = &self.msix {
            for entry in 0..msix.table_size() {
                let _ = msix.set_masked(entry, true);
            }
            // Best effort: a function whose configuration space cannot be
            // written is masked entry by entry above.
            let _ = msix.disable();
        }
        if let Some(line) = &self.line {
            line.mask();
        }
        let teardown = match self.transport.get_mut().reset() {
            Ok(proof) => {
                for mut queue in queues {
                    // A queue of this device, programmed before the reset:
                    // the proof covers it, so this frees everything.
                    if queue.reclaim(&proof, |_, buffers| drop(buffers)).is_err() {
                        log::error!("{}: a queue refused the reset proof; leaked", self.name);
                    }
                }
                if let Some(run) = self.vectors.take() {
                    for vector in run.first..run.first + run.count {
                        crate::arch::interrupts::unregister_irq(vector);
                    }
                }
                if let Some(line) = self.line.take() {
                    interrupts::release_line_vector(line.vector);
                }
                if let Some(vector) = self.config_vector.take() {
                    interrupts::release_config_vector(vector);
                }
                Teardown::Reset
            }
            Err(_) => {
                let leaked_queues = queues.len();
                // Unreclaimed queues leak their rings and buffers on drop.
                drop(queues);
                log::error!("{}: device did not reset; {leaked_queues} queues leaked", self.name);
                Teardown::ResetIncomplete { leaked_queues }
            }
        };
        Failed { error, teardown }
    }
}
