//! Linux input key codes (as virtio-input reports them, §5.8.6) to the
//! bytes a VT100 terminal sends for them, US layout.

/// One `struct virtio_input_event`: the crate's (§5.8.6).
pub use vireo_virtio::device::input::Event as KeyEvent;
/// `EV_KEY` (include/uapi/linux/input-event-codes.h, which §5.8 defers to).
use vireo_virtio::device::input::kind::KEY as EV_KEY;

/// Codes 2..=53 of the main block: (plain, shifted); 0 for keys without a
/// character.
const MAIN: [(u8, u8); 52] = [
    (b'1', b'!'),
    (b'2', b'@'),
    (b'3', b'#'),
    (b'4', b'$'),
    (b'5', b'%'),
    (b'6', b'^'),
    (b'7', b'&'),
    (b'8', b'*'),
    (b'9', b'('),
    (b'0', b')'),
    (b'-', b'_'),
    (b'=', b'+'),
    (0x7f, 0x7f),
    (b'\t', b'\t'),
    (b'q', b'Q'),
    (b'w', b'W'),
    (b'e', b'E'),
    (b'r', b'R'),
    (b't', b'T'),
    (b'y', b'Y'),
    (b'u', b'U'),
    (b'i', b'I'),
    (b'o', b'O'),
    (b'p', b'P'),
    (b'[', b'{'),
    (b']', b'}'),
    (b'\r', b'\r'),
    (0, 0),
    (b'a', b'A'),
    (b's', b'S'),
    (b'd', b'D'),
    (b'f', b'F'),
    (b'g', b'G'),
    (b'h', b'H'),
    (b'j', b'J'),
    (b'k', b'K'),
    (b'l', b'L'),
    (b';', b':'),
    (b'\'', b'"'),
    (b'`', b'~'),
    (0, 0),
    (b'\\', b'|'),
    (b'z', b'Z'),
    (b'x', b'X'),
    (b'c', b'C'),
    (b'v', b'V'),
    (b'b', b'B'),
    (b'n', b'N'),
    (b'm', b'M'),
    (b',', b'<'),
    (b'.', b'>'),
    (b'/', b'?'),
];

const KEY_ESC: u16 = 1;
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_RIGHTSHIFT: u16 = 54;
const KEY_SPACE: u16 = 57;
const KEY_CAPSLOCK: u16 = 58;
const KEY_RIGHTCTRL: u16 = 97;
const KEY_HOME: u16 = 102;
const KEY_UP: u16 = 103;
const KEY_LEFT: u16 = 105;
const KEY_RIGHT: u16 = 106;
const KEY_END: u16 = 107;
const KEY_DOWN: u16 = 108;
const KEY_DELETE: u16 = 111;

/// Modifier state across events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Keymap {
    shift: u8,
    ctrl: u8,
    caps_lock: bool,
}

impl Keymap {
    /// Writes the bytes `event` types into `out` and returns how many (0
    /// for releases, modifiers and keys without a character).
    pub fn translate(&mut self, event: KeyEvent, out: &mut [u8; 8]) -> usize {
        if event.kind != EV_KEY {
            return 0;
        }
        let pressed = event.value != 0;
        let held = |count: &mut u8| {
            *count = if pressed { count.saturating_add(1).min(2) } else { count.saturating_sub(1) };
        };
        match event.code {
            KEY_LEFTSHIFT | KEY_RIGHTSHIFT => {
                // A repeat of a held modifier changes nothing.
                if event.value != 2 {
                    held(&mut self.shift);
                }
                return 0;
            }
            KEY_LEFTCTRL | KEY_RIGHTCTRL => {
                if event.value != 2 {
                    held(&mut self.ctrl);
                }
                return 0;
            }
            KEY_CAPSLOCK => {
                if event.value == 1 {
                    self.caps_lock = !self.caps_lock;
                }
                return 0;
            }
            _ => {}
        }
        if !pressed {
            return 0;
        }
        let sequence: &[u8] = match event.code {
            KEY_ESC => b"\x1b",
            KEY_SPACE => b" ",
            KEY_UP => b"\x1b[A",
            KEY_DOWN => b"\x1b[B",
            KEY_RIGHT if self.ctrl > 0 => b"\x1b[1;5C",
            KEY_LEFT if self.ctrl > 0 => b"\x1b[1;5D",
            KEY_RIGHT => b"\x1b[C",
            KEY_LEFT => b"\x1b[D",
            KEY_HOME => b"\x1b[H",
            KEY_END => b"\x1b[F",
            KEY_DELETE => b"\x1b[3~",
            code @ 2..=53 => {
                let (plain, shifted) = MAIN[usize::from(code - 2)];
                let letter = plain.is_ascii_lowercase();
                let upper = (self.shift > 0) ^ (letter && self.caps_lock);
                let byte = if upper { shifted } else { plain };
                out[0] = match byte {
                    0 => return 0,
                    // Ctrl+letter: the C0 control code (Ctrl-A is 1).
                    b'a'..=b'z' | b'A'..=b'Z' if self.ctrl > 0 => {
                        byte.to_ascii_lowercase() - b'a' + 1
                    }
                    _ => byte,
                };
                return 1;
            }
            _ => return 0,
        };
        out[..sequence.len()].copy_from_slice(sequence);
        sequence.len()
    }
}
