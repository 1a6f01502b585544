//! Feature bits shared by every device type (VirtIO 1.2 §6 "Reserved
//! Feature Bits"). Device-specific bits (0..=23, 50..) are left to drivers,
//! which can keep them in the same `u64` via [`Features::from_bits_retain`].

bitflags::bitflags! {
    /// A set of negotiated (or offered) feature bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Features: u64 {
        /// Legacy: notify even when the available ring is empty.
        #[doc(alias = "VIRTIO_F_NOTIFY_ON_EMPTY")]
        const NOTIFY_ON_EMPTY = 1 << 24;
        /// Legacy: the device accepts any descriptor layout.
        #[doc(alias = "VIRTIO_F_ANY_LAYOUT")]
        const ANY_LAYOUT = 1 << 27;
        /// Indirect descriptor tables (§2.7.5.3).
        #[doc(alias = "VIRTIO_F_INDIRECT_DESC")]
        #[doc(alias = "VIRTIO_RING_F_INDIRECT_DESC")]
        const INDIRECT_DESC = 1 << 28;
        /// `used_event` / `avail_event` notification suppression (§2.7.7, §2.7.10).
        #[doc(alias = "VIRTIO_F_EVENT_IDX")]
        #[doc(alias = "VIRTIO_RING_F_EVENT_IDX")]
        const EVENT_IDX = 1 << 29;
        /// Compliance with VirtIO 1.0 or later (modern layout, little endian).
        #[doc(alias = "VIRTIO_F_VERSION_1")]
        const VERSION_1 = 1 << 32;
        /// The device sits behind an IOMMU / uses platform DMA translation.
        #[doc(alias = "VIRTIO_F_ACCESS_PLATFORM")]
        const ACCESS_PLATFORM = 1 << 33;
        /// Packed virtqueue layout (§2.8).
        #[doc(alias = "VIRTIO_F_RING_PACKED")]
        const RING_PACKED = 1 << 34;
        /// The device uses buffers in the order they were made available.
        #[doc(alias = "VIRTIO_F_IN_ORDER")]
        const IN_ORDER = 1 << 35;
        /// Platform memory ordering is required (real hardware devices).
        #[doc(alias = "VIRTIO_F_ORDER_PLATFORM")]
        const ORDER_PLATFORM = 1 << 36;
        /// Single root I/O virtualization.
        #[doc(alias = "VIRTIO_F_SR_IOV")]
        const SR_IOV = 1 << 37;
        /// Extra data in available buffer notifications.
        #[doc(alias = "VIRTIO_F_NOTIFICATION_DATA")]
        const NOTIFICATION_DATA = 1 << 38;
        /// Device-provided notification config data.
        #[doc(alias = "VIRTIO_F_NOTIF_CONFIG_DATA")]
        const NOTIF_CONFIG_DATA = 1 << 39;
        /// Individual virtqueue reset.
        #[doc(alias = "VIRTIO_F_RING_RESET")]
        const RING_RESET = 1 << 40;
    }
}

impl Features {
    /// The ring and transport features this crate implements: it accepts
    /// them when offered and wanted. `RING_RESET` additionally needs a
    /// transport with a queue-reset register
    /// ([`crate::Transport::has_queue_reset`]).
    pub const SUPPORTED_BY_RING: Features = Features::INDIRECT_DESC
        .union(Features::EVENT_IDX)
        .union(Features::VERSION_1)
        .union(Features::RING_RESET);

    /// Bits whose meaning depends on the device type (VirtIO 1.2 §6: 0 to
    /// 23 and 50 to 127); the ring never interprets them, so they pass
    /// negotiation untouched. Every other bit is a ring/transport extension
    /// (24 to 41) or reserved (42 to 49), and is accepted only if it is in
    /// [`Features::SUPPORTED_BY_RING`].
    pub const DEVICE_SPECIFIC: Features = Features::from_bits_retain((1 << 24) - 1)
        .union(Features::from_bits_retain(!((1 << 50) - 1)));

    /// The bits of `self` the crate cannot honour: ring or transport
    /// features it does not implement (`RING_PACKED`, `IN_ORDER`,
    /// `NOTIFICATION_DATA`, ...) and reserved bits.
    pub const fn unsupported(self) -> Features {
        self.difference(Features::SUPPORTED_BY_RING.union(Features::DEVICE_SPECIFIC))
    }
}

#[cfg(test)]
mod tests {
    use super::Features;

    #[test]
    fn only_implemented_ring_bits_are_supported() {
        for bit in 24..50 {
            let f = Features::from_bits_retain(1 << bit);
            let implemented = [28, 29, 32, 40].contains(&bit);
            assert_eq!(f.unsupported().is_empty(), implemented, "bit {bit}");
        }
        assert!(Features::from_bits_retain(1 << 23 | 1 << 50 | 1 << 63).unsupported().is_empty());
        assert_eq!(
            (Features::RING_PACKED | Features::EVENT_IDX).unsupported(),
            Features::RING_PACKED
        );
    }
}
