//! Kernel self-tests judged from outside: things a test inside the kernel
//! cannot check because the kernel does not survive them.
//!
//! `selftest=panic`: the kernel panics on one CPU while every other CPU
//! logs as fast as it can. The report must come out once and whole: the
//! run ends with the failure status, exactly one `panic:` line appears, and
//! no other CPU's output follows it (they were stopped by NMI first).

use crate::exit::KernelExit;

/// Guest time from the first kernel instruction to `boot: ready` (issue 2).
pub const BOOT_BUDGET_US: u64 = 150_000;

/// Finds `boot: ready in N us` in a serial log and checks it against the
/// budget; returns N.
pub fn check_boot_time(log: &str, budget_us: u64) -> Result<u64, String> {
    let us = log
        .lines()
        .find_map(|line| {
            let rest = line.split("boot: ready in ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .ok_or("no `boot: ready in N us` line")?;
    if us > budget_us {
        return Err(format!("boot took {us} us of guest time, budget {budget_us} us"));
    }
    Ok(us)
}

/// What the other CPUs print while the panic happens.
const CHATTER: &str = "selftest chatter";

/// Judges the serial output and exit of a `selftest=panic` boot.
pub fn check_panic_report(output: &str, exit: Option<KernelExit>) -> Result<(), String> {
    match exit {
        Some(KernelExit::Failure) => {}
        Some(other) => {
            return Err(format!("expected the panic exit status, got {}", other.describe()));
        }
        None => return Err("the kernel did not end the run".into()),
    }
    let lines: Vec<&str> = output.lines().collect();
    let panics: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].trim_start().starts_with("panic:")).collect();
    let [panic_line] = panics[..] else {
        return Err(format!("expected one `panic:` line, found {}", panics.len()));
    };
    if !lines[..panic_line].iter().any(|line| line.contains(CHATTER)) {
        return Err("no other CPU was logging when the panic came (nothing was tested)".into());
    }
    if let Some(stray) = lines[panic_line..].iter().find(|line| line.contains(CHATTER)) {
        return Err(format!("another CPU printed inside the panic report: {stray:?}"));
    }
    if !lines[panic_line..].iter().any(|line| line.contains("call trace")) {
        return Err("the panic report has no call trace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[0.1] INFO selftest chatter from CPU 1, line 7\n\
                        [0.1] INFO selftest chat\n\
                        panic: boom at main.rs:1:1\n  call trace (addr2line):\n    0xffff\n";

    #[test]
    fn boot_time_is_found_and_judged() {
        let log = "[0.01] INFO vireo: hello\n[0.05] INFO  vireo: boot: ready in 53689 us\n";
        assert_eq!(check_boot_time(log, BOOT_BUDGET_US), Ok(53_689));
        assert!(check_boot_time(log, 50_000).unwrap_err().contains("budget"));
        assert!(check_boot_time("nothing\n", BOOT_BUDGET_US).is_err());
    }

    #[test]
    fn whole_report_passes() {
        assert_eq!(check_panic_report(GOOD, Some(KernelExit::Failure)), Ok(()));
    }

    #[test]
    fn interleaved_report_fails() {
        let bad = GOOD.replace("    0xffff", "[0.2] INFO selftest chatter from CPU 2, line 9");
        assert!(
            check_panic_report(&bad, Some(KernelExit::Failure)).unwrap_err().contains("inside")
        );
    }

    #[test]
    fn double_report_and_wrong_exit_fail() {
        let twice = format!("{GOOD}panic: again\n");
        assert!(check_panic_report(&twice, Some(KernelExit::Failure)).is_err());
        assert!(check_panic_report(GOOD, Some(KernelExit::Success)).is_err());
        assert!(check_panic_report(GOOD, None).is_err());
        let quiet = "panic: boom\n  call trace\n";
        assert!(
            check_panic_report(quiet, Some(KernelExit::Failure)).unwrap_err().contains("nothing")
        );
    }
}
