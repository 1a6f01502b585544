//! `--compare <file>`: today's ratios beside a saved run's.
//!
//! Ratios are what carries across runs (both sides of a round see the same
//! host); a workload without one (the sched group, vireo alone) is compared
//! by its absolute median, marked as such, since the host's speed drifts.

use super::stats::Spread;
use super::summary::{WorkloadSummary, bracketed, plain};

/// The figure a workload is compared by, and whether it is a ratio.
fn key_figure(s: &WorkloadSummary) -> Option<(Spread, &'static str)> {
    s.ratio.map(|r| (r, "ratio")).or_else(|| s.vireo.map(|v| (v, "vireo_absolute")))
}

/// Whether two ranges overlap: if they do, today's run does not show a
/// change the saved run's own spread could not explain.
fn overlaps(a: &Spread, b: &Spread) -> bool {
    a.lo <= b.hi && b.lo <= a.hi
}

/// One `VERSUS` line per workload in either run, in today's order, then the
/// ones only the saved run has.
pub fn versus_lines(now: &[WorkloadSummary], saved: &[WorkloadSummary]) -> Vec<String> {
    let fmt = |s: &Spread| bracketed(s, plain);
    let mut lines = Vec::new();
    for today in now {
        let before = saved.iter().find(|s| s.id == today.id);
        let line = match (key_figure(today), before.and_then(key_figure)) {
            (Some((a, what)), Some((b, saved_what))) if what == saved_what => {
                let change = if b.median != 0.0 { a.median / b.median } else { f64::NAN };
                let verdict = if overlaps(&a, &b) { "within ranges" } else { "CHANGED" };
                format!(
                    "VERSUS {} {what} now={} saved={} now/saved={change:.2} {verdict}",
                    today.id,
                    fmt(&a),
                    fmt(&b)
                )
            }
            (Some((a, what)), _) => {
                format!("VERSUS {} {what} now={} saved=missing", today.id, fmt(&a))
            }
            (None, _) => format!("VERSUS {} now=missing", today.id),
        };
        lines.push(line);
    }
    for old in saved.iter().filter(|s| now.iter().all(|n| n.id != s.id)) {
        if let Some((b, what)) = key_figure(old) {
            lines.push(format!("VERSUS {} {what} now=missing saved={}", old.id, fmt(&b)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{Group, Unit};

    fn summary(id: &str, vireo: f64, ratio: Option<(f64, f64, f64)>) -> WorkloadSummary {
        WorkloadSummary {
            id: id.into(),
            group: Group::Blk,
            label: id.into(),
            unit: Unit::Iops,
            other_name: Some("linux".into()),
            vireo: Some(Spread { median: vireo, lo: vireo, hi: vireo, n: 3 }),
            other: None,
            limit: None,
            ratio: ratio.map(|(median, lo, hi)| Spread { median, lo, hi, n: 3 }),
            vs_limit: None,
            extras: vec![],
            rounds: 3,
            disturbed_rounds: 0,
        }
    }

    #[test]
    fn ratios_side_by_side_with_a_verdict() {
        let now = [
            summary("a", 100.0, Some((3.0, 2.8, 3.3))),
            summary("b", 100.0, Some((2.0, 1.9, 2.1))),
            summary("c", 100.0, Some((1.1, 1.0, 1.2))),
            summary("new", 100.0, Some((1.0, 1.0, 1.0))),
            summary("context_switch", 2900.0, None),
        ];
        let saved = [
            summary("a", 50.0, Some((3.1, 2.9, 3.4))),
            summary("b", 50.0, Some((1.5, 1.4, 1.6))),
            summary("c", 50.0, Some((1.5, 1.4, 1.6))),
            summary("context_switch", 1450.0, None),
            summary("gone", 1.0, Some((0.5, 0.4, 0.6))),
        ];
        let lines = versus_lines(&now, &saved);
        assert_eq!(
            lines,
            [
                "VERSUS a ratio now=3.00 [2.80-3.30] saved=3.10 [2.90-3.40] now/saved=0.97 within ranges",
                "VERSUS b ratio now=2.00 [1.90-2.10] saved=1.50 [1.40-1.60] now/saved=1.33 CHANGED",
                "VERSUS c ratio now=1.10 [1.00-1.20] saved=1.50 [1.40-1.60] now/saved=0.73 CHANGED",
                "VERSUS new ratio now=1.00 [1.00-1.00] saved=missing",
                "VERSUS context_switch vireo_absolute now=2900 [2900-2900] saved=1450 [1450-1450] \
             now/saved=2.00 CHANGED",
                "VERSUS gone ratio now=missing saved=0.50 [0.40-0.60]",
            ]
        );
    }
}
