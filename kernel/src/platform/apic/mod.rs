//! The APIC interrupt architecture: each CPU's local APIC (timer, IPIs,
//! EOI) and the I/O APICs that route device interrupts to them.
//!
//! Bring-up order on the boot CPU: `acpi::init` (tables), then [`init_bsp`]:
//! the 8259 PICs are remapped and masked, the local APIC is enabled and its
//! timer calibrated, and every I/O APIC input is masked. Each AP calls
//! [`lapic::init_this_cpu`] once its IDT is loaded.
//!
//! Vector map (higher vectors win in the APIC's priority classes, Intel SDM
//! Vol. 3A §11.8.3, so the system vectors sit at the top):
//! - 0x20..0x30: the masked 8259s (only spurious IRQ 7/15 can still arrive);
//! - [`TIMER`] and the IPIs in 0xec..0xf4, [`ERROR`] and [`SPURIOUS`] last.

pub mod ioapic;
pub mod lapic;
mod timer;

/// The local APIC timer.
pub const TIMER: u8 = 0xec;
/// Asks a CPU to run its scheduler.
pub const RESCHEDULE_IPI: u8 = 0xf0;
/// Asks a CPU to flush TLB entries.
pub const TLB_SHOOTDOWN_IPI: u8 = 0xf1;
/// Asks a CPU to stop (panic, shutdown).
pub const HALT_IPI: u8 = 0xf2;
/// Asks a CPU to run a queued function.
pub const CALL_FUNCTION_IPI: u8 = 0xf3;
/// Local APIC internal errors (handled in `lapic`).
pub const ERROR: u8 = 0xfe;
/// Spurious interrupts (handled in `lapic`). Its low four bits must be set
/// on P6-family APICs (Intel SDM Vol. 3A §11.9), which 0xff satisfies.
pub const SPURIOUS: u8 = 0xff;

/// Polarity of an interrupt input pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// Asserted when high (ISA's default).
    ActiveHigh,
    /// Asserted when low (PCI's default).
    ActiveLow,
}

/// How an interrupt input is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMode {
    /// On a transition (ISA's default).
    Edge,
    /// While asserted, until the EOI (PCI's default).
    Level,
}

/// Brings up interrupt controllers on the boot CPU: masks the 8259s,
/// enables this CPU's local APIC and masks all I/O APIC inputs. Needs
/// `acpi::init`. Leaves interrupts disabled.
pub fn init_bsp() {
    super::pic::remap_and_mask();
    match lapic::init_this_cpu() {
        Ok(()) => log::info!(
            "apic: local APIC {} in {} mode, id {}, timer {} Hz{}",
            lapic::version(),
            if lapic::is_x2apic() { "x2APIC" } else { "xAPIC" },
            lapic::id(),
            lapic::timer_hz(),
            if lapic::has_tsc_deadline() { ", TSC-deadline" } else { "" }
        ),
        Err(error) => log::error!("apic: local APIC unusable: {error:?}"),
    }
    ioapic::init();
}

mod tests;
