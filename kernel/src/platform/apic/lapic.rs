//! The local APIC: one per CPU, reached through MSRs in x2APIC mode or an
//! uncached MMIO page in xAPIC mode (Intel SDM Vol. 3A chapter 11).
//!
//! x2APIC is used whenever CPUID offers it, on every CPU alike (the mode is
//! chosen once). Register offsets are the xAPIC ones (SDM Table 11-1); in
//! x2APIC mode register `offset` is MSR `0x800 + offset / 16` (Table 11-6).
//! Everything here acts on the calling CPU's own APIC.

use super::timer;
pub use super::timer::{has_tsc_deadline, set_deadline_tsc, set_oneshot_ns, stop_timer, timer_hz};
use super::{ERROR, SPURIOUS, TIMER};
use crate::arch::interrupts::{self, InterruptFrame, IrqError};
use crate::mm::mmio::{self, MmioRegion};
use crate::mm::paging::MapError;
use crate::platform::time;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

// Register offsets (SDM Vol. 3A Table 11-1).
const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TPR: u32 = 0x80;
const EOI: u32 = 0xb0;
const SVR: u32 = 0xf0;
const ESR: u32 = 0x280;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
pub(super) const LVT_TIMER: u32 = 0x320;
const LVT_LINT0: u32 = 0x350;
const LVT_LINT1: u32 = 0x360;
const LVT_ERROR: u32 = 0x370;
pub(super) const TIMER_INITIAL: u32 = 0x380;
const TIMER_DIVIDE: u32 = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
pub(super) const LVT_MASKED: u32 = 1 << 16;
const LVT_NMI: u32 = 0b100 << 8;
const LVT_LEVEL: u32 = 1 << 15;
const LVT_ACTIVE_LOW: u32 = 1 << 13;
/// Divide configuration 0b0011: the timer counts at bus clock / 16 (Figure 11-10).
const DIVIDE_BY_16: u32 = 0b0011;
// ICR fields (SDM Vol. 3A §11.6.1, Figure 11-12).
const ICR_NMI: u32 = 0b100 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;

/// How long an xAPIC ICR may stay busy before a send is given up.
const ICR_TIMEOUT_US: u64 = 100_000;

/// Why the local APIC cannot be used, or a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapicError {
    /// CPUID reports no local APIC.
    NotPresent,
    /// The xAPIC register page could not be mapped.
    Map(MapError),
    /// Installing the spurious or error handler failed.
    Handler(IrqError),
    /// xAPIC mode can only address APIC ids up to 255.
    BadDestination(u32),
    /// The ICR stayed busy (xAPIC delivery status) for too long.
    DeliveryTimeout,
}

#[derive(Debug)]
enum Mode {
    X2Apic,
    XApic(MmioRegion),
}

static MODE: spin::Once<Result<Mode, LapicError>> = spin::Once::new();
static ERRORS: AtomicUsize = AtomicUsize::new(0);
static LAST_ERROR_STATUS: AtomicU32 = AtomicU32::new(0);
static SPURIOUS_COUNT: AtomicUsize = AtomicUsize::new(0);

pub(super) fn cpuid_bit(leaf: u32, ecx_bit: Option<u32>, edx_bit: Option<u32>) -> bool {
    let result = __cpuid(leaf);
    ecx_bit.is_some_and(|bit| result.ecx & (1 << bit) != 0)
        || edx_bit.is_some_and(|bit| result.edx & (1 << bit) != 0)
}

/// This CPU's APIC id as CPUID reports it (leaf 0xB's x2APIC id where
/// present, else the 8-bit initial id in leaf 1), usable before the APIC is
/// set up.
pub fn cpuid_apic_id() -> u32 {
    if __cpuid(0).eax >= 0xb {
        let topology = __cpuid_count(0xb, 0);
        if topology.ebx != 0 {
            return topology.edx;
        }
    }
    __cpuid(1).ebx >> 24
}

/// Whether CPUID offers x2APIC mode (leaf 1 ECX bit 21).
pub fn cpu_has_x2apic() -> bool {
    cpuid_bit(1, Some(21), None)
}

fn choose_mode() -> Result<Mode, LapicError> {
    if !cpuid_bit(1, None, Some(9)) {
        return Err(LapicError::NotPresent);
    }
    let mode = if cpu_has_x2apic() {
        Mode::X2Apic
    } else {
        let phys = crate::platform::acpi::try_platform().map_or_else(
            // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC.
            || x86_64::PhysAddr::new(unsafe { Msr::new(IA32_APIC_BASE).read() } & !0xfff),
            |platform| platform.lapic_phys,
        );
        Mode::XApic(mmio::map(phys, 0x400).map_err(LapicError::Map)?)
    };
    interrupts::register_irq(SPURIOUS, spurious_interrupt).map_err(LapicError::Handler)?;
    interrupts::register_irq(ERROR, error_interrupt).map_err(LapicError::Handler)?;
    Ok(mode)
}

fn mode() -> Option<&'static Mode> {
    MODE.get().and_then(|mode| mode.as_ref().ok())
}

pub(super) fn read(reg: u32) -> u32 {
    match mode() {
        // SAFETY: this CPU is in x2APIC mode (init_this_cpu) and `reg` is an
        // architectural APIC register.
        Some(Mode::X2Apic) => unsafe { Msr::new(0x800 + reg / 16).read() as u32 },
        // SAFETY: the page is the APIC's register window, mapped uncached;
        // registers are 32-bit and 16-byte aligned.
        Some(Mode::XApic(region)) => unsafe {
            (region.virt() + u64::from(reg)).as_ptr::<u32>().read_volatile()
        },
        None => 0,
    }
}

pub(super) fn write(reg: u32, value: u32) {
    match mode() {
        // SAFETY: as in `read`; reserved bits are written as 0.
        Some(Mode::X2Apic) => unsafe { Msr::new(0x800 + reg / 16).write(u64::from(value)) },
        // SAFETY: as in `read`.
        Some(Mode::XApic(region)) => unsafe {
            (region.virt() + u64::from(reg)).as_mut_ptr::<u32>().write_volatile(value)
        },
        None => {}
    }
}

/// Enables this CPU's local APIC: x2APIC mode if chosen, spurious vector
/// [`SPURIOUS`], error vector [`ERROR`], TPR 0, LINT0 masked, LINT1 as the
/// MADT's NMI line, timer stopped. The first call also maps the registers,
/// installs the spurious/error handlers and calibrates the timer.
///
/// # Errors
/// [`LapicError`] when the APIC is missing or cannot be mapped.
pub fn init_this_cpu() -> Result<(), LapicError> {
    let mode = MODE.call_once(choose_mode).as_ref().map_err(|error| *error)?;
    // SAFETY: IA32_APIC_BASE exists (checked in choose_mode). Setting EN
    // first and EXTD second follows the legal transitions disabled → xAPIC
    // → x2APIC (SDM Vol. 3A §11.12.5, Figure 11-28).
    unsafe {
        let mut msr = Msr::new(IA32_APIC_BASE);
        let base = msr.read() | APIC_BASE_ENABLE;
        msr.write(base);
        if matches!(mode, Mode::X2Apic) {
            msr.write(base | APIC_BASE_X2APIC);
        }
    }
    write(TPR, 0);
    write(LVT_TIMER, LVT_MASKED | u32::from(TIMER));
    write(TIMER_INITIAL, 0);
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, lint1_setting());
    write(LVT_ERROR, u32::from(ERROR));
    // Back-to-back writes clear stale errors (SDM Vol. 3A §11.5.3).
    write(ESR, 0);
    write(ESR, 0);
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS));
    timer::calibrate_once();
    Ok(())
}

/// LINT1 as NMI when the MADT says so for this CPU (or for all), else masked.
fn lint1_setting() -> u32 {
    let Some(platform) = crate::platform::acpi::try_platform() else { return LVT_MASKED };
    let me = id();
    let uid = platform.cpus.iter().find(|cpu| cpu.apic_id == me).map(|cpu| cpu.processor_uid);
    let nmi = platform.lapic_nmis.iter().find(|nmi| {
        nmi.lint == 1 && (nmi.processor_uid == u32::MAX || Some(nmi.processor_uid) == uid)
    });
    match nmi {
        Some(nmi) => {
            let mut lvt = LVT_NMI;
            if nmi.polarity == super::Polarity::ActiveLow {
                lvt |= LVT_ACTIVE_LOW;
            }
            if nmi.trigger == super::TriggerMode::Level {
                lvt |= LVT_LEVEL;
            }
            lvt
        }
        None => LVT_MASKED,
    }
}

/// Whether the APICs run in x2APIC mode.
pub fn is_x2apic() -> bool {
    matches!(mode(), Some(Mode::X2Apic))
}

/// This CPU's APIC id (CPUID's value before the APIC is set up).
pub fn id() -> u32 {
    match mode() {
        Some(Mode::X2Apic) => read(ID),
        Some(Mode::XApic(_)) => read(ID) >> 24,
        None => cpuid_apic_id(),
    }
}

/// The APIC version (0x1x for integrated APICs).
pub fn version() -> u8 {
    read(VERSION) as u8
}

/// Signals end of interrupt for the highest-priority in-service vector.
pub fn eoi() {
    // x2APIC requires writing exactly 0 (SDM Vol. 3A §11.12.1.2).
    write(EOI, 0);
}

fn wait_icr_idle() -> Result<(), LapicError> {
    let start = time::rdtsc();
    while read(ICR_LOW) & ICR_PENDING != 0 {
        if time::ticks_to_us(time::rdtsc() - start) > ICR_TIMEOUT_US {
            return Err(LapicError::DeliveryTimeout);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Writes the ICR. In xAPIC mode the high half (destination) must be
/// written first, since writing the low half sends; interrupts are off so
/// a handler's IPI cannot slip in between.
fn send(destination: u32, command: u32) -> Result<(), LapicError> {
    x86_64::instructions::interrupts::without_interrupts(|| match mode() {
        Some(Mode::X2Apic) => {
            let value = (u64::from(destination) << 32) | u64::from(command);
            // SAFETY: this CPU is in x2APIC mode; 0x830 is the 64-bit ICR
            // (SDM Vol. 3A §11.12.9), reserved bits zero.
            unsafe { Msr::new(0x830).write(value) };
            Ok(())
        }
        Some(Mode::XApic(_)) => {
            if destination > 0xff {
                return Err(LapicError::BadDestination(destination));
            }
            wait_icr_idle()?;
            write(ICR_HIGH, destination << 24);
            write(ICR_LOW, command);
            wait_icr_idle()
        }
        None => Err(LapicError::NotPresent),
    })
}

/// Sends fixed interrupt `vector` to the CPU with APIC id `dest_apic_id`.
///
/// # Errors
/// [`LapicError`] when the destination is unreachable or the ICR hangs.
pub fn send_ipi(dest_apic_id: u32, vector: u8) -> Result<(), LapicError> {
    send(dest_apic_id, ICR_ASSERT | u32::from(vector))
}

/// Sends fixed interrupt `vector` to every CPU but this one.
///
/// # Errors
/// [`LapicError::DeliveryTimeout`] when the ICR hangs.
pub fn send_ipi_all_but_self(vector: u8) -> Result<(), LapicError> {
    send(0, ICR_ALL_BUT_SELF | ICR_ASSERT | u32::from(vector))
}

/// Sends an NMI to every CPU but this one (panic and halt paths).
///
/// # Errors
/// [`LapicError::DeliveryTimeout`] when the ICR hangs.
pub fn send_nmi_all_but_self() -> Result<(), LapicError> {
    send(0, ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_NMI)
}

/// Sends INIT (assert, edge) to `apic_id`: the first step of starting an AP
/// (SDM Vol. 3A §9.4.4.1). The caller waits 10 ms before the first SIPI.
///
/// # Errors
/// [`LapicError`] when the destination is unreachable or the ICR hangs.
pub fn send_init(apic_id: u32) -> Result<(), LapicError> {
    send(apic_id, ICR_ASSERT | ICR_INIT)
}

/// Sends a STARTUP IPI: the AP starts in real mode at
/// `trampoline_page_number << 12`.
///
/// # Errors
/// [`LapicError`] when the destination is unreachable or the ICR hangs.
pub fn send_startup(apic_id: u32, trampoline_page_number: u8) -> Result<(), LapicError> {
    send(apic_id, ICR_ASSERT | ICR_STARTUP | u32::from(trampoline_page_number))
}

/// APIC errors seen so far on all CPUs.
pub fn error_count() -> usize {
    ERRORS.load(Ordering::Relaxed)
}

/// The error status register from the most recent error interrupt.
pub fn last_error_status() -> u32 {
    LAST_ERROR_STATUS.load(Ordering::Relaxed)
}

/// Spurious interrupts seen so far on all CPUs.
pub fn spurious_count() -> usize {
    SPURIOUS_COUNT.load(Ordering::Relaxed)
}

fn spurious_interrupt(_: &mut InterruptFrame) {
    // A spurious interrupt sets no ISR bit, so no EOI (SDM Vol. 3A §11.9).
    SPURIOUS_COUNT.fetch_add(1, Ordering::Relaxed);
}

fn error_interrupt(_: &mut InterruptFrame) {
    // The ESR latches on a write, so write before reading (§11.5.3). No
    // logging here: the interrupted code may hold the log lock.
    write(ESR, 0);
    LAST_ERROR_STATUS.store(read(ESR), Ordering::Relaxed);
    ERRORS.fetch_add(1, Ordering::Relaxed);
    eoi();
}
