//! Host-side tests: `cargo test` for every crate except the kernel, plus a
//! list of extra host commands (fuzzers, scripts) that other crates add.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// An extra host command. Each one counts as one test: exit 0 = passed.
pub struct HostCommand {
    /// Shown in output and in the failed-test list.
    pub name: &'static str,
    pub program: &'static str,
    pub args: &'static [&'static str],
    /// Relative to the repo root. When set and missing, the command is
    /// skipped silently: crates can ship a script before or after it is
    /// listed here without breaking `make test`.
    pub only_if_exists: Option<&'static str>,
}

// ======================================================================
// EXTRA HOST TESTS, run by `xtask test` after `cargo test`.
// Add new host-side checks here (owner of each entry in brackets).
// ======================================================================
pub const HOST_TESTS: &[HostCommand] = &[
    // [virtio] short fuzz run of the virtqueue parser; 30 = seconds.
    HostCommand {
        name: "virtio fuzz (30 s)",
        program: "bash",
        args: &["crates/virtio/fuzz/run.sh", "30"],
        only_if_exists: Some("crates/virtio/fuzz/run.sh"),
    },
];

// ======================================================================
// HOST BENCHMARKS: the `ring` group of `xtask bench`, run once per round;
// their `BENCH` lines on stdout are parsed into the summary.
// ======================================================================
pub const HOST_BENCHES: &[HostCommand] = &[
    // [virtio] ring round trips: vireo's split queue vs virtio-drivers 0.13.
    HostCommand {
        name: "virtio ring vs virtio-drivers",
        program: "cargo",
        args: &["bench", "-p", "vireo-virtio", "--bench", "ring"],
        only_if_exists: None,
    },
];

/// Sum of all `test result:` lines of one `cargo test` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTotals {
    pub passed: u64,
    pub failed: u64,
    /// Names from `test NAME ... FAILED` lines.
    pub failed_names: Vec<String>,
    /// Number of `test result:` lines seen (one per test binary / doctest).
    pub result_lines: u64,
}

impl HostTotals {
    /// Account one line of `cargo test` stdout.
    pub fn parse_line(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 3 passed; 0 failed; ..." or "FAILED. 1 passed; 2 failed; ..."
            let Some((_, counts)) = rest.split_once(". ") else {
                return;
            };
            self.result_lines += 1;
            for part in counts.split(';') {
                let mut w = part.split_whitespace();
                let (Some(n), Some(what)) = (w.next(), w.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        } else if let Some(body) = line.strip_prefix("test ")
            && let Some(name) = body.strip_suffix(" ... FAILED")
        {
            // Doctest names contain spaces ("src/lib.rs - f (line 3)"), so
            // take everything between the prefix and the verdict.
            self.failed_names.push(name.to_string());
        }
    }
}

/// Result of the host phase.
pub struct HostRun {
    pub totals: HostTotals,
    /// Set when cargo itself failed in a way the counts do not show
    /// (compile error, crashed test binary).
    pub error: Option<String>,
}

/// Run `cargo test --workspace --exclude vireo-kernel`, streaming its output.
pub fn cargo_test(cargo: &str, root: &Path) -> HostRun {
    println!("==> host tests: cargo test --workspace --exclude vireo-kernel");
    let child = Command::new(cargo)
        .args(["test", "--workspace", "--exclude", "vireo-kernel"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return HostRun {
                totals: HostTotals::default(),
                error: Some(format!("cannot run cargo test: {e}")),
            };
        }
    };
    let mut totals = HostTotals::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        println!("{line}");
        totals.parse_line(&line);
    }
    let status = child.wait();
    let error = match status {
        Ok(st) if st.success() => None,
        // Test failures are already counted; only report what is not.
        Ok(_) if totals.failed > 0 => None,
        Ok(st) => Some(format!("cargo test failed ({st}) without failing tests: build error?")),
        Err(e) => Some(format!("cargo test: {e}")),
    };
    let error = error.or_else(|| {
        (totals.result_lines == 0).then(|| "cargo test printed no `test result:` lines".into())
    });
    HostRun { totals, error }
}

/// Run the listed host commands. Returns (passed, failed names).
pub fn run_commands(list: &[HostCommand], root: &Path) -> (u64, Vec<String>) {
    let mut passed = 0;
    let mut failed = vec![];
    for c in list {
        if let Some(p) = c.only_if_exists
            && !root.join(p).exists()
        {
            continue;
        }
        println!("==> {}: {} {}", c.name, c.program, c.args.join(" "));
        let st =
            Command::new(c.program).args(c.args).current_dir(root).stdin(Stdio::null()).status();
        match st {
            Ok(s) if s.success() => {
                println!("{} ... ok", c.name);
                passed += 1;
            }
            Ok(s) => {
                println!("{} ... FAILED ({s})", c.name);
                failed.push(c.name.to_string());
            }
            Err(e) => {
                println!("{} ... FAILED (cannot start: {e})", c.name);
                failed.push(c.name.to_string());
            }
        }
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines() {
        let out = "\
running 2 tests
test q::a ... ok
test q::b ... FAILED

failures:
    q::b

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 3 tests
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 1 test
test src/lib.rs - f (line 3) ... FAILED
test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.2s
";
        let mut t = HostTotals::default();
        out.lines().for_each(|l| t.parse_line(l));
        assert_eq!(t.passed, 4);
        assert_eq!(t.failed, 2);
        assert_eq!(t.result_lines, 3);
        assert_eq!(t.failed_names, vec!["q::b", "src/lib.rs - f (line 3)"]);
    }

    #[test]
    fn ignores_lookalikes() {
        let mut t = HostTotals::default();
        t.parse_line("test result: garbage");
        t.parse_line("    test result: ok. 5 passed; 0 failed;");
        assert_eq!(t, HostTotals::default());
    }
}
