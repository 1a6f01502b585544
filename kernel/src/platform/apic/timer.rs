//! The local APIC timer (Intel SDM Vol. 3A §11.5.4): one-shot countdown
//! at bus clock / 16, calibrated against the TSC, or TSC-deadline mode
//! where CPUID offers it. Acts on the calling CPU's timer.
//!
//! Its owner is the scheduler's tick, which arms it through
//! [`set_deadline_tsc`]. Tests of the timer itself borrow it with
//! [`with_timer_lent`], so the tick cannot re-arm it under them.

use super::TIMER;
use super::lapic::{LVT_MASKED, LVT_TIMER, TIMER_INITIAL, cpuid_bit, read, write};
use crate::arch::percpu::{self, MAX_CPUS};
use crate::platform::time;
use crate::sync::PreemptGuard;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x86_64::registers::model_specific::Msr;

const IA32_TSC_DEADLINE: u32 = 0x6e0;
const TIMER_CURRENT: u32 = 0x390;
/// Timer mode field, LVT bits 17-18 (SDM Vol. 3A §11.5.4, Figure 11-8).
const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
/// How long calibration counts the timer against the TSC.
const CALIBRATION_US: u64 = 2_000;

static TIMER_HZ: AtomicU64 = AtomicU64::new(0);
/// Per CPU: whether a test has borrowed this CPU's timer from its owner.
static LENT: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether the timer supports TSC-deadline mode (CPUID leaf 1 ECX bit 24).
pub fn has_tsc_deadline() -> bool {
    cpuid_bit(1, Some(24), None)
}

/// Calibrates on the first call (every CPU's APIC timer runs at the same
/// bus clock). The timer must be masked.
pub(super) fn calibrate_once() {
    if TIMER_HZ.load(Ordering::Relaxed) == 0 {
        TIMER_HZ.store(calibrate_timer(), Ordering::Relaxed);
    }
}

/// Counts the (masked) timer down for `CALIBRATION_US` against the TSC.
fn calibrate_timer() -> u64 {
    write(TIMER_INITIAL, u32::MAX);
    let start = time::rdtsc();
    time::busy_wait_us(CALIBRATION_US);
    let remaining = read(TIMER_CURRENT);
    let elapsed = time::rdtsc() - start;
    write(TIMER_INITIAL, 0);
    let ticks = u128::from(u32::MAX - remaining);
    (ticks * u128::from(time::tsc_hz()) / u128::from(elapsed.max(1))) as u64
}

/// Timer ticks per second (bus clock / 16), as calibrated against the TSC.
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

pub(super) fn program_oneshot(vector: u8, ns: u64) {
    let ticks = u128::from(ns) * u128::from(timer_hz()) / 1_000_000_000;
    write(LVT_TIMER, u32::from(vector));
    // Writing the initial count starts the countdown (SDM Vol. 3A §11.5.4).
    write(TIMER_INITIAL, ticks.clamp(1, u128::from(u32::MAX)) as u32);
}

pub(super) fn program_deadline(vector: u8, tsc: u64) {
    if !has_tsc_deadline() {
        let ns = time::ticks_to_ns(tsc.saturating_sub(time::rdtsc()));
        return program_oneshot(vector, ns);
    }
    write(LVT_TIMER, TIMER_TSC_DEADLINE | u32::from(vector));
    // The LVT write must reach the APIC before the deadline WRMSR, which
    // MFENCE guarantees for the xAPIC's MMIO write (SDM Vol. 3A §11.5.4.1).
    core::sync::atomic::fence(Ordering::SeqCst);
    // SAFETY: IA32_TSC_DEADLINE exists (CPUID checked); a past deadline
    // fires at once, 0 disarms.
    unsafe { Msr::new(IA32_TSC_DEADLINE).write(tsc.max(1)) };
}

/// Fires [`TIMER`] once, `ns` nanoseconds from now (one-shot mode).
pub fn set_oneshot_ns(ns: u64) {
    program_oneshot(TIMER, ns);
}

/// Fires [`TIMER`] once when the TSC reaches `tsc`: TSC-deadline mode where
/// available, else a one-shot countdown for the remaining time. The owner's
/// call: dropped while the timer is lent. Interrupts must be off (the
/// caller must stay on this CPU).
pub fn set_deadline_tsc(tsc: u64) {
    if !LENT[percpu::cpu_id() as usize].load(Ordering::Relaxed) {
        program_deadline(TIMER, tsc);
    }
}

/// Lends this CPU's timer to `f` (tests of the timer itself): its owner's
/// [`set_deadline_tsc`] calls are dropped meanwhile, so ticks and sleep
/// wake-ups on this CPU pause; afterwards [`TIMER`] fires at once, and the
/// owner's handler re-arms it. The caller stays on this CPU throughout.
pub fn with_timer_lent<R>(f: impl FnOnce() -> R) -> R {
    let pinned = PreemptGuard::new();
    let lent = &LENT[pinned.cpu_id() as usize];
    lent.store(true, Ordering::Relaxed);
    let result = f();
    x86_64::instructions::interrupts::without_interrupts(|| {
        lent.store(false, Ordering::Relaxed);
        // A deadline already passed fires at once.
        program_deadline(TIMER, time::rdtsc());
    });
    result
}

/// Disarms and masks this CPU's timer.
pub fn stop_timer() {
    write(LVT_TIMER, LVT_MASKED | u32::from(TIMER));
    write(TIMER_INITIAL, 0);
    if has_tsc_deadline() {
        // SAFETY: the MSR exists (CPUID); outside deadline mode writes are
        // ignored, inside it 0 disarms.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(0) };
    }
}
