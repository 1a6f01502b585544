//! Judging one hostile-device boot from what the runner saw: the serial
//! transcript, the shell's answers, and the backend's own log of the lies
//! it told. Pure functions, unit-tested on canned records.
//!
//! A scenario passes when the guest survived the lie: no panic or fault,
//! the blk workload ended within its deadline (every caller got an answer,
//! right or wrong), and the shell still answers `mem` and `blk` afterwards.
//! The honest scenario must also pass every blk test. A lie the backend
//! never told (the workload never reached it) is a failure too: otherwise a
//! scenario could pass without testing anything.
//!
//! Every hostile boot runs with canary frames (`mm.canary`): each frame the
//! kernel frees holds a pattern that `mem` checks. Any canary changed by the
//! `mem` after the lies (the boot runs only blk tests, none of which
//! scribbles on purpose) means the device wrote to memory the kernel had
//! given back: the check fails with the frame's address.

use std::time::Duration;

/// How one shell dialogue step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The shell printed its prompt again; the output in between.
    Answered(String),
    /// No prompt within the deadline.
    Hung(Duration),
    /// QEMU exited (or closed its output) first.
    Died,
    /// Not attempted (an earlier step failed).
    Skipped,
}

impl Step {
    pub fn output(&self) -> Option<&str> {
        match self {
            Step::Answered(out) => Some(out),
            _ => None,
        }
    }
}

/// Everything one boot produced.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The whole serial output.
    pub serial: String,
    /// The backend's stderr.
    pub backend_log: String,
    /// Boot until the first prompt.
    pub boot: Option<Step>,
    /// The blk tests before the backend was armed (request lies wait for
    /// it; config lies are already told).
    pub baseline: Option<Step>,
    /// `mem` after the baseline, before the lies.
    pub mem_before: Option<Step>,
    /// The blk tests again, with the lies armed.
    pub workload: Option<Step>,
    pub mem_after: Option<Step>,
    pub blk_after: Option<Step>,
}

/// What the scenario is expected to do, from the backend's `--list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Honest: every blk test passes, no lie is told.
    AllPass,
    /// A lie: it must show up in the backend log, the guest must survive.
    Survive,
    /// As `Survive`, and the lie must be visible to callers: some blk test
    /// fails (an I/O error or a refused range), or the lie did not arrive.
    SurviveWithErrors,
}

/// What the backend logs when a late completion lands in a ring the
/// driver no longer uses (tools/hostile-blk/src/late.rs).
const STALE_RING: &str = "late write: ring moved";

/// `Ok(detail)` or `Err(why)` for `check hostile-blk:<scenario>`.
pub fn judge(expect: Expect, record: &Record) -> Result<String, String> {
    if let Some(line) = fatal_line(&record.serial) {
        return Err(format!("guest crashed: {line}"));
    }
    step_ok("boot to the shell", record.boot.as_ref())?;
    let baseline = step_ok("the blk tests before the lies", record.baseline.as_ref())?;
    let (_, baseline_failed) = ktest_summary(baseline)
        .ok_or("the blk tests before the lies printed no `ktest:` summary")?;
    step_ok("`mem` before the workload", record.mem_before.as_ref())?;
    let workload = step_ok("the blk workload", record.workload.as_ref())?;
    let (passed, failed) =
        ktest_summary(workload).ok_or("the blk workload printed no `ktest:` summary")?;
    step_ok("`mem` after the workload", record.mem_after.as_ref())?;
    let blk = step_ok("`blk` after the workload", record.blk_after.as_ref())?;
    let lies = lies_told(&record.backend_log);
    let mut detail = format!("{passed} blk tests passed, {failed} failed");
    match expect {
        Expect::AllPass => {
            if failed > 0 || passed == 0 || baseline_failed > 0 {
                return Err(format!("honest device: {detail}"));
            }
            if lies > 0 {
                return Err(format!("honest device told {lies} lies"));
            }
        }
        Expect::Survive | Expect::SurviveWithErrors => {
            if expect == Expect::SurviveWithErrors && failed == 0 {
                return Err(format!("the lie never reached a caller ({detail})"));
            }
            if lies == 0 {
                return Err(format!(
                    "the backend never told its lie ({detail}); nothing was tested"
                ));
            }
            detail.push_str(&format!(", {lies} lie(s) told"));
        }
    }
    let canaries = |step: &Option<Step>| step.as_ref().and_then(Step::output).and_then(canaries);
    let (Some(_), Some(after)) = (canaries(&record.mem_before), canaries(&record.mem_after)) else {
        return Err("`mem` printed no `canary: on, ...` line: the kernel ran without canary \
                    frames, so a write into freed memory would go unseen"
            .into());
    };
    if after.changed > 0 {
        return Err(format!(
            "{} freed frame(s) changed while free (the device wrote to memory the kernel \
             had given back): {}",
            after.changed, after.line
        ));
    }
    if let Some(line) = record.backend_log.lines().find(|l| l.contains(STALE_RING)) {
        // The write went to memory the driver still held (a ring it leaked
        // or kept) or to a frame reused before it came; canaries rule out
        // only a write into a frame that was still free.
        detail.push_str(&format!(
            ", late write after the ring moved and no freed frame changed ({})",
            line.trim()
        ));
    }
    detail.push_str(&format!(", {} canaries checked", after.checked));
    if let (Some(before), Some(after)) = (
        record.mem_before.as_ref().and_then(Step::output).and_then(free_frames),
        record.mem_after.as_ref().and_then(Step::output).and_then(free_frames),
    ) {
        let change = after as i64 - before as i64;
        let held =
            |step: &Option<Step>| step.as_ref().and_then(Step::output).map_or(0, held_frames);
        let quarantined = held(&record.mem_after) as i64 - held(&record.mem_before) as i64;
        // Between the passes the request pools have grown already, so an
        // honest device leaves the count where it was, but for the pages
        // the blk tests' own resets quarantined (`held:`). After a lie a
        // leak may be memory the device can still address: reported.
        if expect == Expect::AllPass && change + quarantined != 0 {
            return Err(format!(
                "free frames changed by {change:+} over the second pass ({quarantined} quarantined)"
            ));
        }
        detail.push_str(&format!(", free frames {change:+}"));
        if quarantined != 0 {
            detail.push_str(&format!(
                " ({quarantined} held in quarantine from the device, {:+} otherwise)",
                change + quarantined
            ));
        }
    }
    if blk.contains("unknown command") {
        detail.push_str("; no `blk` shell command yet (issue 9), shell answered");
    }
    Ok(detail)
}

fn step_ok<'a>(what: &str, step: Option<&'a Step>) -> Result<&'a str, String> {
    match step {
        Some(Step::Answered(out)) => Ok(out),
        Some(Step::Hung(after)) => Err(format!("{what} hung ({} s, no prompt)", after.as_secs())),
        Some(Step::Died) => Err(format!("QEMU exited during {what}")),
        Some(Step::Skipped) | None => Err(format!("{what} never ran")),
    }
}

/// The kernel's fatal reports: `panic: ...` and `EXCEPTION: ...`.
pub fn fatal_line(serial: &str) -> Option<&str> {
    serial.lines().map(str::trim).find(|l| l.starts_with("panic:") || l.starts_with("EXCEPTION:"))
}

/// The sum of the `ktest: P passed, F failed` lines in the workload's
/// output (one per `ktest` command); `None` when there is none.
pub fn ktest_summary(output: &str) -> Option<(u64, u64)> {
    let summaries = output.lines().filter_map(|line| {
        let rest = line.split_once("ktest: ")?.1;
        let (p, rest) = rest.split_once(" passed, ")?;
        let f = rest.split_once(" failed")?.0;
        Some((p.trim().parse::<u64>().ok()?, f.trim().parse::<u64>().ok()?))
    });
    summaries.reduce(|(p, f), (p2, f2)| (p + p2, f + f2))
}

/// `frames: N free of M ...` from `mem`.
pub fn free_frames(output: &str) -> Option<u64> {
    number_after(output, "frames:")
}

/// The number that follows `prefix` at the start of a line of `output`.
fn number_after(output: &str, prefix: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse().ok())
}

/// `held: N frames quarantined ...` from `mem` (0 when absent): pages
/// the driver keeps from a device it had to reset.
pub fn held_frames(output: &str) -> u64 {
    number_after(output, "held:").unwrap_or(0)
}

/// The `canary: on, M free frames marked, C checked, X changed` line of
/// `mem` (kernel/src/shell/mod.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canaries {
    pub checked: u64,
    pub changed: u64,
    pub line: String,
}

pub fn canaries(output: &str) -> Option<Canaries> {
    let line = output.lines().map(str::trim).find(|l| l.starts_with("canary: on, "))?;
    let number_before = |word: &str| {
        let head = line.split_once(&format!(" {word}"))?.0;
        head.rsplit(' ').next()?.parse().ok()
    };
    Some(Canaries {
        checked: number_before("checked")?,
        changed: number_before("changed")?,
        line: line.into(),
    })
}

/// Lies the backend logged: `lie N: ...`, `lie: ...` and `config lie: ...`.
pub fn lies_told(backend_log: &str) -> usize {
    backend_log
        .lines()
        .filter_map(|l| l.strip_prefix("hostile-blk: "))
        .filter(|l| l.starts_with("lie ") || l.starts_with("lie:") || l.starts_with("config lie:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: &str = "ktest blk\r\ntest a::b ... ok (1 us)\r\nktest: 7 passed, 0 failed\r\n";
    const MEM: &str = "mem\r\nframes: 100 free of 200 (0 MiB free)\r\nheap: 1 KiB\r\n\
                       canary: on, 50 free frames marked, 7 checked, 0 changed\r\n";
    const MEM_AFTER: &str = "frames: 98 free of 200\n\
                             canary: on, 48 free frames marked, 9 checked, 0 changed\n";

    fn answered(s: &str) -> Option<Step> {
        Some(Step::Answered(s.into()))
    }

    fn survived() -> Record {
        Record {
            serial: "boot\nvireo> ".into(),
            backend_log: "hostile-blk: listening\nhostile-blk: lie 1: request 16 ...\n".into(),
            boot: answered(""),
            baseline: answered(WORKLOAD),
            mem_before: answered(MEM),
            workload: answered(WORKLOAD),
            mem_after: answered(MEM_AFTER),
            blk_after: answered("unknown command 'blk'; try 'help'\n"),
        }
    }

    #[test]
    fn a_survived_lie_passes_with_details() {
        let detail = judge(Expect::Survive, &survived()).unwrap();
        assert!(detail.contains("1 lie(s) told"), "{detail}");
        assert!(detail.contains("free frames -2"), "{detail}");
        assert_eq!(
            held_frames("frames: 1 free of 2\nheld:   7 frames quarantined from a device\n"),
            7
        );
        assert_eq!(held_frames(MEM), 0);
        assert!(detail.contains("no `blk` shell command"), "{detail}");
    }

    #[test]
    fn panics_hangs_and_untold_lies_fail() {
        let mut r = survived();
        r.serial.push_str("\npanic: oops at x.rs:1\n");
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("panic: oops"));
        let mut r = survived();
        r.workload = Some(Step::Hung(Duration::from_secs(30)));
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("workload hung (30 s"));
        let mut r = survived();
        r.blk_after = Some(Step::Died);
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("QEMU exited during `blk`"));
        let mut r = survived();
        r.backend_log = "hostile-blk: listening\n".into();
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("never told"));
        let mut r = survived();
        r.serial = "EXCEPTION: page fault (vector 14)\n".into();
        assert!(judge(Expect::Survive, &r).is_err());
        assert!(
            judge(Expect::SurviveWithErrors, &survived()).unwrap_err().contains("never reached")
        );
        let mut r = survived();
        r.workload = answered("ktest: 6 passed, 1 failed\n");
        assert!(judge(Expect::SurviveWithErrors, &r).is_ok());
        let mut r = survived();
        r.backend_log.push_str("hostile-blk: late write: ring moved (0x1 -> 0x2); wrote ...\n");
        let detail = judge(Expect::Survive, &r).unwrap();
        assert!(detail.contains("no freed frame changed"), "{detail}");
    }

    #[test]
    fn a_changed_canary_or_none_at_all_fails() {
        let mut r = survived();
        r.mem_after = answered(
            "frames: 98 free of 200\ncanary: on, 48 free frames marked, 9 checked, 2 changed, \
             first at 0x6cb000\n",
        );
        let why = judge(Expect::Survive, &r).unwrap_err();
        assert!(why.contains("2 freed frame(s) changed") && why.contains("0x6cb000"), "{why}");
        let mut r = survived();
        r.mem_after = answered("frames: 98 free of 200\n");
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("without canary frames"));
        // A change during the pass before the lies counts too.
        let mut r = survived();
        r.mem_before = answered("canary: on, 5 free frames marked, 1 checked, 1 changed\n");
        r.mem_after = answered("canary: on, 5 free frames marked, 9 checked, 1 changed\n");
        assert!(judge(Expect::Survive, &r).is_err());
    }

    #[test]
    fn honest_needs_every_test_passing_and_no_lie() {
        let mut r = survived();
        r.backend_log.clear();
        assert!(judge(Expect::AllPass, &r).unwrap_err().contains("free frames changed by -2"));
        r.mem_after = answered(MEM);
        assert!(judge(Expect::AllPass, &r).is_ok());
        r.workload = answered("ktest: 6 passed, 1 failed\n");
        assert!(judge(Expect::AllPass, &r).unwrap_err().contains("1 failed"));
        let r = survived();
        assert!(judge(Expect::AllPass, &r).unwrap_err().contains("told 1 lies"));
        let mut r = survived();
        r.backend_log.clear();
        r.baseline = answered("ktest: 6 passed, 1 failed\n");
        assert!(judge(Expect::AllPass, &r).is_err());
        r.baseline = Some(Step::Hung(Duration::from_secs(30)));
        assert!(judge(Expect::Survive, &r).unwrap_err().contains("before the lies hung"));
    }

    #[test]
    fn parsers() {
        assert_eq!(ktest_summary(WORKLOAD), Some((7, 0)));
        assert_eq!(
            ktest_summary("ktest: 1 passed, 0 failed\nktest: 0 passed, 1 failed\n"),
            Some((1, 1))
        );
        assert_eq!(ktest_summary("nothing"), None);
        assert_eq!(free_frames(MEM), Some(100));
        let c = canaries(MEM).unwrap();
        assert_eq!((c.checked, c.changed), (7, 0));
        assert_eq!(canaries("canary: off, 0 free frames marked, 3 checked, 0 changed"), None);
        assert_eq!(lies_told("hostile-blk: config lie: x\nhostile-blk: lie: y\nlie 3\n"), 2);
    }
}
