//! A line editor for consoles that only move bytes: the kernel's serial
//! shell today, an on-screen console later.
//!
//! It is a pure state machine with no I/O: feed it the bytes a terminal
//! sends ([`Editor::feed`]) and it calls back with [`Edit`]s (write text,
//! move the cursor, clear to the end of the line, ...) that describe how the
//! visible line must change, plus an [`Outcome`] when a line is finished.
//! [`vt100`] turns edits into the escape sequences a serial terminal
//! understands; a framebuffer console would apply them to its own grid.
//!
//! ```
//! use vireo_line_editor::{Editor, Limits, Outcome, vt100::Terminal};
//!
//! let mut editor = Editor::new("> ", Limits { line_bytes: 64, history_lines: 8 });
//! let mut sent = Vec::new();
//! let mut terminal = Terminal(|bytes: &[u8]| sent.extend_from_slice(bytes));
//! editor.start(&mut terminal);
//! let mut outcome = Outcome::Pending;
//! // "hepl", Left, Backspace, End (Ctrl-E), "p", Enter.
//! for &byte in b"hepl\x1b[D\x7f\x05p\r" {
//!     outcome = editor.feed(byte, &["help", "log"], &mut terminal);
//! }
//! assert_eq!(outcome, Outcome::Line("help".into()));
//! drop(terminal);
//! assert!(sent.starts_with(b"> hepl\x1b[D"));
//! ```
//!
//! Keys (see [`Key`] for the byte sequences): printable ASCII inserts at the
//! cursor; Left/Right, Home/End (also Ctrl-A/Ctrl-E), Ctrl-Left/Right and
//! Alt-B/Alt-F by word; Backspace (0x7f or 0x08) and Delete; Ctrl-U kills
//! to the start, Ctrl-K to the end, Ctrl-W the word before the cursor; Up/Down
//! (Ctrl-P/Ctrl-N) walk the history; Tab completes the first word from a
//! caller-given list; Ctrl-C cancels the line, Ctrl-D on an empty line ends
//! input, Ctrl-L redraws. Escape sequences it does not know are swallowed
//! whole, and a line longer than [`Limits::line_bytes`] is refused on Enter.
//!
//! The editor does not know the screen's width: a line longer than the
//! terminal is wide still edits correctly, but cursor moves across the wrap
//! show in the wrong place (it would need the width to move across lines).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod editor;
mod history;
mod keys;
pub mod vt100;

#[cfg(test)]
mod tests;

pub use editor::{Edit, Editor, Limits, Outcome, Screen};
pub use keys::{Decoder, Key};
