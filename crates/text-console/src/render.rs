//! Drawing a [`Frame`] into pixels that show the previous frame.

use crate::font::{GLYPH_HEIGHT, GLYPH_WIDTH, glyph};
use crate::screen::{Cell, Frame};

/// A pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A surface of `width` x `height` pixels, `width` per row.
pub struct Pixels<'a> {
    /// The pixels, row after row.
    pub data: &'a mut [u32],
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Draws `frame` and returns the rectangle that changed (`None`: nothing).
/// A grid larger than the surface is clipped to whole cells.
pub fn render(frame: &Frame, pixels: &mut Pixels<'_>) -> Option<Rect> {
    let cols = frame.cols.min(pixels.width / GLYPH_WIDTH);
    let rows = frame.rows.min(pixels.height / GLYPH_HEIGHT);
    if cols == 0 || rows == 0 || pixels.data.len() < pixels.width * pixels.height {
        return None;
    }
    let text_height = rows * GLYPH_HEIGHT;
    let mut damage: Option<(usize, usize, usize, usize)> = None;
    let mut grow = |x0: usize, y0: usize, x1: usize, y1: usize| {
        damage = Some(match damage {
            Some((a, b, c, d)) => (a.min(x0), b.min(y0), c.max(x1), d.max(y1)),
            None => (x0, y0, x1, y1),
        });
    };
    if frame.scroll > 0 {
        // Move what stays up; the rows that came in are among the spans.
        let shift = frame.scroll.min(rows) * GLYPH_HEIGHT * pixels.width;
        let text_pixels = text_height * pixels.width;
        pixels.data.copy_within(shift..text_pixels, 0);
        grow(0, 0, cols * GLYPH_WIDTH, text_height);
    }
    for (span, cells) in &frame.spans {
        if span.row >= rows {
            continue;
        }
        let end = span.end.min(cols);
        for (col, cell) in (span.start..end).zip(cells) {
            let underline = frame.cursor == Some((col, span.row));
            draw_cell(pixels, col, span.row, cell, underline);
        }
        if span.start < end {
            grow(
                span.start * GLYPH_WIDTH,
                span.row * GLYPH_HEIGHT,
                end * GLYPH_WIDTH,
                (span.row + 1) * GLYPH_HEIGHT,
            );
        }
    }
    damage.map(|(x0, y0, x1, y1)| Rect {
        x: x0 as u32,
        y: y0 as u32,
        width: (x1 - x0) as u32,
        height: (y1 - y0) as u32,
    })
}

/// The cursor: the cell's bottom two pixel rows in its ink.
const CURSOR_ROWS: usize = 2;

fn draw_cell(pixels: &mut Pixels<'_>, col: usize, row: usize, cell: &Cell, underline: bool) {
    let rows = glyph(cell.byte);
    for (y, &bits) in rows.iter().enumerate() {
        let start = (row * GLYPH_HEIGHT + y) * pixels.width + col * GLYPH_WIDTH;
        let line = &mut pixels.data[start..start + GLYPH_WIDTH];
        let is_cursor = underline && y >= GLYPH_HEIGHT - CURSOR_ROWS;
        for (x, pixel) in line.iter_mut().enumerate() {
            let ink = is_cursor || bits & (1 << x) != 0;
            *pixel = if ink { cell.fg.0 } else { cell.bg.0 };
        }
    }
}
