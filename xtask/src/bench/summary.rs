//! From per-round figures to what `make bench` prints: each side's median
//! and min–max over rounds, the median of the per-round ratios with its
//! min–max (`COMPARE` lines), and the markdown tables README quotes.

use serde::{Deserialize, Serialize};

use super::plan::{Group, RoundFigures, Unit, Workload};
use super::stats::{RoundRatio, Spread, ratio_spread};

/// A secondary figure's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtraSummary {
    pub key: String,
    pub unit: Unit,
    pub vireo: Option<Spread>,
    pub other: Option<Spread>,
}

/// One workload over all kept rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub id: String,
    pub group: Group,
    pub label: String,
    pub unit: Unit,
    /// `linux` or `virtio_drivers`; `None` when vireo runs alone.
    pub other_name: Option<String>,
    pub vireo: Option<Spread>,
    pub other: Option<Spread>,
    pub limit: Option<Spread>,
    /// vireo / other: the median of per-round ratios.
    pub ratio: Option<Spread>,
    /// vireo / limit probe: the median of per-round ratios.
    pub vs_limit: Option<Spread>,
    pub extras: Vec<ExtraSummary>,
    /// Rounds summarised, and how many of them were disturbed even after
    /// their redo.
    pub rounds: usize,
    pub disturbed_rounds: usize,
}

/// Summarises `w` over the figures of its kept rounds.
pub fn summarise(
    w: &Workload,
    rounds: &[RoundFigures],
    disturbed_rounds: usize,
) -> WorkloadSummary {
    let spread = |pick: &dyn Fn(&RoundFigures) -> Option<f64>| {
        Spread::of(&rounds.iter().filter_map(pick).collect::<Vec<_>>())
    };
    let ratios = |pick: &dyn Fn(&RoundFigures) -> Option<RoundRatio>| {
        ratio_spread(&rounds.iter().filter_map(pick).collect::<Vec<_>>())
    };
    let extras = w
        .extras
        .iter()
        .enumerate()
        .map(|(i, e)| ExtraSummary {
            key: e.key.into(),
            unit: e.unit,
            vireo: spread(&|r| r.extras.get(i).and_then(|x| x.0)),
            other: spread(&|r| r.extras.get(i).and_then(|x| x.1)),
        })
        .collect();
    WorkloadSummary {
        id: w.id.clone(),
        group: w.group,
        label: w.label.clone(),
        unit: w.unit,
        other_name: w.group.other_name().map(String::from),
        vireo: spread(&|r| r.vireo),
        other: spread(&|r| r.other),
        limit: spread(&|r| r.limit),
        ratio: ratios(&|r| r.ratio),
        vs_limit: ratios(&|r| r.vs_limit),
        extras,
        rounds: rounds.len(),
        disturbed_rounds,
    }
}

/// A figure with three significant digits or more (all digits from 100 up).
pub fn plain(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// `median [lo-hi]`.
pub fn bracketed(s: &Spread, fmt: impl Fn(f64) -> String) -> String {
    format!("{} [{}-{}]", fmt(s.median), fmt(s.lo), fmt(s.hi))
}

/// The `COMPARE` line of one workload: each side's median [min-max] over
/// rounds, then the median [min-max] of the per-round ratios.
pub fn compare_line(s: &WorkloadSummary) -> String {
    let mut line = format!("COMPARE {}", s.id);
    let ratio2 = |v: f64| format!("{v:.2}");
    let mut side = |name: &str, v: &Option<Spread>, fmt: &dyn Fn(f64) -> String| {
        if let Some(v) = v {
            line.push_str(&format!(" {name}={}", bracketed(v, fmt)));
        }
    };
    side("vireo", &s.vireo, &plain);
    side(s.other_name.as_deref().unwrap_or("other"), &s.other, &plain);
    side("limit", &s.limit, &plain);
    side("ratio", &s.ratio, &ratio2);
    side("vs_limit", &s.vs_limit, &ratio2);
    if s.vireo.is_none() {
        line.push_str(" vireo=missing");
    }
    line.push_str(&format!(" unit={} rounds={}", unit_word(s.unit), s.rounds));
    if s.disturbed_rounds > 0 {
        line.push_str(&format!(" disturbed={}", s.disturbed_rounds));
    }
    line
}

fn unit_word(unit: Unit) -> &'static str {
    match unit {
        Unit::Iops => "iops",
        Unit::Fps => "fps",
        Unit::PerSecond => "per_s",
        Unit::MegabytesPerSecond => "mb_s",
        Unit::Nanoseconds => "ns",
        Unit::Microseconds => "us",
        Unit::Count => "count",
    }
}

/// Divisor and suffix that print `v` of `unit` with a readable magnitude.
fn scale(v: f64, unit: Unit) -> (f64, &'static str) {
    let v = v.abs();
    match unit {
        Unit::Iops if v >= 1e3 => (1e3, " k IOPS"),
        Unit::Iops => (1.0, " IOPS"),
        Unit::Fps if v >= 1e3 => (1e3, " k fps"),
        Unit::Fps => (1.0, " fps"),
        Unit::PerSecond if v >= 1e6 => (1e6, " M/s"),
        Unit::PerSecond => (1.0, " /s"),
        Unit::MegabytesPerSecond if v >= 1e3 => (1e3, " GB/s"),
        Unit::MegabytesPerSecond => (1.0, " MB/s"),
        Unit::Nanoseconds if v >= 1e6 => (1e6, " ms"),
        Unit::Nanoseconds if v >= 1e3 => (1e3, " µs"),
        Unit::Nanoseconds => (1.0, " ns"),
        Unit::Microseconds if v >= 1e3 => (1e3, " ms"),
        Unit::Microseconds => (1.0, " µs"),
        Unit::Count => (1.0, ""),
    }
}

/// `16.7 k IOPS (15.1–18.0)`: the median with unit, then the range in the
/// median's scale; no range when every round gave the same figure.
pub fn cell(s: &Option<Spread>, unit: Unit) -> String {
    let Some(s) = s else { return "–".into() };
    let (div, suffix) = scale(s.median, unit);
    let num = |v: f64| if unit == Unit::Count { format!("{v:.0}") } else { plain(v / div) };
    let mut out = format!("{}{suffix}", num(s.median));
    if s.lo != s.hi {
        out.push_str(&format!(" ({}–{})", num(s.lo), num(s.hi)));
    }
    out
}

/// `3.37× (3.10–3.90)`.
pub fn ratio_cell(s: &Option<Spread>) -> String {
    let Some(s) = s else { return "–".into() };
    let mut out = format!("{}×", plain(s.median));
    if s.lo != s.hi {
        out.push_str(&format!(" ({}–{})", plain(s.lo), plain(s.hi)));
    }
    out
}

/// Medians of a workload's latency extras: `p50 / p99 77 / 197 µs`.
fn latencies(extras: &[ExtraSummary], side: impl Fn(&ExtraSummary) -> Option<Spread>) -> String {
    let median = |key: &str| {
        extras.iter().find(|e| e.key == key).and_then(&side).map(|s| format!("{:.0}", s.median))
    };
    match (median("lat_us_p50"), median("lat_us_p99")) {
        (Some(p50), Some(p99)) => format!("; p50 / p99 {p50} / {p99} µs"),
        _ => String::new(),
    }
}

/// The markdown tables README quotes, under `header`: the ring bench, the
/// kernel's own latencies, and vireo against the Linux peer and the limit.
pub fn markdown(header: &str, all: &[WorkloadSummary]) -> String {
    let mut out = format!("{header}\n");
    let of = |g: Group| all.iter().filter(move |s| s.group == g);
    if of(Group::Ring).next().is_some() {
        out.push_str("\n| case | vireo | virtio-drivers | vireo / virtio-drivers | kicks virtio-drivers missed |\n|---|---|---|---|---|\n");
        for s in of(Group::Ring) {
            let lost = s
                .extras
                .iter()
                .find(|e| e.key == "lost_kicks")
                .map(|e| cell(&e.other, Unit::Count));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                s.label,
                cell(&s.vireo, s.unit),
                cell(&s.other, s.unit),
                ratio_cell(&s.ratio),
                lost.unwrap_or_else(|| "–".into())
            ));
        }
    }
    if of(Group::Sched).next().is_some() {
        out.push_str("\n| what | median | p99 |\n|---|---|---|\n");
        for s in of(Group::Sched) {
            let p99 = s.extras.iter().find(|e| e.key == "p99_ns").map(|e| cell(&e.vireo, e.unit));
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                s.label,
                cell(&s.vireo, s.unit),
                p99.unwrap_or_else(|| "–".into())
            ));
        }
    }
    let guests: Vec<_> = all
        .iter()
        .filter(|s| matches!(s.group, Group::Blk | Group::Gpu | Group::Gpu1080))
        .collect();
    if !guests.is_empty() {
        out.push_str("\n| workload | vireo | Linux | limit probe | vireo / Linux | vireo / limit |\n|---|---|---|---|---|---|\n");
        for s in guests {
            let label = if matches!(s.group, Group::Gpu | Group::Gpu1080) {
                format!("GPU: {}", s.label)
            } else {
                s.label.clone()
            };
            out.push_str(&format!(
                "| {label} | {}{} | {}{} | {} | {} | {} |\n",
                cell(&s.vireo, s.unit),
                latencies(&s.extras, |e| e.vireo),
                cell(&s.other, s.unit),
                latencies(&s.extras, |e| e.other),
                cell(&s.limit, s.unit),
                ratio_cell(&s.ratio),
                ratio_cell(&s.vs_limit),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::workloads;

    fn round(vireo: f64, linux: f64, limit: f64) -> RoundFigures {
        RoundFigures {
            vireo: Some(vireo),
            other: Some(linux),
            limit: Some(limit),
            ratio: RoundRatio::divide(Some(vireo), Some(linux)),
            vs_limit: RoundRatio::divide(Some(vireo), Some(limit)),
            extras: vec![(Some(80.0), Some(240.0)), (Some(200.0), Some(900.0))],
        }
    }

    fn qd1() -> Workload {
        workloads((1280, 800)).into_iter().find(|w| w.id == "randread4k_qd1").unwrap()
    }

    /// Three rounds; per round vireo/Linux is 3, 2, 3. The median of those
    /// is 3.0; the ratio of the medians (12000 / 5000 = 2.4) pairs figures
    /// from different rounds and must not come out.
    #[test]
    fn summary_takes_medians_ranges_and_per_round_ratios() {
        let rounds = [
            round(12_000.0, 4_000.0, 16_000.0),
            round(10_000.0, 5_000.0, 20_000.0),
            round(24_000.0, 8_000.0, 30_000.0),
        ];
        let s = summarise(&qd1(), &rounds, 1);
        assert_eq!(s.vireo, Some(Spread { median: 12_000.0, lo: 10_000.0, hi: 24_000.0, n: 3 }));
        assert_eq!(s.other, Some(Spread { median: 5_000.0, lo: 4_000.0, hi: 8_000.0, n: 3 }));
        assert_eq!(s.ratio, Some(Spread { median: 3.0, lo: 2.0, hi: 3.0, n: 3 }));
        assert_eq!(s.vs_limit.unwrap().median, 0.75);
        assert_eq!(s.extras[0].other.unwrap().median, 240.0);
        assert_eq!((s.rounds, s.disturbed_rounds), (3, 1));
        assert_eq!(
            compare_line(&s),
            "COMPARE randread4k_qd1 vireo=12000 [10000-24000] linux=5000 [4000-8000] \
             limit=20000 [16000-30000] ratio=3.00 [2.00-3.00] vs_limit=0.75 [0.50-0.80] \
             unit=iops rounds=3 disturbed=1"
        );
    }

    #[test]
    fn a_round_missing_one_side_gives_no_ratio() {
        let mut lone = round(30_000.0, 1.0, 1.0);
        (lone.other, lone.ratio) = (None, None);
        let s = summarise(&qd1(), &[round(12_000.0, 4_000.0, 16_000.0), lone], 0);
        assert_eq!(s.vireo.unwrap().n, 2);
        assert_eq!(s.other.unwrap().n, 1);
        assert_eq!(s.ratio, Some(Spread { median: 3.0, lo: 3.0, hi: 3.0, n: 1 }));
        let none = summarise(&qd1(), &[], 0);
        assert_eq!((none.vireo, none.ratio), (None, None));
        assert!(compare_line(&none).contains("vireo=missing"), "{}", compare_line(&none));
    }

    #[test]
    fn cells_scale_and_show_ranges() {
        let s = |median, lo, hi| Some(Spread { median, lo, hi, n: 3 });
        assert_eq!(cell(&s(16_712.0, 15_100.0, 18_010.0), Unit::Iops), "16.7 k IOPS (15.1–18.0)");
        assert_eq!(cell(&s(575.1, 575.1, 575.1), Unit::Fps), "575 fps");
        assert_eq!(cell(&s(4196.0, 2245.0, 6148.0), Unit::Fps), "4.20 k fps (2.25–6.15)");
        assert_eq!(cell(&s(2925.0, 2800.0, 3100.0), Unit::Nanoseconds), "2.92 µs (2.80–3.10)");
        assert_eq!(cell(&s(18.9e6, 17e6, 19.5e6), Unit::PerSecond), "18.9 M/s (17.0–19.5)");
        assert_eq!(cell(&None, Unit::Iops), "–");
        assert_eq!(cell(&s(0.0, 0.0, 270.0), Unit::Count), "0 (0–270)");
        assert_eq!(ratio_cell(&s(1.68, 1.35, 2.23)), "1.68× (1.35–2.23)");
        assert_eq!(ratio_cell(&s(12.1, 9.81, 14.0)), "12.1× (9.81–14.0)");
    }

    #[test]
    fn markdown_has_a_row_per_workload() {
        let all: Vec<_> = workloads((1280, 800))
            .iter()
            .map(|w| summarise(w, &[round(12_000.0, 4_000.0, 16_000.0)], 0))
            .collect();
        let md = markdown("From `x.json`.", &all);
        assert!(md.starts_with("From `x.json`.\n"));
        let rows = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| case")).count();
        // Three header rows (case, what, workload) plus a row per workload.
        assert_eq!(rows, all.len() + 2, "{md}");
        assert!(md.contains("| 4 KiB random read, QD1 | 12.0 k IOPS; p50 / p99 80 / 200 µs | 4.00 k IOPS; p50 / p99 240 / 900 µs | 16.0 k IOPS | 3.00× | 0.75× |"), "{md}");
    }
}
