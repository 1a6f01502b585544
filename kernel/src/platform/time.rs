//! Boot-relative time from the TSC, calibrated against the PIT.
//!
//! The boot stub records the TSC at the kernel's first instruction; every
//! timestamp (log lines, test durations, `boot: ready`) is measured from it.
//! The TSC's rate is measured once against PIT channel 2, whose 1.193182 MHz
//! input clock is fixed by the PC platform, so the result does not depend on
//! what the CPU reports about itself.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// The PIT's input clock, fixed by the PC platform.
pub const PIT_HZ: u64 = 1_193_182;
/// How long each calibration window lasts.
const CALIBRATION_MS: u64 = 5;
/// The first, rough window at boot.
const ROUGH_CALIBRATION_MS: u64 = 2;
/// Calibration windows; the lowest result wins (see `calibrate_with`).
const CALIBRATION_ROUNDS: usize = 3;
/// Used before calibration, so early timestamps are merely approximate.
const ASSUMED_TSC_HZ: u64 = 1_000_000_000;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(ASSUMED_TSC_HZ);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; CR4.TSD is clear in kernel mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the TSC value the boot stub saw first; time zero.
pub fn set_boot_tsc(tsc: u64) {
    BOOT_TSC.store(tsc, Ordering::Relaxed);
}

/// A quick first measurement (one short PIT window) so early log lines
/// carry sensible times; `calibrate_with` refines it once the HPET (or a
/// longer PIT measurement) is available. Returns Hz.
pub fn calibrate_tsc_roughly() -> u64 {
    let hz = measure_tsc_hz(ROUGH_CALIBRATION_MS);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Measures the TSC rate with PIT channel 2 and stores it; returns Hz.
pub fn calibrate_tsc() -> u64 {
    calibrate_with(|| measure_tsc_hz(CALIBRATION_MS))
}

/// Stores the lowest of several measurements from `measure` and returns it.
///
/// A measurement can only come out too high: when the virtual CPU is
/// descheduled (TCG, a busy host) between the reference clock's end and the
/// closing `rdtsc`, extra TSC ticks are counted. The minimum of a few
/// windows discards such rounds.
pub fn calibrate_with(measure: impl FnMut() -> u64) -> u64 {
    let hz = lowest_of_rounds(measure);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// The lowest of `CALIBRATION_ROUNDS` measurements (see `calibrate_with`).
fn lowest_of_rounds(mut measure: impl FnMut() -> u64) -> u64 {
    (0..CALIBRATION_ROUNDS).map(|_| measure()).min().unwrap_or(ASSUMED_TSC_HZ)
}

/// Counts TSC ticks while PIT channel 2 counts down `window_ms`.
pub fn measure_tsc_hz(window_ms: u64) -> u64 {
    let pit_ticks = PIT_HZ * window_ms / 1000;
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x61 (gate/speaker), 0x43 (PIT command) and 0x42 (PIT
    // channel 2) belong to the PIT, which nothing else in vireo uses.
    let (start, end) = unsafe {
        let value = gate.read();
        gate.write((value & !0x02) | 0x01); // gate on, speaker off
        command.write(0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        channel2.write((pit_ticks & 0xff) as u8);
        channel2.write((pit_ticks >> 8) as u8);
        let start = rdtsc();
        // Mode 0 raises OUT2 (port 0x61 bit 5) when the count reaches zero.
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        (start, rdtsc())
    };
    (end - start) * 1000 / window_ms
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
    use crate::{check, ktest};

    ktest!(
        fn tsc_frequency_is_plausible() {
            let hz = tsc_hz();
            check!((100_000_000..=20_000_000_000).contains(&hz), "TSC at {} Hz", hz);
            Ok(())
        }
    );

    ktest!(
        fn recalibration_agrees() {
            // TCG timing is noisy: a fresh measurement (lowest of three
            // windows, as at boot) must agree within 25%.
            let again = lowest_of_rounds(|| measure_tsc_hz(5));
            let hz = tsc_hz();
            check!(again.abs_diff(hz) < hz / 4, "calibrated {} Hz, now {} Hz", hz, again);
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
