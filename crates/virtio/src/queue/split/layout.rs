//! The split virtqueue's shared-memory structures (VirtIO 1.2 §2.7.5,
//! §2.7.6, §2.7.8), little endian since VirtIO 1.0 (§2.7: "in little-endian
//! byte order"), and the offsets of the three parts inside one allocation.

/// A little-endian `u16` with native alignment (so one volatile access is
/// one untorn load or store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Le16(u16);
/// A little-endian `u32` with native alignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Le32(u32);
/// A little-endian `u64` with native alignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Le64(u64);

macro_rules! le {
    ($t:ident, $n:ty) => {
        impl $t {
            /// Encodes a native value.
            #[inline(always)]
            pub const fn new(v: $n) -> Self {
                Self(v.to_le())
            }
            /// Decodes to a native value.
            #[inline(always)]
            pub const fn get(self) -> $n {
                <$n>::from_le(self.0)
            }
        }
    };
}
le!(Le16, u16);
le!(Le32, u32);
le!(Le64, u64);

/// `VIRTQ_DESC_F_NEXT`: the chain continues in `next` (§2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: device-writable buffer (§2.7.5).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: buffer is a descriptor table (§2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: driver asks for no used-buffer
/// notifications (§2.7.7, without `EVENT_IDX`).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: device asks for no available-buffer
/// notifications (§2.7.10, without `EVENT_IDX`).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// One descriptor table entry (§2.7.5).
#[doc(alias = "virtq_desc")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct VirtqDesc {
    /// Buffer device address.
    pub addr: Le64,
    /// Buffer length.
    pub len: Le32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: Le16,
    /// Next descriptor when `flags` has `NEXT`.
    pub next: Le16,
}

/// Header of the available ring (§2.7.6); followed by `ring[size]` of
/// [`Le16`] and, with `EVENT_IDX`, `used_event`.
#[doc(alias = "virtq_avail")]
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VirtqAvail {
    /// `VIRTQ_AVAIL_F_*`.
    pub flags: Le16,
    /// Where the driver will put the next entry (mod 2¹⁶).
    pub idx: Le16,
}

/// One used ring entry (§2.7.8).
#[doc(alias = "virtq_used_elem")]
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VirtqUsedElem {
    /// Head descriptor index of the returned chain (u32 for padding).
    pub id: Le32,
    /// Bytes written into the chain's writable buffers.
    pub len: Le32,
}

/// Header of the used ring (§2.7.8); followed by `ring[size]` of
/// [`VirtqUsedElem`] and, with `EVENT_IDX`, `avail_event`.
#[doc(alias = "virtq_used")]
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VirtqUsed {
    /// `VIRTQ_USED_F_*`.
    pub flags: Le16,
    /// Where the device will put the next entry (mod 2¹⁶).
    pub idx: Le16,
}

/// Byte offsets of the three parts in one allocation, with the alignments
/// of §2.7 (descriptor table 16, available ring 2, used ring 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// Offset of the available ring.
    pub avail: usize,
    /// Offset of the used ring.
    pub used: usize,
    /// Total bytes.
    pub total: usize,
}

impl RingLayout {
    /// Layout for a queue of `size` entries.
    pub const fn new(size: u16) -> Self {
        let n = size as usize;
        let desc = 16 * n;
        let avail_bytes = 4 + 2 * n + 2;
        let used = (desc + avail_bytes).next_multiple_of(4);
        let used_bytes = 4 + 8 * n + 2;
        Self { avail: desc, used, total: used + used_bytes }
    }
}
