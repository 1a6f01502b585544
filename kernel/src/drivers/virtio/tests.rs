//! The virtio-pci transport on QEMU's virtio-gpu, which no driver owns yet
//! (virtio-blk belongs to its driver; see `blk::tests`).

use super::pci::VirtioPci;
use crate::{check, check_ok, ktest};
use vireo_virtio::{DeviceStatus, Features, Transport, negotiate_features};

const VIRTIO_GPU: u16 = 0x1050;

ktest!(
    fn transport_negotiates_and_reads_gpu_config() {
        let function =
            check_ok!(crate::pci::find(0x1af4, VIRTIO_GPU).next().ok_or("no virtio-gpu"));
        let mut transport = check_ok!(VirtioPci::new(function));
        check!(transport.num_queues() >= 2, "controlq and cursorq expected");
        let offered = Features::from_bits_retain(transport.read_device_features());
        check!(offered.contains(Features::VERSION_1));
        let features = check_ok!(negotiate_features(&mut transport, Features::EVENT_IDX));
        check!(features.contains(Features::VERSION_1));
        check!(transport.status().contains(DeviceStatus::FEATURES_OK));
        // struct virtio_gpu_config: num_scanouts at offset 8 (VirtIO 1.2 §5.7.4).
        let mut scanouts = [0u8; 4];
        check_ok!(transport.read_config(8, &mut scanouts));
        check!(u32::from_le_bytes(scanouts) >= 1);
        check!(transport.read_config(usize::MAX, &mut scanouts).is_err());
        check!(transport.queue_notifier(0).is_some());
        check!(transport.max_queue_size(transport.num_queues()) == 0);
        check_ok!(transport.reset());
        Ok(())
    }
);
