//! The device configuration space the backend hands QEMU (VirtIO 1.2
//! §5.2.4, `struct virtio_blk_config`), honest or with one field lied about.
//!
//! QEMU 7.2's vhost-user-blk asks for it once, when it connects
//! (`GET_CONFIG` during realize), caches it, and answers every guest config
//! read from that cache. It overwrites `num_queues` with its own
//! `num-queues` property, so that lie never reaches the guest; the other
//! fields pass through unchanged.

/// Byte offsets of the fields the backend fills (§5.2.4).
mod offset {
    pub const CAPACITY: usize = 0;
    pub const SEG_MAX: usize = 12;
    pub const BLK_SIZE: usize = 20;
    pub const NUM_QUEUES: usize = 34;
}

/// Bytes of `struct virtio_blk_config` up to and including the write-zeroes
/// fields, the largest layout QEMU 7.2 asks for.
pub const CONFIG_BYTES: usize = 60;

/// The fields the backend reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    pub capacity_sectors: u64,
    pub seg_max: u32,
    pub blk_size_bytes: u32,
    pub num_queues: u16,
}

/// One field lied about, for a whole boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigLie {
    CapacityZero,
    /// 2^63 sectors: 2^72 bytes, more than any `u64` byte count.
    CapacityHuge,
    SegMaxZero,
    BlkSize3,
    NumQueuesZero,
    NumQueuesMax,
}

impl ConfigLie {
    /// `config` with this lie applied.
    pub fn apply(self, config: BlkConfig) -> BlkConfig {
        match self {
            ConfigLie::CapacityZero => BlkConfig { capacity_sectors: 0, ..config },
            ConfigLie::CapacityHuge => BlkConfig { capacity_sectors: 1 << 63, ..config },
            ConfigLie::SegMaxZero => BlkConfig { seg_max: 0, ..config },
            ConfigLie::BlkSize3 => BlkConfig { blk_size_bytes: 3, ..config },
            ConfigLie::NumQueuesZero => BlkConfig { num_queues: 0, ..config },
            ConfigLie::NumQueuesMax => BlkConfig { num_queues: u16::MAX, ..config },
        }
    }
}

impl BlkConfig {
    /// The little-endian config space.
    pub fn to_bytes(self) -> [u8; CONFIG_BYTES] {
        let mut bytes = [0u8; CONFIG_BYTES];
        let mut put = |at: usize, field: &[u8]| bytes[at..at + field.len()].copy_from_slice(field);
        put(offset::CAPACITY, &self.capacity_sectors.to_le_bytes());
        put(offset::SEG_MAX, &self.seg_max.to_le_bytes());
        put(offset::BLK_SIZE, &self.blk_size_bytes.to_le_bytes());
        put(offset::NUM_QUEUES, &self.num_queues.to_le_bytes());
        bytes
    }

    /// `size` bytes from `offset`, zero past the fields the backend knows
    /// (vhost-user's `GET_CONFIG` must answer exactly the size asked for).
    pub fn read(self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.to_bytes();
        (offset as usize..offset as usize + size as usize)
            .map(|at| bytes.get(at).copied().unwrap_or(0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HONEST: BlkConfig =
        BlkConfig { capacity_sectors: 131_072, seg_max: 126, blk_size_bytes: 512, num_queues: 4 };

    #[test]
    fn fields_sit_where_the_spec_puts_them() {
        let bytes = HONEST.to_bytes();
        assert_eq!(u64::from_le_bytes(bytes[0..8].try_into().unwrap()), 131_072);
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 126);
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(bytes[34..36].try_into().unwrap()), 4);
    }

    #[test]
    fn reads_answer_exactly_the_size_asked() {
        assert_eq!(HONEST.read(0, 64).len(), 64);
        assert_eq!(&HONEST.read(34, 2)[..], &4u16.to_le_bytes());
        assert!(HONEST.read(60, 4).iter().all(|&b| b == 0));
    }

    #[test]
    fn each_lie_changes_only_its_field() {
        let huge = ConfigLie::CapacityHuge.apply(HONEST);
        assert_eq!(huge.capacity_sectors, 1 << 63);
        assert_eq!(BlkConfig { capacity_sectors: HONEST.capacity_sectors, ..huge }, HONEST);
        assert_eq!(ConfigLie::BlkSize3.apply(HONEST).blk_size_bytes, 3);
        assert_eq!(ConfigLie::NumQueuesMax.apply(HONEST).num_queues, 65535);
        assert_eq!(ConfigLie::SegMaxZero.apply(HONEST).seg_max, 0);
    }
}
