//! virtio-blk (VirtIO 1.2 §5.2): what a request is made of and what the
//! device's configuration says, independent of how requests are queued.
//!
//! A request (§5.2.6) is a 16-byte [`RequestHeader`] the device reads, then
//! the data (device-readable for a write, device-writable for a read; a
//! [`RangeSegment`] for discard and write zeroes; [`ID_BYTES`] for
//! GET_ID), then one status byte the device writes ([`Status`]). A driver
//! lays the data out with [`lay_out`] within the device's
//! [`BlkConfig`] limits, checks the transfer first with
//! [`check_transfer`], and decodes the status with [`Status::from_byte`]
//! once the queue hands the request back.
//!
//! ```
//! use vireo_virtio::device::blk::{Kind, RequestHeader, Status, DecodeError, STATUS_NOT_WRITTEN};
//!
//! // The device-readable header of a read of sector 8 …
//! let header = RequestHeader::new(Kind::Read, 8).to_bytes();
//! assert_eq!(header[8..16], 8u64.to_le_bytes());
//! // … and the status byte the driver pre-fills, then decodes: a device
//! // that never wrote it did not succeed.
//! let status = STATUS_NOT_WRITTEN;
//! assert_eq!(Status::from_byte(status), Err(DecodeError::UnknownStatus(0xff)));
//! assert_eq!(Status::from_byte(0), Ok(Status::Ok));
//! ```

use crate::config::{ConfigFields, DeviceConfig};
use crate::{Error, Features};

/// Bytes per sector: always 512 in virtio-blk (§5.2.6).
pub const SECTOR_BYTES: u64 = 512;

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
    /// Every bit this module understands.
    pub const ALL: u64 = SIZE_MAX
        | SEG_MAX
        | RO
        | BLK_SIZE
        | FLUSH
        | TOPOLOGY
        | CONFIG_WCE
        | MQ
        | DISCARD
        | WRITE_ZEROES;
    /// Names, for logs and shells.
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

/// Field offsets of `struct virtio_blk_config` (§5.2.4).
pub mod offset {
    /// `capacity` (le64, 512-byte sectors).
    pub const CAPACITY: usize = 0;
    /// `size_max` (le32).
    pub const SIZE_MAX: usize = 8;
    /// `seg_max` (le32).
    pub const SEG_MAX: usize = 12;
    /// `blk_size` (le32).
    pub const BLK_SIZE: usize = 20;
    /// `topology.physical_block_exp` (u8).
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    /// `topology.alignment_offset` (u8).
    pub const ALIGNMENT_OFFSET: usize = 25;
    /// `topology.min_io_size` (le16).
    pub const MIN_IO_SIZE: usize = 26;
    /// `topology.opt_io_size` (le32).
    pub const OPT_IO_SIZE: usize = 28;
    /// `writeback` (u8).
    pub const WRITEBACK: usize = 32;
    /// `num_queues` (le16).
    pub const NUM_QUEUES: usize = 34;
    /// `max_discard_sectors` (le32).
    pub const MAX_DISCARD_SECTORS: usize = 36;
    /// `max_discard_seg` (le32).
    pub const MAX_DISCARD_SEG: usize = 40;
    /// `discard_sector_alignment` (le32).
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// `max_write_zeroes_sectors` (le32).
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    /// `max_write_zeroes_seg` (le32).
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    /// `write_zeroes_may_unmap` (u8).
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// Longest data segment assumed without `VIRTIO_BLK_F_SIZE_MAX` (or with a
/// `size_max` below a page, which no real device means).
pub const DEFAULT_SIZE_MAX: u32 = 1 << 22;
/// Data segments per request assumed without `VIRTIO_BLK_F_SEG_MAX` (or
/// with a `seg_max` of 0).
pub const DEFAULT_SEG_MAX: u32 = 32;
/// Largest discard/write-zeroes range per request without a device limit.
pub const DEFAULT_RANGE_SECTORS: u32 = 1 << 22;

/// The device's write cache (§5.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Writes are durable when acknowledged.
    WriteThrough,
    /// Writes are durable after FLUSH.
    WriteBack,
}

/// What a driver takes from `struct virtio_blk_config`, each field read at
/// its own width (§4.1.3.1) and only when its feature was negotiated. A
/// value a driver cannot use is replaced by a safe default, never trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkConfig {
    /// Size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Longest data segment in bytes (a multiple of 512, ≥ 4096).
    pub size_max: u32,
    /// Data segments per request at most (≥ 1).
    pub seg_max: u32,
    /// Block size in bytes (a power of two in 512..=65536).
    pub block_bytes: u32,
    /// `topology`: (physical_block_exp, alignment_offset, min_io_size,
    /// opt_io_size), in logical blocks.
    pub topology: Option<(u8, u8, u16, u32)>,
    /// `writeback` (with CONFIG_WCE).
    pub writeback: Option<u8>,
    /// Request queues the device has (≥ 1).
    pub device_queues: u16,
    /// (max_discard_sectors, max_discard_seg, discard_sector_alignment).
    pub discard: Option<(u32, u32, u32)>,
    /// (max_write_zeroes_sectors, max_write_zeroes_seg, may_unmap).
    pub write_zeroes: Option<(u32, u32, bool)>,
}

impl DeviceConfig for BlkConfig {
    type Error = Error;

    fn read(fields: &ConfigFields<'_>, features: Features) -> Result<Self, Error> {
        let has = |bit: u64| features.bits() & bit != 0;
        let capacity_sectors = fields.u64(offset::CAPACITY)?;
        let size_max = if has(feature::SIZE_MAX) { fields.u32(offset::SIZE_MAX)? } else { 0 };
        let seg_max = if has(feature::SEG_MAX) { fields.u32(offset::SEG_MAX)? } else { 0 };
        let block_size = if has(feature::BLK_SIZE) { fields.u32(offset::BLK_SIZE)? } else { 512 };
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
        let num_queues = if has(feature::MQ) { fields.u16(offset::NUM_QUEUES)? } else { 1 };
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
            // 0 or segments below a page: the default.
            size_max: if size_max < 4096 { DEFAULT_SIZE_MAX } else { size_max & !511 },
            seg_max: if seg_max == 0 { DEFAULT_SEG_MAX } else { seg_max },
            // Not a power of two in 512..=64 KiB: ignored.
            block_bytes: if block_size.is_power_of_two() && (512..=65536).contains(&block_size) {
                block_size
            } else {
                512
            },
            topology,
            writeback,
            device_queues: num_queues.max(1),
            discard,
            write_zeroes,
        })
    }
}

impl BlkConfig {
    /// The cache mode (§5.2.5): `writeback` with CONFIG_WCE; without it,
    /// write-back exactly when FLUSH was negotiated.
    pub fn cache_mode(&self, features: Features) -> CacheMode {
        let writeback = match self.writeback {
            Some(byte) => byte != 0,
            None => features.bits() & feature::FLUSH != 0,
        };
        if writeback { CacheMode::WriteBack } else { CacheMode::WriteThrough }
    }

    /// Sectors per block (`block_bytes / 512`, ≥ 1).
    pub fn block_sectors(&self) -> u64 {
        (u64::from(self.block_bytes) / SECTOR_BYTES).max(1)
    }

    /// Bytes one request may carry in one buffer: `seg_max` (at most
    /// `max_segments`) segments of `size_max`, in whole blocks, below 4 GiB.
    pub fn max_request_bytes(&self, max_segments: u32) -> u64 {
        let segments = u64::from(self.seg_max.min(max_segments));
        let bytes = (segments * u64::from(self.size_max)).min(u64::from(u32::MAX));
        let block = u64::from(self.block_bytes);
        (bytes / block * block).max(block)
    }

    /// Sectors one discard/write-zeroes request may cover: the device's
    /// `limit` (0: [`DEFAULT_RANGE_SECTORS`]) in whole blocks, at least one.
    pub fn range_step(&self, limit: u32) -> u64 {
        let block_sectors = self.block_sectors();
        let limit = if limit == 0 { DEFAULT_RANGE_SECTORS } else { limit };
        (u64::from(limit) / block_sectors * block_sectors).max(block_sectors)
    }
}

/// Request types (§5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// `VIRTIO_BLK_T_IN`: read from the device.
    Read = 0,
    /// `VIRTIO_BLK_T_OUT`: write to the device.
    Write = 1,
    /// `VIRTIO_BLK_T_FLUSH`: make earlier writes durable.
    Flush = 4,
    /// `VIRTIO_BLK_T_GET_ID`: the device's id string ([`ID_BYTES`]).
    GetId = 8,
    /// `VIRTIO_BLK_T_DISCARD`: the sectors' contents may be dropped.
    Discard = 11,
    /// `VIRTIO_BLK_T_WRITE_ZEROES`: the sectors read as zeroes afterwards.
    WriteZeroes = 13,
}

impl Kind {
    /// The `type` field's value.
    pub fn to_u32(self) -> u32 {
        self as u32
    }

    /// The request type `value` names, if this module knows it.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Kind::Read,
            1 => Kind::Write,
            4 => Kind::Flush,
            8 => Kind::GetId,
            11 => Kind::Discard,
            13 => Kind::WriteZeroes,
            _ => return None,
        })
    }

    /// Whether the request changes the disk (refused on a read-only one).
    pub fn writes(self) -> bool {
        matches!(self, Kind::Write | Kind::Discard | Kind::WriteZeroes)
    }

    /// Whether it carries a [`RangeSegment`] instead of data.
    pub fn has_range(self) -> bool {
        matches!(self, Kind::Discard | Kind::WriteZeroes)
    }

    /// The feature the device must have negotiated for it (none for read,
    /// write and GET_ID).
    pub fn required_feature(self) -> Option<u64> {
        match self {
            Kind::Flush => Some(feature::FLUSH),
            Kind::Discard => Some(feature::DISCARD),
            Kind::WriteZeroes => Some(feature::WRITE_ZEROES),
            Kind::Read | Kind::Write | Kind::GetId => None,
        }
    }
}

/// Bytes of `struct virtio_blk_req`'s header (§5.2.6).
pub const HEADER_BYTES: usize = 16;

/// The header the device reads first: type, reserved, sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// The request type.
    pub kind: Kind,
    /// The first sector (read and write; 0 otherwise).
    pub sector: u64,
}

impl RequestHeader {
    /// A header for `kind` at `sector`; discard and write zeroes carry
    /// their range in the data, so their header's sector is 0 (§5.2.6).
    pub fn new(kind: Kind, sector: u64) -> Self {
        Self { kind, sector: if kind.has_range() { 0 } else { sector } }
    }

    /// The header's bytes (little-endian, `reserved` 0).
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&self.kind.to_u32().to_le_bytes());
        bytes[8..16].copy_from_slice(&self.sector.to_le_bytes());
        bytes
    }

    /// Decodes a header (a device model's side).
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] for a type this module does not know,
    /// [`DecodeError::Reserved`] for a nonzero `reserved` field.
    pub fn from_bytes(bytes: &[u8; HEADER_BYTES]) -> Result<Self, DecodeError> {
        let kind = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = Kind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))?;
        if bytes[4..8] != [0; 4] {
            return Err(DecodeError::Reserved);
        }
        let mut sector = [0; 8];
        sector.copy_from_slice(&bytes[8..16]);
        Ok(Self { kind, sector: u64::from_le_bytes(sector) })
    }
}

/// A value from the other side this module refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A status byte §5.2.6 does not define (or [`STATUS_NOT_WRITTEN`]:
    /// the device wrote none).
    UnknownStatus(u8),
    /// A request type this module does not know.
    UnknownKind(u32),
    /// A reserved field or flag bit is set.
    Reserved,
}

/// What a driver puts in the status byte before submitting: not a value
/// the device may write, so a request the device never finished decodes
/// as [`DecodeError::UnknownStatus`].
pub const STATUS_NOT_WRITTEN: u8 = 0xff;

/// The status byte the device writes (§5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// `VIRTIO_BLK_S_OK`.
    Ok = 0,
    /// `VIRTIO_BLK_S_IOERR`: the device could not complete the request.
    IoErr = 1,
    /// `VIRTIO_BLK_S_UNSUPP`: the device does not support the request type.
    Unsupported = 2,
}

impl Status {
    /// Decodes the status byte.
    ///
    /// # Errors
    /// [`DecodeError::UnknownStatus`] for any other value: never a success.
    pub fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            0 => Ok(Status::Ok),
            1 => Ok(Status::IoErr),
            2 => Ok(Status::Unsupported),
            other => Err(DecodeError::UnknownStatus(other)),
        }
    }
}

/// Bytes of `struct virtio_blk_discard_write_zeroes` (§5.2.6).
pub const RANGE_BYTES: usize = 16;
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP` (§5.2.6).
pub const FLAG_UNMAP: u32 = 1;

/// One discard/write-zeroes range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSegment {
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub sectors: u32,
    /// [`FLAG_UNMAP`] or 0 (the other bits are reserved).
    pub flags: u32,
}

impl RangeSegment {
    /// The segment's bytes.
    pub fn to_bytes(&self) -> [u8; RANGE_BYTES] {
        let mut bytes = [0; RANGE_BYTES];
        bytes[0..8].copy_from_slice(&self.sector.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.sectors.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.flags.to_le_bytes());
        bytes
    }

    /// Decodes a segment (a device model's side).
    ///
    /// # Errors
    /// [`DecodeError::Reserved`] for flag bits other than [`FLAG_UNMAP`].
    pub fn from_bytes(bytes: &[u8; RANGE_BYTES]) -> Result<Self, DecodeError> {
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let flags = word(12);
        if flags & !FLAG_UNMAP != 0 {
            return Err(DecodeError::Reserved);
        }
        let sector = u64::from(word(0)) | u64::from(word(4)) << 32;
        Ok(Self { sector, sectors: word(8), flags })
    }
}

/// Bytes of a GET_ID answer (§5.2.6: 20, NUL-padded, not necessarily
/// NUL-terminated).
pub const ID_BYTES: usize = 20;

/// The id string in a GET_ID answer: the bytes before the first NUL (all
/// 20 without one), each non-printable byte shown as `'?'`.
pub fn id_chars(answer: &[u8; ID_BYTES]) -> impl Iterator<Item = char> + '_ {
    let end = answer.iter().position(|&byte| byte == 0).unwrap_or(ID_BYTES);
    answer[..end]
        .iter()
        .map(|&byte| if byte.is_ascii_graphic() || byte == b' ' { byte as char } else { '?' })
}

/// Why a transfer cannot be submitted as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferError {
    /// The disk is read-only and the request writes.
    ReadOnly,
    /// The device did not negotiate the feature the request type needs.
    Unsupported,
    /// Empty, not whole sectors, longer than the buffers or than 4 GiB, or
    /// past the end of the disk.
    BadRange,
    /// Sector or length not a multiple of the block size (§5.2.5).
    Unaligned,
}

/// One transfer as the caller asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The request type.
    pub kind: Kind,
    /// First sector.
    pub sector: u64,
    /// Read/write: bytes to transfer. Discard/write zeroes: sectors.
    pub len: u64,
    /// Read/write: bytes the caller's buffers hold (after any skipped).
    pub buffer_bytes: u64,
}

/// Checks a transfer against the negotiated `features`, the configuration
/// and the disk's `capacity_sectors` before the device sees it.
///
/// # Errors
/// The first [`TransferError`] that applies, in the order listed there.
pub fn check_transfer(
    transfer: &Transfer,
    features: Features,
    config: &BlkConfig,
    capacity_sectors: u64,
) -> Result<(), TransferError> {
    let has = |bit: u64| features.bits() & bit != 0;
    let Transfer { kind, sector, len, buffer_bytes } = *transfer;
    if kind.writes() && has(feature::RO) {
        return Err(TransferError::ReadOnly);
    }
    if kind.required_feature().is_some_and(|bit| !has(bit)) {
        return Err(TransferError::Unsupported);
    }
    let sectors = match kind {
        Kind::Read | Kind::Write => {
            let whole = len > 0 && len.is_multiple_of(SECTOR_BYTES);
            if !whole || len > buffer_bytes || len > u64::from(u32::MAX) {
                return Err(TransferError::BadRange);
            }
            len / SECTOR_BYTES
        }
        Kind::Discard | Kind::WriteZeroes => {
            if len > u64::from(u32::MAX) {
                return Err(TransferError::BadRange);
            }
            len
        }
        Kind::Flush | Kind::GetId => return Ok(()),
    };
    let on_disk =
        sectors > 0 && sector.checked_add(sectors).is_some_and(|end| end <= capacity_sectors);
    if !on_disk {
        return Err(TransferError::BadRange);
    }
    let block_sectors = config.block_sectors();
    if !sector.is_multiple_of(block_sectors) || !sectors.is_multiple_of(block_sectors) {
        return Err(TransferError::Unaligned);
    }
    Ok(())
}

/// One data descriptor of a request: `len` bytes at `offset` in buffer
/// `buffer` (an index into the caller's buffers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataSegment {
    /// Index of the buffer in the request's list.
    pub buffer: u8,
    /// Byte offset in that buffer.
    pub offset: u32,
    /// Bytes (1..=`size_max`).
    pub len: u32,
}

/// The data need more descriptors than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySegments;

/// Lays out the bytes `span` = (skip, length) of buffers with lengths
/// `buffer_lens` (in transfer order) as descriptors of at most `size_max`
/// bytes (§5.2.4), at most `out.len()` of them (the caller passes
/// `seg_max` or fewer slots); how many it wrote. Bytes beyond the
/// buffers are simply not laid out ([`check_transfer`] refuses them
/// first).
///
/// # Errors
/// [`TooManySegments`] when the span needs more than `out.len()`
/// descriptors, more buffers than a `u8` indexes, or offsets beyond 4 GiB.
pub fn lay_out(
    buffer_lens: impl IntoIterator<Item = u64>,
    span: (u64, u64),
    size_max: u32,
    out: &mut [DataSegment],
) -> Result<usize, TooManySegments> {
    let (mut skip, mut left) = span;
    let size_max = u64::from(size_max.max(1));
    let mut count = 0;
    for (index, length) in buffer_lens.into_iter().enumerate() {
        if left == 0 {
            break;
        }
        if skip >= length {
            skip -= length;
            continue;
        }
        let buffer = u8::try_from(index).map_err(|_| TooManySegments)?;
        let end = (skip + left).min(length);
        let mut at = skip;
        left -= end - skip;
        skip = 0;
        while at < end {
            let slot = out.get_mut(count).ok_or(TooManySegments)?;
            let piece = (end - at).min(size_max);
            let offset = u32::try_from(at).map_err(|_| TooManySegments)?;
            // `piece ≤ size_max`, a u32.
            *slot = DataSegment { buffer, offset, len: piece as u32 };
            count += 1;
            at += piece;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
