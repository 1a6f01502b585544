//! The device's configuration (VirtIO 1.2 §5.2.4) and the operations that
//! depend on it: cache mode (`VIRTIO_BLK_F_CONFIG_WCE`, §5.2.5), the id
//! string (GET_ID), discard and write zeroes, and transfers split into
//! requests the device can take.

use super::submit::Notify;
use super::{BlkDevice, BlkError, Data, MAX_DATA_SEGMENTS, Operation, SECTOR_BYTES};
use crate::drivers::virtio::bringup::{BringUpError, ConfigFields, DeviceConfig};
use crate::mm::dma::DmaBuffer;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vireo_virtio::Features;
pub use vireo_virtio::device::blk::{BlkConfig, CacheMode};
use vireo_virtio::device::blk::{FLAG_UNMAP, id_chars, offset};

/// Device feature bits (§5.2.3), and which of them the driver takes.
pub mod feature {
    pub use vireo_virtio::device::blk::feature::*;
    /// Everything the driver uses when offered: every bit the crate knows.
    pub const OPTIONAL: u64 = ALL;
}

/// The crate reads and checks `struct virtio_blk_config` (§5.2.4).
impl DeviceConfig for BlkConfig {
    fn read(fields: &ConfigFields<'_>, features: Features) -> Result<Self, BringUpError> {
        Ok(<BlkConfig as vireo_virtio::config::DeviceConfig>::read(fields, features)?)
    }
}

impl BlkDevice {
    /// Reads the configuration again (after a configuration change or a
    /// reset) and logs a new capacity.
    pub(super) fn reread_config(&self) {
        match self.virtio.read_config::<BlkConfig>(self.features) {
            Ok(config) => {
                let old = self.capacity_sectors.swap(config.capacity_sectors, Ordering::AcqRel);
                if old != config.capacity_sectors {
                    log::info!(
                        "virtio-blk: capacity now {} sectors ({} MiB; was {old})",
                        config.capacity_sectors,
                        (config.capacity_sectors * SECTOR_BYTES) >> 20
                    );
                }
                *self.config.lock() = config;
            }
            Err(error) => log::warn!("virtio-blk: configuration unreadable: {error:?}"),
        }
    }

    /// The configuration as last read.
    pub fn config(&self) -> BlkConfig {
        *self.config.lock()
    }

    /// Names of the negotiated device features.
    pub fn feature_names(&self) -> Vec<&'static str> {
        feature::NAMES.iter().filter(|(bit, _)| self.has(*bit)).map(|(_, name)| *name).collect()
    }

    /// The cache mode (§5.2.5): `writeback` with CONFIG_WCE; without it,
    /// write-back exactly when FLUSH was negotiated.
    pub fn cache_mode(&self) -> CacheMode {
        self.config.lock().cache_mode(self.features)
    }

    /// Sets the cache mode (CONFIG_WCE); kept across device resets.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without CONFIG_WCE, [`BlkError::Io`] if
    /// the device does not keep it.
    pub fn set_cache_mode(&self, mode: CacheMode) -> Result<(), BlkError> {
        if !self.has(feature::CONFIG_WCE) {
            return Err(BlkError::Unsupported);
        }
        *self.chosen_cache_mode.lock() = Some(mode);
        self.write_cache_mode(mode)
    }

    /// Writes `writeback` and reads it back.
    pub(super) fn write_cache_mode(&self, mode: CacheMode) -> Result<(), BlkError> {
        let byte = u8::from(mode == CacheMode::WriteBack);
        self.virtio.write_config(offset::WRITEBACK, &[byte]).map_err(|_| BlkError::Io)?;
        self.reread_config();
        if self.cache_mode() == mode { Ok(()) } else { Err(BlkError::Io) }
    }

    /// The cache mode chosen with [`BlkDevice::set_cache_mode`], if any.
    pub(super) fn chosen_cache_mode(&self) -> Option<CacheMode> {
        *self.chosen_cache_mode.lock()
    }

    /// The device's id string (GET_ID, §5.2.6: up to 20 bytes, NUL-padded;
    /// QEMU's `serial=`).
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] when the device answers UNSUPP, else as
    /// [`super::Pending::wait`].
    pub fn serial(&'static self) -> Result<String, BlkError> {
        let pending =
            self.submit_data(Operation::GetId, 0, Data::None, (0, 0), (0, 0), Notify::Now);
        let pending = pending.map_err(|(error, _)| error)?;
        let (result, id) = pending.wait_id();
        result?;
        Ok(id_chars(&id).collect())
    }

    /// Lets the device drop the contents of `sectors` sectors from
    /// `sector` (DISCARD), split into requests within its limits.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without DISCARD; else as a write.
    pub fn discard(&'static self, sector: u64, sectors: u64) -> Result<(), BlkError> {
        let limit = self.config().discard.map_or(0, |(max, _, _)| max);
        self.ranges(Operation::Discard, sector, sectors, limit, 0)
    }

    /// Makes `sectors` sectors from `sector` read as zeroes (WRITE_ZEROES),
    /// letting the device unmap them if `unmap` and it said it may.
    ///
    /// # Errors
    /// [`BlkError::Unsupported`] without WRITE_ZEROES; else as a write.
    pub fn write_zeroes(
        &'static self,
        sector: u64,
        sectors: u64,
        unmap: bool,
    ) -> Result<(), BlkError> {
        let (limit, may_unmap) =
            self.config().write_zeroes.map_or((0, false), |(max, _, m)| (max, m));
        let flags = if unmap && may_unmap { FLAG_UNMAP } else { 0 };
        self.ranges(Operation::WriteZeroes, sector, sectors, limit, flags)
    }

    /// Whether WRITE_ZEROES may unmap (`write_zeroes_may_unmap`).
    pub fn write_zeroes_may_unmap(&self) -> bool {
        self.config().write_zeroes.is_some_and(|(_, _, may)| may)
    }

    /// One discard/write-zeroes request per `limit` sectors.
    fn ranges(
        &'static self,
        operation: Operation,
        sector: u64,
        sectors: u64,
        limit: u32,
        flags: u32,
    ) -> Result<(), BlkError> {
        let step = self.config().range_step(limit);
        if sectors == 0 {
            return Err(BlkError::BadRange);
        }
        let mut done = 0;
        while done < sectors {
            let count = (sectors - done).min(step) as u32;
            let pending = self.submit_data(
                operation,
                sector + done,
                Data::None,
                (0, 0),
                (count, flags),
                Notify::Now,
            );
            pending.map_err(|(error, _)| error)?.wait().0?;
            done += u64::from(count);
        }
        Ok(())
    }

    /// Bytes one request may carry in one buffer: `seg_max` segments of
    /// `size_max`, in whole blocks.
    fn max_request_bytes(&self) -> u64 {
        self.config().max_request_bytes(MAX_DATA_SEGMENTS as u32)
    }

    /// A read or write of one buffer, split into requests the device can
    /// take, one after the other (the buffer moves into each).
    pub(super) fn transfer(
        &'static self,
        operation: Operation,
        sector: u64,
        buffer: DmaBuffer,
        len_bytes: usize,
    ) -> Result<DmaBuffer, (BlkError, Option<DmaBuffer>)> {
        let max = self.max_request_bytes();
        let len = len_bytes as u64;
        if len <= max {
            return self.submit(operation, sector, Some(buffer), len_bytes)?.wait_for_buffer();
        }
        let mut buffer = Some(buffer);
        let mut done = 0u64;
        while done < len {
            let piece = (len - done).min(max);
            let Some(whole) = buffer.take() else {
                return Err((BlkError::DeviceFailed, None));
            };
            let at = sector + done / SECTOR_BYTES;
            let pending = self.submit_data(
                operation,
                at,
                Data::One(whole),
                (done, piece),
                (0, 0),
                Notify::Now,
            );
            let (result, data) =
                pending.map_err(|(error, data)| (error, data.into_one()))?.wait_data();
            buffer = data.into_one();
            result.map_err(|error| (error, buffer.take()))?;
            done += piece;
        }
        buffer.ok_or((BlkError::DeviceFailed, None))
    }
}
