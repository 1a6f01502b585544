//! The record a bench run keeps: `target/bench/<timestamp>-<commit>.json`
//! with every figure of every round, the kernel's counters, the host, QEMU
//! and the disturbance, so README numbers are pasted from one file and a
//! later run can be compared with it (`--compare`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::load::{self, Load, QuietWait};
use super::parse::Output;
use super::plan::{Group, Side};
use super::summary::WorkloadSummary;

/// Bumped when a field changes meaning, so `--compare` can refuse.
pub const SCHEMA: u32 = 1;

/// One process of a round: a guest boot or the host ring bench.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub side: Side,
    /// The command, as it would be typed.
    pub command: String,
    /// Wall time and what other processes used meanwhile.
    pub load: Load,
    /// How it ended (`ok`, or why not).
    pub exit: String,
    pub ok: bool,
    pub output: Output,
}

/// One attempt of one group in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRound {
    pub group: Group,
    /// 1-based.
    pub round: u32,
    /// 1, or 2 for the redo of a disturbed attempt.
    pub attempt: u32,
    /// The wait for a quiet host just before this attempt, if there was one.
    pub quiet_wait: Option<QuietWait>,
    /// Others' cores during the worst run of this attempt.
    pub worst_others_cores: f64,
    /// At or above [`load::DISTURBED_CORES`].
    pub disturbed: bool,
    /// This round of this group was run twice.
    pub redone: bool,
    /// The attempt the summary uses.
    pub kept: bool,
    pub runs: Vec<RunRecord>,
}

impl GroupRound {
    /// The figure `key` of measurement `name` in `side`'s output.
    pub fn lookup(&self, side: Side, name: &str, key: &str) -> Option<f64> {
        let run = self.runs.iter().find(|r| r.side == side)?;
        run.output.find(name)?.get(key)
    }
}

/// The thresholds in force, so a saved run says what "disturbed" meant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub quiet_cores: f64,
    pub disturbed_cores: f64,
    pub quiet_wait_max_s: f64,
}

impl Thresholds {
    pub fn current() -> Self {
        Self {
            quiet_cores: load::QUIET_CORES,
            disturbed_cores: load::DISTURBED_CORES,
            quiet_wait_max_s: load::QUIET_WAIT_MAX.as_secs_f64(),
        }
    }
}

/// The machine the run was taken on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub mem_total_kib: u64,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub qemu_version: String,
    pub rustc: String,
}

impl HostInfo {
    /// Reads /proc and asks QEMU and rustc for their versions; unknown
    /// fields stay empty rather than failing the run.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease"),
            mem_total_kib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or(0),
            loadavg_start: read("/proc/loadavg"),
            loadavg_end: String::new(),
            qemu_version: first_line_of(crate::qemu::QEMU_BIN, &["--version"]),
            rustc: first_line_of("rustc", &["--version"]),
        }
    }
}

/// The value of the first `key: value` line of a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The first line `program args` prints, or empty.
fn first_line_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(String::from))
        .unwrap_or_default()
}

/// Everything one `make bench` run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    pub schema: u32,
    /// Started, UTC, ISO 8601.
    pub started_utc: String,
    /// `git describe`-style short commit, `-dirty` with local changes.
    pub commit: String,
    pub host: HostInfo,
    pub accel: String,
    pub smp: u32,
    pub rounds: u32,
    pub secs_per_workload: u32,
    pub peer: bool,
    pub groups: Vec<Group>,
    pub gpu_size: (u32, u32),
    pub thresholds: Thresholds,
    pub group_rounds: Vec<GroupRound>,
    pub summary: Vec<WorkloadSummary>,
    /// Wall time of the whole run, builds included.
    pub wall_s: f64,
    pub errors: Vec<String>,
}

impl BenchRun {
    /// Writes the run as pretty JSON to `dir/<stamp>-<commit>.json`.
    pub fn save(&self, dir: &Path, stamp: &str) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{stamp}-{}.json", self.commit));
        let json = serde_json::to_string_pretty(self).map_err(|e| format!("bench JSON: {e}"))?;
        std::fs::write(&path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Reads a saved run.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let run: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a bench run: {e}", path.display()))?;
        if run.schema != SCHEMA {
            return Err(format!(
                "{} has schema {}, this runner writes {SCHEMA}",
                path.display(),
                run.schema
            ));
        }
        Ok(run)
    }
}

/// The short commit of `root`'s HEAD, with `-dirty` when the work tree has
/// changes (a number from uncommitted code must say so).
pub fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]) else { return "nogit".into() };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{hash}-dirty"),
        _ => hash,
    }
}

/// `now` as (`20261202T031500Z` for file names, `2026-12-02T03:15:00Z`).
pub fn utc_stamps(now: SystemTime) -> (String, String) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z"),
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_of_known_instants() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc_stamps(at(0)).1, "1970-01-01T00:00:00Z");
        // 2000-02-29 (leap day, century divisible by 400) 12:34:56.
        assert_eq!(utc_stamps(at(951_827_696)).1, "2000-02-29T12:34:56Z");
        // 2026-12-02 03:15:00.
        assert_eq!(
            utc_stamps(at(1_796_181_300)),
            ("20261202T031500Z".to_string(), "2026-12-02T03:15:00Z".to_string())
        );
        assert_eq!(utc_stamps(at(4_107_542_399)).1, "2100-02-28T23:59:59Z");
    }

    #[test]
    fn proc_fields() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel name\t: other\n";
        assert_eq!(field(cpuinfo, "model name").as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(field("MemTotal:  8000 kB\n", "MemTotal").as_deref(), Some("8000 kB"));
        assert_eq!(field("", "x"), None);
    }

    #[test]
    fn lookup_reads_the_sides_output() {
        let output = super::super::parse::parse_output(
            super::super::parse::Dialect::Result,
            "RESULT name=randread4k_qd1 iops=3447\n",
        );
        let run = RunRecord {
            side: Side::Linux,
            command: "run-peer.sh blk 2".into(),
            load: Load::default(),
            exit: "ok".into(),
            ok: true,
            output,
        };
        let gr = GroupRound {
            group: Group::Blk,
            round: 1,
            attempt: 1,
            quiet_wait: None,
            worst_others_cores: 0.0,
            disturbed: false,
            redone: false,
            kept: true,
            runs: vec![run],
        };
        assert_eq!(gr.lookup(Side::Linux, "randread4k_qd1", "iops"), Some(3447.0));
        assert_eq!(gr.lookup(Side::Vireo, "randread4k_qd1", "iops"), None);
        assert_eq!(gr.lookup(Side::Linux, "randread4k_qd1", "mbps"), None);
    }
}
