//! The clocks the TSC can be measured against, and what the CPU reports
//! about its own rate.
//!
//! Each measured reference is a counter of known rate: the PIT (1.193182
//! MHz, fixed by the PC platform), the ACPI PM timer (3.579545 MHz, ACPI 6.5
//! §4.8.3.3) and the HPET (its period register). The PIT is read through
//! channel 0's latch command alone, never through port 0x61's OUT2 bit:
//! QEMU's `microvm` has no port 0x61 (it reads 0xff, which looks like a
//! count that ended at once), and polling the count says when a PIT is
//! missing altogether (it never moves).

use super::rdtsc;
use crate::platform::hpet::Hpet;
use core::arch::x86_64::__cpuid;
use x86_64::instructions::port::Port;

/// The PIT's input clock, fixed by the PC platform.
pub const PIT_HZ: u64 = 1_193_182;
/// The ACPI PM timer's clock (ACPI 6.5 §4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// Where a TSC rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The hypervisor's timing leaf, CPUID 0x40000010 EAX (kHz), as VMware
    /// and KVM define it: exact, when the hypervisor offers it.
    HypervisorLeaf,
    /// CPUID 0x15: crystal clock × TSC/crystal ratio (Intel SDM Vol. 3B
    /// §18.7.3): exact, when the crystal rate is enumerated.
    CpuidCrystal,
    /// Counted against the HPET.
    Hpet,
    /// Counted against the ACPI PM timer.
    PmTimer,
    /// Counted against PIT channel 0.
    Pit,
    /// CPUID 0x16 EAX: the processor's base frequency in MHz, which is the
    /// TSC rate on most processors that report it (rounded to a MHz).
    CpuidBaseFrequency,
}

impl Source {
    /// For log lines.
    pub fn name(self) -> &'static str {
        match self {
            Source::HypervisorLeaf => "hypervisor CPUID leaf 0x40000010",
            Source::CpuidCrystal => "CPUID leaf 0x15",
            Source::Hpet => "HPET",
            Source::PmTimer => "ACPI PM timer",
            Source::Pit => "PIT",
            Source::CpuidBaseFrequency => "CPUID leaf 0x16",
        }
    }
}

/// A counter of known rate that the TSC is counted against.
pub trait Counter {
    /// Which reference this is.
    fn source(&self) -> Source;
    /// Ticks per second.
    fn hz(&self) -> u64;
    /// Ticks since the counter was made, kept monotonic across wraps as
    /// long as it is read at least once per wrap period.
    fn ticks(&mut self) -> u64;
}

/// PIT channel 0, counting down from 65536 in mode 2 (rate generator).
pub struct Pit {
    last: u16,
    total: u64,
}

/// Reads of a counter that must differ before it counts as running.
const MOVING_READS: usize = 2000;

impl Pit {
    /// Programs channel 0 and returns it if its count moves.
    pub fn start() -> Option<Self> {
        let mut command = Port::<u8>::new(0x43);
        let mut channel0 = Port::<u8>::new(0x40);
        // SAFETY: ports 0x43 (PIT command) and 0x40 (channel 0) belong to
        // the PIT, which nothing else in vireo uses; channel 0's output goes
        // to IRQ 0, masked at the 8259s and the I/O APIC.
        unsafe {
            command.write(0b0011_0100); // channel 0, lo/hi byte, mode 2, binary
            channel0.write(0); // reload value 0 = 65536
            channel0.write(0);
        }
        let first = read_pit_count();
        let moved = (0..MOVING_READS).any(|_| read_pit_count() != first);
        let pit = Self { last: read_pit_count(), total: 0 };
        // Dropped (and so stopped) at once if it does not move.
        moved.then_some(pit)
    }
}

impl Drop for Pit {
    /// Stops channel 0: mode 0 without a count loaded holds OUT low and
    /// does not count (8254 datasheet, mode 0), so no IRQ 0 edge is left
    /// behind. A running rate generator would raise IRQ 0 every 55 ms, and
    /// an input a test unmasks for a moment would catch one and deliver it
    /// later to whatever vector the test had routed there.
    fn drop(&mut self) {
        // SAFETY: as in `start`; the control word only reprograms channel 0.
        unsafe { Port::<u8>::new(0x43).write(0b0011_0000) };
    }
}

/// Latches and reads channel 0's count.
fn read_pit_count() -> u16 {
    let mut command = Port::<u8>::new(0x43);
    let mut channel0 = Port::<u8>::new(0x40);
    // SAFETY: as in `Pit::start`; the latch command (counter latch,
    // channel 0) has no other effect.
    unsafe {
        command.write(0b0000_0000);
        let low = channel0.read();
        let high = channel0.read();
        u16::from_le_bytes([low, high])
    }
}

impl Counter for Pit {
    fn source(&self) -> Source {
        Source::Pit
    }
    fn hz(&self) -> u64 {
        PIT_HZ
    }
    fn ticks(&mut self) -> u64 {
        let now = read_pit_count();
        // Counting down modulo 65536.
        self.total += u64::from(self.last.wrapping_sub(now));
        self.last = now;
        self.total
    }
}

/// The ACPI PM timer: a 24- or 32-bit up-counter in I/O space.
pub struct PmTimer {
    port: Port<u32>,
    mask: u32,
    last: u32,
    total: u64,
}

impl PmTimer {
    /// The timer at `port`; `None` if it does not move.
    pub fn start(port: u16, is_32bit: bool) -> Option<Self> {
        let mut timer = Self {
            port: Port::new(port),
            mask: if is_32bit { u32::MAX } else { 0x00ff_ffff },
            last: 0,
            total: 0,
        };
        let first = timer.raw();
        let moved = (0..MOVING_READS).any(|_| timer.raw() != first);
        timer.last = timer.raw();
        moved.then_some(timer)
    }

    fn raw(&mut self) -> u32 {
        // SAFETY: the FADT names this port as the PM timer's, a read-only
        // counter; reading it has no side effects.
        unsafe { self.port.read() & self.mask }
    }
}

impl Counter for PmTimer {
    fn source(&self) -> Source {
        Source::PmTimer
    }
    fn hz(&self) -> u64 {
        PM_TIMER_HZ
    }
    fn ticks(&mut self) -> u64 {
        let now = self.raw();
        self.total += u64::from(now.wrapping_sub(self.last) & self.mask);
        self.last = now;
        self.total
    }
}

/// The HPET's main counter as a [`Counter`].
pub struct HpetCounter {
    hpet: &'static Hpet,
    last: u64,
    total: u64,
}

impl HpetCounter {
    /// Counts on `hpet`'s main counter.
    pub fn new(hpet: &'static Hpet) -> Self {
        Self { hpet, last: hpet.counter(), total: 0 }
    }
}

impl Counter for HpetCounter {
    fn source(&self) -> Source {
        Source::Hpet
    }
    fn hz(&self) -> u64 {
        self.hpet.frequency_hz()
    }
    fn ticks(&mut self) -> u64 {
        let now = self.hpet.counter();
        self.total += self.hpet.elapsed(self.last, now);
        self.last = now;
        self.total
    }
}

/// What the CPU and the hypervisor report about the TSC's rate, in Hz,
/// each only where its leaf exists and is filled in.
pub fn reported() -> impl Iterator<Item = (Source, u64)> {
    let max_leaf = __cpuid(0).eax;
    let crystal = (max_leaf >= 0x15)
        .then(|| __cpuid(0x15))
        // EAX denominator, EBX numerator, ECX crystal Hz (0: not enumerated).
        .filter(|leaf| leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0)
        .map(|leaf| u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax));
    let base = (max_leaf >= 0x16)
        .then(|| __cpuid(0x16).eax & 0xffff)
        .filter(|&mhz| mhz != 0)
        .map(|mhz| u64::from(mhz) * 1_000_000);
    let under_hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    // A leaf past the hypervisor's maximum (0x40000000 EAX) returns
    // whatever the CPU returns for out-of-range leaves, not zero.
    let hypervisor = (under_hypervisor && __cpuid(0x4000_0000).eax >= 0x4000_0010)
        .then(|| __cpuid(0x4000_0010).eax)
        .filter(|&khz| khz != 0)
        .map(|khz| u64::from(khz) * 1000);
    [
        (Source::HypervisorLeaf, hypervisor),
        (Source::CpuidCrystal, crystal),
        (Source::CpuidBaseFrequency, base),
    ]
    .into_iter()
    .filter_map(|(source, hz)| Some((source, hz?)))
}

/// One window's TSC rate against each counter, in `rates` (same order).
///
/// The window ends when the first counter has advanced `window_ms`, or
/// when the TSC has advanced as far as a 20 GHz TSC would in that time (a
/// first counter that stopped cannot hold the loop). Each counter is read
/// between two TSC reads and timed at their midpoint, at the start and at
/// the end.
pub fn measure_window(counters: &mut [&mut dyn Counter], window_ms: u64, rates: &mut [u64]) {
    let mut starts = [(0u64, 0u64); 4];
    let mut ends = [(0u64, 0u64); 4];
    let count = counters.len().min(starts.len()).min(rates.len());
    x86_64::instructions::interrupts::without_interrupts(|| {
        for (counter, start) in counters.iter_mut().zip(&mut starts).take(count) {
            *start = timed_read(&mut **counter);
        }
        let Some(first) = counters.first_mut() else { return };
        let window_ticks = first.hz() * window_ms / 1000;
        let tsc_limit = super::MAX_PLAUSIBLE_HZ / 1000 * window_ms;
        let (begun, first_start) = (rdtsc(), starts[0].1);
        while first.ticks() - first_start < window_ticks && rdtsc() - begun < tsc_limit {
            core::hint::spin_loop();
        }
        for (counter, end) in counters.iter_mut().zip(&mut ends).take(count) {
            *end = timed_read(&mut **counter);
        }
    });
    for index in 0..count {
        let (tsc_start, ticks_start) = starts[index];
        let (tsc_end, ticks_end) = ends[index];
        let ticks = ticks_end.saturating_sub(ticks_start);
        rates[index] = if ticks == 0 {
            0
        } else {
            let tsc = u128::from(tsc_end.saturating_sub(tsc_start));
            (tsc * u128::from(counters[index].hz()) / u128::from(ticks)) as u64
        };
    }
}

/// The counter's ticks and the TSC at the middle of reading them.
fn timed_read(counter: &mut dyn Counter) -> (u64, u64) {
    let before = rdtsc();
    let ticks = counter.ticks();
    let after = rdtsc();
    (before + (after - before) / 2, ticks)
}
