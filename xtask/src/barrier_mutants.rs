//! The barrier mutation check: the loom model of the real split queue
//! (`crates/virtio/tests/loom_ring.rs`, feature `loom`) must pass as is,
//! and fail with each barrier site of the ring removed in turn
//! (`VIREO_BARRIER_MUTANT=<site>`), or that barrier is guarded by nothing.
//!
//! One build serves every run: the mutant is chosen at run time, and the
//! feature only rebuilds `vireo-virtio` itself (no RUSTFLAGS, so no
//! dependency is rebuilt). Prints `barrier mutants: N sites, M caught`;
//! fails when M < N or N < 4 (the ring has at least the four barriers of
//! VirtIO 1.2 §2.7.13.3.1, §2.7.13.4.1, §2.7.14 and §2.7.7.2).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmds::Ctx;
use crate::host::HostTotals;
use crate::test_cmd::Tally;

/// Fewest sites the ring can honestly have.
const MIN_SITES: usize = 4;
/// One model run takes seconds; this only stops a runaway.
const RUN_LIMIT: Duration = Duration::from_secs(300);
const CARGO_ARGS: &[&str] =
    &["test", "-p", "vireo-virtio", "--features", "loom", "--test", "loom_ring"];

pub(super) fn check(ctx: &Ctx, t: &mut Tally) {
    println!("==> loom model of the real ring: cargo {}", CARGO_ARGS.join(" "));
    let exe = match build(&ctx.cargo, &ctx.root) {
        Ok(exe) => exe,
        Err(e) => return t.failed.push(format!("host: loom model: {e}")),
    };
    // The model itself, every scenario, no mutant: its tests count.
    let (ok, out) = run(&exe, &ctx.root, None, &[]);
    let mut totals = HostTotals::default();
    out.lines().for_each(|l| {
        println!("{l}");
        totals.parse_line(l);
    });
    t.passed += totals.passed;
    t.failed.extend(totals.failed_names.iter().map(|n| format!("host: loom_ring {n}")));
    if !ok || totals.result_lines == 0 {
        return t.failed.push("host: loom model of the real ring failed unmutated".into());
    }
    let sites: Vec<String> =
        run(&exe, &ctx.root, None, &["list_barrier_sites", "--exact", "--nocapture"])
            .1
            .lines()
            .filter_map(|l| l.strip_prefix("barrier-site ").map(str::to_string))
            .collect();
    let mut missed = Vec::new();
    for site in &sites {
        let started = Instant::now();
        // The litmus tests check loom, not the ring: no point mutating them.
        let skip = ["--skip", "loom_", "--skip", "list_barrier_sites", "-q"];
        let (passed, _) = run(&exe, &ctx.root, Some(site), &skip);
        let verdict = if passed { "MISSED: every test still passes" } else { "caught" };
        println!("barrier mutant {site} ... {verdict} ({} ms)", started.elapsed().as_millis());
        if passed {
            missed.push(site.clone());
        }
    }
    let caught = sites.len() - missed.len();
    println!("barrier mutants: {} sites, {caught} caught", sites.len());
    if sites.len() < MIN_SITES || !missed.is_empty() {
        t.failed.push(format!(
            "host: barrier mutants: {} sites (at least {MIN_SITES}), {caught} caught{}",
            sites.len(),
            if missed.is_empty() {
                String::new()
            } else {
                format!("; missed {}", missed.join(", "))
            }
        ));
    } else {
        t.passed += 1;
    }
}

/// Builds the model's test binary once and returns its path.
fn build(cargo: &str, root: &Path) -> Result<PathBuf, String> {
    let out = Command::new(cargo)
        .args(CARGO_ARGS)
        .args(["--no-run", "--message-format=json"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("build failed ({})", out.status));
    }
    // The compiler-artifact line of the test target names its executable.
    let json = String::from_utf8_lossy(&out.stdout);
    json.lines()
        .filter(|l| l.contains("\"name\":\"loom_ring\""))
        .find_map(|l| {
            let rest = &l[l.find("\"executable\":\"")? + 14..];
            Some(PathBuf::from(&rest[..rest.find('"')?]))
        })
        .ok_or_else(|| "cargo named no loom_ring executable".into())
}

/// Runs the model binary; returns whether it succeeded and its stdout.
fn run(exe: &Path, root: &Path, mutant: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.env_remove("VIREO_BARRIER_MUTANT");
    if let Some(site) = mutant {
        cmd.env("VIREO_BARRIER_MUTANT", site);
    }
    let Ok(mut child) = cmd.spawn() else { return (false, String::new()) };
    // Read while it runs, so a chatty failure cannot fill the pipe and stall.
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            out
        })
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    (status.is_some_and(|s| s.success()), out)
}
