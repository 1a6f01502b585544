//! Choosing the TSC rate from several references that may be wrong.
//!
//! Every reference can lie: a PIT read through a missing port 0x61 ends
//! its window at once (QEMU `microvm`: "7.6 MHz" on a 2.6 GHz host), a
//! CPUID leaf past the hypervisor's maximum returns another leaf's data,
//! a descheduled vCPU stretches one window. So: a rate outside
//! [`MIN_PLAUSIBLE_HZ`, `MAX_PLAUSIBLE_HZ`] is rejected outright; of the
//! rest, the one most others agree with (within [`AGREEMENT_PERCENT`]) wins,
//! ties going to the more exact kind of reference (the order of
//! [`Source`]); references that disagree with the winner are rejected.
//! A lone plausible reference is used, and reported as unconfirmed.

use super::reference::Source;
use super::{MAX_PLAUSIBLE_HZ, MIN_PLAUSIBLE_HZ};

/// How far two rates may differ and still agree.
pub const AGREEMENT_PERCENT: u64 = 5;

/// Why a reference's rate was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Outside the plausible range (or 0: the counter never moved).
    Implausible,
    /// Disagrees with the chosen rate by more than [`AGREEMENT_PERCENT`].
    Disagrees,
}

/// The outcome of a calibration. Heap-free: the first guess is made
/// before memory is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The rate in Hz.
    pub hz: u64,
    /// Which reference it came from.
    pub source: Source,
    confirmed_by: [Option<Source>; MAX_CANDIDATES],
    rejected: [Option<(Source, u64, Rejection)>; MAX_CANDIDATES],
}

/// At most one candidate per [`Source`].
pub const MAX_CANDIDATES: usize = 6;

impl Choice {
    /// Other references that agree with the chosen rate.
    pub fn confirmed_by(&self) -> impl Iterator<Item = Source> + '_ {
        self.confirmed_by.iter().flatten().copied()
    }

    /// References not used, with their rates and why.
    pub fn rejected(&self) -> impl Iterator<Item = (Source, u64, Rejection)> + '_ {
        self.rejected.iter().flatten().copied()
    }
}

/// Whether `a` and `b` agree within [`AGREEMENT_PERCENT`] of the larger.
pub fn agree(a: u64, b: u64) -> bool {
    u128::from(a.abs_diff(b)) * 100 <= u128::from(a.max(b)) * u128::from(AGREEMENT_PERCENT)
}

fn plausible(hz: u64) -> bool {
    (MIN_PLAUSIBLE_HZ..=MAX_PLAUSIBLE_HZ).contains(&hz)
}

/// Chooses among `candidates` (a source at most once each, at most
/// [`MAX_CANDIDATES`] of them); `None` when no candidate is plausible.
pub fn choose(candidates: &[(Source, u64)]) -> Option<Choice> {
    let candidates = &candidates[..candidates.len().min(MAX_CANDIDATES)];
    let agreeing = |hz: u64| {
        candidates.iter().filter(|&&(_, other)| plausible(other) && agree(hz, other)).count()
    };
    // Most agreement first, then the more exact source.
    let &(source, hz) = candidates
        .iter()
        .filter(|&&(_, hz)| plausible(hz))
        .min_by_key(|&&(source, hz)| (core::cmp::Reverse(agreeing(hz)), source))?;
    let mut choice = Choice {
        hz,
        source,
        confirmed_by: [None; MAX_CANDIDATES],
        rejected: [None; MAX_CANDIDATES],
    };
    for (index, &(other, other_hz)) in candidates.iter().enumerate() {
        if other == source {
            continue;
        }
        if !plausible(other_hz) {
            choice.rejected[index] = Some((other, other_hz, Rejection::Implausible));
        } else if agree(hz, other_hz) {
            choice.confirmed_by[index] = Some(other);
        } else {
            choice.rejected[index] = Some((other, other_hz, Rejection::Disagrees));
        }
    }
    Some(choice)
}

mod tests {
    use super::*;
    use crate::{check, check_eq, ktest};
    use alloc::vec::Vec;

    const GHZ: u64 = 1_000_000_000;

    ktest!(
        fn the_microvm_pit_nonsense_is_rejected() {
            // What a PIT read through an absent port 0x61 measured, beside
            // a plausible measurement.
            let choice = choose(&[(Source::Pit, 7_600_000), (Source::PmTimer, 2_445 * GHZ / 1000)]);
            let choice = check_ok_some(choice)?;
            check_eq!(choice.source, Source::PmTimer);
            check_eq!(
                choice.rejected().collect::<Vec<_>>(),
                [(Source::Pit, 7_600_000, Rejection::Implausible)]
            );
            check_eq!(choice.confirmed_by().count(), 0);
            check!(choose(&[(Source::Pit, 7_600_000), (Source::Hpet, 0)]).is_none());
            Ok(())
        }
    );

    ktest!(
        fn the_majority_beats_a_more_exact_outlier() {
            // A hypervisor leaf that is 10% off loses to two measured
            // references that agree with each other.
            let choice = check_ok_some(choose(&[
                (Source::HypervisorLeaf, 2_200_000_000),
                (Source::Hpet, 2_445_000_000),
                (Source::Pit, 2_460_000_000),
            ]))?;
            check_eq!(choice.source, Source::Hpet);
            check_eq!(choice.confirmed_by().collect::<Vec<_>>(), [Source::Pit]);
            check_eq!(
                choice.rejected().collect::<Vec<_>>(),
                [(Source::HypervisorLeaf, 2_200_000_000, Rejection::Disagrees)]
            );
            Ok(())
        }
    );

    ktest!(
        fn among_agreeing_references_the_most_exact_wins() {
            let choice = check_ok_some(choose(&[
                (Source::Pit, 2_450_000_000),
                (Source::CpuidBaseFrequency, 2_400_000_000),
                (Source::CpuidCrystal, 2_445_000_000),
            ]))?;
            check_eq!(choice.source, Source::CpuidCrystal);
            check_eq!(choice.hz, 2_445_000_000);
            check_eq!(choice.confirmed_by().count(), 2);
            // A lone reference is used, unconfirmed.
            let lone = check_ok_some(choose(&[(Source::Pit, 3 * GHZ)]))?;
            check_eq!((lone.source, lone.hz), (Source::Pit, 3 * GHZ));
            check!(lone.confirmed_by().count() == 0 && lone.rejected().count() == 0);
            check!(choose(&[]).is_none());
            Ok(())
        }
    );

    ktest!(
        fn agreement_is_symmetric_and_bounded() {
            check!(agree(100, 105) && agree(105, 100));
            check!(!agree(100, 106) && !agree(106, 100));
            check!(agree(u64::MAX, u64::MAX - 1));
            Ok(())
        }
    );

    fn check_ok_some(choice: Option<Choice>) -> Result<Choice, crate::ktest::TestFailure> {
        choice.ok_or_else(|| crate::ktest::TestFailure::new("no choice".into()))
    }
}
