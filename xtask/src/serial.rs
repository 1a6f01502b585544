//! Parser for the kernel's serial test protocol.
//!
//! The kernel prints `test <suite>::<name> ... ` *before* running a test (no
//! newline) and `ok (N us)` / `FAILED (N us)` plus newline after it. Other
//! CPUs may log in between (lines starting with `[`), so the result does not
//! always land on the same line as its start marker. The parser therefore
//! tracks the test "in progress" and also accepts a bare `ok`/`FAILED` line
//! as that test's result.
//!
//! Start markers are reported as soon as they appear in the *partial* line:
//! a test that hangs never prints its newline, and the runner's per-test
//! timeout has to start ticking anyway.

/// Outcome the kernel reported for one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed,
}

/// Something meaningful seen on the serial port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `test NAME ... ` printed; the test is now running.
    Started(String),
    /// The result of a test, with its duration if printed.
    Result { name: String, verdict: Verdict, micros: Option<u64> },
    /// `ktest: N passed, M failed`: the kernel's end-of-run summary.
    Summary { passed: u64, failed: u64 },
    /// Any other complete line (log output, panic messages, ...).
    Log(String),
}

/// Incremental parser; feed it chunks as they arrive.
#[derive(Default)]
pub struct Parser {
    /// Incomplete last line.
    partial: String,
    /// Name whose `Started` was already emitted from `partial`.
    started_from_partial: Option<String>,
    /// Test started but not yet reported.
    in_progress: Option<String>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The test that has started but not finished, if any.
    pub fn in_progress(&self) -> Option<&str> {
        self.in_progress.as_deref()
    }

    /// Feed a chunk; returns the events it completes.
    pub fn feed(&mut self, chunk: &str) -> Vec<Event> {
        let mut events = Vec::new();
        self.partial.push_str(chunk);
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            self.line(&line, &mut events);
        }
        // Early start detection on the unfinished line.
        // Needs the trailing space: `test X ...` might still grow.
        if self.started_from_partial.is_none()
            && self.partial.contains(" ... ")
            && let Some((name, rest)) = split_start(&self.partial)
            && result_verdict(rest).is_none()
        {
            let name = name.to_string();
            self.in_progress = Some(name.clone());
            self.started_from_partial = Some(name.clone());
            events.push(Event::Started(name));
        }
        events
    }

    /// Flush the unfinished line at end of stream.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(line.trim_end_matches('\r'), &mut events);
        }
        events
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        let from_partial = self.started_from_partial.take();
        if let Some((name, rest)) = split_start(line) {
            if let Some((verdict, micros)) = result_verdict(rest) {
                // Whole `test X ... ok (N us)` on one line. If its start was
                // already announced from the partial line, that is fine.
                self.in_progress = None;
                if from_partial.as_deref() != Some(name) {
                    // Never announced: still report a start so consumers see
                    // a consistent Started -> Result sequence.
                    out.push(Event::Started(name.to_string()));
                }
                out.push(Event::Result { name: name.to_string(), verdict, micros });
                return;
            }
            // A start marker followed by something else (interleaved log or
            // panic text), or nothing.
            if from_partial.as_deref() != Some(name) {
                out.push(Event::Started(name.to_string()));
            }
            self.in_progress = Some(name.to_string());
            let rest = rest.trim();
            if !rest.is_empty() {
                out.push(Event::Log(rest.to_string()));
            }
            return;
        }
        if let Some(name) = self.in_progress.clone()
            && let Some((verdict, micros)) = result_verdict(line.trim_start())
        {
            self.in_progress = None;
            out.push(Event::Result { name, verdict, micros });
            return;
        }
        if let Some((passed, failed)) = parse_summary(line) {
            out.push(Event::Summary { passed, failed });
            return;
        }
        out.push(Event::Log(line.to_string()));
    }
}

/// `test NAME ... REST` -> (NAME, REST). NAME must be non-empty and contain
/// no whitespace (the kernel uses `suite::name`).
fn split_start(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix("test ")?;
    let (name, rest) = body.split_once(' ')?;
    if name.is_empty() {
        return None;
    }
    let rest = rest.strip_prefix("...")?;
    // Either end of line or a space after the dots.
    if rest.is_empty() {
        return Some((name, rest));
    }
    rest.strip_prefix(' ').map(|r| (name, r))
}

/// `ok (N us)` / `FAILED (N us)` at the start of `s`.
fn result_verdict(s: &str) -> Option<(Verdict, Option<u64>)> {
    let (verdict, rest) = if let Some(r) = s.strip_prefix("ok") {
        (Verdict::Ok, r)
    } else if let Some(r) = s.strip_prefix("FAILED") {
        (Verdict::Failed, r)
    } else {
        return None;
    };
    // Only a bare verdict or one followed by its `(N us)`: a test's own
    // output such as "okay" or "ok so far" must not end it.
    if !(rest.trim().is_empty() || rest.trim_start().starts_with('(')) {
        return None;
    }
    let micros = rest
        .trim_start()
        .strip_prefix('(')
        .and_then(|r| r.split_once(" us)"))
        .and_then(|(n, _)| n.trim().parse().ok());
    Some((verdict, micros))
}

/// `ktest: N passed, M failed` anywhere in the line (it may carry a
/// timestamp prefix).
fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let (_, rest) = line.split_once("ktest: ")?;
    let (p, rest) = rest.split_once(" passed, ")?;
    let (f, _) = rest.split_once(" failed")?;
    Some((p.trim().parse().ok()?, f.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&str]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut ev: Vec<Event> = chunks.iter().flat_map(|c| p.feed(c)).collect();
        ev.extend(p.finish());
        ev
    }

    fn started(n: &str) -> Event {
        Event::Started(n.into())
    }
    fn res(n: &str, v: Verdict, us: Option<u64>) -> Event {
        Event::Result { name: n.into(), verdict: v, micros: us }
    }

    #[test]
    fn clean_transcript() {
        let t = "[0.000001] vireo booting\n\
                 test mm::alloc ... ok (12 us)\n\
                 test virtio::queue ... FAILED (340 us)\n\
                 ktest: 1 passed, 1 failed\n";
        assert_eq!(
            parse_all(&[t]),
            vec![
                Event::Log("[0.000001] vireo booting".into()),
                started("mm::alloc"),
                res("mm::alloc", Verdict::Ok, Some(12)),
                started("virtio::queue"),
                res("virtio::queue", Verdict::Failed, Some(340)),
                Event::Summary { passed: 1, failed: 1 },
            ]
        );
    }

    #[test]
    fn start_is_reported_before_newline() {
        let mut p = Parser::new();
        assert_eq!(p.feed("test smp::ipi ..."), vec![]);
        assert_eq!(p.feed(" "), vec![started("smp::ipi")]);
        assert_eq!(p.in_progress(), Some("smp::ipi"));
        // Result arrives in pieces; start must not be repeated.
        assert_eq!(p.feed("ok (5"), vec![]);
        assert_eq!(p.feed(" us)\r\n"), vec![res("smp::ipi", Verdict::Ok, Some(5))]);
        assert_eq!(p.in_progress(), None);
    }

    #[test]
    fn interleaved_log_between_start_and_result() {
        let t = "test a::b ... [0.5] cpu1: online\nok (7 us)\n";
        assert_eq!(
            parse_all(&[t]),
            vec![
                started("a::b"),
                Event::Log("[0.5] cpu1: online".into()),
                res("a::b", Verdict::Ok, Some(7)),
            ]
        );
        // Log on its own line while a test runs.
        let t = "test a::c ... \n[0.6] timer tick\n  FAILED (9 us)\n";
        assert_eq!(
            parse_all(&[t]),
            vec![
                started("a::c"),
                Event::Log("[0.6] timer tick".into()),
                res("a::c", Verdict::Failed, Some(9)),
            ]
        );
    }

    #[test]
    fn crash_leaves_test_in_progress() {
        let mut p = Parser::new();
        let ev = p.feed("test mm::oom ... panicked at kernel/src/mm.rs:10: oops\n");
        assert_eq!(
            ev,
            vec![started("mm::oom"), Event::Log("panicked at kernel/src/mm.rs:10: oops".into())]
        );
        assert_eq!(p.in_progress(), Some("mm::oom"));
        // A later stray "ok" from a log line without a test running is a log.
        let mut p = Parser::new();
        assert_eq!(p.feed("ok then\n"), vec![Event::Log("ok then".into())]);
    }

    #[test]
    fn result_without_duration_and_lookalikes() {
        assert_eq!(
            parse_all(&["test x::y ... ok\n"]),
            vec![started("x::y"), res("x::y", Verdict::Ok, None)]
        );
        // "okay" is not a verdict; "test  ... ok" has no name.
        let mut p = Parser::new();
        p.feed("test x::z ... \n");
        assert_eq!(p.feed("okay\n"), vec![Event::Log("okay".into())]);
        assert_eq!(p.feed("ok so far\n"), vec![Event::Log("ok so far".into())]);
        assert_eq!(p.in_progress(), Some("x::z"));
        assert_eq!(parse_all(&["test  ... ok\n"]), vec![Event::Log("test  ... ok".into())]);
        assert_eq!(parse_all(&["testing ... ok\n"]), vec![Event::Log("testing ... ok".into())]);
    }

    #[test]
    fn summary_variants() {
        assert_eq!(parse_summary("ktest: 3 passed, 0 failed"), Some((3, 0)));
        assert_eq!(parse_summary("[1.25] ktest: 10 passed, 2 failed"), Some((10, 2)));
        assert_eq!(parse_summary("ktest: starting"), None);
        assert_eq!(parse_summary("ktest: x passed, 1 failed"), None);
    }

    #[test]
    fn unterminated_start_at_eof() {
        let mut p = Parser::new();
        assert_eq!(p.feed("test a::hang ... "), vec![started("a::hang")]);
        assert_eq!(p.finish(), vec![]);
        assert_eq!(p.in_progress(), Some("a::hang"));
    }
}
