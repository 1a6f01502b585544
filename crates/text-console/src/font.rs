//! The 8x16 font: the public-domain 8x8 `font8x8` basic-Latin glyphs with
//! each row doubled, built at compile time. Bytes outside printable ASCII
//! draw as a filled box, so a stray byte is visible rather than silent.

use font8x8::legacy::BASIC_LEGACY;

/// Glyph width in pixels.
pub const GLYPH_WIDTH: usize = 8;
/// Glyph height in pixels.
pub const GLYPH_HEIGHT: usize = 16;

/// A box for bytes without a glyph.
const REPLACEMENT: [u8; GLYPH_HEIGHT] = [
    0x00, 0x00, 0x7e, 0x7e, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x7e, 0x7e, 0x00, 0x00,
];

/// Every ASCII glyph, 16 rows of 8 pixels; bit 0 is the leftmost pixel.
static FONT: [[u8; GLYPH_HEIGHT]; 128] = {
    let mut font = [[0u8; GLYPH_HEIGHT]; 128];
    let mut code = 0;
    while code < 128 {
        let mut row = 0;
        while row < GLYPH_HEIGHT {
            font[code][row] = BASIC_LEGACY[code][row / 2];
            row += 1;
        }
        code += 1;
    }
    font
};

/// The rows of `byte`'s glyph (bit 0 leftmost).
pub fn glyph(byte: u8) -> &'static [u8; GLYPH_HEIGHT] {
    match byte {
        b' '..=b'~' => &FONT[byte as usize],
        _ => &REPLACEMENT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_glyphs_have_ink_and_space_has_none() {
        for byte in b'!'..=b'~' {
            assert!(glyph(byte).iter().any(|&row| row != 0), "{}", byte as char);
        }
        assert!(glyph(b' ').iter().all(|&row| row == 0));
        assert_eq!(glyph(0x80), &REPLACEMENT);
        assert_eq!(glyph(b'\t'), &REPLACEMENT);
    }

    #[test]
    fn rows_are_doubled() {
        let a = glyph(b'A');
        for row in (0..GLYPH_HEIGHT).step_by(2) {
            assert_eq!(a[row], a[row + 1]);
        }
        // Distinct letters look distinct.
        assert_ne!(glyph(b'O'), glyph(b'Q'));
    }
}
