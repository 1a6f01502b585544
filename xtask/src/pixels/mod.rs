//! Pixel checks: the runner boots the shell with a QMP monitor, has the
//! kernel draw known scenes (`demo <scene>`, kernel/src/shell/demo.rs) and
//! compares QEMU's `screendump` with what must be on screen, pixel for
//! pixel. Each prints `check gpu-<name> ... ok` or `FAILED: <why>` and
//! counts in `make test`. `make screenshot` is the same boot, one picture.
//!
//! The truth is outside the guest: QEMU's own copy of the scanout, which
//! is what a window or VNC client shows.

mod dbus_checks;
mod dbus_display;
mod dbus_wire;
mod fd_passing;
mod ppm;
mod screenshot;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmds::Ctx;
use crate::hostile::judge::Step;
use crate::hostile::session::{PROMPT, Shell};
use crate::qemu::Serial;
use crate::qmp_control::QmpControl;
use dbus_display::Display;
pub use fd_passing::send_with_fd;
use ppm::Image;

pub use screenshot::screenshot;

/// One check's name and outcome (`Ok` carries a detail).
pub type Checks = Vec<(String, Result<String, String>)>;

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel's test pattern (kernel/src/shell/demo.rs `pattern`).
pub fn pattern(seed: u32, x: u32, y: u32) -> u32 {
    let red = (x.wrapping_mul(7) ^ y.wrapping_mul(13)).wrapping_add(seed.wrapping_mul(0x51)) & 0xff;
    let green = x.wrapping_add(y.wrapping_mul(3)).wrapping_add(seed.wrapping_mul(0x33)) & 0xff;
    let blue = x.wrapping_mul(y).wrapping_add(seed.wrapping_mul(0x17)) & 0xff;
    red << 16 | green << 8 | blue
}

/// The damage scene's rectangle (x, y, width, height) and colour.
const DAMAGE_RECT: (usize, usize, usize, usize) = (96, 64, 200, 120);
const DAMAGE_COLOR: u32 = 0x00ff_8000;

/// A booted shell with its monitor and QEMU's D-Bus display.
pub struct Session {
    shell: Shell,
    monitor: QmpControl,
    display: Display,
    dir: PathBuf,
    shots: u32,
}

impl Session {
    /// Boots the standard machine into the shell, with QMP on a socket in
    /// `dir` and the D-Bus display (peer to peer, handed over by QMP; the
    /// later `-display` replaces the machine's `none`).
    pub fn boot(ctx: &Ctx, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&socket);
        let q = ctx.machine(2, false)?;
        let qmp = format!("unix:{},server=on,wait=off", socket.display());
        let extra = ["-qmp", &qmp, "-display", "dbus,p2p=yes"];
        let cmd = ctx.qemu_cmd(&q, "", Serial::Stdio, &extra);
        let mut shell = Shell::spawn(cmd)?;
        let mut monitor = QmpControl::connect(&socket, Duration::from_secs(20))?;
        let display = Display::connect(&mut monitor)?;
        expect(shell.wait_for(0, PROMPT, BOOT_TIMEOUT), "the shell prompt")?;
        // The console draws every 8 ms: give it time to show the prompt.
        std::thread::sleep(Duration::from_millis(400));
        Ok(Self { shell, monitor, display, dir: dir.to_path_buf(), shots: 0 })
    }

    /// A screendump, parsed.
    pub fn screen(&mut self) -> Result<Image, String> {
        self.shots += 1;
        let path = self.dir.join(format!("shot{}.ppm", self.shots));
        self.monitor.screendump(&path)?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = std::fs::remove_file(&path);
        ppm::parse(&bytes)
    }

    /// Types `line` and waits for `marker` after it.
    fn send_and_wait(&mut self, line: &str, marker: &str) -> Result<String, String> {
        let from = self.shell.transcript.len();
        self.shell.send(line)?;
        expect(self.shell.wait_for(from, marker, STEP_TIMEOUT), marker)
    }

    /// Runs `demo <scene>` up to its ready line.
    fn scene(&mut self, scene: &str) -> Result<String, String> {
        self.send_and_wait(&format!("demo {scene}\n"), "(press a key)")
    }

    /// Presses Enter on the serial port and waits for the prompt.
    fn leave_scene(&mut self) -> Result<(), String> {
        self.send_and_wait("\n", PROMPT).map(drop)?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

fn expect(step: Step, what: &str) -> Result<String, String> {
    match step {
        Step::Answered(text) => Ok(text),
        Step::Hung(after) => Err(format!("no {what:?} within {} s", after.as_secs())),
        Step::Died => Err(format!("QEMU exited before {what:?}")),
        Step::Skipped => Err("skipped".into()),
    }
}

/// Pixels of `image` that differ from `expected(x, y)`: count and first.
fn differences(image: &Image, expected: impl Fn(usize, usize) -> u32) -> (usize, Option<String>) {
    let mut count = 0;
    let mut first = None;
    for y in 0..image.height {
        for x in 0..image.width {
            let (seen, want) = (image.pixel(x, y), expected(x, y));
            if seen != want {
                count += 1;
                first.get_or_insert_with(|| format!("({x},{y}) is {seen:06x}, want {want:06x}"));
            }
        }
    }
    (count, first)
}

fn exact(image: &Image, expected: impl Fn(usize, usize) -> u32) -> Result<String, String> {
    match differences(image, expected) {
        (0, _) => Ok(format!(" ({}x{} pixels exact)", image.width, image.height)),
        (count, first) => {
            Err(format!("{count} pixels differ, first {}", first.unwrap_or_default()))
        }
    }
}

fn check_pattern(session: &mut Session) -> Result<String, String> {
    session.scene("pattern")?;
    let image = session.screen()?;
    session.leave_scene()?;
    exact(&image, |x, y| pattern(1, x as u32, y as u32))
}

fn check_damage(session: &mut Session) -> Result<String, String> {
    session.scene("damage")?;
    let image = session.screen()?;
    session.leave_scene()?;
    let (rx, ry, rw, rh) = DAMAGE_RECT;
    exact(&image, |x, y| {
        let inside = (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y);
        if inside { DAMAGE_COLOR } else { pattern(1, x as u32, y as u32) }
    })
    .map(|detail| format!("{detail}; only the {rw}x{rh} rectangle changed"))
}

/// Which whole frame `image` is, if it is one of the two.
fn whole_frame(image: &Image) -> Option<u32> {
    [1, 2]
        .into_iter()
        .find(|&seed| differences(image, |x, y| pattern(seed, x as u32, y as u32)).0 == 0)
}

fn check_flip(session: &mut Session) -> Result<String, String> {
    let from = session.shell.transcript.len();
    session.shell.send("demo flip\n")?;
    expect(session.shell.wait_for(from, "demo: flipping", STEP_TIMEOUT), "flipping")?;
    let mut seen = [0u32; 2];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session.shell.transcript[from..].contains("ready flip") && Instant::now() < deadline {
        let image = session.screen()?;
        match whole_frame(&image) {
            Some(seed) => seen[seed as usize - 1] += 1,
            // The console's last picture before the first flip is allowed.
            None if seen == [0, 0] => {}
            None => return Err("a screendump mixed two frames (or tore)".into()),
        }
        let _ = session.shell.wait_for(
            session.shell.transcript.len(),
            "\u{0}",
            Duration::from_millis(1),
        );
    }
    let ready = expect(session.shell.wait_for(from, "(press a key)", STEP_TIMEOUT), "ready flip")?;
    let last: u32 = ready
        .split("last=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or("no last= in the ready line")?;
    let image = session.screen()?;
    session.leave_scene()?;
    if whole_frame(&image) != Some(last) {
        return Err(format!("the final screen is not frame {last} whole"));
    }
    if seen.iter().sum::<u32>() < 2 {
        return Err(format!("only {} screendumps during the flips", seen.iter().sum::<u32>()));
    }
    Ok(format!(" ({} + {} whole frames seen while flipping, none mixed)", seen[0], seen[1]))
}

fn check_mode(session: &mut Session) -> Result<String, String> {
    let before = session.screen()?;
    session.scene("mode 800x600")?;
    let image = session.screen()?;
    session.leave_scene()?;
    let after = session.screen()?;
    if (image.width, image.height) != (800, 600) {
        return Err(format!("the screen is {}x{}, want 800x600", image.width, image.height));
    }
    exact(&image, |x, y| pattern(1, x as u32, y as u32))?;
    if (after.width, after.height) != (before.width, before.height) {
        return Err(format!(
            "back at {}x{}, want {}x{}",
            after.width, after.height, before.width, before.height
        ));
    }
    Ok(format!(
        " ({}x{} -> 800x600 exact -> {}x{})",
        before.width, before.height, after.width, after.height
    ))
}

/// Renders `text` as the console does (default colours) and finds a text
/// row of `image` that shows it from column 0.
fn find_text_row(image: &Image, text: &str) -> Option<usize> {
    use vireo_text_console::{GLYPH_HEIGHT, GLYPH_WIDTH, Pixels, Screen, render};
    let cols = text.len() + 1;
    let (width, height) = (cols * GLYPH_WIDTH, GLYPH_HEIGHT);
    let mut pixels = vec![0u32; width * height];
    let mut screen = Screen::new(cols, 1);
    screen.write(text.as_bytes());
    render(&screen.take_frame(), &mut Pixels { data: &mut pixels, width, height });
    // The last cell holds the cursor: compare the text's cells only.
    let text_width = text.len() * GLYPH_WIDTH;
    (0..image.height / GLYPH_HEIGHT).find(|&row| {
        (0..GLYPH_HEIGHT).all(|y| {
            (0..text_width).all(|x| image.pixel(x, row * GLYPH_HEIGHT + y) == pixels[y * width + x])
        })
    })
}

fn check_console(session: &mut Session) -> Result<String, String> {
    session.send_and_wait("uptime\n", PROMPT)?;
    std::thread::sleep(Duration::from_millis(400));
    let image = session.screen()?;
    let line = "vireo> uptime";
    match find_text_row(&image, line) {
        Some(row) => Ok(format!(" (\"{line}\" drawn glyph for glyph on text row {row})")),
        None => Err(format!("no text row shows {line:?} in the console's font")),
    }
}

fn check_keyboard(session: &mut Session) -> Result<String, String> {
    let from = session.shell.transcript.len();
    // A line not typed before (the console check typed `uptime`), so the
    // row found on screen can only be this one.
    session.monitor.type_keys(&["m", "e", "m", "ret"])?;
    let answer =
        expect(session.shell.wait_for(from, PROMPT, STEP_TIMEOUT), "the prompt after typed keys")?;
    if !answer.starts_with("mem") || answer.lines().count() < 2 {
        return Err(format!("the shell did not run the typed line: {answer:?}"));
    }
    std::thread::sleep(Duration::from_millis(400));
    let image = session.screen()?;
    let row = find_text_row(&image, "vireo> mem").ok_or("typed line not on screen")?;
    Ok(format!(" (QMP send-key -> virtio-keyboard -> shell ran `mem`; echoed on text row {row})"))
}

/// One pixel check on a booted session.
type Check = fn(&mut Session) -> Result<String, String>;

/// Every pixel check, one boot; for `make test`.
pub fn make_test_checks(ctx: &Ctx) -> Checks {
    let dir = ctx.target.join("pixels");
    println!("==> pixel checks (QMP screendump; serial log in {}/serial.log)", dir.display());
    let names = [
        "gpu-console",
        "gpu-keyboard",
        "gpu-pattern",
        "gpu-damage",
        "gpu-flip",
        "gpu-mode",
        "gpu-cursor",
        "gpu-mode-host",
    ];
    let mut session = match Session::boot(ctx, &dir) {
        Ok(session) => session,
        Err(why) => {
            return names.iter().map(|name| report(name, Err(format!("boot: {why}")))).collect();
        }
    };
    let checks: [Check; 8] = [
        check_console,
        check_keyboard,
        check_pattern,
        check_damage,
        check_flip,
        check_mode,
        dbus_checks::check_cursor,
        // Last: the console starts afresh at each mode change.
        dbus_checks::check_mode_host,
    ];
    let mut results = Vec::new();
    for (name, check) in names.iter().zip(checks) {
        results.push(report(name, check(&mut session)));
    }
    let _ = std::fs::write(dir.join("serial.log"), &session.shell.transcript);
    results
}

/// `cargo xtask screenshot --checks`: the pixel checks alone; exit 1 if
/// any failed.
pub fn command(ctx: &Ctx) -> i32 {
    if let Err(why) = ctx.build_kernel() {
        eprintln!("error: {why}");
        return 1;
    }
    let checks = make_test_checks(ctx);
    let failed = checks.iter().filter(|(_, outcome)| outcome.is_err()).count();
    println!("pixel checks: {} passed, {failed} failed", checks.len() - failed);
    i32::from(failed > 0)
}

fn report(name: &str, outcome: Result<String, String>) -> (String, Result<String, String>) {
    match &outcome {
        Ok(detail) => println!("check {name} ... ok{detail}"),
        Err(why) => println!("check {name} ... FAILED: {why}"),
    }
    (name.to_string(), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_flip_frames_differ_everywhere() {
        for (x, y) in [(0, 0), (1279, 799), (640, 400), (5, 700)] {
            assert_ne!(pattern(1, x, y), pattern(2, x, y));
        }
    }

    #[test]
    fn text_is_found_where_it_was_drawn_and_not_elsewhere() {
        use vireo_text_console::{Pixels, Screen, render};
        let (width, height) = (160, 64);
        let mut data = vec![0u32; width * height];
        let mut screen = Screen::new(20, 4);
        screen.write(b"boot\nvireo> uptime\n");
        render(&screen.take_frame(), &mut Pixels { data: &mut data, width, height });
        let rgb = data.iter().flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8]).collect();
        let image = Image { width, height, rgb };
        assert_eq!(find_text_row(&image, "vireo> uptime"), Some(1));
        assert_eq!(find_text_row(&image, "vireo> uptimf"), None);
        assert_eq!(whole_frame(&image), None);
    }
}
