//! Where `make run` shows the guest's screen: a QEMU window when the
//! session has a display (DISPLAY or WAYLAND_DISPLAY set), VNC on
//! 127.0.0.1 with `--vnc`, nothing otherwise (`-display none`, the
//! default every other subcommand keeps).
//!
//! Debian ships QEMU's GTK front end separately (`qemu-system-gui`); it is
//! installed on demand, as the Makefile installs QEMU itself, and a failed
//! install falls back to headless with a message saying how to get it.

use std::path::Path;
use std::process::Command;

/// How the screen is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    /// No display (`-display none`).
    Headless,
    /// A GTK window.
    Window,
    /// A VNC server on 127.0.0.1, display `:0` (port 5900).
    Vnc,
}

/// What `--vnc` / `--headless` and the environment ask for.
pub fn choose(vnc: bool, headless: bool, env: impl Fn(&str) -> Option<String>) -> Screen {
    let has_display = |name: &str| env(name).is_some_and(|value| !value.is_empty());
    if vnc {
        Screen::Vnc
    } else if !headless && (has_display("DISPLAY") || has_display("WAYLAND_DISPLAY")) {
        Screen::Window
    } else {
        Screen::Headless
    }
}

/// QEMU arguments for `screen` (appended after the device set's
/// `-display none`; QEMU takes the last `-display`).
pub fn qemu_args(screen: &Screen) -> Vec<String> {
    match screen {
        Screen::Headless => vec![],
        Screen::Window => vec!["-display".into(), "gtk".into()],
        Screen::Vnc => vec!["-vnc".into(), "127.0.0.1:0".into()],
    }
}

/// QEMU's GTK module, as Debian installs it.
const GTK_MODULE: &str = "/usr/lib/x86_64-linux-gnu/qemu/ui-gtk.so";

/// Makes sure the window can open: installs `qemu-system-gui` if its module
/// is missing. Returns the screen to use (headless if that failed).
pub fn prepare(screen: Screen) -> Screen {
    if screen != Screen::Window || Path::new(GTK_MODULE).exists() {
        return screen;
    }
    println!("==> QEMU's window needs qemu-system-gui; installing it");
    let apt = |args: &[&str]| {
        let mut command = if is_root() { Command::new("apt-get") } else { Command::new("sudo") };
        if !is_root() {
            command.arg("apt-get");
        }
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok =
        apt(&["update"]) && apt(&["install", "-y", "--no-install-recommends", "qemu-system-gui"]);
    if ok && Path::new(GTK_MODULE).exists() {
        screen
    } else {
        println!(
            "==> no window: install it with `apt-get install qemu-system-gui`; running headless"
        );
        Screen::Headless
    }
}

/// Whether the runner is root (then apt-get needs no sudo).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| {
            line.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().next()) == Some("0")
        })
    })
}

/// What to tell the user about where the screen is.
pub fn describe(screen: &Screen) -> &'static str {
    match screen {
        Screen::Headless => "headless (serial only; --vnc serves the screen on 127.0.0.1:5900)",
        Screen::Window => "QEMU window (the shell works there too)",
        Screen::Vnc => "VNC on 127.0.0.1:5900 (display :0)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn a_display_opens_a_window_else_headless() {
        assert_eq!(choose(false, false, env(&[("DISPLAY", ":1")])), Screen::Window);
        assert_eq!(choose(false, false, env(&[("WAYLAND_DISPLAY", "wayland-0")])), Screen::Window);
        assert_eq!(choose(false, false, env(&[("DISPLAY", "")])), Screen::Headless);
        assert_eq!(choose(false, false, env(&[])), Screen::Headless);
        assert_eq!(choose(false, true, env(&[("DISPLAY", ":1")])), Screen::Headless);
        assert_eq!(choose(true, false, env(&[])), Screen::Vnc);
    }

    #[test]
    fn vnc_listens_on_loopback_only() {
        assert_eq!(qemu_args(&Screen::Vnc), ["-vnc", "127.0.0.1:0"]);
        assert_eq!(qemu_args(&Screen::Window), ["-display", "gtk"]);
        assert!(qemu_args(&Screen::Headless).is_empty());
    }
}
