//! The console on the framebuffer: every byte the console prints (log
//! records, shell output, the line editor's edits) also goes into a text
//! screen model, and a kernel thread draws what changed into the virtio-gpu
//! framebuffer and presents just that.
//!
//! Printing stays cheap and never touches the device: [`feed`] runs under
//! the console lock with interrupts off and only updates cells. The
//! `fbcon` thread wakes every few milliseconds, takes the frame (the
//! damage) under the screen lock, renders it outside the lock and presents
//! it with frames in flight, so a burst of log lines costs one scroll and
//! one transfer, not one per line.
//!
//! Something else may borrow the framebuffer ([`borrow_framebuffer`]: the
//! shell's `demo`); the console then keeps collecting text and redraws
//! everything once it gets the framebuffer back.

use crate::drivers::virtio::gpu::{self, Framebuffer, GpuDeviceError};
use crate::sync::{IrqSpinLock, SpinLock};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vireo_text_console::{GLYPH_HEIGHT, GLYPH_WIDTH, Pixels, Screen, render};

/// The text model, fed under the console lock.
static SCREEN: IrqSpinLock<Option<Screen>> = IrqSpinLock::new(None);
/// The framebuffer, while the console owns it.
static FRAMEBUFFER: SpinLock<Option<Framebuffer>> = SpinLock::new(None);
/// Text arrived since the last frame.
static DIRTY: AtomicBool = AtomicBool::new(false);
/// A display change not yet followed (it came while the framebuffer was
/// lent out).
static MODE_CHANGED: AtomicBool = AtomicBool::new(false);
/// Frames the console presented.
static FRAMES: AtomicU64 = AtomicU64::new(0);
/// How often the console looks for new text.
const PERIOD_US: u64 = 8_000;

/// Feeds console output into the screen model (nothing before `start`).
pub(super) fn feed(bytes: &[u8]) {
    if let Some(screen) = SCREEN.lock().as_mut() {
        screen.write(bytes);
        DIRTY.store(true, Ordering::Release);
    }
}

/// Whether the console is on screen.
pub fn is_running() -> bool {
    SCREEN.lock().is_some()
}

/// Frames presented so far.
pub fn frames() -> u64 {
    FRAMES.load(Ordering::Relaxed)
}

/// Starts the console on the first virtio-gpu: a framebuffer at the
/// scanout's mode, the log so far replayed into it, and the drawing thread.
///
/// # Errors
/// Why there is no console (no device, no memory, a device error).
pub fn start() -> Result<(), GpuDeviceError> {
    let device = gpu::device().ok_or(GpuDeviceError::ScanoutDisabled)?;
    let framebuffer = Framebuffer::new(device)?;
    let mut screen = screen_for(&framebuffer);
    super::for_each_record(log::LevelFilter::Trace, |line| screen.write(line));
    *FRAMEBUFFER.lock() = Some(framebuffer);
    // Installed under the console lock, so no byte is fed half-way.
    super::with_console(|_| *SCREEN.lock() = Some(screen));
    DIRTY.store(true, Ordering::Release);
    // Detached: it runs for the kernel's lifetime.
    crate::sched::spawn("fbcon", crate::sched::Placement::AnyCpu, run)
        .map(drop)
        .map_err(|_| GpuDeviceError::OutOfMemory)?;
    log::info!("console: on the virtio-gpu framebuffer");
    Ok(())
}

/// A screen of as many cells as the framebuffer holds.
fn screen_for(framebuffer: &Framebuffer) -> Screen {
    let full = framebuffer.full();
    Screen::new(full.width as usize / GLYPH_WIDTH, full.height as usize / GLYPH_HEIGHT)
}

fn run() {
    loop {
        crate::sched::timer::sleep_us(PERIOD_US);
        if let Some(device) = gpu::device() {
            if let Ok(Some(_)) = device.take_display_change() {
                MODE_CHANGED.store(true, Ordering::Release);
            }
            // While `demo` has the framebuffer the change waits for it.
            if MODE_CHANGED.load(Ordering::Acquire) && follow_mode_change(device) {
                MODE_CHANGED.store(false, Ordering::Release);
            }
        }
        if DIRTY.swap(false, Ordering::AcqRel) && draw().is_err() {
            // Try again next period; the text is kept.
            DIRTY.store(true, Ordering::Release);
        }
    }
}

/// A new mode: a new framebuffer and a screen of the new size (the text
/// starts afresh, with a line saying why). False, and nothing done, while
/// the framebuffer is lent out ([`borrow_framebuffer`]).
fn follow_mode_change(device: &'static gpu::GpuDevice) -> bool {
    let Some(old) = FRAMEBUFFER.lock().take() else { return false };
    drop(old);
    match Framebuffer::new(device) {
        Ok(framebuffer) => {
            let mut screen = screen_for(&framebuffer);
            let full = framebuffer.full();
            let line = alloc::format!("console: mode {}x{}\n", full.width, full.height);
            screen.write(line.as_bytes());
            super::with_console(|_| *SCREEN.lock() = Some(screen));
            *FRAMEBUFFER.lock() = Some(framebuffer);
            DIRTY.store(true, Ordering::Release);
        }
        Err(error) => log::warn!("console: no framebuffer at the new mode: {error:?}"),
    }
    true
}

/// Renders the screen's damage and presents it.
fn draw() -> Result<(), GpuDeviceError> {
    let Some(mut framebuffer) = FRAMEBUFFER.lock().take() else {
        // Borrowed: drawn when it comes back.
        return Ok(());
    };
    let result = draw_into(&mut framebuffer);
    *FRAMEBUFFER.lock() = Some(framebuffer);
    result
}

fn draw_into(framebuffer: &mut Framebuffer) -> Result<(), GpuDeviceError> {
    let frame = x86_64::instructions::interrupts::without_interrupts(|| {
        SCREEN.lock().as_mut().map(Screen::take_frame)
    });
    let Some(frame) = frame.filter(|frame| !frame.is_empty()) else { return Ok(()) };
    let full = framebuffer.full();
    let pixels = framebuffer.back_pixels()?;
    let mut surface =
        Pixels { data: pixels, width: full.width as usize, height: full.height as usize };
    if let Some(damage) = render(&frame, &mut surface) {
        let rect = gpu::protocol::Rect {
            x: damage.x,
            y: damage.y,
            width: damage.width,
            height: damage.height,
        };
        framebuffer.present(rect)?;
        FRAMES.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Takes the framebuffer from the console for `use_it`, then gives it back
/// and has the console redraw all of it. `None` without a console.
pub fn borrow_framebuffer<R>(use_it: impl FnOnce(&mut Framebuffer) -> R) -> Option<R> {
    // The drawing thread holds it only while drawing: wait for it.
    let mut framebuffer = loop {
        if !is_running() {
            return None;
        }
        if let Some(framebuffer) = FRAMEBUFFER.lock().take() {
            break framebuffer;
        }
        crate::sched::timer::sleep_us(1_000);
    };
    let _ = framebuffer.wait_idle();
    let result = use_it(&mut framebuffer);
    let _ = framebuffer.wait_idle();
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(screen) = SCREEN.lock().as_mut() {
            screen.invalidate();
        }
    });
    *FRAMEBUFFER.lock() = Some(framebuffer);
    DIRTY.store(true, Ordering::Release);
    Some(result)
}

mod tests {
    use crate::{check, ktest};

    ktest!(
        fn console_text_reaches_the_screen_model_when_running() {
            if !super::is_running() {
                return crate::ktest::skip("no framebuffer console (shell mode starts it)");
            }
            crate::kprintln!("screen marker 4be1");
            let found = super::SCREEN.lock().as_ref().is_some_and(|screen| {
                (0..screen.rows()).any(|row| screen.row_text(row).contains("screen marker 4be1"))
            });
            check!(found);
            Ok(())
        }
    );
}
