//! `==>` progress lines: how long a step took, and a heartbeat while a
//! captured child is quiet, so no step is silent for long.

use std::time::{Duration, Instant};

/// A quiet child earns a line after this long.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// `0.4 s`, `12.3 s`, `2 min 05 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// Time since `start`, as [`duration`].
pub fn since(start: Instant) -> String {
    duration(start.elapsed())
}

/// Says "still running" when a child has printed nothing for a while.
pub struct Heartbeat {
    what: String,
    started: Instant,
    quiet_since: Instant,
}

impl Heartbeat {
    pub fn new(what: impl Into<String>) -> Self {
        let now = Instant::now();
        Self { what: what.into(), started: now, quiet_since: now }
    }

    /// The child printed something (or the caller did).
    pub fn output(&mut self) {
        self.quiet_since = Instant::now();
    }

    /// When the next line is due; wake up then.
    pub fn due(&self) -> Instant {
        self.quiet_since + HEARTBEAT_EVERY
    }

    /// The line to print if one is due now.
    pub fn beat(&mut self) -> Option<String> {
        if Instant::now() < self.due() {
            return None;
        }
        self.quiet_since = Instant::now();
        Some(format!("==> {}: still running ({} so far)", self.what, since(self.started)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(125)), "2 min 05 s");
    }

    #[test]
    fn heartbeat_waits_for_quiet() {
        let mut heartbeat = Heartbeat::new("peer");
        assert_eq!(heartbeat.beat(), None);
        heartbeat.quiet_since -= HEARTBEAT_EVERY;
        let line = heartbeat.beat().unwrap();
        assert!(line.starts_with("==> peer: still running ("), "{line}");
        assert_eq!(heartbeat.beat(), None, "one line per quiet period");
    }
}
