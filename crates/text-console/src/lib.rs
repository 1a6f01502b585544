//! A text console for a pixel framebuffer, with no kernel dependency: a
//! built-in 8x16 bitmap font, a screen model that understands the VT100
//! subset vireo's shell and log use, and a renderer that redraws only what
//! changed.
//!
//! The split follows who runs where in the kernel: [`Screen::write`] is
//! cheap (cells and damage bookkeeping only) and is called by whoever
//! prints, with its lock held; [`Screen::take_frame`] hands the damage to
//! the thread that owns the framebuffer, which calls [`render`] on pixels
//! that show the previous frame and presents the rectangle it returns.
//!
//! Scrolling is by damage, not by a full redraw: the rows already drawn
//! are moved up in pixel memory (one `copy_within`), and only the rows
//! that scrolled in and the cells that changed are drawn glyph by glyph.

#![no_std]

extern crate alloc;

mod font;
mod render;
mod screen;

pub use font::{GLYPH_HEIGHT, GLYPH_WIDTH, glyph};
pub use render::{Pixels, Rect, render};
pub use screen::{Cell, Color, Frame, Screen, Span};
