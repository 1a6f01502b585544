//! `bench --peer`: run the Linux peer guest (`../shared/peers/linux-guest`)
//! after vireo's own bench boot and compare the two per workload.
//!
//! The machine's absolute speed drifts from minute to minute under TCG, so a
//! vireo figure means little on its own; a vireo/Linux ratio taken in the
//! same run, on the same QEMU device flags, is what the README can quote.
//!
//! The parsing and comparison are pure functions over lines so they can be
//! unit-tested with canned output; only [`run_peer`] touches processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu::Accel;

/// Environment variable overriding where `run-peer.sh` lives.
pub const PEER_DIR_ENV: &str = "VIREO_PEER_DIR";

/// The peer's default home, relative to the repository root.
const DEFAULT_PEER_DIR: &str = "../shared/peers/linux-guest";

/// The peer script, inside the peer directory.
const PEER_SCRIPT: &str = "run-peer.sh";

/// Seconds each peer workload runs: long enough for a stable p99, short
/// enough that a warm peer run stays under half a minute.
const PEER_SECS: u32 = 5;

/// Block workloads both sides implement; vireo names them `blk_<name>`.
pub const BLK_WORKLOADS: [&str; 4] =
    ["randread4k_qd1", "randread4k_qd32", "randwrite4k_qd1", "seqread1m_qd1"];

/// One result line: a workload name and its numeric `key=value` fields.
///
/// Both `RESULT name=x iops=..` (the peer) and `BENCH x iops=..` (vireo)
/// parse into this, so the comparison does not care who printed what.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub name: String,
    fields: Vec<(String, f64)>,
}

impl Measurement {
    /// Parses the part of `line` after the token `tag` (e.g. `"RESULT"`).
    ///
    /// The name is the `name=` field, or else the first bare word. Fields
    /// whose value is not a number are skipped rather than failing the line:
    /// a kernel may add `unit=us` or `skipped` without breaking the runner.
    /// Returns `None` when the tag is absent or no name is found.
    pub fn parse(tag: &str, line: &str) -> Option<Self> {
        let rest = after_tag(tag, line)?;
        let mut name = None;
        let mut fields = Vec::new();
        for word in rest.split_whitespace() {
            match word.split_once('=') {
                Some(("name", v)) if !v.is_empty() => name = Some(v.to_string()),
                Some((k, v)) => {
                    if let Ok(x) = v.parse::<f64>() {
                        fields.push((k.to_string(), x));
                    }
                }
                None if name.is_none() && fields.is_empty() => name = Some(word.to_string()),
                None => {}
            }
        }
        Some(Self { name: name?, fields })
    }

    /// The value of field `key`, if present and finite.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.iter().find(|(k, _)| k == key).map(|&(_, v)| v).filter(|v| v.is_finite())
    }
}

/// The text after the first whole-word `tag` in `line`.
///
/// Serial lines may carry a `\r`, a timestamp or garbage before the tag, so
/// the tag is searched for rather than required at column 0; "whole word"
/// keeps `XRESULT` from matching.
fn after_tag<'a>(tag: &str, line: &'a str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = line[from..].find(tag).map(|i| i + from) {
        let end = i + tag.len();
        let starts_word = line[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let ends_word = line[end..].chars().next().is_none_or(char::is_whitespace);
        if starts_word && ends_word {
            return Some(&line[end..]);
        }
        from = end;
    }
    None
}

/// All `tag` lines of `text`, in order; other lines are ignored.
pub fn parse_all(tag: &str, text: &str) -> Vec<Measurement> {
    text.lines().filter_map(|l| Measurement::parse(tag, l)).collect()
}

/// `value` with `decimals` places, or `-` when the workload has no such
/// field (the peer's QD32 line has no latencies).
fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The `PEER name iops=.. p50_us=.. p99_us=..` line for one peer result.
pub fn peer_line(m: &Measurement) -> String {
    if let Some(fps) = m.get("fps") {
        return format!("PEER {} fps={fps:.1}", m.name);
    }
    format!(
        "PEER {} iops={} p50_us={} p99_us={}",
        m.name,
        fmt_opt(m.get("iops"), 0),
        fmt_opt(m.get("lat_us_p50"), 1),
        fmt_opt(m.get("lat_us_p99"), 1),
    )
}

/// One `COMPARE` line per block workload that both sides reported IOPS for;
/// the ratio is vireo/Linux, so above 1 means vireo is faster.
///
/// Workloads missing on either side are listed in the second vector so the
/// caller can say so instead of silently printing fewer lines.
pub fn compare(vireo: &[Measurement], peer: &[Measurement]) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut missing = Vec::new();
    for name in BLK_WORKLOADS {
        let ours = find_iops(vireo, &format!("blk_{name}"));
        let theirs = find_iops(peer, name);
        match (ours, theirs) {
            (Some(v), Some(l)) if l > 0.0 => lines.push(format!(
                "COMPARE {name} vireo_iops={v:.0} linux_iops={l:.0} ratio={:.2}",
                v / l
            )),
            _ => missing.push(name.to_string()),
        }
    }
    // GPU workloads: the kernel names them as the peer does
    // (`gpu_full_WxH`, `gpu_damage64_64x64`); frames per second.
    for ours in vireo.iter().filter(|m| m.name.starts_with("gpu_")) {
        let theirs = peer.iter().rev().find(|m| m.name == ours.name).and_then(|m| m.get("fps"));
        match (ours.get("fps"), theirs) {
            (Some(v), Some(l)) if l > 0.0 => lines.push(format!(
                "COMPARE {} vireo_fps={v:.1} linux_fps={l:.1} ratio={:.2}",
                ours.name,
                v / l
            )),
            _ => missing.push(ours.name.clone()),
        }
    }
    (lines, missing)
}

/// The display size of the kernel's full-frame GPU bench (`gpu_full_WxH`),
/// so the peer draws the same number of pixels; QEMU's default otherwise.
pub fn gpu_size(vireo: &[Measurement]) -> (u32, u32) {
    vireo
        .iter()
        .find_map(|m| {
            let (w, h) = m.name.strip_prefix("gpu_full_")?.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((1280, 800))
}

/// IOPS of the last measurement called `name` (a rerun supersedes).
fn find_iops(ms: &[Measurement], name: &str) -> Option<f64> {
    ms.iter().rev().find(|m| m.name == name).and_then(|m| m.get("iops"))
}

/// Where `run-peer.sh` lives: `$VIREO_PEER_DIR`, else `../shared/...` from
/// the repository root (relative values are taken from the root as well).
pub fn peer_dir(root: &Path, env_value: Option<&str>) -> PathBuf {
    let dir = env_value.filter(|s| !s.is_empty()).unwrap_or(DEFAULT_PEER_DIR);
    root.join(dir)
}

/// The peer command, or a message saying where the script was looked for.
///
/// The peer's accelerator and vCPU count follow vireo's run; with different
/// ones the ratio would compare machines, not kernels.
pub fn peer_command(dir: &Path, mode: PeerMode, accel: Accel, smp: u32) -> Result<Command, String> {
    let script = dir.join(PEER_SCRIPT);
    if !script.is_file() {
        return Err(format!(
            "Linux peer not found: {} does not exist.\n    \
             It ships beside the repository in ../shared/peers/linux-guest; \
             set {PEER_DIR_ENV} to its directory if it lives elsewhere.",
            script.display()
        ));
    }
    let mut c = Command::new(script);
    let mode_arg = match mode {
        PeerMode::Blk => "blk",
        PeerMode::Gpu { width, height } => {
            c.env("XRES", width.to_string()).env("YRES", height.to_string());
            "gpu"
        }
    };
    c.args([mode_arg, &PEER_SECS.to_string()])
        .env("ACCEL", accel.arg())
        .env("SMP", smp.to_string());
    Ok(c)
}

/// Which peer workload set to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// The four block workloads.
    Blk,
    /// Full-frame and 64x64-damage frames at this display size.
    Gpu {
        /// Display width in pixels.
        width: u32,
        /// Display height in pixels.
        height: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real peer output (2026-11-25, this machine) plus an `ERROR` line and
    /// console noise the parser must skip.
    const PEER_OUT: &str = "PEER init up 2.89 1.08\r\n\
RESULT name=randread4k_qd1 iops=15164 mbps=62.1 lat_us_mean=62.7 lat_us_p50=42.2 lat_us_p99=206.0 n=75821\r\n\
RESULT name=randread4k_qd32 iops=39039 mbps=159.9 n=195200\n\
RESULT name=randwrite4k_qd1 iops=1833 mbps=7.5 lat_us_mean=539.1 lat_us_p50=156.5 lat_us_p99=4681.2 n=9180\n\
ERROR seqread io failed\n\
RESULT name=seqread1m_qd1 iops=3542 mbps=3713.7 lat_us_mean=277.8 lat_us_p50=169.1 lat_us_p99=3188.4 n=17709\n\
PEER done\n\
[   24.124302] reboot: Power down\n";

    #[test]
    fn parses_peer_results() {
        let ms = parse_all("RESULT", PEER_OUT);
        let names: Vec<_> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, BLK_WORKLOADS);
        assert_eq!(ms[0].get("iops"), Some(15164.0));
        assert_eq!(ms[0].get("lat_us_p99"), Some(206.0));
        assert_eq!(ms[1].get("lat_us_p50"), None);
    }

    #[test]
    fn peer_lines() {
        let ms = parse_all("RESULT", PEER_OUT);
        assert_eq!(peer_line(&ms[0]), "PEER randread4k_qd1 iops=15164 p50_us=42.2 p99_us=206.0");
        assert_eq!(peer_line(&ms[1]), "PEER randread4k_qd32 iops=39039 p50_us=- p99_us=-");
    }

    #[test]
    fn parses_kernel_bench_lines() {
        let m = Measurement::parse(
            "BENCH",
            "BENCH blk_randread4k_qd1 iops=2000 lat_us_p50=480 lat_us_p99=900",
        )
        .unwrap();
        assert_eq!(m.name, "blk_randread4k_qd1");
        assert_eq!(m.get("lat_us_p50"), Some(480.0));
        // Bare words after the name and non-numeric values are tolerated.
        let m = Measurement::parse("BENCH", "BENCH ipi_round_trip skipped (one CPU)").unwrap();
        assert_eq!(m.name, "ipi_round_trip");
        let m = Measurement::parse("BENCH", "BENCH x unit=us iops=nan").unwrap();
        assert_eq!((m.get("unit"), m.get("iops")), (None, None));
    }

    #[test]
    fn tag_must_be_a_whole_word() {
        assert!(Measurement::parse("RESULT", "XRESULT name=a iops=1").is_none());
        assert!(Measurement::parse("RESULT", "RESULTS name=a iops=1").is_none());
        assert!(Measurement::parse("RESULT", "RESULT").is_none());
        assert!(Measurement::parse("RESULT", "RESULT iops=3").is_none());
        let m = Measurement::parse("RESULT", "[ 1.0] RESULT name=a iops=1").unwrap();
        assert_eq!(m.name, "a");
        let m = Measurement::parse("BENCH", "noise BENCH_x BENCH blk_a iops=1").unwrap();
        assert_eq!(m.name, "blk_a");
    }

    #[test]
    fn compares_matching_workloads() {
        let peer = parse_all("RESULT", PEER_OUT);
        let vireo = parse_all(
            "BENCH",
            "BENCH ctx_switch samples=10 median_ns=100 p99_ns=200 min_ns=50\n\
             BENCH blk_randread4k_qd1 iops=7582 lat_us_p50=100 lat_us_p99=300\n\
             BENCH blk_randread4k_qd32 iops=78078 lat_us_p50=300 lat_us_p99=800\n\
             BENCH blk_seqread1m_qd1 skipped (no samples)\n",
        );
        let (lines, missing) = compare(&vireo, &peer);
        assert_eq!(
            lines,
            [
                "COMPARE randread4k_qd1 vireo_iops=7582 linux_iops=15164 ratio=0.50",
                "COMPARE randread4k_qd32 vireo_iops=78078 linux_iops=39039 ratio=2.00",
            ]
        );
        assert_eq!(missing, ["randwrite4k_qd1", "seqread1m_qd1"]);
    }

    #[test]
    fn compares_gpu_frames_per_second() {
        let peer = parse_all(
            "RESULT",
            "RESULT name=gpu_full_1280x800 fps=135.7 frames=679
             RESULT name=gpu_damage64_64x64 fps=4987.3 frames=24937
",
        );
        let vireo = parse_all(
            "BENCH",
            "BENCH gpu_full_1280x800 fps=271.4 frames=272 frame_us_p50=1 frame_us_p99=2
             BENCH gpu_damage64_64x64 fps=4987.3 frames=5000
",
        );
        let (lines, missing) = compare(&vireo, &peer);
        assert!(lines.contains(
            &"COMPARE gpu_full_1280x800 vireo_fps=271.4 linux_fps=135.7 ratio=2.00".into()
        ));
        assert!(lines.contains(
            &"COMPARE gpu_damage64_64x64 vireo_fps=4987.3 linux_fps=4987.3 ratio=1.00".into()
        ));
        assert_eq!(missing.len(), BLK_WORKLOADS.len());
        assert_eq!(gpu_size(&vireo), (1280, 800));
        assert_eq!(gpu_size(&[]), (1280, 800));
    }

    #[test]
    fn no_peer_results_compares_nothing() {
        let vireo = parse_all("BENCH", "BENCH blk_randread4k_qd1 iops=1\n");
        let (lines, missing) = compare(&vireo, &[]);
        assert!(lines.is_empty());
        assert_eq!(missing.len(), BLK_WORKLOADS.len());
        let zero = parse_all("RESULT", "RESULT name=randread4k_qd1 iops=0\n");
        assert!(compare(&vireo, &zero).0.is_empty());
    }

    #[test]
    fn peer_dir_default_and_override() {
        let root = Path::new("/r/main");
        assert_eq!(peer_dir(root, None), Path::new("/r/main/../shared/peers/linux-guest"));
        assert_eq!(peer_dir(root, Some("")), peer_dir(root, None));
        assert_eq!(peer_dir(root, Some("/opt/peer")), Path::new("/opt/peer"));
    }

    #[test]
    fn missing_script_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("xtask-nopeer-{}", std::process::id()));
        let err = peer_command(&dir, PeerMode::Blk, Accel::Tcg, 2).unwrap_err();
        assert!(err.contains("run-peer.sh does not exist"), "{err}");
        assert!(err.contains(PEER_DIR_ENV), "{err}");
    }
}
