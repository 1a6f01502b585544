//! PCI tests against the machines the runner boots: q35 (ECAM) or pc
//! (configuration ports), with a virtio-blk (modern-only or transitional)
//! and a virtio-gpu. A machine without PCI (microvm) skips them.

use super::capability::id;
use super::{Access, BarError, Function, access, functions, msix::MsiX};
use crate::{check, check_eq, check_ok, ktest};

const VIRTIO_VENDOR: u16 = 0x1af4;
const BLOCK: u16 = 2;
const GPU: u16 = 16;
const NO_PCI: &str = "no PCI (no MCFG, nothing at port 0xCF8)";

/// The virtio functions of this type (VirtIO 1.2 §4.1.2): modern (0x1040 +
/// type) or transitional (0x1000..0x103f, type in the subsystem id).
fn virtio(device_type: u16) -> impl Iterator<Item = &'static Function> {
    functions().iter().filter(move |f| {
        f.vendor_id == VIRTIO_VENDOR
            && (f.device_id == 0x1040 + device_type
                || ((0x1000..=0x103f).contains(&f.device_id) && f.subsystem.1 == device_type))
    })
}

/// The GPU: no driver programs its BARs or MSI-X table in these tests'
/// way (the block device's belong to its driver).
fn gpu_function() -> Result<&'static Function, crate::ktest::TestFailure> {
    virtio(GPU).next().ok_or_else(|| {
        crate::ktest::skip("no virtio-gpu-pci device").expect_err("a skip is an error value")
    })
}

ktest!(
    fn scan_finds_host_bridge_and_virtio_devices() {
        if access() == Some(Access::None) {
            return ktest::skip(NO_PCI);
        }
        check!(functions().len() >= 3, "only {} functions", functions().len());
        check_eq!(virtio(BLOCK).count(), 1);
        check!(virtio(GPU).count() <= 1);
        // The host bridge at 00:00.0: q35's MCH (8086:29c0, reached through
        // ECAM) or the i440FX (8086:1237, through the ports).
        let host = check_ok!(functions().first().ok_or("no functions"));
        check_eq!((host.address.device, host.vendor_id), (0, 0x8086));
        let expected = match access() {
            Some(Access::Ecam) => 0x29c0,
            _ => 0x1237,
        };
        check_eq!(host.device_id, expected);
        check_eq!(host.class.0, 0x06);
        Ok(())
    }
);

ktest!(
    fn config_space_reaches_what_its_mechanism_covers() {
        let Some(function) = functions().first() else { return ktest::skip(NO_PCI) };
        let expected = match access() {
            Some(Access::Ecam) => super::config::CONFIG_SPACE_BYTES,
            _ => super::config::LEGACY_CONFIG_SPACE_BYTES,
        };
        let config = function.config;
        check_eq!(config.len_bytes(), expected);
        check!(config.read_u32(expected - 4).is_ok());
        check!(config.read_u8(expected).is_err());
        check!(config.read_u16(1).is_err(), "unaligned u16 accepted");
        // Sub-dword reads agree with the dword (mechanism #1 picks byte
        // lanes through 0xCFC + offset & 3).
        let dword = check_ok!(config.read_u32(0));
        check_eq!(u32::from(check_ok!(config.read_u16(2))), dword >> 16);
        check_eq!(u32::from(check_ok!(config.read_u8(1))), (dword >> 8) & 0xff);
        Ok(())
    }
);

ktest!(
    fn virtio_devices_expose_virtio_capabilities() {
        if access() == Some(Access::None) {
            return ktest::skip(NO_PCI);
        }
        for device_type in [BLOCK, GPU] {
            let Some(function) = virtio(device_type).next() else { continue };
            let device_id = function.device_id;
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
        let function = gpu_function()?;
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

/// A virtio function whose MSI-X table no driver uses: the spare
/// virtio-rng, else the (polled) keyboard. The block device's and the
/// GPU's (display-change interrupts) belong to their drivers.
fn unowned_msix_function() -> Result<&'static Function, crate::ktest::TestFailure> {
    const ENTROPY: u16 = 4;
    const INPUT: u16 = 18;
    virtio(ENTROPY).chain(virtio(INPUT)).next().ok_or_else(|| {
        crate::ktest::skip("no virtio-rng-pci or virtio-keyboard-pci device")
            .expect_err("a skip is an error value")
    })
}

ktest!(
    fn msix_table_maps_and_routes() {
        let function = unowned_msix_function()?;
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
