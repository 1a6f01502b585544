//! The device's configuration (VirtIO 1.2 §5.2.4) and the operations that
//! depend on it: cache mode (`VIRTIO_BLK_F_CONFIG_WCE`, §5.2.5), the id
//! string (GET_ID), discard and write zeroes, and transfers split into
//! requests the device can take.

use super::request::{FLAG_UNMAP, ID_BYTES};
use super::{BlkDevice, BlkError, Data, Operation, SECTOR_BYTES};
use crate::drivers::virtio::bringup::{BringUpError, ConfigFields, DeviceConfig};
use crate::mm::dma::DmaBuffer;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vireo_virtio::Features;

/// Device feature bits (§5.2.3).
pub mod feature {
    /// `size_max` bounds one data segment.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` bounds the data segments of a request.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size`: the block size to do I/O in.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The FLUSH command.
    pub const FLUSH: u64 = 1 << 9;
    /// `topology`: physical block, alignment, I/O sizes.
    pub const TOPOLOGY: u64 = 1 << 10;
    /// The cache mode can be read and set (`writeback`).
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// Several request queues (`num_queues`).
    pub const MQ: u64 = 1 << 12;
    /// The DISCARD command.
    pub const DISCARD: u64 = 1 << 13;
    /// The WRITE_ZEROES command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Everything the driver uses when offered.
    pub const OPTIONAL: u64 = SIZE_MAX
        | SEG_MAX
        | RO
        | BLK_SIZE
        | FLUSH
        | TOPOLOGY
        | CONFIG_WCE
        | MQ
        | DISCARD
        | WRITE_ZEROES;
    /// Names, for the log and the shell.
    pub const NAMES: [(u64, &str); 10] = [
        (SIZE_MAX, "size_max"),
        (SEG_MAX, "seg_max"),
        (RO, "ro"),
        (BLK_SIZE, "blk_size"),
        (FLUSH, "flush"),
        (TOPOLOGY, "topology"),
        (CONFIG_WCE, "config_wce"),
        (MQ, "mq"),
        (DISCARD, "discard"),
        (WRITE_ZEROES, "write_zeroes"),
    ];
}

/// Configuration offsets (`struct virtio_blk_config`, §5.2.4).
mod offset {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const BLK_SIZE: usize = 20;
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    pub const ALIGNMENT_OFFSET: usize = 25;
    pub const MIN_IO_SIZE: usize = 26;
    pub const OPT_IO_SIZE: usize = 28;
    pub const WRITEBACK: usize = 32;
    pub const NUM_QUEUES: usize = 34;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// Longest data segment without `VIRTIO_BLK_F_SIZE_MAX`.
const DEFAULT_SIZE_MAX: u32 = 1 << 22;
/// Largest discard/write-zeroes range per request without a device limit.
const DEFAULT_RANGE_SECTORS: u32 = 1 << 22;

/// The device's write cache (§5.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Writes are durable when acknowledged.
    WriteThrough,
    /// Writes are durable after FLUSH.
    WriteBack,
}

/// What the driver takes from `struct virtio_blk_config`, each field at
/// its own width (§4.1.3.1) and only when its feature was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct BlkConfig {
    /// Size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Longest data segment in bytes.
    pub size_max: u32,
    /// Data segments per request at most.
    pub seg_max: u32,
    /// Block size in bytes (a power of two ≥ 512).
    pub block_bytes: u32,
    /// `topology`: (physical_block_exp, alignment_offset, min_io_size,
    /// opt_io_size), in logical blocks.
    pub topology: Option<(u8, u8, u16, u32)>,
    /// `writeback` (with CONFIG_WCE).
    pub writeback: Option<u8>,
    /// Request queues the device has.
    pub device_queues: u16,
    /// (max_discard_sectors, max_discard_seg, discard_sector_alignment).
    pub discard: Option<(u32, u32, u32)>,
    /// (max_write_zeroes_sectors, max_write_zeroes_seg, may_unmap).
    pub write_zeroes: Option<(u32, u32, bool)>,
}

impl DeviceConfig for BlkConfig {
    fn read(fields: &mut ConfigFields<'_>, features: Features) -> Result<Self, BringUpError> {
        let has = |bit: u64| features.bits() & bit != 0;
        let capacity_sectors = fields.u64(offset::CAPACITY)?;
        // A device value the driver cannot use is replaced by the safe
        // default, never trusted: 0 segments, segments below a sector.
        let size_max = if has(feature::SIZE_MAX) { fields.u32(offset::SIZE_MAX)? } else { 0 };
        let size_max = if size_max < 4096 { DEFAULT_SIZE_MAX } else { size_max & !511 };
        let seg_max = if has(feature::SEG_MAX) { fields.u32(offset::SEG_MAX)? } else { 0 };
        let seg_max = if seg_max == 0 { super::MAX_DATA_SEGMENTS as u32 } else { seg_max };
        let block_size = if has(feature::BLK_SIZE) { fields.u32(offset::BLK_SIZE)? } else { 512 };
        // A nonsense block size (not a power of two in 512..=64 KiB) is ignored.
        let block_bytes = if block_size.is_power_of_two() && (512..=65536).contains(&block_size) {
            block_size
        } else {
            512
        };
        let topology = if has(feature::TOPOLOGY) {
            Some((
                fields.u8(offset::PHYSICAL_BLOCK_EXP)?,
                fields.u8(offset::ALIGNMENT_OFFSET)?,
                fields.u16(offset::MIN_IO_SIZE)?,
                fields.u32(offset::OPT_IO_SIZE)?,
            ))
        } else {
            None
        };
        let writeback =
            if has(feature::CONFIG_WCE) { Some(fields.u8(offset::WRITEBACK)?) } else { None };
        let device_queues =
            if has(feature::MQ) { fields.u16(offset::NUM_QUEUES)?.max(1) } else { 1 };
        let discard = if has(feature::DISCARD) {
            Some((
                fields.u32(offset::MAX_DISCARD_SECTORS)?,
                fields.u32(offset::MAX_DISCARD_SEG)?,
                fields.u32(offset::DISCARD_SECTOR_ALIGNMENT)?,
            ))
        } else {
            None
        };
        let write_zeroes = if has(feature::WRITE_ZEROES) {
            Some((
                fields.u32(offset::MAX_WRITE_ZEROES_SECTORS)?,
                fields.u32(offset::MAX_WRITE_ZEROES_SEG)?,
                fields.u8(offset::WRITE_ZEROES_MAY_UNMAP)? != 0,
            ))
        } else {
            None
        };
        Ok(Self {
            capacity_sectors,
            size_max,
            seg_max,
            block_bytes,
            topology,
            writeback,
            device_queues,
            discard,
            write_zeroes,
        })
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
        let writeback = match self.config.lock().writeback {
            Some(byte) => byte != 0,
            None => self.has(feature::FLUSH),
        };
        if writeback { CacheMode::WriteBack } else { CacheMode::WriteThrough }
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
        let pending = self.submit_data(Operation::GetId, 0, Data::None, (0, 0), (0, 0), true);
        let pending = pending.map_err(|(error, _)| error)?;
        let (result, id) = pending.wait_id();
        result?;
        let end = id.iter().position(|&byte| byte == 0).unwrap_or(ID_BYTES);
        Ok(id[..end]
            .iter()
            .map(|&byte| if byte.is_ascii_graphic() || byte == b' ' { byte as char } else { '?' })
            .collect())
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
        let block_sectors = u64::from(self.block_bytes()) / SECTOR_BYTES;
        let limit = if limit == 0 { DEFAULT_RANGE_SECTORS } else { limit };
        let step = (u64::from(limit) / block_sectors * block_sectors).max(block_sectors);
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
                true,
            );
            pending.map_err(|(error, _)| error)?.wait().0?;
            done += u64::from(count);
        }
        Ok(())
    }

    /// Bytes one request may carry in one buffer: `seg_max` segments of
    /// `size_max`, in whole blocks.
    fn max_request_bytes(&self) -> u64 {
        let config = self.config();
        let segments = u64::from(config.seg_max.min(super::MAX_DATA_SEGMENTS as u32));
        let bytes = (segments * u64::from(config.size_max)).min(u64::from(u32::MAX));
        let block = u64::from(config.block_bytes);
        (bytes / block * block).max(block)
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
            let pending =
                self.submit_data(operation, at, Data::One(whole), (done, piece), (0, 0), true);
            let (result, data) =
                pending.map_err(|(error, data)| (error, data.into_one()))?.wait_data();
            buffer = data.into_one();
            result.map_err(|error| (error, buffer.take()))?;
            done += piece;
        }
        buffer.ok_or((BlkError::DeviceFailed, None))
    }
}
