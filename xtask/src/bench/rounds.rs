//! Running the rounds: per round and group, each side once, back to back in
//! alternating order, each run measured for what other processes took
//! meanwhile; a disturbed group-round is redone once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchArgs;
use super::load::{self, Keep, Load, QuietWait};
use super::parse::{Dialect, Output, parse_output};
use super::plan::{self, Group, Side};
use super::results::{GroupRound, RunRecord};
use super::sides::{self, PeerMode};
use super::summary::plain;
use crate::cmds::{self, Ctx};
use crate::exit::KernelExit;
use crate::host::{HOST_BENCHES, HostCommand};
use crate::qemu::{DeviceSet, Qemu, Serial};

/// After this long, no more quiet waits or redos: a noisy host must not
/// push `make bench ARGS=--peer` past its 15 minutes. On a saturated host
/// here (2026-12-02) a group-round took up to 46 s and a round without
/// redos 95 s, so what can still follow after 8 minutes (a wait and a redo
/// under way, the rest of that round, one more round) ends by about 12.5
/// minutes, builds included.
const LATE_AFTER: Duration = Duration::from_secs(480);

/// The GPU size the peer draws until vireo has reported its own: QEMU's
/// default `virtio-gpu-pci` mode, which vireo's bench machine uses.
pub const DEFAULT_GPU_SIZE: (u32, u32) = (1280, 800);

/// Runs every side of every round.
pub struct Runner<'a> {
    ctx: &'a Ctx,
    q: Qemu,
    args: &'a BenchArgs,
    rounds: u32,
    /// `run-peer.sh` and the probe's `run.sh`, with `--peer`.
    peer: Option<PathBuf>,
    probe: Option<PathBuf>,
    /// The display size vireo's GPU bench reported last.
    pub gpu_size: (u32, u32),
    started: Instant,
}

impl<'a> Runner<'a> {
    pub fn new(
        ctx: &'a Ctx,
        q: Qemu,
        args: &'a BenchArgs,
        rounds: u32,
        scripts: (Option<PathBuf>, Option<PathBuf>),
    ) -> Self {
        let (peer, probe) = scripts;
        let started = Instant::now();
        Self { ctx, q, args, rounds, peer, probe, gpu_size: DEFAULT_GPU_SIZE, started }
    }

    fn late(&self) -> bool {
        self.started.elapsed() > LATE_AFTER
    }

    /// Waits (bounded) for a quiet host and says how that went.
    fn wait_for_quiet(&self) -> Option<QuietWait> {
        if self.late() {
            println!("==> past {} s: not waiting for a quiet host", LATE_AFTER.as_secs());
            return None;
        }
        let wait = load::wait_for_quiet(load::QUIET_WAIT_MAX);
        let cores = wait.last_others_cores.map_or("?".into(), plain);
        if wait.quiet {
            println!("==> host quiet after {:.0} s (others {cores} cores)", wait.waited_s);
        } else {
            println!(
                "==> host still busy after {:.0} s (others {cores} cores >= {}): running anyway",
                wait.waited_s,
                load::QUIET_CORES
            );
        }
        Some(wait)
    }

    /// Every round of every group, redos included, in the order run.
    pub fn run(&mut self, groups: &[Group]) -> Vec<GroupRound> {
        let mut all = Vec::new();
        for round in 1..=self.rounds {
            let mut quiet = self.wait_for_quiet();
            for &group in groups {
                let mut first = self.attempt(group, round, 1, quiet.take());
                if !first.disturbed {
                    all.push(first);
                    continue;
                }
                if self.late() {
                    println!("==> round {round} {}: disturbed, not redone (late)", group.name());
                    all.push(first);
                    continue;
                }
                let wait = self.wait_for_quiet();
                let mut redo = self.attempt(group, round, 2, wait);
                let keep = settle_redo(&mut first, &mut redo);
                println!(
                    "==> round {round} {}: keeping attempt {} (the less disturbed)",
                    group.name(),
                    if keep == Keep::First { 1 } else { 2 }
                );
                all.extend([first, redo]);
            }
        }
        all
    }

    /// One attempt of `group` in `round`: each side once, then its figures.
    fn attempt(
        &mut self,
        group: Group,
        round: u32,
        attempt: u32,
        quiet_wait: Option<QuietWait>,
    ) -> GroupRound {
        let sides = plan::order(group, round, self.peer.is_some());
        let names: Vec<_> = sides.iter().map(|s| s.name()).collect();
        let redo = if attempt > 1 { " (redo)" } else { "" };
        println!("==> round {round}/{} {}{redo}: {}", self.rounds, group.name(), names.join(", "));
        let runs: Vec<_> = sides.iter().map(|&side| self.run_side(group, side)).collect();
        let loads: Vec<Load> = runs.iter().map(|r| r.load).collect();
        let gr = GroupRound {
            group,
            round,
            attempt,
            quiet_wait,
            worst_others_cores: load::worst_cores(&loads),
            disturbed: load::is_disturbed(&loads),
            redone: false,
            kept: true,
            runs,
        };
        print_round(&gr, self.gpu_size);
        gr
    }

    /// Runs one side and keeps what it printed.
    fn run_side(&mut self, group: Group, side: Side) -> RunRecord {
        let (commands, dialect) = match self.commands(group, side) {
            Ok(c) => c,
            Err(e) => return failed_run(side, e),
        };
        let command = commands.iter().map(describe).collect::<Vec<_>>().join(" && ");
        let timeout = self.args.timeout;
        let ((text, exit), load) = load::measure(|| {
            let mut text = String::new();
            let mut echo = LineEcho::new(side);
            let mut exit = Ok(None);
            for cmd in commands {
                exit = cmds::stream(cmd, timeout, |s| {
                    text.push_str(s);
                    echo.feed(s);
                });
                if !matches!(exit, Ok(Some(k)) if finished_well(side, k)) {
                    break;
                }
            }
            (text, exit)
        });
        let output = parse_output(dialect, &text);
        let (ok, exit) = judge(side, exit, timeout, &output);
        if !ok {
            println!(
                "  {:>10} | FAILED: {exit}; its output ends:\n{}",
                side.name(),
                tail(&text, 8)
            );
        }
        if side == Side::Vireo
            && group == Group::Gpu
            && let Some(size) = sides::gpu_size(output.measurements.iter().map(|m| m.name.as_str()))
        {
            self.gpu_size = size;
        }
        RunRecord { side, command, load, exit, ok, output }
    }

    /// The processes of one side, and how to read what they print.
    fn commands(&self, group: Group, side: Side) -> Result<(Vec<Command>, Dialect), String> {
        let (accel, smp, secs) = (self.q.accel, self.q.smp, self.args.secs);
        let mut cmd = match side {
            Side::Vireo => {
                // The 1080p group is the gpu bench on a bigger display.
                let kernel_group = if group == Group::Gpu1080 { "gpu" } else { group.name() };
                let words = format!("bench={kernel_group} bench.secs={secs}");
                let cmdline = cmds::join_cmdline(&words, &self.args.boot.append);
                let (width, height) = plan::GPU_1080;
                let (xres, yres) = (
                    format!("virtio-gpu-pci.xres={width}"),
                    format!("virtio-gpu-pci.yres={height}"),
                );
                let extra: &[&str] = if group == Group::Gpu1080 {
                    &["-global", &xres, "-global", &yres]
                } else {
                    &[]
                };
                self.q.command_with(DeviceSet::PeerMatched, &cmdline, Serial::Stdio, extra)
            }
            Side::Linux => {
                let script = self.peer.as_ref().ok_or("no Linux peer (needs --peer)")?;
                let mode = match group {
                    Group::Gpu => {
                        let (width, height) = self.gpu_size;
                        PeerMode::Gpu { width, height }
                    }
                    Group::Gpu1080 => {
                        let (width, height) = plan::GPU_1080;
                        PeerMode::Gpu { width, height }
                    }
                    _ => PeerMode::Blk,
                };
                sides::peer_command(script, mode, accel, smp, secs)
            }
            Side::Limit => {
                let script = self.probe.as_ref().ok_or("no limit probe (needs --peer)")?;
                sides::probe_command(script, accel, smp, &self.ctx.target.join("blk-limit"))
            }
            Side::RingBench => {
                let commands = host_benches(&self.ctx.root).map(|c| self.host_command(c, &[]));
                return Ok((commands.collect(), Dialect::HostBench));
            }
        };
        cmd.current_dir(&self.ctx.root);
        let dialect = if side == Side::Vireo { Dialect::Kernel } else { Dialect::Result };
        Ok((vec![cmd], dialect))
    }

    fn host_command(&self, c: &HostCommand, extra: &[&str]) -> Command {
        let mut cmd = Command::new(c.program);
        cmd.args(c.args).args(extra).current_dir(&self.ctx.root);
        cmd
    }

    /// Builds the host benches before the first round, so no round times a
    /// compile and a broken build shows before any guest boots.
    pub fn prebuild_host_benches(&self) -> Result<(), String> {
        for c in host_benches(&self.ctx.root).filter(|c| c.program == "cargo") {
            let mut cmd = self.host_command(c, &["--no-run"]);
            println!("==> building {}: {}", c.name, describe(&cmd));
            let st = cmd.stdin(Stdio::null()).status().map_err(|e| format!("{}: {e}", c.name))?;
            if !st.success() {
                return Err(format!("building {} failed ({st})", c.name));
            }
        }
        Ok(())
    }
}

/// The host benches whose files exist.
fn host_benches(root: &Path) -> impl Iterator<Item = &'static HostCommand> + '_ {
    HOST_BENCHES.iter().filter(|c| c.only_if_exists.is_none_or(|p| root.join(p).exists()))
}

/// Marks a redone group-round: both attempts `redone`, and only the one
/// [`load::keep_after_redo`] picks `kept` (the summary reads kept ones).
pub fn settle_redo(first: &mut GroupRound, redo: &mut GroupRound) -> Keep {
    let loads = |gr: &GroupRound| gr.runs.iter().map(|r| r.load).collect::<Vec<_>>();
    let keep = load::keep_after_redo(&loads(first), &loads(redo));
    (first.redone, redo.redone) = (true, true);
    (first.kept, redo.kept) = (keep == Keep::First, keep == Keep::Redo);
    keep
}

/// A side that could not even start.
fn failed_run(side: Side, why: String) -> RunRecord {
    println!("  {:>10} | FAILED: {why}", side.name());
    let (output, load) = (Output::default(), Load::default());
    RunRecord { side, command: String::new(), load, exit: why, ok: false, output }
}

/// Whether `side`'s process ended the way it does when all went well:
/// vireo through isa-debug-exit (status 33), the scripts and cargo with 0
/// (which [`KernelExit`] calls `Reset`).
fn finished_well(side: Side, exit: KernelExit) -> bool {
    match side {
        Side::Vireo => exit == KernelExit::Success,
        Side::Linux | Side::Limit | Side::RingBench => exit == KernelExit::Reset,
    }
}

/// (ok, how it ended) of one run: it must have finished well and printed
/// at least one figure.
fn judge(
    side: Side,
    exit: Result<Option<KernelExit>, String>,
    timeout: u64,
    output: &Output,
) -> (bool, String) {
    match exit {
        Err(e) => (false, e),
        Ok(None) => (false, format!("killed after {timeout} s")),
        Ok(Some(k)) if !finished_well(side, k) => (false, status_words(side, k)),
        Ok(Some(_)) if output.measurements.is_empty() => {
            (false, "finished but printed no figures".into())
        }
        Ok(Some(_)) => (true, "ok".into()),
    }
}

/// How a process ended, in words that fit it: QEMU's decoding for vireo,
/// the plain exit status for scripts and cargo.
fn status_words(side: Side, exit: KernelExit) -> String {
    let status = match exit {
        _ if side == Side::Vireo => return exit.describe(),
        KernelExit::Signal(signal) => return format!("killed by signal {signal}"),
        KernelExit::Success => 33,
        KernelExit::Failure => 35,
        KernelExit::Reset => 0,
        KernelExit::OtherKernelCode(v) => ((v << 1) | 1) as i32,
        KernelExit::QemuError(c) => c,
    };
    format!("exited with status {status}")
}

/// A command as it would be typed (environment first).
fn describe(cmd: &Command) -> String {
    let env = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())));
    let words = std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    env.chain(words).collect::<Vec<_>>().join(" ")
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().map(str::trim_end).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Echoes a side's result lines as they complete, prefixed with the side,
/// so a long bench shows progress without the guests' whole logs.
struct LineEcho {
    side: Side,
    pending: String,
}

impl LineEcho {
    fn new(side: Side) -> Self {
        Self { side, pending: String::new() }
    }

    fn feed(&mut self, chunk: &str) {
        self.pending.push_str(chunk);
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            let line = line.trim_end();
            if ["BENCH ", "RESULT ", "ERROR", "panic:"].iter().any(|t| line.contains(t)) {
                println!("  {:>10} | {}", self.side.name(), line.trim_start());
            }
        }
    }
}

/// `ROUND` lines: each workload's figures in this attempt, then the load.
fn print_round(gr: &GroupRound, gpu_size: (u32, u32)) {
    let head = format!("ROUND {} {}", gr.round, gr.group.name());
    for w in plan::workloads(gpu_size).iter().filter(|w| w.group == gr.group) {
        let f = plan::figures(w, |s| gr.lookup(s.side, &s.name, s.key));
        let mut line = format!("{head} {}", w.id);
        let other = w.group.other_name().unwrap_or("other");
        for (name, v) in [("vireo", f.vireo), (other, f.other), ("limit", f.limit)] {
            if let Some(v) = v {
                line.push_str(&format!(" {name}={}", plain(v)));
            }
        }
        for (name, r) in [("ratio", f.ratio), ("vs_limit", f.vs_limit)] {
            if let Some(r) = r {
                line.push_str(&format!(" {name}={:.2}", r.value));
            }
        }
        println!("{line}");
    }
    let per_run: Vec<_> = gr
        .runs
        .iter()
        .map(|r| format!("{} {}", r.side.name(), r.load.others_cores.map_or("?".into(), plain)))
        .collect();
    let verdict = if gr.disturbed {
        format!("DISTURBED (>= {} cores)", load::DISTURBED_CORES)
    } else {
        "undisturbed".into()
    };
    println!("{head} others' cores per run: {}; {verdict}", per_run.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(text: &str) -> Output {
        parse_output(Dialect::Result, text)
    }

    #[test]
    fn a_run_needs_the_right_exit_and_figures() {
        let some = measured("RESULT name=a iops=1\n");
        let none = Output::default();
        let judge = |side, exit, out| judge(side, exit, 9, out);
        assert_eq!(judge(Side::Vireo, Ok(Some(KernelExit::Success)), &some), (true, "ok".into()));
        assert!(!judge(Side::Vireo, Ok(Some(KernelExit::Reset)), &some).0);
        assert_eq!(judge(Side::Linux, Ok(Some(KernelExit::Reset)), &some), (true, "ok".into()));
        assert_eq!(
            judge(Side::Limit, Ok(Some(KernelExit::OtherKernelCode(50))), &some),
            (false, "exited with status 101".into())
        );
        assert_eq!(judge(Side::Linux, Ok(None), &some), (false, "killed after 9 s".into()));
        assert_eq!(
            judge(Side::RingBench, Ok(Some(KernelExit::Reset)), &none),
            (false, "finished but printed no figures".into())
        );
        assert!(!judge(Side::Vireo, Err("cannot start".into()), &some).0);
    }

    #[test]
    fn commands_are_described_as_typed() {
        let mut c = Command::new("run.sh");
        c.arg("blk").env("SMP", "2");
        assert_eq!(describe(&c), "SMP=2 run.sh blk");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\r\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
