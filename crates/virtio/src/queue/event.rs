//! The event-index rule shared by both notification directions
//! (VirtIO 1.2 §2.7.7.2 and §2.7.10: `VIRTIO_F_EVENT_IDX`).

/// Whether moving an index from `old` to `new` crossed `event`, i.e. whether
/// the other side asked to be notified when the index passes `event`.
///
/// All arithmetic is modulo 2¹⁶, so it stays right when the 16-bit ring
/// indices wrap: the notification is due iff `event` lies in the half-open
/// window `[old, new)`, computed as `new - event - 1 < new - old`. Used by
/// the driver with `avail_event` (should I kick?) and by the device with
/// `used_event` (should I interrupt?).
#[inline(always)]
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::vring_need_event;

    /// Reference: the event is in `[old, new)` walking forward mod 2^16.
    fn crossed(event: u16, new: u16, old: u16) -> bool {
        let mut i = old;
        while i != new {
            if i == event {
                return true;
            }
            i = i.wrapping_add(1);
        }
        false
    }

    #[test]
    fn basic() {
        assert!(vring_need_event(0, 1, 0));
        assert!(!vring_need_event(1, 1, 0));
        assert!(vring_need_event(4, 10, 2));
        assert!(!vring_need_event(10, 10, 2));
        assert!(!vring_need_event(1, 5, 5), "nothing moved: never notify");
    }

    #[test]
    fn wrap_boundary() {
        // Window straddles 65535 -> 0.
        assert!(vring_need_event(65535, 1, 65534));
        assert!(vring_need_event(0, 1, 65534));
        assert!(!vring_need_event(1, 1, 65534));
        assert!(!vring_need_event(65533, 1, 65534));
        assert!(vring_need_event(65535, 0, 65535));
        assert!(!vring_need_event(0, 0, 65535));
    }

    #[test]
    fn exhaustive_near_wrap() {
        let pts: [u16; 8] = [65530, 65533, 65534, 65535, 0, 1, 2, 5];
        for &old in &pts {
            for d in 0u16..12 {
                let new = old.wrapping_add(d);
                for &event in &pts {
                    assert_eq!(
                        vring_need_event(event, new, old),
                        crossed(event, new, old),
                        "event={event} new={new} old={old}"
                    );
                }
            }
        }
    }
}
