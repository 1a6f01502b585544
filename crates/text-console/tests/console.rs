//! The screen model and renderer on the host.

use vireo_text_console::{
    Color, GLYPH_HEIGHT, GLYPH_WIDTH, Pixels, Rect, Screen, Span, glyph, render,
};

fn settled(cols: usize, rows: usize) -> Screen {
    let mut screen = Screen::new(cols, rows);
    let _ = screen.take_frame();
    screen
}

#[test]
fn text_lands_in_cells_and_wraps() {
    let mut screen = settled(10, 3);
    screen.write(b"hello world");
    assert_eq!(screen.row_text(0), "hello worl");
    assert_eq!(screen.row_text(1), "d");
    assert_eq!(screen.cursor(), (1, 1));
}

#[test]
fn newline_carriage_return_backspace_and_tab() {
    let mut screen = settled(20, 4);
    screen.write(b"abc\rX\nq\x08Z\tT");
    assert_eq!(screen.row_text(0), "Xbc");
    assert_eq!(screen.row_text(1), "Z       T");
}

#[test]
fn the_line_editors_sequences_edit_the_line() {
    let mut screen = settled(40, 2);
    // What vireo-line-editor sends for: type "hlp", Left twice, "e",
    // then redraw of the rest and clear to end.
    screen.write(b"vireo> hlp\x1b[2De\x1b[Klp\x1b[2D");
    assert_eq!(screen.row_text(0), "vireo> help");
    assert_eq!(screen.cursor(), (9, 0));
    screen.write(b"\x1b[K");
    assert_eq!(screen.row_text(0), "vireo> he");
    screen.write(b"\x1b[H\x1b[2J");
    assert_eq!(screen.row_text(0), "");
    assert_eq!(screen.cursor(), (0, 0));
}

#[test]
fn only_changed_cells_are_in_the_frame() {
    let mut screen = settled(30, 5);
    screen.write(b"\n\nab");
    let frame = screen.take_frame();
    assert_eq!(frame.scroll, 0);
    let spans: Vec<Span> = frame.spans.iter().map(|(span, _)| *span).collect();
    // The cursor moved from (0,0) to (2,2): the old cell, and "ab" plus the
    // new cursor cell on row 2.
    assert_eq!(spans, [Span { row: 0, start: 0, end: 1 }, Span { row: 2, start: 0, end: 3 }]);
    assert!(screen.take_frame().is_empty());
}

#[test]
fn scrolling_moves_rows_and_dirties_only_the_new_one() {
    let mut screen = settled(8, 3);
    screen.write(b"one\ntwo\nthree");
    let _ = screen.take_frame();
    screen.write(b"\nfour");
    assert_eq!(screen.row_text(0), "two");
    assert_eq!(screen.row_text(2), "four");
    let frame = screen.take_frame();
    assert_eq!(frame.scroll, 1);
    let rows: Vec<usize> = frame.spans.iter().map(|(span, _)| span.row).collect();
    assert_eq!(rows, [1, 2], "the old cursor row (moved up) and the new row");
}

#[test]
fn scrolling_more_than_a_screen_is_capped() {
    let mut screen = settled(4, 3);
    for _ in 0..10 {
        screen.write(b"x\n");
    }
    assert_eq!(screen.take_frame().scroll, 3);
}

#[test]
fn colours_and_reset() {
    let mut screen = settled(10, 1);
    screen.write(b"\x1b[31mr\x1b[1;32mg\x1b[0mn\x1b[97;44mw");
    assert_eq!(screen.cell(0, 0).unwrap().fg, Color(0xaa0000));
    assert_eq!(screen.cell(1, 0).unwrap().fg, Color(0x00aa00));
    assert_eq!(screen.cell(2, 0).unwrap().fg, Color::FOREGROUND);
    let white = screen.cell(3, 0).unwrap();
    assert_eq!((white.fg, white.bg), (Color(0xffffff), Color(0x0000aa)));
}

#[test]
fn bad_input_never_leaves_the_grid() {
    let mut screen = settled(5, 2);
    screen.write(b"\x1b[999;999H*\x1b[99999999999A\x1b[0;0;0;0;0;0;0Hq\x1bZ\x1b[?25l");
    screen.write(&[0xff, 0xc3, 0xa9, 0xe2, 0x82, 0xac, b'e', 0x00, 0x07]);
    screen.write(b"\x1b[");
    screen.write(b"5");
    screen.write(b"D!");
    assert!(screen.cursor().0 <= 5 && screen.cursor().1 < 2);
    // A UTF-8 character is one replacement cell.
    let text = screen.row_text(0);
    assert!(text.starts_with('!'), "{text:?}");
}

#[test]
fn zero_size_screens_are_one_cell() {
    let mut screen = Screen::new(0, 0);
    screen.write(b"abc\n\n");
    assert_eq!((screen.cols(), screen.rows()), (1, 1));
}

fn surface(width: usize, height: usize) -> Vec<u32> {
    vec![0x1234_5678; width * height]
}

#[test]
fn the_first_frame_paints_the_whole_grid() {
    let (width, height) = (8 * 10, 16 * 4);
    let mut data = surface(width, height);
    let mut screen = Screen::new(10, 4);
    let frame = screen.take_frame();
    let damage = render(&frame, &mut Pixels { data: &mut data, width, height });
    assert_eq!(damage, Some(Rect { x: 0, y: 0, width: width as u32, height: height as u32 }));
    // Blank everywhere but the cursor underline at (0, 0).
    let cursor_row = (GLYPH_HEIGHT - 1) * width;
    assert_eq!(data[cursor_row], Color::FOREGROUND.0);
    assert!(data[..cursor_row - width].iter().all(|&p| p == Color::BACKGROUND.0));
}

#[test]
fn a_glyph_is_drawn_exactly() {
    let (width, height) = (8 * 4, 16 * 2);
    let mut data = surface(width, height);
    let mut screen = Screen::new(4, 2);
    let _ = render(&screen.take_frame(), &mut Pixels { data: &mut data, width, height });
    screen.write(b" A");
    let damage = render(&screen.take_frame(), &mut Pixels { data: &mut data, width, height });
    // The old cursor cell (0,0) to the new one (2,0).
    assert_eq!(damage, Some(Rect { x: 0, y: 0, width: 24, height: 16 }));
    for (y, bits) in glyph(b'A').iter().enumerate() {
        for x in 0..GLYPH_WIDTH {
            let pixel = data[y * width + GLYPH_WIDTH + x];
            let ink = bits & (1 << x) != 0;
            assert_eq!(pixel == Color::FOREGROUND.0, ink, "({x},{y})");
        }
    }
}

#[test]
fn scrolling_moves_pixels_instead_of_redrawing() {
    let (width, height) = (8 * 4, 16 * 3);
    let mut data = surface(width, height);
    let mut screen = Screen::new(4, 3);
    screen.write(b"a\nb\nc");
    let _ = render(&screen.take_frame(), &mut Pixels { data: &mut data, width, height });
    let row_c: Vec<u32> = data[2 * 16 * width..3 * 16 * width].to_vec();
    screen.write(b"\n");
    let frame = screen.take_frame();
    assert_eq!(frame.scroll, 1);
    // Only the rows with a changed cell are drawn: not row 0 ("b" moved up).
    assert!(frame.spans.iter().all(|(span, _)| span.row != 0));
    let _ = render(&frame, &mut Pixels { data: &mut data, width, height });
    // "c" was moved up a row in pixel memory (its cursor underline erased
    // by the span of row 1).
    let moved = &data[16 * width..2 * 16 * width];
    assert_eq!(moved[..14 * width], row_c[..14 * width]);
}

#[test]
fn a_grid_larger_than_the_surface_is_clipped() {
    let (width, height) = (20, 20);
    let mut data = surface(width, height);
    let mut screen = Screen::new(80, 25);
    screen.write(b"hello");
    let damage = render(&screen.take_frame(), &mut Pixels { data: &mut data, width, height });
    assert_eq!(damage, Some(Rect { x: 0, y: 0, width: 16, height: 16 }));
    let mut tiny = [0u32; 4];
    assert_eq!(
        render(&screen.take_frame(), &mut Pixels { data: &mut tiny, width: 2, height: 2 }),
        None
    );
}
