//! The screen model: a grid of cells, a cursor, the VT100 subset that
//! vireo's line editor and log emit, and what changed since the last frame.
//!
//! Understood: printable ASCII, `\n` (new line, as a terminal with `onlcr`
//! shows the kernel's `\n`), `\r`, backspace, tab, and the CSI sequences
//! `A B C D` (moves), `H` (position), `J` (erase display), `K` (erase line)
//! and `m` (colours, bold). Anything else is swallowed without effect:
//! unknown input must never corrupt the grid.

use alloc::vec;
use alloc::vec::Vec;

/// A pixel colour, `0x00RRGGBB` (bytes B, G, R, X in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color(pub u32);

impl Color {
    /// The default foreground: light grey.
    pub const FOREGROUND: Color = Color(0x00c0_c0c0);
    /// The default background: black.
    pub const BACKGROUND: Color = Color(0x0000_0000);
}

/// The eight ANSI colours, then their bright versions (VGA text palette).
const PALETTE: [u32; 16] = [
    0x000000, 0xaa0000, 0x00aa00, 0xaa5500, 0x0000aa, 0xaa00aa, 0x00aaaa, 0xaaaaaa, 0x555555,
    0xff5555, 0x55ff55, 0xffff55, 0x5555ff, 0xff55ff, 0x55ffff, 0xffffff,
];

/// One character cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The byte shown (its glyph).
    pub byte: u8,
    /// Ink.
    pub fg: Color,
    /// Paper.
    pub bg: Color,
}

impl Cell {
    const BLANK: Cell = Cell { byte: b' ', fg: Color::FOREGROUND, bg: Color::BACKGROUND };
}

/// Columns `start..end` of `row` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Row.
    pub row: usize,
    /// First column.
    pub start: usize,
    /// One past the last column.
    pub end: usize,
}

/// What changed since the last frame: rows scrolled off the top, then the
/// spans to draw (with their cells), and where the cursor is now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Grid size.
    pub cols: usize,
    /// Grid size.
    pub rows: usize,
    /// Rows the old picture moved up (at most `rows`).
    pub scroll: usize,
    /// Changed spans and their cells, one row each.
    pub spans: Vec<(Span, Vec<Cell>)>,
    /// The cursor cell, drawn with an underline (`None`: hidden).
    pub cursor: Option<(usize, usize)>,
}

impl Frame {
    /// Whether nothing needs drawing.
    pub fn is_empty(&self) -> bool {
        self.scroll == 0 && self.spans.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    Ground,
    Escape,
    Csi,
    /// Inside a UTF-8 sequence: continuation bytes left to skip.
    Utf8(u8),
}

/// Most CSI parameters kept; further ones are ignored.
const MAX_PARAMS: usize = 4;

/// A grid of cells with a cursor and damage tracking.
pub struct Screen {
    cols: usize,
    rows: usize,
    cells: Vec<Cell>,
    col: usize,
    row: usize,
    fg: Color,
    bg: Color,
    /// Changed columns per row.
    dirty: Vec<Option<(usize, usize)>>,
    scroll: usize,
    /// Where the cursor was drawn in the last frame.
    drawn_cursor: Option<(usize, usize)>,
    parse: Parse,
    params: [u16; MAX_PARAMS],
    param_count: usize,
}

impl Screen {
    /// A blank `cols` x `rows` screen (each at least 1), all of it dirty so
    /// the first frame paints it.
    pub fn new(cols: usize, rows: usize) -> Self {
        let (cols, rows) = (cols.max(1), rows.max(1));
        Self {
            cols,
            rows,
            cells: vec![Cell::BLANK; cols * rows],
            col: 0,
            row: 0,
            fg: Color::FOREGROUND,
            bg: Color::BACKGROUND,
            dirty: vec![Some((0, cols)); rows],
            scroll: 0,
            drawn_cursor: None,
            parse: Parse::Ground,
            params: [0; MAX_PARAMS],
            param_count: 0,
        }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The cursor (column, row).
    pub fn cursor(&self) -> (usize, usize) {
        (self.col, self.row)
    }

    /// The cell at (`col`, `row`).
    pub fn cell(&self, col: usize, row: usize) -> Option<Cell> {
        (col < self.cols && row < self.rows).then(|| self.cells[row * self.cols + col])
    }

    /// Row `row` as text, trailing blanks cut.
    pub fn row_text(&self, row: usize) -> alloc::string::String {
        let cells = &self.cells[row * self.cols..(row + 1) * self.cols];
        let text: alloc::string::String = cells.iter().map(|cell| cell.byte as char).collect();
        alloc::string::String::from(text.trim_end())
    }

    /// Feeds terminal output.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.feed(byte);
        }
    }

    fn feed(&mut self, byte: u8) {
        match self.parse {
            Parse::Ground => self.ground(byte),
            Parse::Escape => {
                self.parse = if byte == b'[' { Parse::Csi } else { Parse::Ground };
                self.params = [0; MAX_PARAMS];
                self.param_count = 0;
            }
            Parse::Csi => self.csi(byte),
            Parse::Utf8(left) => {
                if byte & 0xc0 == 0x80 {
                    self.parse = if left > 1 { Parse::Utf8(left - 1) } else { Parse::Ground };
                } else {
                    self.parse = Parse::Ground;
                    self.ground(byte);
                }
            }
        }
    }

    fn ground(&mut self, byte: u8) {
        match byte {
            0x1b => self.parse = Parse::Escape,
            b'\n' => self.new_line(),
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => {
                let next = (self.col / 8 + 1) * 8;
                self.col = next.min(self.cols - 1);
            }
            b' '..=b'~' => self.put(byte),
            // A UTF-8 lead byte: one replacement glyph for the character.
            0xc0..=0xf7 => {
                self.put(0x7f);
                let continuation = if byte >= 0xf0 {
                    3
                } else if byte >= 0xe0 {
                    2
                } else {
                    1
                };
                self.parse = Parse::Utf8(continuation);
            }
            0x80..=0xff => self.put(0x7f),
            _ => {}
        }
    }

    fn csi(&mut self, byte: u8) {
        match byte {
            b'0'..=b'9' => {
                let count = self.param_count.max(1);
                if count <= MAX_PARAMS {
                    let param = &mut self.params[count - 1];
                    *param = param.saturating_mul(10).saturating_add(u16::from(byte - b'0'));
                }
                self.param_count = count;
            }
            b';' => self.param_count = self.param_count.max(1) + 1,
            // Private-mode marks (`CSI ? 25 l`) and intermediates: kept
            // parsing, ignored.
            b'?' | b' '..=b'/' => {}
            0x40..=0x7e => {
                self.parse = Parse::Ground;
                self.run_csi(byte);
            }
            // A control byte inside a sequence ends it (as terminals do).
            _ => {
                self.parse = Parse::Ground;
                self.ground(byte);
            }
        }
    }

    /// Parameter `index`, or `default` when absent or 0.
    fn param(&self, index: usize, default: usize) -> usize {
        match self.params.get(index) {
            Some(&value) if index < self.param_count && value != 0 => usize::from(value),
            _ => default,
        }
    }

    fn run_csi(&mut self, command: u8) {
        let n = self.param(0, 1);
        match command {
            b'A' => self.row = self.row.saturating_sub(n),
            b'B' => self.row = (self.row + n).min(self.rows - 1),
            b'C' => self.col = (self.col + n).min(self.cols - 1),
            b'D' => self.col = self.col.saturating_sub(n),
            b'H' | b'f' => {
                self.row = (self.param(0, 1) - 1).min(self.rows - 1);
                self.col = (self.param(1, 1) - 1).min(self.cols - 1);
            }
            b'J' => match self.param(0, 0) {
                0 => {
                    self.erase(self.row, self.col, self.cols);
                    for row in self.row + 1..self.rows {
                        self.erase(row, 0, self.cols);
                    }
                }
                1 => {
                    for row in 0..self.row {
                        self.erase(row, 0, self.cols);
                    }
                    self.erase(self.row, 0, self.col + 1);
                }
                _ => {
                    for row in 0..self.rows {
                        self.erase(row, 0, self.cols);
                    }
                }
            },
            b'K' => match self.param(0, 0) {
                0 => self.erase(self.row, self.col, self.cols),
                1 => self.erase(self.row, 0, self.col + 1),
                _ => self.erase(self.row, 0, self.cols),
            },
            b'm' => self.select_graphic_rendition(),
            _ => {}
        }
    }

    fn select_graphic_rendition(&mut self) {
        for index in 0..self.param_count.clamp(1, MAX_PARAMS) {
            match self.params[index] {
                0 => (self.fg, self.bg) = (Color::FOREGROUND, Color::BACKGROUND),
                1 => {
                    if let Some(bright) = PALETTE[..8].iter().position(|&c| c == self.fg.0) {
                        self.fg = Color(PALETTE[bright + 8]);
                    }
                }
                code @ 30..=37 => self.fg = Color(PALETTE[usize::from(code - 30)]),
                39 => self.fg = Color::FOREGROUND,
                code @ 40..=47 => self.bg = Color(PALETTE[usize::from(code - 40)]),
                49 => self.bg = Color::BACKGROUND,
                code @ 90..=97 => self.fg = Color(PALETTE[usize::from(code - 90) + 8]),
                code @ 100..=107 => self.bg = Color(PALETTE[usize::from(code - 100) + 8]),
                _ => {}
            }
        }
    }

    fn erase(&mut self, row: usize, start: usize, end: usize) {
        let end = end.min(self.cols);
        if start >= end {
            return;
        }
        let blank = Cell { byte: b' ', fg: self.fg, bg: self.bg };
        self.cells[row * self.cols + start..row * self.cols + end].fill(blank);
        self.mark(row, start, end);
    }

    fn put(&mut self, byte: u8) {
        if self.col >= self.cols {
            self.new_line();
        }
        let index = self.row * self.cols + self.col;
        self.cells[index] = Cell { byte, fg: self.fg, bg: self.bg };
        self.mark(self.row, self.col, self.col + 1);
        self.col += 1;
    }

    fn mark(&mut self, row: usize, start: usize, end: usize) {
        let span = &mut self.dirty[row];
        *span = Some(match *span {
            Some((old_start, old_end)) => (old_start.min(start), old_end.max(end)),
            None => (start, end),
        });
    }

    fn new_line(&mut self) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        // Scroll: the grid moves up one row, the new bottom row is blank.
        self.cells.copy_within(self.cols.., 0);
        let bottom = (self.rows - 1) * self.cols;
        self.cells[bottom..].fill(Cell::BLANK);
        self.dirty.remove(0);
        self.dirty.push(Some((0, self.cols)));
        self.scroll = (self.scroll + 1).min(self.rows);
        self.drawn_cursor =
            self.drawn_cursor.and_then(|(col, row)| Some((col, row.checked_sub(1)?)));
    }

    /// Hands over everything that changed since the last call.
    pub fn take_frame(&mut self) -> Frame {
        let cursor = (self.col.min(self.cols - 1), self.row);
        if self.drawn_cursor != Some(cursor) {
            if let Some((col, row)) = self.drawn_cursor {
                self.mark(row, col, col + 1);
            }
            self.mark(cursor.1, cursor.0, cursor.0 + 1);
            self.drawn_cursor = Some(cursor);
        }
        let mut spans = Vec::new();
        for row in 0..self.rows {
            if let Some((start, end)) = self.dirty[row].take() {
                let cells = self.cells[row * self.cols + start..row * self.cols + end].to_vec();
                spans.push((Span { row, start, end }, cells));
            }
        }
        let scroll = core::mem::take(&mut self.scroll);
        Frame { cols: self.cols, rows: self.rows, scroll, spans, cursor: Some(cursor) }
    }

    /// Marks everything for drawing again (a new framebuffer).
    pub fn invalidate(&mut self) {
        self.dirty.fill(Some((0, self.cols)));
        self.drawn_cursor = None;
    }
}
