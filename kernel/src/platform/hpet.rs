//! The High Precision Event Timer: a fixed-rate main counter, one of the
//! reference clocks the TSC is calibrated against (`time`), and with comparators
//! that can raise I/O APIC interrupts.
//!
//! Register layout: IA-PC HPET Specification 1.0a §2.3. All registers are
//! 64-bit and may be accessed as such.

use super::apic::TriggerMode;
use crate::mm::mmio::{self, MmioRegion};
use crate::mm::paging::MapError;
use crate::platform::acpi;
use crate::platform::time;

const CAPABILITIES: u64 = 0x000;
const CONFIG: u64 = 0x010;
const MAIN_COUNTER: u64 = 0x0f0;
const CONFIG_ENABLE: u64 = 1 << 0;
const CONFIG_LEGACY_ROUTE: u64 = 1 << 1;
/// Timer N's configuration register; comparator is at +8 (§2.3.8, §2.3.9).
const fn timer_config(n: u8) -> u64 {
    0x100 + 0x20 * n as u64
}
/// Tn_INT_ENB_CNF: the comparator may interrupt.
const TIMER_INT_ENABLE: u64 = 1 << 2;
/// Tn_INT_TYPE_CNF: level-triggered.
const TIMER_LEVEL: u64 = 1 << 1;
/// The longest legal tick period: 100 ns (§2.3.4).
const MAX_PERIOD_FS: u64 = 100_000_000;

/// Why the HPET cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpetError {
    /// The ACPI tables list no HPET.
    Absent,
    /// Its registers could not be mapped.
    Map(MapError),
    /// The capabilities register reports an impossible period (0 or > 100 ns).
    BadPeriod(u64),
}

/// The HPET's register block.
#[derive(Debug)]
pub struct Hpet {
    registers: MmioRegion,
    period_fs: u64,
    timers: u8,
    is_64bit: bool,
}

impl Hpet {
    fn read(&self, reg: u64) -> u64 {
        // SAFETY: the block is mapped uncached and `reg` is a register
        // offset inside its 1 KiB.
        unsafe { (self.registers.virt() + reg).as_ptr::<u64>().read_volatile() }
    }

    fn write(&self, reg: u64, value: u64) {
        // SAFETY: as in `read`; callers keep reserved bits as read.
        unsafe { (self.registers.virt() + reg).as_mut_ptr::<u64>().write_volatile(value) }
    }

    /// The main counter (only the low 32 bits move on a 32-bit HPET).
    pub fn counter(&self) -> u64 {
        let value = self.read(MAIN_COUNTER);
        if self.is_64bit { value } else { value & u64::from(u32::MAX) }
    }

    /// Femtoseconds per counter tick.
    pub fn period_fs(&self) -> u64 {
        self.period_fs
    }

    /// Counter ticks per second.
    pub fn frequency_hz(&self) -> u64 {
        1_000_000_000_000_000 / self.period_fs
    }

    /// Number of comparators (timers).
    pub fn timer_count(&self) -> u8 {
        self.timers
    }

    /// Whether the main counter is 64 bits wide.
    pub fn is_64bit(&self) -> bool {
        self.is_64bit
    }

    /// Ticks elapsed from `earlier` to `later`, across one wrap of a
    /// 32-bit counter.
    pub fn elapsed(&self, earlier: u64, later: u64) -> u64 {
        let delta = later.wrapping_sub(earlier);
        if self.is_64bit { delta } else { delta & u64::from(u32::MAX) }
    }

    /// The routing capability mask of timer `n`: bit `i` means I/O APIC
    /// input `i` is allowed (§2.3.8, Tn_INT_ROUTE_CAP).
    pub fn route_capabilities(&self, n: u8) -> u32 {
        (self.read(timer_config(n)) >> 32) as u32
    }

    /// Sets timer `n` to interrupt once on I/O APIC input `gsi` when the
    /// main counter reaches `comparator` (non-periodic). A level-triggered
    /// interrupt stays asserted until its bit in the status register is
    /// cleared; an edge one is a pulse.
    pub fn arm_timer(&self, n: u8, gsi: u32, comparator: u64, trigger: TriggerMode) {
        let config = timer_config(n);
        // Bits 0..15 are configuration; the rest are capabilities/reserved.
        let keep = self.read(config) & !0x7fff;
        self.write(config, keep);
        self.write(config + 8, comparator);
        let level = if trigger == TriggerMode::Level { TIMER_LEVEL } else { 0 };
        self.write(config, keep | (u64::from(gsi & 0x1f) << 9) | level | TIMER_INT_ENABLE);
    }

    /// Disables timer `n`'s interrupt.
    pub fn disarm_timer(&self, n: u8) {
        let config = timer_config(n);
        self.write(config, self.read(config) & !TIMER_INT_ENABLE);
    }
}

static HPET: spin::Once<Result<Hpet, HpetError>> = spin::Once::new();

fn start() -> Result<Hpet, HpetError> {
    let info = acpi::try_platform().and_then(|platform| platform.hpet).ok_or(HpetError::Absent)?;
    let registers = mmio::map(info.phys, 0x400).map_err(HpetError::Map)?;
    let mut hpet = Hpet { registers, period_fs: 0, timers: 0, is_64bit: false };
    let capabilities = hpet.read(CAPABILITIES);
    let period_fs = capabilities >> 32;
    if period_fs == 0 || period_fs > MAX_PERIOD_FS {
        return Err(HpetError::BadPeriod(period_fs));
    }
    hpet.period_fs = period_fs;
    hpet.timers = ((capabilities >> 8) & 0x1f) as u8 + 1;
    hpet.is_64bit = capabilities & (1 << 13) != 0;
    for n in 0..hpet.timers {
        hpet.disarm_timer(n);
    }
    // Comparators route through the I/O APIC, not the legacy IRQ 0/8 wiring.
    let config = hpet.read(CONFIG) & !CONFIG_LEGACY_ROUTE;
    hpet.write(CONFIG, config | CONFIG_ENABLE);
    Ok(hpet)
}

/// Maps the HPET and starts its main counter; later calls return the same
/// result. Needs `acpi::init`.
///
/// # Errors
/// [`HpetError`] when there is no usable HPET.
pub fn init() -> Result<&'static Hpet, HpetError> {
    let result = HPET.call_once(|| {
        let result = start();
        match &result {
            Ok(hpet) => log::info!(
                "hpet: {} MHz, {} timers, {}-bit",
                hpet.frequency_hz() / 1_000_000,
                hpet.timers,
                if hpet.is_64bit { 64 } else { 32 }
            ),
            Err(error) => log::warn!("hpet: unusable: {error:?}"),
        }
        result
    });
    result.as_ref().map_err(|error| *error)
}

/// The HPET, once [`init`] has succeeded.
pub fn get() -> Option<&'static Hpet> {
    HPET.get().and_then(|result| result.as_ref().ok())
}

/// The main counter, or `None` without an HPET.
pub fn counter() -> Option<u64> {
    get().map(Hpet::counter)
}

mod tests {
    use super::*;
    use crate::{check, check_ok, ktest};

    ktest!(
        fn hpet_counter_advances_at_a_sane_rate() {
            let Some(hpet) = get() else { return ktest::skip("no HPET (none in the ACPI tables)") };
            // QEMU's HPET ticks at 100 MHz; the spec allows 10 MHz and up.
            check!((1..=MAX_PERIOD_FS).contains(&hpet.period_fs()), "{} fs", hpet.period_fs());
            check!(hpet.timer_count() >= 3, "{} timers", hpet.timer_count());
            check!(hpet.is_64bit());
            let first = check_ok!(counter().ok_or("no counter"));
            time::busy_wait_us(1000);
            let elapsed = hpet.elapsed(first, hpet.counter());
            let expected = hpet.frequency_hz() / 1000;
            check!(elapsed >= expected / 2, "{} ticks in 1 ms, expected {}", elapsed, expected);
            Ok(())
        }
    );
}
