//! [`Edit`]s as the bytes a VT100-compatible terminal (xterm, tmux, the
//! serial console of any terminal emulator) understands: `CSI n D` / `CSI n C`
//! to move, `CSI K` to erase to the end of the line, `CSI H CSI 2 J` to
//! clear the screen.

use crate::editor::{Edit, Screen};

/// Writes the bytes for `edit` to `write`.
pub fn encode(edit: Edit<'_>, write: &mut dyn FnMut(&[u8])) {
    match edit {
        Edit::Text(text) => write(text.as_bytes()),
        // `CSI 0 D` would move one column: a zero move writes nothing.
        Edit::Left(0) | Edit::Right(0) => {}
        Edit::Left(columns) => control_sequence(columns, b'D', write),
        Edit::Right(columns) => control_sequence(columns, b'C', write),
        Edit::ClearToEnd => write(b"\x1b[K"),
        Edit::NewLine => write(b"\r\n"),
        Edit::Bell => write(b"\x07"),
        Edit::ClearScreen => write(b"\x1b[H\x1b[2J"),
    }
}

/// `ESC [ n <final>`, with `n` left out when it is 1 (the default).
fn control_sequence(n: usize, final_byte: u8, write: &mut dyn FnMut(&[u8])) {
    let mut buffer = [0u8; 24];
    buffer[..2].copy_from_slice(b"\x1b[");
    let mut len = 2;
    if n != 1 {
        let mut digits = [0u8; 20];
        let mut count = 0;
        let mut rest = n;
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &digit in digits[..count].iter().rev() {
            buffer[len] = digit;
            len += 1;
        }
    }
    buffer[len] = final_byte;
    write(&buffer[..=len]);
}

/// A [`Screen`] that is a VT100 terminal reached through `W`.
pub struct Terminal<W>(pub W);

impl<W: FnMut(&[u8])> Screen for Terminal<W> {
    fn apply(&mut self, edit: Edit<'_>) {
        encode(edit, &mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn bytes(edit: Edit<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(edit, &mut |b: &[u8]| out.extend_from_slice(b));
        out
    }

    #[test]
    fn each_edit_has_its_sequence() {
        assert_eq!(bytes(Edit::Text("ab")), b"ab");
        assert_eq!(bytes(Edit::Left(1)), b"\x1b[D");
        assert_eq!(bytes(Edit::Left(12)), b"\x1b[12D");
        assert_eq!(bytes(Edit::Left(0)), b"");
        assert_eq!(bytes(Edit::Right(3)), b"\x1b[3C");
        assert_eq!(
            bytes(Edit::Right(usize::MAX)),
            alloc::format!("\x1b[{}C", usize::MAX).as_bytes()
        );
        assert_eq!(bytes(Edit::ClearToEnd), b"\x1b[K");
        assert_eq!(bytes(Edit::NewLine), b"\r\n");
        assert_eq!(bytes(Edit::Bell), b"\x07");
        assert_eq!(bytes(Edit::ClearScreen), b"\x1b[H\x1b[2J");
    }
}
