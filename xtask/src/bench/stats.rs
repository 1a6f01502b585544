//! Summary arithmetic: medians, ranges, and ratios taken per round.
//!
//! Why the median of per-round ratios and not the ratio of medians: the host
//! speeds up and slows down by up to 2x between rounds, and both sides of a
//! round run seconds apart, so they see the same host. Each round's ratio
//! cancels that round's host speed; a ratio of medians pairs vireo's median
//! round with Linux's median round, which may be different rounds on a
//! different host speed, and so measures the drift as much as the code.

use serde::{Deserialize, Serialize};

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none. NaNs sort last and are not expected here.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if !n.is_multiple_of(2) => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A median with the smallest and largest value it summarises.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// How many values (rounds) it summarises.
    pub n: usize,
}

impl Spread {
    /// Median and min–max of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        let median = median(values)?;
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self { median, lo, hi, n: values.len() })
    }
}

/// One round's ratio with the range it already carries: a guest round's
/// ratio is one number (`lo == hi == value`); the host ring bench reports
/// the median and range of its own interleaved pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundRatio {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl RoundRatio {
    /// `a / b` of one round; `None` unless both ran and `b` is positive.
    pub fn divide(a: Option<f64>, b: Option<f64>) -> Option<Self> {
        let (a, b) = (a?, b?);
        (b > 0.0).then(|| Self::point(a / b))
    }

    /// A ratio without a range of its own.
    pub fn point(value: f64) -> Self {
        Self { value, lo: value, hi: value }
    }
}

/// The median of the per-round ratios, with the range over everything the
/// rounds cover: min–max of the rounds' ratios for guests, min–max over all
/// interleaved pairs of all rounds for the ring bench.
pub fn ratio_spread(rounds: &[RoundRatio]) -> Option<Spread> {
    let values: Vec<f64> = rounds.iter().map(|r| r.value).collect();
    let mut spread = Spread::of(&values)?;
    spread.lo = rounds.iter().map(|r| r.lo).fold(spread.lo, f64::min);
    spread.hi = rounds.iter().map(|r| r.hi).fold(spread.hi, f64::max);
    Some(spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[10.0, 1.0]), Some(5.5));
        assert_eq!(median(&[5.0, 5.0, 1.0, 9.0, 9.0]), Some(5.0));
    }

    #[test]
    fn spread_is_median_and_min_max() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[148.0, 225.0, 166.0]).unwrap();
        assert_eq!(s, Spread { median: 166.0, lo: 148.0, hi: 225.0, n: 3 });
        let s = Spread::of(&[2.0, 8.0, 4.0, 6.0]).unwrap();
        assert_eq!(s, Spread { median: 5.0, lo: 2.0, hi: 8.0, n: 4 });
    }

    /// Three rounds while the host sped up: Linux's median round (100) is
    /// a slow one, vireo's (165) is not the same round. Per round
    /// vireo/Linux is 2.0, 1.65, 2.25: the median of those is 2.0, while
    /// the ratio of the medians is 1.65, a number no round produced.
    #[test]
    fn median_of_ratios_not_ratio_of_medians() {
        let vireo = [150.0, 165.0, 270.0];
        let linux = [75.0, 100.0, 120.0];
        let per_round: Vec<_> = vireo
            .iter()
            .zip(&linux)
            .filter_map(|(&v, &l)| RoundRatio::divide(Some(v), Some(l)))
            .collect();
        let ratio = ratio_spread(&per_round).unwrap();
        assert_eq!(ratio, Spread { median: 2.0, lo: 1.65, hi: 2.25, n: 3 });
        let of_medians = median(&vireo).unwrap() / median(&linux).unwrap();
        assert!((of_medians - 1.65).abs() < 1e-9, "{of_medians}");
    }

    #[test]
    fn divide_needs_both_sides_and_a_positive_divisor() {
        assert_eq!(RoundRatio::divide(Some(3.0), Some(2.0)), Some(RoundRatio::point(1.5)));
        assert_eq!(RoundRatio::divide(None, Some(2.0)), None);
        assert_eq!(RoundRatio::divide(Some(3.0), None), None);
        assert_eq!(RoundRatio::divide(Some(3.0), Some(0.0)), None);
    }

    #[test]
    fn ring_ratio_range_covers_every_pair() {
        let rounds = [
            RoundRatio { value: 1.68, lo: 1.61, hi: 1.86 },
            RoundRatio { value: 1.90, lo: 1.35, hi: 2.04 },
            RoundRatio { value: 1.70, lo: 1.65, hi: 2.23 },
        ];
        let s = ratio_spread(&rounds).unwrap();
        assert_eq!(s, Spread { median: 1.70, lo: 1.35, hi: 2.23, n: 3 });
        assert_eq!(ratio_spread(&[]), None);
    }
}
