//! PCI tests against QEMU's standard device set (a virtio-blk and a
//! virtio-gpu, both modern-only).

use super::capability::id;
use super::{BarError, find, functions, msix::MsiX};
use crate::{check, check_eq, check_ok, ktest};

const VIRTIO_VENDOR: u16 = 0x1af4;
const VIRTIO_BLK_MODERN: u16 = 0x1042;
const VIRTIO_GPU_MODERN: u16 = 0x1050;

ktest!(
    fn scan_finds_host_bridge_and_virtio_devices() {
        check!(functions().len() >= 3, "only {} functions", functions().len());
        check_eq!(find(VIRTIO_VENDOR, VIRTIO_BLK_MODERN).count(), 1);
        check_eq!(find(VIRTIO_VENDOR, VIRTIO_GPU_MODERN).count(), 1);
        // q35's host bridge: Intel 8086:29c0 at 00:00.0.
        let host = functions().first().map(|f| (f.address.device, f.vendor_id, f.device_id));
        check_eq!(host, Some((0, 0x8086, 0x29c0)));
        Ok(())
    }
);

ktest!(
    fn virtio_devices_expose_virtio_capabilities() {
        for device_id in [VIRTIO_BLK_MODERN, VIRTIO_GPU_MODERN] {
            let function = check_ok!(find(VIRTIO_VENDOR, device_id).next().ok_or("missing"));
            // VirtIO 1.2 §4.1.4: common, notify, ISR, device (cfg_type 1..4)
            // as vendor-specific capabilities; cfg_type is at offset 3.
            let mut types: alloc::vec::Vec<u8> = function
                .capabilities()
                .filter(|c| c.id == id::VENDOR_SPECIFIC)
                .filter_map(|c| function.config.read_u8(c.offset + 3).ok())
                .collect();
            types.sort_unstable();
            types.dedup();
            for wanted in 1..=3 {
                check!(types.contains(&wanted), "{:04x}: cfg types {:?}", device_id, types);
            }
            check!(function.capabilities().any(|c| c.id == id::MSI_X));
        }
        Ok(())
    }
);

ktest!(
    fn virtio_bars_are_assigned_and_sized() {
        // Sizing briefly turns decoding off: use the GPU, which no driver
        // is using, not the block device.
        let function = check_ok!(find(VIRTIO_VENDOR, VIRTIO_GPU_MODERN).next().ok_or("missing"));
        // QEMU puts the modern virtio registers in a 64-bit prefetchable
        // BAR 4 and the MSI-X table in BAR 1.
        let bar = check_ok!(function.memory_bar(4));
        check!(bar.is_64bit && bar.len_bytes.is_power_of_two(), "{:?}", bar);
        check!(bar.phys.as_u64().is_multiple_of(bar.len_bytes), "{:?} misaligned", bar);
        check_eq!(function.memory_bar(6), Err(BarError::NoSuchBar(6)));
        check_ok!(
            function
                .enable(super::config::command::MEMORY_SPACE | super::config::command::BUS_MASTER)
        );
        let command = check_ok!(function.config.read_u16(super::config::reg::COMMAND));
        check_eq!(command & 0b110, 0b110);
        Ok(())
    }
);

ktest!(
    fn msix_table_maps_and_routes() {
        // The GPU: the block device's table belongs to its driver.
        let function = check_ok!(find(VIRTIO_VENDOR, VIRTIO_GPU_MODERN).next().ok_or("missing"));
        let msix = check_ok!(MsiX::new(function));
        check!(msix.table_size() >= 2, "table of {}", msix.table_size());
        check_ok!(msix.route(1, 0x55, 0));
        check_eq!(msix.vector_of(1), Some(0x55));
        check!(msix.route(msix.table_size(), 0x55, 0).is_err());
        check!(msix.route(0, 0x55, 256).is_err());
        check_ok!(msix.set_masked(1, true));
        check!(!msix.is_enabled());
        // Enabling with every entry masked sends nothing; then back off.
        check_ok!(msix.enable());
        check!(msix.is_enabled());
        check_ok!(msix.disable());
        check!(!msix.is_enabled());
        Ok(())
    }
);

ktest!(
    fn capability_walk_ends_on_every_function() {
        for function in functions() {
            check!(function.capabilities().count() <= 48);
        }
        Ok(())
    }
);
