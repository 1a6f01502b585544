//! virtio-input tests: the key map (no device needed) and, when QEMU has a
//! virtio-keyboard-pci, the event queue.

use super::keymap::{KeyEvent, Keymap};
use crate::{check, check_eq, ktest};

fn key(code: u16, value: u32) -> KeyEvent {
    KeyEvent { kind: 1, code, value }
}

/// Presses and releases `codes` in order, collecting what they type.
fn typed(keymap: &mut Keymap, events: &[(u16, u32)]) -> alloc::vec::Vec<u8> {
    let mut all = alloc::vec::Vec::new();
    for &(code, value) in events {
        let mut out = [0u8; 8];
        let len = keymap.translate(key(code, value), &mut out);
        all.extend_from_slice(&out[..len]);
    }
    all
}

ktest!(
    fn events_decode_from_little_endian_bytes() {
        let event = KeyEvent::decode(&[1, 0, 30, 0, 1, 0, 0, 0]);
        check_eq!(event, Some(key(30, 1)));
        check_eq!(KeyEvent::decode(&[1, 0, 30]), None);
        Ok(())
    }
);

ktest!(
    fn letters_digits_and_shift() {
        let mut keymap = Keymap::default();
        // h, i, Shift+1, Enter.
        let bytes = typed(
            &mut keymap,
            &[(35, 1), (35, 0), (23, 1), (23, 0), (42, 1), (2, 1), (2, 0), (42, 0), (28, 1)],
        );
        check_eq!(bytes, b"hi!\r");
        Ok(())
    }
);

ktest!(
    fn both_shifts_must_be_released() {
        let mut keymap = Keymap::default();
        let bytes = typed(&mut keymap, &[(42, 1), (54, 1), (42, 0), (30, 1), (54, 0), (30, 1)]);
        check_eq!(bytes, b"Aa");
        Ok(())
    }
);

ktest!(
    fn caps_lock_changes_letters_only() {
        let mut keymap = Keymap::default();
        let bytes = typed(
            &mut keymap,
            &[(58, 1), (58, 0), (30, 1), (2, 1), (42, 1), (30, 1), (42, 0), (58, 1), (30, 1)],
        );
        check_eq!(bytes, b"A1aa");
        Ok(())
    }
);

ktest!(
    fn ctrl_gives_control_codes_and_word_moves() {
        let mut keymap = Keymap::default();
        // Ctrl+C, Ctrl+A, Ctrl+Left, then Left without Ctrl.
        let bytes = typed(&mut keymap, &[(29, 1), (46, 1), (30, 1), (105, 1), (29, 0), (105, 1)]);
        check_eq!(bytes, b"\x03\x01\x1b[1;5D\x1b[D");
        Ok(())
    }
);

ktest!(
    fn editing_keys_send_vt100_sequences() {
        let mut keymap = Keymap::default();
        let bytes = typed(
            &mut keymap,
            &[(103, 1), (108, 1), (106, 1), (102, 1), (107, 1), (111, 1), (14, 1), (1, 1)],
        );
        check_eq!(bytes, b"\x1b[A\x1b[B\x1b[C\x1b[H\x1b[F\x1b[3~\x7f\x1b");
        Ok(())
    }
);

ktest!(
    fn releases_unknown_keys_and_other_events_type_nothing() {
        let mut keymap = Keymap::default();
        check!(typed(&mut keymap, &[(30, 0), (240, 1), (0, 1), (56, 1)]).is_empty());
        let mut out = [0u8; 8];
        // EV_SYN and EV_REL.
        check_eq!(keymap.translate(KeyEvent { kind: 0, code: 0, value: 0 }, &mut out), 0);
        check_eq!(keymap.translate(KeyEvent { kind: 2, code: 30, value: 1 }, &mut out), 0);
        // A held key repeats (value 2).
        check_eq!(typed(&mut keymap, &[(30, 1), (30, 2), (30, 2)]), b"aaa");
        Ok(())
    }
);

ktest!(
    fn the_event_queue_stays_full_of_buffers() {
        let Some(device) = super::device() else {
            return crate::ktest::skip(
                "no virtio-input device (make run adds virtio-keyboard-pci)",
            );
        };
        // Reading collects and re-posts whatever arrived.
        while device.read_byte().is_some() {}
        check_eq!(usize::from(device.buffers_posted()), super::EVENT_BUFFERS);
        check_eq!(device.stats().short_events, 0);
        Ok(())
    }
);

ktest!(
    fn reading_with_nothing_typed_returns_nothing() {
        let Some(device) = super::device() else {
            return crate::ktest::skip("no virtio-input device");
        };
        while device.read_byte().is_some() {}
        check_eq!(device.read_byte(), None);
        check_eq!(device.stats().dropped_bytes, 0);
        Ok(())
    }
);
