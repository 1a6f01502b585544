//! What bring-up needs from a transport beyond the crate's [`Transport`]:
//! the virtio-pci parts (queue count, MSI-X vector routing, per-queue
//! notifiers). [`VirtioPci`] is the one real implementation; the bring-up
//! tests wrap it to make a real device misbehave.

use super::super::pci::{QueueNotifier, VirtioPci};
use vireo_virtio::Transport;

/// A virtio-pci transport as bring-up drives it.
pub trait PciTransport: Transport {
    /// Number of queues the device offers (`num_queues`, §4.1.4.3).
    fn num_queues(&mut self) -> u16;
    /// Routes configuration-change interrupts to MSI-X entry `entry` (or
    /// `NO_VECTOR`); whether the device kept it (§4.1.5.1.2).
    fn set_config_msix_vector(&mut self, entry: u16) -> bool;
    /// Routes queue `queue`'s interrupts to MSI-X entry `entry`; whether the
    /// device kept it.
    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool;
    /// A notifier for queue `queue`, if its notify offset is inside the
    /// notify window (§4.1.4.4).
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier>;
}

impl PciTransport for VirtioPci {
    fn num_queues(&mut self) -> u16 {
        VirtioPci::num_queues(self)
    }

    fn set_config_msix_vector(&mut self, entry: u16) -> bool {
        VirtioPci::set_config_msix_vector(self, entry)
    }

    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool {
        VirtioPci::set_queue_msix_vector(self, queue, entry)
    }

    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        VirtioPci::queue_notifier(self, queue)
    }
}
