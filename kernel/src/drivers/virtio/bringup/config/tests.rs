//! The generation-counter retry against a scripted device whose
//! configuration changes in the middle of a read.

use super::{ConfigFields, DeviceConfig, READ_ATTEMPTS, read};
use crate::drivers::virtio::bringup::BringUpError;
use crate::{check, check_eq, check_ok, ktest};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use vireo_virtio::{DeviceStatus, Features, InterruptStatus, Transport};

/// A configuration with one field of each width, the 64-bit one last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    small: u8,
    medium: u16,
    word: u32,
    wide: u64,
}

impl DeviceConfig for Sample {
    fn read(fields: &ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        Ok(Sample {
            small: fields.u8(0)?,
            medium: fields.u16(2)?,
            word: fields.u32(4)?,
            wide: fields.u64(8)?,
        })
    }
}

/// A device with a 16-byte configuration that rewrites its 64-bit field
/// (and bumps the generation) right after the driver read the low half,
/// `changes` times: the tear a 64-bit field read as two halves can suffer.
/// Reads change it, so its registers sit in cells (config reads take
/// `&self`, like a device's registers do).
struct ChangingDevice {
    config: Cell<[u8; 16]>,
    generation: Cell<u32>,
    changes: Cell<u32>,
    /// Byte length of every configuration access, in order.
    accesses: RefCell<Vec<usize>>,
}

impl ChangingDevice {
    fn new(changes: u32) -> Self {
        let mut config = [0; 16];
        config[0] = 0x5a;
        config[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        config[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        config[8..16].copy_from_slice(&0x1_ffff_ffffu64.to_le_bytes());
        Self {
            config: Cell::new(config),
            generation: Cell::new(0),
            changes: Cell::new(changes),
            accesses: RefCell::new(Vec::new()),
        }
    }

    fn wide(&self) -> u64 {
        u64::from_le_bytes(self.config.get()[8..16].try_into().unwrap())
    }
}

// SAFETY: a model without memory access: it never does DMA, and has no
// queues to program.
unsafe impl Transport for ChangingDevice {
    fn device_id(&self) -> vireo_virtio::DeviceId {
        // No real device: an id no PCI address produces.
        vireo_virtio::DeviceId::new(u64::MAX)
    }
    fn read_device_features(&mut self) -> u64 {
        0
    }
    fn write_driver_features(&mut self, _: u64) {}
    fn max_queue_size(&mut self, _: u16) -> u16 {
        0
    }
    fn queue_used(&mut self, _: u16) -> bool {
        false
    }
    unsafe fn queue_set(&mut self, _: u16, _: u16, _: u64, _: u64, _: u64) {}
    fn queue_unset(&mut self, _: u16) {}
    fn notify(&mut self, _: u16) {}
    fn status(&self) -> DeviceStatus {
        DeviceStatus::empty()
    }
    fn set_status(&mut self, _: DeviceStatus) {}
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        let end = offset + buf.len();
        let mut config = self.config.get();
        let bytes = config.get(offset..end).ok_or(vireo_virtio::Error::ConfigOutOfRange)?;
        buf.copy_from_slice(bytes);
        self.accesses.borrow_mut().push(buf.len());
        if offset == 8 && self.changes.get() > 0 {
            self.changes.set(self.changes.get() - 1);
            config[8..16].copy_from_slice(&(self.wide() + 1).to_le_bytes());
            self.config.set(config);
            self.generation.set(self.generation.get() + 1);
        }
        Ok(())
    }
    fn write_config(&mut self, _: usize, _: &[u8]) -> vireo_virtio::Result {
        Err(vireo_virtio::Error::ConfigOutOfRange)
    }
    fn config_generation(&self) -> u32 {
        self.generation.get()
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
}

ktest!(
    fn fields_are_read_at_their_natural_width() {
        let mut device = ChangingDevice::new(0);
        let sample = check_ok!(read::<Sample>(&mut device, Features::empty()));
        check_eq!(
            sample,
            Sample { small: 0x5a, medium: 0x1234, word: 0xdead_beef, wide: 0x1_ffff_ffff }
        );
        // §4.1.3.1: 8, 16 and 32 bits; the 64-bit field as two 32-bit halves.
        check_eq!(*device.accesses.borrow(), [1, 2, 4, 4, 4]);
        Ok(())
    }
);

ktest!(
    fn a_change_during_the_read_is_read_again() {
        // 0x1_ffff_ffff becomes 0x2_0000_0000 between the halves: without
        // the retry the driver would see 0x2_ffff_ffff.
        let mut device = ChangingDevice::new(1);
        let sample = check_ok!(read::<Sample>(&mut device, Features::empty()));
        check_eq!(sample.wide, 0x2_0000_0000);
        check_eq!(device.accesses.borrow().len(), 10);
        Ok(())
    }
);

ktest!(
    fn a_configuration_that_never_settles_is_an_error() {
        let mut device = ChangingDevice::new(u32::MAX);
        check!(matches!(
            read::<Sample>(&mut device, Features::empty()),
            Err(BringUpError::ConfigUnstable)
        ));
        check_eq!(device.accesses.borrow().len(), READ_ATTEMPTS * 5);
        Ok(())
    }
);

ktest!(
    fn a_field_outside_the_window_is_an_error() {
        struct TooLong;
        impl DeviceConfig for TooLong {
            fn read(fields: &ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
                Ok(fields.u32(14).map(|_| TooLong)?)
            }
        }
        let mut device = ChangingDevice::new(0);
        check!(matches!(
            read::<TooLong>(&mut device, Features::empty()),
            Err(BringUpError::Config(vireo_virtio::Error::ConfigOutOfRange))
        ));
        Ok(())
    }
);
