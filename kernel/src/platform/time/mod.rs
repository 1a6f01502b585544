//! Boot-relative time from the TSC, and the TSC's rate.
//!
//! The boot stub records the TSC at the kernel's first instruction; every
//! timestamp (log lines, test durations, `boot: ready`) is measured from it.
//! The TSC's rate is measured against every reference clock the machine
//! has (HPET, ACPI PM timer, PIT channel 0; `reference`) in the same
//! windows, compared with what CPUID and the hypervisor report, and chosen
//! by cross-checking them (`choose`): an implausible or outvoted reference
//! is rejected, and the boot log says which one was used.

mod choose;
mod reference;

pub use choose::Choice;
pub use reference::Source;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use reference::{Counter, HpetCounter, Pit, PmTimer, measure_window};

/// Slowest TSC rate believed: no x86_64 CPU vireo runs on is slower.
pub const MIN_PLAUSIBLE_HZ: u64 = 100_000_000;
/// Fastest TSC rate believed.
pub const MAX_PLAUSIBLE_HZ: u64 = 20_000_000_000;
/// How long each calibration window lasts.
const CALIBRATION_MS: u64 = 2;
/// Calibration windows; each reference's lowest result wins (see
/// `measure_references`).
const CALIBRATION_ROUNDS: usize = 3;
/// Used until a reference is found, so early timestamps are merely
/// approximate.
const ASSUMED_TSC_HZ: u64 = 1_000_000_000;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(ASSUMED_TSC_HZ);
static CALIBRATION: spin::Once<Option<Choice>> = spin::Once::new();

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; CR4.TSD is clear in kernel mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the TSC value the boot stub saw first; time zero.
pub fn set_boot_tsc(tsc: u64) {
    BOOT_TSC.store(tsc, Ordering::Relaxed);
}

/// A quick first rate, before the ACPI tables are read: what CPUID reports
/// and one PIT window, cross-checked, so early log lines carry sensible
/// times. `None` (and the assumed 1 GHz kept) when nothing is plausible.
pub fn calibrate_roughly() -> Option<Choice> {
    // No heap yet: the candidates go in an array.
    let mut candidates = [(Source::Pit, 0); choose::MAX_CANDIDATES];
    let mut count = 0;
    for (slot, reported) in candidates.iter_mut().zip(reference::reported()) {
        *slot = reported;
        count += 1;
    }
    if let Some(mut pit) = Pit::start() {
        let mut rate = [0];
        measure_window(&mut [&mut pit], CALIBRATION_MS, &mut rate);
        candidates[count] = (Source::Pit, rate[0]);
        count += 1;
    }
    let choice = choose::choose(&candidates[..count])?;
    TSC_HZ.store(choice.hz, Ordering::Relaxed);
    Some(choice)
}

/// The calibration proper, once `acpi::init` and `hpet::init` have run:
/// every reference measured, cross-checked and the winner stored. Logs
/// which reference was used and which were rejected. Later calls return
/// the first result.
pub fn calibrate() -> Option<&'static Choice> {
    CALIBRATION
        .call_once(|| {
            let mut candidates: Vec<(Source, u64)> = reference::reported().collect();
            candidates.extend(measure_references(CALIBRATION_MS, CALIBRATION_ROUNDS));
            let choice = choose::choose(&candidates);
            match &choice {
                Some(choice) => {
                    TSC_HZ.store(choice.hz, Ordering::Relaxed);
                    log_choice(choice);
                }
                None => log::error!(
                    "time: no plausible reference among {candidates:?}; TSC assumed {} MHz, \
                     so timestamps and delays are wrong",
                    tsc_hz() / 1_000_000
                ),
            }
            choice
        })
        .as_ref()
}

/// The result of [`calibrate`], if it has run and found a rate.
pub fn calibration() -> Option<&'static Choice> {
    CALIBRATION.get().and_then(Option::as_ref)
}

fn log_choice(choice: &Choice) {
    use core::fmt::Write;
    let mut line = alloc::format!("time: TSC {} kHz by {}", choice.hz / 1000, choice.source.name());
    if choice.confirmed_by().count() == 0 {
        line.push_str(" (no other reference to confirm it)");
    }
    for (index, source) in choice.confirmed_by().enumerate() {
        let _ =
            write!(line, "{}{}", if index > 0 { ", " } else { ", confirmed by " }, source.name());
    }
    for (source, hz, why) in choice.rejected() {
        let _ = write!(line, "; rejected {} ({} kHz, {:?})", source.name(), hz / 1000, why);
    }
    if choice.rejected().count() == 0 {
        log::info!("{line}");
    } else {
        log::warn!("{line}");
    }
}

/// The TSC rate against every reference clock present, in the same
/// windows, each reference's lowest of `rounds`.
///
/// A measurement can only come out too high: when the virtual CPU is
/// descheduled (TCG, a busy host) between reading a reference and the TSC,
/// extra TSC ticks are counted. The minimum of a few windows discards such
/// rounds. A reference whose counter stopped measures 0, which the choice
/// rejects as implausible.
pub fn measure_references(window_ms: u64, rounds: usize) -> Vec<(Source, u64)> {
    let mut hpet = crate::platform::hpet::get().map(HpetCounter::new);
    let mut pm_timer = crate::platform::acpi::try_platform()
        .and_then(|platform| platform.pm_timer)
        .and_then(|timer| PmTimer::start(timer.port, timer.is_32bit));
    let mut pit = Pit::start();
    let mut counters: Vec<&mut dyn Counter> = Vec::new();
    if let Some(hpet) = hpet.as_mut() {
        counters.push(hpet);
    }
    if let Some(pm_timer) = pm_timer.as_mut() {
        counters.push(pm_timer);
    }
    if let Some(pit) = pit.as_mut() {
        counters.push(pit);
    }
    let mut lowest = [u64::MAX; 3];
    for _ in 0..rounds {
        let mut rates = [0; 3];
        measure_window(&mut counters, window_ms, &mut rates);
        for (low, rate) in lowest.iter_mut().zip(rates) {
            *low = (*low).min(rate);
        }
    }
    counters.iter().zip(lowest).map(|(counter, hz)| (counter.source(), hz)).collect()
}

/// The calibrated TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC delta to microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(tsc_hz())) as u64
}

/// Converts a TSC delta to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000 / u128::from(tsc_hz())) as u64
}

/// Nanoseconds since the kernel's first instruction: the monotonic clock
/// (the TSC is invariant on every CPU vireo supports, and QEMU keeps the
/// vCPUs' TSCs in step).
pub fn now_ns() -> u64 {
    ticks_to_ns(rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Microseconds since the kernel's first instruction.
pub fn uptime_us() -> u64 {
    ticks_to_us(rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Spins for at least `us` microseconds.
pub fn busy_wait_us(us: u64) {
    let ticks = u128::from(us) * u128::from(tsc_hz()) / 1_000_000;
    let start = rdtsc();
    while u128::from(rdtsc() - start) < ticks {
        core::hint::spin_loop();
    }
}

mod tests {
    use super::*;
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn tsc_frequency_is_plausible() {
            let hz = tsc_hz();
            check!((MIN_PLAUSIBLE_HZ..=MAX_PLAUSIBLE_HZ).contains(&hz), "TSC at {} Hz", hz);
            let choice = check_ok!(calibration().ok_or("no calibration"));
            check_eq!(choice.hz, hz);
            Ok(())
        }
    );

    ktest!(
        fn every_reference_clock_agrees_with_the_calibration() {
            // Measured again in longer windows: each reference the machine
            // has must land within 10% of the rate chosen at boot (TCG's
            // timing is noisy; on hardware they agree within 1%). A
            // reference read wrongly (the PIT through a port that is not
            // there) is far outside.
            let hz = tsc_hz();
            let measured = measure_references(5, 3);
            if measured.is_empty() {
                return ktest::skip("no reference clock (no HPET, PM timer or PIT)");
            }
            for (source, again) in measured {
                check!(
                    again.abs_diff(hz) < hz / 10,
                    "calibrated {} Hz, {} now says {} Hz",
                    hz,
                    source.name(),
                    again
                );
            }
            Ok(())
        }
    );

    ktest!(
        fn uptime_is_monotonic_and_advances() {
            let first = uptime_us();
            busy_wait_us(2000);
            let second = uptime_us();
            check!(second >= first + 2000, "{} -> {}", first, second);
            Ok(())
        }
    );

    ktest!(
        fn now_ns_is_monotonic_across_cpus() {
            use alloc::sync::Arc;
            use core::sync::atomic::AtomicU64;
            // Each CPU reads the clock after the previous reader published
            // its reading: time must never go backwards between CPUs.
            let last = Arc::new(AtomicU64::new(now_ns()));
            let backwards = Arc::new(AtomicU64::new(0));
            let (readers_last, readers_backwards) = (last.clone(), backwards.clone());
            crate::ktest::on_each_cpu_in_turn(move |_| {
                for _ in 0..100 {
                    let now = now_ns();
                    if now < readers_last.swap(now, Ordering::AcqRel) {
                        readers_backwards.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
            check!(backwards.load(Ordering::Relaxed) == 0, "clock went backwards");
            Ok(())
        }
    );

    ktest!(
        fn tick_conversions_agree() {
            let hz = tsc_hz();
            check!(ticks_to_us(hz) == 1_000_000);
            check!(ticks_to_ns(hz) == 1_000_000_000);
            check!(ticks_to_us(hz / 2) == 500_000 || hz % 2 == 1);
            Ok(())
        }
    );
}
