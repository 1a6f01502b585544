//! The pixel checks that need more than a screendump, through QEMU's D-Bus
//! display ([`super::dbus_display`]): `gpu-cursor` (QEMU 7.2's screendump
//! leaves the cursor plane out, so the cursor is read from what a window
//! is told) and `gpu-mode-host` (the host asks for another resolution, as
//! a resized window does, and the console must follow).

use std::time::{Duration, Instant};

use super::dbus_display::{Cursor, Event, Listener};
use super::ppm::Image;
use super::{STEP_TIMEOUT, Session, find_text_row};
use crate::hostile::session::PROMPT;

/// The kernel's cursor scene (kernel/src/shell/demo.rs `cursor`).
const CURSOR_SIZE: i32 = 64;
const CURSOR_AT: (i32, i32) = (200, 150);
const CURSOR_HOT: (i32, i32) = (32, 32);

/// The cursor scene's image: a yellow ring around the hot spot.
fn cursor_ring(x: i32, y: i32) -> u32 {
    let (dx, dy) = (x - 32, y - 32);
    if (400..900).contains(&(dx * dx + dy * dy)) { 0xffff_ff00 } else { 0 }
}

/// How long QEMU may take to pass a guest's cursor command on.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may take to follow a host resolution change.
const MODE_TIMEOUT: Duration = Duration::from_secs(15);
/// The resolution the host asks for.
const HOST_MODE: (usize, usize) = (1024, 768);
/// The guest's own mode meanwhile (`demo mode`).
const GUEST_MODE: (usize, usize) = (800, 600);

/// What the D-Bus display was told during and after the cursor scene.
struct CursorScene {
    cursor: Cursor,
    /// The first MouseSet after the last CursorDefine: (x, y, on).
    position: (i32, i32, i32),
    /// The screendump while the cursor was shown.
    during: Image,
    /// Where the first MouseSet with on = 0 after the scene put it.
    hidden: (i32, i32),
}

fn watch_cursor_scene(session: &mut Session, listener: &Listener) -> Result<CursorScene, String> {
    let from = listener.count();
    let ready = session.scene("cursor")?;
    if ready.contains("demo: ") && ready.contains("Err") {
        return Err(ready);
    }
    // The kernel waits for its UPDATE_CURSOR to come back before saying
    // ready, so QEMU has passed the cursor on by now (or soon will).
    let (cursor, position) = listener.wait_for(from, EVENT_TIMEOUT, "cursor", |events| {
        let define = events.iter().rposition(|e| matches!(e, Event::CursorDefine(_)))?;
        let Event::CursorDefine(cursor) = &events[define] else { return None };
        let position = events[define..].iter().find_map(|e| match e {
            Event::MouseSet { x, y, on } => Some((*x, *y, *on)),
            _ => None,
        })?;
        Some((cursor.clone(), position))
    })?;
    let during = session.screen()?;
    let left = listener.count();
    // The scene hides the cursor with an UPDATE_CURSOR of resource 0:
    // QEMU 7.2's virtio-gpu then defines the cursor again with its last
    // image and hot spot (0,0) and sends MouseSet(0, 0, off)
    // (target/pixels/dbus-cursor.log). Off is what hides it.
    session.leave_scene()?;
    let hidden = listener.wait_for(left, EVENT_TIMEOUT, "MouseSet off", |events| {
        events.iter().find_map(|e| match e {
            Event::MouseSet { x, y, on: 0 } => Some((*x, *y)),
            _ => None,
        })
    })?;
    Ok(CursorScene { cursor, position, during, hidden })
}

pub fn check_cursor(session: &mut Session) -> Result<String, String> {
    let before = session.screen()?;
    let listener = session.display.listen()?;
    let scene = watch_cursor_scene(session, &listener);
    let _ = std::fs::write(session.dir.join("dbus-cursor.log"), listener.log());
    drop(listener);
    let CursorScene { cursor, position, during, hidden } = scene?;
    if (cursor.width, cursor.height) != (CURSOR_SIZE, CURSOR_SIZE) {
        return Err(format!("the cursor is {}x{}, want 64x64", cursor.width, cursor.height));
    }
    if (cursor.hot_x, cursor.hot_y) != CURSOR_HOT {
        return Err(format!("hot spot ({},{}), want {CURSOR_HOT:?}", cursor.hot_x, cursor.hot_y));
    }
    if let Some((count, first)) = cursor_differences(&cursor) {
        return Err(format!("{count} cursor pixels differ from the ring, first {first}"));
    }
    if position != (CURSOR_AT.0, CURSOR_AT.1, 1) {
        return Err(format!(
            "MouseSet {position:?}, want ({}, {}, on=1)",
            CURSOR_AT.0, CURSOR_AT.1
        ));
    }
    // The cursor is a plane of its own: the scanout's pixels under it
    // stay. (Only there: the shell's echo of `demo cursor` may or may not
    // have been drawn before the scene took the framebuffer.)
    if let Some((x, y)) = changed_under_cursor(&before, &during) {
        return Err(format!("the scanout's own pixel ({x},{y}) under the cursor changed"));
    }
    let picture = session.dir.join("cursor.png");
    super::screenshot::write_png(&with_cursor(&during, &cursor, CURSOR_AT), &picture)?;
    Ok(format!(
        " (D-Bus CursorDefine 64x64 ring exact, hot spot (32,32), MouseSet (200,150) on; \
         hidden after the scene: MouseSet {hidden:?} off; {})",
        picture.display()
    ))
}

/// The first pixel of the cursor's rectangle that differs between `a` and
/// `b`.
fn changed_under_cursor(a: &Image, b: &Image) -> Option<(usize, usize)> {
    if (a.width, a.height) != (b.width, b.height) {
        return Some((a.width.min(b.width), a.height.min(b.height)));
    }
    let (left, top) =
        ((CURSOR_AT.0 - CURSOR_HOT.0) as usize, (CURSOR_AT.1 - CURSOR_HOT.1) as usize);
    let rows = top..(top + CURSOR_SIZE as usize).min(a.height);
    rows.flat_map(|y| (left..(left + CURSOR_SIZE as usize).min(a.width)).map(move |x| (x, y)))
        .find(|&(x, y)| a.pixel(x, y) != b.pixel(x, y))
}

/// Cursor pixels unlike the ring: how many and the first.
fn cursor_differences(cursor: &Cursor) -> Option<(usize, String)> {
    let mut differ = (0..CURSOR_SIZE * CURSOR_SIZE).filter_map(|i| {
        let (x, y) = (i % CURSOR_SIZE, i / CURSOR_SIZE);
        let (seen, want) = (cursor.argb[i as usize], cursor_ring(x, y));
        (seen != want).then(|| format!("({x},{y}) is {seen:08x}, want {want:08x}"))
    });
    let first = differ.next()?;
    Some((differ.count() + 1, first))
}

/// `screen` with `cursor` drawn as a window would: its hot spot at `at`,
/// alpha-blended.
fn with_cursor(screen: &Image, cursor: &Cursor, at: (i32, i32)) -> Image {
    let mut image = screen.clone();
    for cy in 0..cursor.height {
        for cx in 0..cursor.width {
            let (x, y) = (at.0 - cursor.hot_x + cx, at.1 - cursor.hot_y + cy);
            if x < 0 || y < 0 || x as usize >= image.width || y as usize >= image.height {
                continue;
            }
            let argb = cursor.argb[(cy * cursor.width + cx) as usize];
            let alpha = argb >> 24;
            let at = (y as usize * image.width + x as usize) * 3;
            for (channel, shift) in [16, 8, 0].into_iter().enumerate() {
                let (top, bottom) = ((argb >> shift) & 0xff, u32::from(image.rgb[at + channel]));
                image.rgb[at + channel] = ((top * alpha + bottom * (255 - alpha)) / 255) as u8;
            }
        }
    }
    image
}

/// Screendumps until one is `size` and shows `text` on a row.
fn wait_for_mode(session: &mut Session, size: (usize, usize), text: &str) -> Result<Image, String> {
    let deadline = Instant::now() + MODE_TIMEOUT;
    loop {
        let image = session.screen()?;
        if (image.width, image.height) == size && find_text_row(&image, text).is_some() {
            return Ok(image);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the screen is {}x{} without {text:?} {} s after SetUIInfo {}x{}",
                image.width,
                image.height,
                MODE_TIMEOUT.as_secs(),
                size.0,
                size.1
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks for `size` as a window would and waits for the console there.
fn host_mode(session: &mut Session, (width, height): (usize, usize)) -> Result<Image, String> {
    session.display.set_ui_info(width as u32, height as u32)?;
    // The console starts afresh at a new mode with this line
    // (kernel/src/klog/screen.rs `follow_mode_change`).
    wait_for_mode(session, (width, height), &format!("console: mode {width}x{height}"))
}

pub fn check_mode_host(session: &mut Session) -> Result<String, String> {
    let before = session.screen()?;
    let original = (before.width, before.height);
    let (width, height) = HOST_MODE;
    if original == HOST_MODE || original == GUEST_MODE {
        return Err(format!("the screen is already {}x{}", original.0, original.1));
    }
    host_mode(session, HOST_MODE)?;
    // A fresh prompt, then a line typed at the new mode.
    session.send_and_wait("\n", PROMPT)?;
    session.send_and_wait("uptime\n", PROMPT)?;
    let line = format!("{PROMPT}uptime");
    let typed = wait_for_mode(session, HOST_MODE, &line)?;
    let row = find_text_row(&typed, &line).unwrap_or_default();
    host_mode(session, original)?;
    // While the guest shows a mode of its own, virtio-gpu only records
    // the host's wish and raises the event: the guest's mode stays until
    // the guest changes it, and the console follows when it is back.
    session.scene(&format!("mode {}x{}", GUEST_MODE.0, GUEST_MODE.1))?;
    let from = session.shell.transcript.len();
    session.display.set_ui_info(width as u32, height as u32)?;
    // The driver logs each display event it takes
    // (drivers/virtio/gpu/display.rs).
    let logged = session.shell.wait_for(from, "display changed", STEP_TIMEOUT);
    super::expect(logged, "display-change log line during the guest's mode")?;
    let guest = session.screen()?;
    session.leave_scene()?;
    if (guest.width, guest.height) != GUEST_MODE {
        return Err(format!(
            "SetUIInfo during the guest's {}x{} changed the screen to {}x{}",
            GUEST_MODE.0, GUEST_MODE.1, guest.width, guest.height
        ));
    }
    super::exact(&guest, |x, y| super::pattern(1, x as u32, y as u32))?;
    wait_for_mode(session, HOST_MODE, &format!("console: mode {width}x{height}"))
        .map_err(|why| format!("after the guest's own mode: {why}"))?;
    host_mode(session, original)?;
    Ok(format!(
        " (D-Bus SetUIInfo {width}x{height}: screendump {width}x{height}, {line:?} on text row \
         {row}; back to {}x{}; asked during the guest's {}x{}: followed after it)",
        original.0, original.1, GUEST_MODE.0, GUEST_MODE.1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_the_kernels_and_differences_are_counted() {
        let argb: Vec<u32> = (0..64 * 64).map(|i| cursor_ring(i % 64, i / 64)).collect();
        assert_eq!(argb.iter().filter(|&&p| p != 0).count(), 1_564);
        assert_eq!(cursor_ring(32, 32), 0, "the centre is clear");
        assert_eq!(cursor_ring(32 + 20, 32), 0xffff_ff00, "r = 20 is on the ring");
        assert_eq!(cursor_ring(32 + 30, 32), 0, "r = 30 is outside");
        let mut cursor = Cursor { width: 64, height: 64, hot_x: 32, hot_y: 32, argb };
        assert_eq!(cursor_differences(&cursor), None);
        cursor.argb[64 + 3] = 1;
        cursor.argb[4095] = 1;
        let (count, first) = cursor_differences(&cursor).unwrap();
        assert_eq!(count, 2);
        assert!(first.starts_with("(3,1) is 00000001"), "{first}");
    }

    #[test]
    fn the_cursor_is_drawn_at_its_hot_spot_with_alpha() {
        let screen = Image { width: 4, height: 3, rgb: vec![0x10; 36] };
        let argb = vec![0xff00_ff00, 0x0000_00ff, 0x80ff_0000, 0xff12_3456];
        let cursor = Cursor { width: 2, height: 2, hot_x: 1, hot_y: 1, argb };
        let image = with_cursor(&screen, &cursor, (3, 2));
        // Top-left of the cursor lands on (2, 1); (3, 1) transparent; the
        // bottom row's half-alpha red blends, its last pixel is opaque.
        assert_eq!(image.pixel(2, 1), 0x00ff00);
        assert_eq!(image.pixel(3, 1), 0x101010);
        assert_eq!(image.pixel(2, 2), 0x870707);
        assert_eq!(image.pixel(3, 2), 0x123456);
        assert_eq!(image.pixel(0, 0), 0x101010);
        let off_screen = with_cursor(&screen, &cursor, (0, 0));
        assert_eq!(off_screen.pixel(0, 0), 0x123456);
        let cursor = Cursor { width: 64, height: 64, hot_x: 0, hot_y: 0, argb: vec![!0; 4096] };
        let big = Image { width: 400, height: 300, rgb: vec![0; 400 * 300 * 3] };
        assert_eq!(changed_under_cursor(&big, &big), None);
        let drawn = with_cursor(&big, &cursor, (168, 118));
        assert_eq!(changed_under_cursor(&big, &drawn), Some((168, 118)));
        let beside = with_cursor(&big, &cursor, (300, 118));
        assert_eq!(changed_under_cursor(&big, &beside), None, "outside the rectangle");
    }
}
