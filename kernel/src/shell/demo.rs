//! `demo`: something moving on the framebuffer with an overlay of what it
//! costs (fps, kicks and fences per frame), and the scenes the runner's
//! pixel checks photograph (xtask/src/pixels): each draws, prints
//! `demo: ready <scene>`, and waits for a key before the console returns.

use crate::drivers::virtio::gpu::protocol::Rect;
use crate::drivers::virtio::gpu::{self, Framebuffer, GpuDeviceError};
use crate::kprintln;
use crate::platform::time;

/// `demo` with no word animates; these are the checks' scenes.
pub const USAGE: &str = "[pattern|damage|flip|mode WxH|cursor]";

/// The test pattern, seeded; the runner computes the same (xtask's
/// `pixels::pattern`). Seeds 1 and 2 differ in green at every pixel.
pub fn pattern(seed: u32, x: u32, y: u32) -> u32 {
    let red = (x.wrapping_mul(7) ^ y.wrapping_mul(13)).wrapping_add(seed.wrapping_mul(0x51)) & 0xff;
    let green = x.wrapping_add(y.wrapping_mul(3)).wrapping_add(seed.wrapping_mul(0x33)) & 0xff;
    let blue = x.wrapping_mul(y).wrapping_add(seed.wrapping_mul(0x17)) & 0xff;
    red << 16 | green << 8 | blue
}

/// The damage scene's rectangle and colour, and what is scribbled over
/// the rest of the back buffer (which must not reach the screen).
pub const DAMAGE_RECT: Rect = Rect { x: 96, y: 64, width: 200, height: 120 };
const DAMAGE_COLOR: u32 = 0x00ff_8000;
const SCRIBBLE: u32 = 0x0012_3456;

pub fn run(words: Option<&str>) {
    let mut words = words.unwrap_or("").split_whitespace();
    let scene = words.next();
    let mode = words.next();
    if words.next().is_some() {
        return usage();
    }
    let result = crate::klog::screen::borrow_framebuffer(|fb| match (scene, mode) {
        (None, None) => animate(fb),
        (Some("pattern"), None) => show_pattern(fb, 1).map(|()| ready("pattern")),
        (Some("damage"), None) => damage(fb),
        (Some("flip"), None) => flip(fb),
        (Some("mode"), Some(mode)) => change_mode(fb, mode),
        (Some("cursor"), None) => cursor(),
        _ => Err(GpuDeviceError::InvalidBatch),
    });
    match result {
        None => kprintln!("demo: no framebuffer console (no virtio-gpu)"),
        Some(Err(GpuDeviceError::InvalidBatch)) => usage(),
        Some(Err(error)) => kprintln!("demo: {error:?}"),
        Some(Ok(())) => {}
    }
}

fn usage() {
    kprintln!("usage: demo {USAGE}");
}

/// Prints the ready line and waits for a key (serial or keyboard).
fn ready(scene: &str) {
    kprintln!("demo: ready {scene} (press a key)");
    wait_for_key();
}

fn wait_for_key() {
    while super::read_byte().is_none() {
        crate::sched::timer::sleep_us(5_000);
    }
}

fn show_pattern(fb: &mut Framebuffer, seed: u32) -> Result<(), GpuDeviceError> {
    let full = fb.full();
    let pixels = fb.back_pixels_for_full_redraw()?;
    for y in 0..full.height {
        let row = &mut pixels[(y * full.width) as usize..((y + 1) * full.width) as usize];
        for (x, pixel) in row.iter_mut().enumerate() {
            *pixel = pattern(seed, x as u32, y);
        }
    }
    fb.present(full)?;
    fb.wait_idle()
}

fn fill(pixels: &mut [u32], width: u32, rect: Rect, color: u32) {
    for row in rect.y..rect.y + rect.height {
        let start = (row * width + rect.x) as usize;
        pixels[start..start + rect.width as usize].fill(color);
    }
}

/// The pattern, then one rectangle presented from a back buffer whose
/// every other pixel was scribbled over: only the damage may be sent.
fn damage(fb: &mut Framebuffer) -> Result<(), GpuDeviceError> {
    show_pattern(fb, 1)?;
    let width = fb.full().width;
    let pixels = fb.back_pixels()?;
    pixels.fill(SCRIBBLE);
    fill(pixels, width, DAMAGE_RECT, DAMAGE_COLOR);
    fb.present(DAMAGE_RECT)?;
    fb.wait_idle()?;
    ready("damage");
    Ok(())
}

/// Full frames of pattern 1 and 2 in turn, frames in flight, for 2 s; the
/// runner photographs meanwhile and must never see a mix.
fn flip(fb: &mut Framebuffer) -> Result<(), GpuDeviceError> {
    let full = fb.full();
    let frames: [alloc::vec::Vec<u32>; 2] = core::array::from_fn(|index| {
        (0..full.width * full.height)
            .map(|i| pattern(index as u32 + 1, i % full.width, i / full.width))
            .collect()
    });
    kprintln!("demo: flipping");
    let end = time::uptime_us() + 2_000_000;
    let mut count = 0u64;
    while time::uptime_us() < end {
        let seed = (count % 2) as usize;
        fb.back_pixels_for_full_redraw()?.copy_from_slice(&frames[seed]);
        fb.present(full)?;
        count += 1;
    }
    fb.wait_idle()?;
    ready(&alloc::format!("flip last={} frames={count}", (count + 1) % 2 + 1));
    Ok(())
}

/// A framebuffer at another mode on the same scanout, pattern 1 on it.
fn change_mode(fb: &mut Framebuffer, mode: &str) -> Result<(), GpuDeviceError> {
    let parsed = mode.split_once('x').and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    let Some((width, height)) = parsed else {
        return Err(GpuDeviceError::InvalidBatch);
    };
    let device = gpu::device().ok_or(GpuDeviceError::ScanoutDisabled)?;
    let mut scanout = fb.scanout();
    scanout.rect = Rect { x: 0, y: 0, width, height };
    let result = Framebuffer::with_mode(device, scanout).and_then(|mut other| {
        show_pattern(&mut other, 1)?;
        ready(&alloc::format!("mode {width}x{height}"));
        Ok(())
    });
    // The other framebuffer took the scanout away (and gave it up when
    // dropped): show the console's again.
    fb.show()?;
    result
}

/// A 64x64 cursor (a ring) at (200, 150) with its hot spot at its centre.
fn cursor() -> Result<(), GpuDeviceError> {
    let device = gpu::device().ok_or(GpuDeviceError::ScanoutDisabled)?;
    let size = gpu::CURSOR_SIZE;
    let image: alloc::vec::Vec<u32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as i32 - 32, (i / size) as i32 - 32);
            let r2 = x * x + y * y;
            if (400..900).contains(&r2) { 0xffff_ff00 } else { 0 }
        })
        .collect();
    device.set_cursor(&image, (200, 150), (32, 32))?;
    ready("cursor at 200,150");
    device.hide_cursor()
}

/// Squares bouncing over the pattern, with fps, kicks/frame and
/// fences/frame drawn in the corner, until a key is pressed.
fn animate(fb: &mut Framebuffer) -> Result<(), GpuDeviceError> {
    let device = gpu::device().ok_or(GpuDeviceError::ScanoutDisabled)?;
    show_pattern(fb, 3)?;
    kprintln!("demo: running (press a key to return to the console)");
    let full = fb.full();
    let mut squares = [(10i32, 40i32, 5i32, 3i32), (300, 200, -4, 6), (700, 500, 7, -5)];
    let mut last = [Rect::default(); 3];
    let (mut frames, started) = (0u64, time::uptime_us());
    let mut window = (started, device.queue_stats(), device.fences_used(), 0u64);
    let mut text = alloc::string::String::from("starting");
    loop {
        if super::read_byte().is_some() {
            break;
        }
        let pixels = fb.back_pixels()?;
        let mut damage = Rect::default();
        for (index, square) in squares.iter_mut().enumerate() {
            let old = last[index];
            for row in old.y..old.y + old.height {
                for col in old.x..old.x + old.width {
                    pixels[(row * full.width + col) as usize] = pattern(3, col, row);
                }
            }
            square.0 += square.2;
            square.1 += square.3;
            if square.0 < 0 || square.0 + 64 > full.width as i32 {
                square.2 = -square.2;
                square.0 = square.0.clamp(0, full.width as i32 - 64);
            }
            if square.1 < 20 || square.1 + 64 > full.height as i32 {
                square.3 = -square.3;
                square.1 = square.1.clamp(20, full.height as i32 - 64);
            }
            let now = Rect { x: square.0 as u32, y: square.1 as u32, width: 64, height: 64 };
            fill(pixels, full.width, now, 0x00ff_ffff ^ (index as u32 * 0x40_4040));
            damage = damage.union(old).union(now);
            last[index] = now;
        }
        let now = time::uptime_us();
        if now - window.0 >= 500_000 {
            let stats = device.queue_stats();
            let count = (frames - window.3).max(1) as f64;
            text = alloc::format!(
                "fps {:.0}  kicks/frame {:.2}  fences/frame {:.2}",
                count * 1e6 / (now - window.0) as f64,
                (stats.kicks - window.1.kicks) as f64 / count,
                (device.fences_used() - window.2) as f64 / count,
            );
            window = (now, stats, device.fences_used(), frames);
        }
        let overlay = overlay(pixels, full.width, &text);
        fb.present(damage.union(overlay))?;
        frames += 1;
    }
    fb.wait_idle()?;
    kprintln!("demo: {} frames in {} ms", frames, (time::uptime_us() - started) / 1000);
    Ok(())
}

/// Draws `text` white on black at the top left; returns its rectangle.
fn overlay(pixels: &mut [u32], width: u32, text: &str) -> Rect {
    use vireo_text_console::{GLYPH_HEIGHT, GLYPH_WIDTH, glyph};
    let cols = 60.min(width as usize / GLYPH_WIDTH);
    for col in 0..cols {
        let byte = text.as_bytes().get(col).copied().unwrap_or(b' ');
        for (y, bits) in glyph(byte).iter().enumerate() {
            let start = y * width as usize + col * GLYPH_WIDTH;
            for (x, pixel) in pixels[start..start + GLYPH_WIDTH].iter_mut().enumerate() {
                *pixel = if bits & (1 << x) != 0 { 0x00ff_ffff } else { 0 };
            }
        }
    }
    Rect { x: 0, y: 0, width: (cols * GLYPH_WIDTH) as u32, height: GLYPH_HEIGHT as u32 }
}
