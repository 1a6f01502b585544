//! The editor: keys change the line, and every change is reported to the
//! screen as the few [`Edit`]s that make the visible line match it again.

use alloc::string::String;
use alloc::vec::Vec;

use crate::history::History;
use crate::keys::{Decoder, Key};

/// A change to what the screen shows. Columns count bytes: the editor only
/// ever holds printable ASCII.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Write this text at the cursor (overwriting), moving the cursor right.
    Text(&'a str),
    /// Move the cursor this many columns left, within the line.
    Left(usize),
    /// Move the cursor this many columns right, over text already shown.
    Right(usize),
    /// Erase from the cursor to the end of the screen line.
    ClearToEnd,
    /// Finish the screen line: the cursor goes to the start of the next one.
    NewLine,
    /// The key could not do anything (nothing to delete, no completion, ...).
    Bell,
    /// Erase the whole screen; the cursor goes to the top left.
    ClearScreen,
}

/// Where edits go: a terminal ([`crate::vt100::Terminal`]), a framebuffer
/// console, or a test's model of one.
pub trait Screen {
    /// Applies one edit.
    fn apply(&mut self, edit: Edit<'_>);
}

/// Sizes fixed when the editor is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line accepted, in bytes; more is refused on Enter.
    pub line_bytes: usize,
    /// Lines kept for Up/Down.
    pub history_lines: usize,
}

/// What a byte did to the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The line is still being edited.
    Pending,
    /// Enter: this line, now also in the history.
    Line(String),
    /// Enter on a line that grew past the limit; it was discarded. The
    /// caller says so (the editor writes no messages of its own).
    TooLong {
        /// Bytes typed, including the refused ones.
        len_bytes: usize,
        /// [`Limits::line_bytes`].
        limit_bytes: usize,
    },
    /// Ctrl-C: the line was abandoned (the screen shows `^C`).
    Cancelled,
    /// Ctrl-D on an empty line.
    EndOfInput,
}

/// A single-line editor with history and first-word completion.
///
/// Call [`Editor::start`] to show the prompt, then [`Editor::feed`] each
/// input byte; after any outcome other than [`Outcome::Pending`] the line
/// is empty again and the caller calls `start` for the next one.
#[derive(Clone, Debug)]
pub struct Editor {
    prompt: String,
    limits: Limits,
    line: String,
    /// Byte offset of the cursor in `line`.
    cursor: usize,
    /// Bytes typed after the line was full; non-zero refuses the line.
    refused_bytes: usize,
    history: History,
    decoder: Decoder,
}

impl Editor {
    /// An editor showing `prompt` before each line.
    pub fn new(prompt: &str, limits: Limits) -> Self {
        Self {
            prompt: String::from(prompt),
            limits,
            line: String::new(),
            cursor: 0,
            refused_bytes: 0,
            history: History::new(limits.history_lines),
            decoder: Decoder::new(),
        }
    }

    /// Starts a new, empty line and shows the prompt.
    pub fn start(&mut self, screen: &mut dyn Screen) {
        self.reset_line();
        screen.apply(Edit::Text(&self.prompt));
    }

    /// The line as edited so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The cursor's byte offset in [`Editor::line`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Feeds one input byte. `completions` are the words Tab may complete
    /// the first word of the line to (the shell's command names).
    pub fn feed(&mut self, byte: u8, completions: &[&str], screen: &mut dyn Screen) -> Outcome {
        match self.decoder.feed(byte) {
            Some(key) => self.press(key, completions, screen),
            None => Outcome::Pending,
        }
    }

    /// Applies one key, for callers that decode keys themselves (a
    /// keyboard driver has no escape sequences).
    pub fn press(&mut self, key: Key, completions: &[&str], screen: &mut dyn Screen) -> Outcome {
        match key {
            Key::Char(byte) => self.insert(&[byte], screen),
            Key::Enter => return self.enter(screen),
            Key::Backspace if self.cursor > 0 => {
                let at = self.cursor - 1;
                self.delete_range(at, self.cursor, screen);
            }
            Key::Delete if self.cursor < self.line.len() => {
                self.delete_range(self.cursor, self.cursor + 1, screen);
            }
            Key::EndOfInput if self.line.is_empty() => {
                screen.apply(Edit::NewLine);
                self.reset_line();
                return Outcome::EndOfInput;
            }
            Key::EndOfInput if self.cursor < self.line.len() => {
                self.delete_range(self.cursor, self.cursor + 1, screen);
            }
            Key::Left if self.cursor > 0 => self.move_to(self.cursor - 1, screen),
            Key::Right if self.cursor < self.line.len() => self.move_to(self.cursor + 1, screen),
            Key::WordLeft => self.move_to(self.word_start_before(self.cursor), screen),
            Key::WordRight => self.move_to(self.word_end_after(self.cursor), screen),
            Key::Home => self.move_to(0, screen),
            Key::End => self.move_to(self.line.len(), screen),
            Key::KillToStart => self.delete_range(0, self.cursor, screen),
            Key::KillToEnd => self.delete_range(self.cursor, self.line.len(), screen),
            Key::KillWord => {
                self.delete_range(self.word_start_before(self.cursor), self.cursor, screen)
            }
            Key::Up => match self.history.older(&self.line) {
                Some(entry) => {
                    let entry = String::from(entry);
                    self.replace_line(entry, screen);
                }
                None => screen.apply(Edit::Bell),
            },
            Key::Down => match self.history.newer() {
                Some(entry) => {
                    let entry = String::from(entry);
                    self.replace_line(entry, screen);
                }
                None => screen.apply(Edit::Bell),
            },
            Key::Tab => self.complete(completions, screen),
            Key::Cancel => {
                self.move_to(self.line.len(), screen);
                screen.apply(Edit::Text("^C"));
                screen.apply(Edit::NewLine);
                self.reset_line();
                return Outcome::Cancelled;
            }
            Key::Redraw => {
                screen.apply(Edit::ClearScreen);
                self.show_prompt_and_line(screen);
            }
            Key::Backspace | Key::Delete | Key::EndOfInput | Key::Left | Key::Right => {
                screen.apply(Edit::Bell);
            }
        }
        Outcome::Pending
    }

    fn enter(&mut self, screen: &mut dyn Screen) -> Outcome {
        screen.apply(Edit::NewLine);
        let line = core::mem::take(&mut self.line);
        let refused_bytes = self.refused_bytes;
        self.reset_line();
        if refused_bytes > 0 {
            return Outcome::TooLong {
                len_bytes: line.len() + refused_bytes,
                limit_bytes: self.limits.line_bytes,
            };
        }
        self.history.push(&line);
        Outcome::Line(line)
    }

    fn reset_line(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.refused_bytes = 0;
        self.history.stop_browsing();
    }

    /// Inserts printable ASCII at the cursor, or refuses it whole when the
    /// line would grow past the limit (one bell per line, not per byte: a
    /// pasted paragraph must not ring for each character).
    fn insert(&mut self, text: &[u8], screen: &mut dyn Screen) {
        debug_assert!(text.iter().all(|byte| (0x20..=0x7e).contains(byte)));
        let Ok(text) = core::str::from_utf8(text) else { return };
        if self.line.len() + text.len() > self.limits.line_bytes {
            if self.refused_bytes == 0 {
                screen.apply(Edit::Bell);
            }
            self.refused_bytes += text.len();
            return;
        }
        let old_len = self.line.len();
        let at = self.cursor;
        self.line.insert_str(at, text);
        self.cursor += text.len();
        self.redraw_from(at, at, old_len, screen);
    }

    /// Deletes `start..end` and leaves the cursor at `start`.
    fn delete_range(&mut self, start: usize, end: usize, screen: &mut dyn Screen) {
        if start == end {
            screen.apply(Edit::Bell);
            return;
        }
        let old_len = self.line.len();
        let old_cursor = self.cursor;
        self.line.replace_range(start..end, "");
        self.cursor = start;
        if self.line.is_empty() {
            // Starting over also forgives what was refused earlier.
            self.refused_bytes = 0;
        }
        self.redraw_from(start, old_cursor, old_len, screen);
    }

    fn replace_line(&mut self, line: String, screen: &mut dyn Screen) {
        let old_len = self.line.len();
        let old_cursor = self.cursor;
        self.line = line;
        self.cursor = self.line.len();
        self.redraw_from(0, old_cursor, old_len, screen);
    }

    fn move_to(&mut self, target: usize, screen: &mut dyn Screen) {
        move_cursor(self.cursor, target, screen);
        self.cursor = target;
    }

    /// Makes the screen show the line and cursor again, given that it still
    /// shows the first `from` bytes correctly, the rest of the old line
    /// (`old_len` bytes in all) after them, and the cursor at `old_cursor`.
    fn redraw_from(&self, from: usize, old_cursor: usize, old_len: usize, screen: &mut dyn Screen) {
        move_cursor(old_cursor, from, screen);
        if from < self.line.len() {
            screen.apply(Edit::Text(&self.line[from..]));
        }
        if self.line.len() < old_len {
            screen.apply(Edit::ClearToEnd);
        }
        move_cursor(self.line.len().max(from), self.cursor, screen);
    }

    fn show_prompt_and_line(&self, screen: &mut dyn Screen) {
        screen.apply(Edit::Text(&self.prompt));
        if !self.line.is_empty() {
            screen.apply(Edit::Text(&self.line));
        }
        move_cursor(self.line.len(), self.cursor, screen);
    }

    /// Start of the word before `at` (readline's `backward-word`).
    fn word_start_before(&self, at: usize) -> usize {
        let bytes = self.line.as_bytes();
        let mut i = at;
        while i > 0 && bytes[i - 1] == b' ' {
            i -= 1;
        }
        while i > 0 && bytes[i - 1] != b' ' {
            i -= 1;
        }
        i
    }

    /// End of the word after `at` (readline's `forward-word`).
    fn word_end_after(&self, at: usize) -> usize {
        let bytes = self.line.as_bytes();
        let mut i = at;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        while i < bytes.len() && bytes[i] != b' ' {
            i += 1;
        }
        i
    }

    /// Tab: completes the first word, at its end, from `completions`: one
    /// match is completed with a space after it, several are completed as far
    /// as they agree, and when they agree no further they are listed.
    fn complete(&mut self, completions: &[&str], screen: &mut dyn Screen) {
        let prefix = &self.line[..self.cursor];
        let at_end_of_first_word = !prefix.contains(' ')
            && self.line[self.cursor..].chars().next().is_none_or(|c| c == ' ');
        let matches: Vec<&str> = if at_end_of_first_word {
            completions.iter().copied().filter(|word| word.starts_with(prefix)).collect()
        } else {
            Vec::new()
        };
        let Some(common) = matches.iter().copied().reduce(common_prefix) else {
            screen.apply(Edit::Bell);
            return;
        };
        let mut addition = String::from(&common[prefix.len()..]);
        if matches.len() == 1 && self.cursor == self.line.len() {
            addition.push(' ');
        }
        if self.line.len() + addition.len() > self.limits.line_bytes {
            screen.apply(Edit::Bell);
            return;
        }
        if !addition.is_empty() {
            self.insert(addition.as_bytes(), screen);
            return;
        }
        if matches.len() == 1 {
            // Already complete, with its argument separator after it.
            self.move_to(self.cursor + 1, screen);
            return;
        }
        screen.apply(Edit::NewLine);
        for (i, word) in matches.iter().enumerate() {
            if i > 0 {
                screen.apply(Edit::Text("  "));
            }
            screen.apply(Edit::Text(word));
        }
        screen.apply(Edit::NewLine);
        self.show_prompt_and_line(screen);
    }
}

fn move_cursor(from: usize, to: usize, screen: &mut dyn Screen) {
    if to < from {
        screen.apply(Edit::Left(from - to));
    } else if to > from {
        screen.apply(Edit::Right(to - from));
    }
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let len = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    &a[..len]
}
