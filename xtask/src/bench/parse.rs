//! Reading what each side printed: vireo's `BENCH` lines and counters, the
//! Linux peer's and the limit probe's `RESULT` lines, the host ring bench's
//! `BENCH` lines. Pure functions over text, so canned output tests them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One result line: a workload name and its numeric `key=value` fields.
///
/// `RESULT name=x iops=..` (peer, probe) and `BENCH x iops=..` (vireo, ring
/// bench) both parse into this, so the summary does not care who printed
/// what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    pub fields: BTreeMap<String, f64>,
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
        let mut fields = BTreeMap::new();
        for word in rest.split_whitespace() {
            match word.split_once('=') {
                Some(("name", v)) if !v.is_empty() => name = Some(v.to_string()),
                Some((k, v)) => {
                    if let Ok(x) = v.parse::<f64>()
                        && x.is_finite()
                    {
                        fields.insert(k.to_string(), x);
                    }
                }
                None if name.is_none() && fields.is_empty() => name = Some(word.to_string()),
                None => {}
            }
        }
        Some(Self { name: name?, fields })
    }

    /// The value of field `key`, if present.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.get(key).copied()
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

/// Everything the runner keeps from one side's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Result lines in order; a later one of the same name supersedes.
    pub measurements: Vec<Measurement>,
    /// vireo's `bench: <what> <Type> { field: n, .. }` lines: per-CPU and
    /// per-queue counters, keyed by `<what>` (`cpu0`, `blk queue1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, BTreeMap<String, f64>>,
    /// Lines saying a workload did not run or went wrong (`ERROR ..`,
    /// `BENCH x skipped ..`, `BENCH x failed ..`, `panic: ..`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Output {
    /// The last measurement called `name`.
    pub fn find(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().rev().find(|m| m.name == name)
    }
}

/// Which result lines a side prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// vireo's serial log: `BENCH` lines, `bench:` counters, the boot time.
    Kernel,
    /// The Linux peer and the limit probe: `RESULT name=..` lines.
    Result,
    /// The host ring bench: `BENCH` lines on stdout.
    HostBench,
}

/// Name of the pseudo-measurement made from vireo's `boot: ready in N us`.
pub const BOOT_READY: &str = "boot_ready";

/// Parses one side's whole output.
pub fn parse_output(dialect: Dialect, text: &str) -> Output {
    let tag = match dialect {
        Dialect::Kernel | Dialect::HostBench => "BENCH",
        Dialect::Result => "RESULT",
    };
    let mut out = Output::default();
    for line in text.lines().map(str::trim_end) {
        if is_problem(line) {
            out.problems.push(line.trim_start().to_string());
        }
        if let Some(m) = Measurement::parse(tag, line) {
            if !m.fields.is_empty() {
                out.measurements.push(m);
            }
            continue;
        }
        if dialect != Dialect::Kernel {
            continue;
        }
        if let Some(us) = boot_ready_us(line) {
            let fields = BTreeMap::from([("us".to_string(), us)]);
            out.measurements.push(Measurement { name: BOOT_READY.into(), fields });
        } else if let Some((what, counters)) = parse_counters(line) {
            out.counters.insert(what, counters);
        }
    }
    out
}

/// True for lines that say something did not run or went wrong.
fn is_problem(line: &str) -> bool {
    let bench_problem = after_tag("BENCH", line)
        .is_some_and(|rest| rest.contains(" skipped") || rest.contains(" failed"));
    bench_problem || after_tag("ERROR", line).is_some() || line.contains("panic:")
}

/// `N` from the kernel's `boot: ready in N us` log line.
fn boot_ready_us(line: &str) -> Option<f64> {
    let rest = &line[line.find("boot: ready in ")? + "boot: ready in ".len()..];
    rest.strip_suffix(" us")?.trim().parse().ok()
}

/// `bench: cpu0 CounterSnapshot { a: 1, b: 2 }` → (`cpu0`, {a: 1, b: 2}).
///
/// The kernel prints its counter structs with `{:?}`, so a field added to a
/// struct shows up here without touching the runner.
fn parse_counters(line: &str) -> Option<(String, BTreeMap<String, f64>)> {
    let rest = &line[line.find("bench: ")? + "bench: ".len()..];
    let (head, body) = rest.split_once(" { ")?;
    let body = body.strip_suffix(" }")?;
    // `head` is `<what> <Type>`: drop the type name.
    let (what, _type_name) = head.rsplit_once(' ')?;
    let mut counters = BTreeMap::new();
    for field in body.split(", ") {
        let (key, value) = field.split_once(": ")?;
        counters.insert(key.to_string(), value.parse().ok()?);
    }
    Some((what.to_string(), counters))
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

    /// A real `bench=blk` boot of vireo (2026-12-02, this machine), cut.
    const KERNEL_OUT: &str = "\
[     0.095240] INFO  vireo: boot: ready in 95189 us\r\n\
bench: 2 CPUs, TSC 2445 MHz, 1 s per timed workload\r\n\
BENCH blk_randread4k_qd1 iops=11600 mb_s=47.5 lat_us_p50=77 lat_us_p99=197 ops=11604\r\n\
BENCH blk_seqread1m_qd1 skipped (no DMA memory)\r\n\
BENCH blk_randwrite4k_qd1 failed: IoError\r\n\
bench: blk queue0 QueueStats { added: 144587, kicks: 47378, kicks_suppressed: 97209 }\r\n\
bench: cpu1 CounterSnapshot { context_switches: 0, timer_ticks: 1075, idle_halts: 1076 }\r\n\
bench: cpu9 Broken { x: y }\r\n";

    /// The limit probe's output (2026-12-02, this machine).
    const PROBE_OUT: &str = "RESULT name=limit_randread4k_qd1 iops=9313 kicks=20000\n\
RESULT name=limit_randread4k_qd32 iops=178353 kicks=626\n";

    /// The host ring bench (2026-12-02, this machine) with cargo's noise.
    const RING_OUT: &str = "     Running benches/ring.rs (target/release/deps/ring-b3)\n\
BENCH ring_rt_per_s vireo=18977322 virtio_drivers=11198743 ratio=1.68 ratio_lo=1.61 ratio_hi=1.86 pairs=9 virtio_drivers_lost_kicks=0\n\
BENCH ring_rt_batch8_per_s vireo=21389892 virtio_drivers=11170575 ratio=1.89 ratio_lo=1.67 ratio_hi=2.45 pairs=9 virtio_drivers_lost_kicks=270\n";

    #[test]
    fn parses_peer_results() {
        let out = parse_output(Dialect::Result, PEER_OUT);
        let names: Vec<_> = out.measurements.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["randread4k_qd1", "randread4k_qd32", "randwrite4k_qd1", "seqread1m_qd1"]
        );
        let qd1 = out.find("randread4k_qd1").unwrap();
        assert_eq!(qd1.get("iops"), Some(15164.0));
        assert_eq!(qd1.get("lat_us_p99"), Some(206.0));
        assert_eq!(out.find("randread4k_qd32").unwrap().get("lat_us_p50"), None);
        assert_eq!(out.problems, ["ERROR seqread io failed"]);
        assert!(out.counters.is_empty());
    }

    #[test]
    fn parses_kernel_output() {
        let out = parse_output(Dialect::Kernel, KERNEL_OUT);
        let names: Vec<_> = out.measurements.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, [BOOT_READY, "blk_randread4k_qd1"]);
        assert_eq!(out.find(BOOT_READY).unwrap().get("us"), Some(95189.0));
        let qd1 = out.find("blk_randread4k_qd1").unwrap();
        assert_eq!((qd1.get("iops"), qd1.get("lat_us_p50")), (Some(11600.0), Some(77.0)));
        assert_eq!(
            out.problems,
            [
                "BENCH blk_seqread1m_qd1 skipped (no DMA memory)",
                "BENCH blk_randwrite4k_qd1 failed: IoError"
            ]
        );
        assert_eq!(out.counters.len(), 2, "{:?}", out.counters);
        assert_eq!(out.counters["blk queue0"]["kicks_suppressed"], 97209.0);
        assert_eq!(out.counters["cpu1"]["idle_halts"], 1076.0);
    }

    #[test]
    fn parses_probe_and_ring_output() {
        let probe = parse_output(Dialect::Result, PROBE_OUT);
        assert_eq!(probe.find("limit_randread4k_qd32").unwrap().get("iops"), Some(178353.0));
        assert_eq!(probe.find("limit_randread4k_qd1").unwrap().get("kicks"), Some(20000.0));
        let ring = parse_output(Dialect::HostBench, RING_OUT);
        assert_eq!(ring.measurements.len(), 2);
        let batch = ring.find("ring_rt_batch8_per_s").unwrap();
        assert_eq!(batch.get("ratio_lo"), Some(1.67));
        assert_eq!(batch.get("ratio_hi"), Some(2.45));
        assert_eq!(batch.get("virtio_drivers_lost_kicks"), Some(270.0));
    }

    #[test]
    fn later_measurement_supersedes() {
        let out = parse_output(Dialect::Result, "RESULT name=a iops=1\nRESULT name=a iops=2\n");
        assert_eq!(out.find("a").unwrap().get("iops"), Some(2.0));
    }

    #[test]
    fn bare_words_and_non_numbers_are_tolerated() {
        let m = Measurement::parse("BENCH", "BENCH blk_randread4k_qd1 iops=2000 lat_us_p50=480")
            .unwrap();
        assert_eq!(m.name, "blk_randread4k_qd1");
        assert_eq!(m.get("lat_us_p50"), Some(480.0));
        let m = Measurement::parse("BENCH", "BENCH ipi_round_trip skipped (one CPU)").unwrap();
        assert_eq!(m.name, "ipi_round_trip");
        assert!(m.fields.is_empty());
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
}
