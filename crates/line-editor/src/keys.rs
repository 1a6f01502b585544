//! Bytes from a terminal to keys.
//!
//! Terminals send most editing keys as escape sequences (ECMA-48 control
//! sequences): `ESC [` (CSI) then parameter bytes `0x30..=0x3f`,
//! intermediate bytes `0x20..=0x2f` and one final byte `0x40..=0x7e`; or
//! `ESC O` (SS3) then one final byte, which xterm sends for the cursor keys
//! in application mode. The decoder consumes a whole sequence before it
//! decides, so a sequence it does not know (Insert `ESC [ 2 ~`, F5
//! `ESC [ 1 5 ~`, a mouse report) is swallowed instead of typed into the line.

/// An editing key, decoded from one byte or one escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable ASCII character (`0x20..=0x7e`).
    Char(u8),
    /// `CR` or `LF`; `CR LF` counts once.
    Enter,
    /// `0x7f` (DEL, what most terminals send) or `0x08` (BS, Ctrl-H).
    Backspace,
    /// `ESC [ 3 ~`.
    Delete,
    /// `ESC [ D`, `ESC O D`, Ctrl-B.
    Left,
    /// `ESC [ C`, `ESC O C`, Ctrl-F.
    Right,
    /// `ESC [ 1 ; 5 D` (Ctrl-Left), `ESC b` (Alt-B).
    WordLeft,
    /// `ESC [ 1 ; 5 C` (Ctrl-Right), `ESC f` (Alt-F).
    WordRight,
    /// `ESC [ H`, `ESC O H`, `ESC [ 1 ~`, `ESC [ 7 ~`, Ctrl-A.
    Home,
    /// `ESC [ F`, `ESC O F`, `ESC [ 4 ~`, `ESC [ 8 ~`, Ctrl-E.
    End,
    /// `ESC [ A`, `ESC O A`, Ctrl-P.
    Up,
    /// `ESC [ B`, `ESC O B`, Ctrl-N.
    Down,
    /// `0x09`.
    Tab,
    /// Ctrl-U: delete from the start of the line to the cursor.
    KillToStart,
    /// Ctrl-K: delete from the cursor to the end of the line.
    KillToEnd,
    /// Ctrl-W: delete the word before the cursor.
    KillWord,
    /// Ctrl-C: abandon the line.
    Cancel,
    /// Ctrl-D: end of input on an empty line, else Delete.
    EndOfInput,
    /// Ctrl-L: clear the screen and redraw the line.
    Redraw,
}

/// Longest parameter string kept; longer sequences are still swallowed
/// whole, just never recognised.
const MAX_PARAMETER_BYTES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ground,
    /// After `ESC`.
    Escape,
    /// After `ESC [`, collecting parameters until the final byte.
    ControlSequence,
    /// After `ESC O`: the next byte is final.
    SingleShift,
}

/// Turns bytes into [`Key`]s, one byte at a time.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    parameters: [u8; MAX_PARAMETER_BYTES],
    parameter_len: usize,
    /// A parameter string too long to keep: the sequence will be dropped.
    is_overlong: bool,
    /// The last byte was `CR`, so an `LF` right after it is the same Enter.
    after_cr: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder expecting the start of a key.
    pub const fn new() -> Self {
        Self {
            state: State::Ground,
            parameters: [0; MAX_PARAMETER_BYTES],
            parameter_len: 0,
            is_overlong: false,
            after_cr: false,
        }
    }

    /// Feeds one byte; returns the key it completes, if any. Bytes that are
    /// part of an unfinished or unknown sequence, unsupported control
    /// characters and non-ASCII bytes return `None`.
    pub fn feed(&mut self, byte: u8) -> Option<Key> {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        match self.state {
            State::Ground => self.ground(byte, after_cr),
            State::Escape => match byte {
                b'[' => {
                    self.state = State::ControlSequence;
                    self.parameter_len = 0;
                    self.is_overlong = false;
                    None
                }
                b'O' => {
                    self.state = State::SingleShift;
                    None
                }
                // ESC ESC: the first was a lone Escape key; start over.
                0x1b => None,
                b'b' => self.finish(Some(Key::WordLeft)),
                b'f' => self.finish(Some(Key::WordRight)),
                // Any other Alt-<printable> is swallowed.
                0x20..=0x7e => self.finish(None),
                // A control character cannot be part of the sequence: the
                // escape was a lone Escape key, and the byte counts alone.
                _ => self.abort_and_feed(byte, after_cr),
            },
            State::SingleShift => match byte {
                0x40..=0x7e => self.finish(final_key(byte, &[])),
                _ => self.abort_and_feed(byte, after_cr),
            },
            State::ControlSequence => match byte {
                0x20..=0x3f => {
                    if self.parameter_len < MAX_PARAMETER_BYTES {
                        self.parameters[self.parameter_len] = byte;
                        self.parameter_len += 1;
                    } else {
                        self.is_overlong = true;
                    }
                    None
                }
                0x40..=0x7e => {
                    let key = if self.is_overlong {
                        None
                    } else {
                        final_key(byte, &self.parameters[..self.parameter_len])
                    };
                    self.finish(key)
                }
                _ => self.abort_and_feed(byte, after_cr),
            },
        }
    }

    fn finish(&mut self, key: Option<Key>) -> Option<Key> {
        self.state = State::Ground;
        key
    }

    fn abort_and_feed(&mut self, byte: u8, after_cr: bool) -> Option<Key> {
        self.state = State::Ground;
        self.ground(byte, after_cr)
    }

    fn ground(&mut self, byte: u8, after_cr: bool) -> Option<Key> {
        Some(match byte {
            0x20..=0x7e => Key::Char(byte),
            b'\n' if after_cr => return None,
            b'\r' | b'\n' => Key::Enter,
            0x7f | 0x08 => Key::Backspace,
            b'\t' => Key::Tab,
            0x1b => {
                self.state = State::Escape;
                return None;
            }
            0x01 => Key::Home,
            0x02 => Key::Left,
            0x03 => Key::Cancel,
            0x04 => Key::EndOfInput,
            0x05 => Key::End,
            0x06 => Key::Right,
            0x0b => Key::KillToEnd,
            0x0c => Key::Redraw,
            0x0e => Key::Down,
            0x10 => Key::Up,
            0x15 => Key::KillToStart,
            0x17 => Key::KillWord,
            _ => return None,
        })
    }
}

/// The key a CSI or SS3 sequence with these parameters and final byte
/// stands for (xterm and VT220 encodings), or `None` for keys the editor
/// has no use for.
fn final_key(final_byte: u8, parameters: &[u8]) -> Option<Key> {
    // `1;5` (Ctrl) or `1;3` (Alt) before an arrow's final byte means by word.
    let is_word = matches!(parameters, b"1;5" | b"1;3" | b"5");
    match (final_byte, parameters) {
        (b'A', b"") => Some(Key::Up),
        (b'B', b"") => Some(Key::Down),
        (b'C', b"") => Some(Key::Right),
        (b'D', b"") => Some(Key::Left),
        (b'C', _) if is_word => Some(Key::WordRight),
        (b'D', _) if is_word => Some(Key::WordLeft),
        (b'H', b"") => Some(Key::Home),
        (b'F', b"") => Some(Key::End),
        (b'~', b"1" | b"7") => Some(Key::Home),
        (b'~', b"4" | b"8") => Some(Key::End),
        (b'~', b"3") => Some(Key::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut decoder = Decoder::new();
        bytes.iter().filter_map(|&byte| decoder.feed(byte)).collect()
    }

    #[test]
    fn arrows_in_normal_and_application_mode() {
        assert_eq!(keys(b"\x1b[A\x1b[B\x1b[C\x1b[D"), [Key::Up, Key::Down, Key::Right, Key::Left]);
        assert_eq!(keys(b"\x1bOA\x1bOB\x1bOC\x1bOD"), [Key::Up, Key::Down, Key::Right, Key::Left]);
    }

    #[test]
    fn home_and_end_in_every_common_encoding() {
        for home in [&b"\x1b[H"[..], b"\x1b[1~", b"\x1b[7~", b"\x1bOH", b"\x01"] {
            assert_eq!(keys(home), [Key::Home], "{home:?}");
        }
        for end in [&b"\x1b[F"[..], b"\x1b[4~", b"\x1b[8~", b"\x1bOF", b"\x05"] {
            assert_eq!(keys(end), [Key::End], "{end:?}");
        }
    }

    #[test]
    fn delete_backspace_and_word_moves() {
        assert_eq!(keys(b"\x1b[3~"), [Key::Delete]);
        assert_eq!(keys(b"\x7f\x08"), [Key::Backspace, Key::Backspace]);
        assert_eq!(keys(b"\x1b[1;5D\x1b[1;5C"), [Key::WordLeft, Key::WordRight]);
        assert_eq!(keys(b"\x1bb\x1bf"), [Key::WordLeft, Key::WordRight]);
    }

    #[test]
    fn control_keys() {
        assert_eq!(
            keys(b"\x02\x06\x03\x04\x0b\x0c\x0e\x10\x15\x17\t"),
            [
                Key::Left,
                Key::Right,
                Key::Cancel,
                Key::EndOfInput,
                Key::KillToEnd,
                Key::Redraw,
                Key::Down,
                Key::Up,
                Key::KillToStart,
                Key::KillWord,
                Key::Tab
            ]
        );
    }

    #[test]
    fn enter_counts_once_for_cr_lf() {
        assert_eq!(
            keys(b"a\r\nb\nc\r"),
            [Key::Char(b'a'), Key::Enter, Key::Char(b'b'), Key::Enter, Key::Char(b'c'), Key::Enter]
        );
        assert_eq!(keys(b"\n\n"), [Key::Enter, Key::Enter]);
        assert_eq!(keys(b"\r\r"), [Key::Enter, Key::Enter]);
    }

    #[test]
    fn unknown_sequences_are_swallowed_whole() {
        // Insert, F5, PgUp, Shift-Tab, a mouse-ish report, Alt-x, F1 (SS3 P).
        let text = b"a\x1b[2~b\x1b[15~c\x1b[5~d\x1b[Ze\x1b[<0;12;5Mf\x1bxg\x1bOPh";
        let typed: Vec<u8> = keys(text)
            .into_iter()
            .map(|key| match key {
                Key::Char(c) => c,
                other => panic!("{other:?} leaked out of an unknown sequence"),
            })
            .collect();
        assert_eq!(typed, b"abcdefgh");
    }

    #[test]
    fn overlong_sequence_is_swallowed_not_recognised() {
        assert_eq!(keys(b"\x1b[111111111111111111111A!"), [Key::Char(b'!')]);
    }

    #[test]
    fn control_byte_inside_a_sequence_aborts_it_and_counts() {
        assert_eq!(keys(b"\x1b[1\x03"), [Key::Cancel]);
        assert_eq!(keys(b"\x1b\r"), [Key::Enter]);
        assert_eq!(keys(b"\x1bO\x7f"), [Key::Backspace]);
        // A lone Escape then a real sequence.
        assert_eq!(keys(b"\x1b\x1b[A"), [Key::Up]);
    }

    #[test]
    fn non_ascii_and_unused_controls_are_ignored() {
        assert_eq!(keys("é".as_bytes()), []);
        assert_eq!(keys(b"\x00\x07\x1f"), []);
    }
}
