//! Where the machine's virtio-mmio windows are (VirtIO 1.2 §4.2.1: "MMIO
//! provides no generic device discovery mechanism").
//!
//! Two sources, merged (a window named by both is listed once, as ACPI
//! describes it):
//! - the DSDT's `LNRO0005` devices (`acpi`), which QEMU `microvm` writes
//!   when it has ACPI;
//! - `virtio_mmio.device=<size>@<base>:<irq>` words on the kernel command
//!   line, Linux's syntax, which QEMU `microvm` appends without ACPI and
//!   Firecracker always. `<size>` takes a K, M or G suffix, `<base>` is
//!   hexadecimal with `0x`, `<irq>` decimal; a trailing `:<id>` is
//!   accepted and ignored. The line's trigger mode is not given there:
//!   the QEMU and Firecracker transports raise a level-triggered,
//!   active-high line, so that is assumed.
//!
//! A window listed here is only a place to look: the transport checks the
//! magic value and version before it touches anything else.

use crate::mm::PhysAddr;
use crate::platform::acpi::{self, Interrupt};
use crate::platform::apic::{Polarity, TriggerMode};
use alloc::vec::Vec;

/// The command-line key (also known to `cmdline`, which leaves it to us).
pub const CMDLINE_KEY: &str = "virtio_mmio.device";

/// Who described a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The DSDT.
    Acpi,
    /// A `virtio_mmio.device=` word.
    Cmdline,
}

/// One virtio-mmio window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Physical base of the registers.
    pub phys: PhysAddr,
    /// Bytes of the window.
    pub len_bytes: usize,
    /// Its interrupt line, if known.
    pub interrupt: Option<Interrupt>,
    /// Who described it.
    pub origin: Origin,
}

/// Why a `virtio_mmio.device=` value was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// Not `<size>@<base>:<irq>`.
    Syntax,
    /// A number that does not parse (or overflows).
    Number,
    /// A zero size, or a window that wraps the address space.
    Range,
}

/// Parses one `virtio_mmio.device=` value.
///
/// # Errors
/// [`CmdlineError`] for anything but `<size>@0x<base>:<irq>[:<id>]`.
pub fn parse_cmdline_device(value: &str) -> Result<Slot, CmdlineError> {
    let (size, rest) = value.split_once('@').ok_or(CmdlineError::Syntax)?;
    let mut fields = rest.split(':');
    let base = fields.next().ok_or(CmdlineError::Syntax)?;
    let irq = fields.next().ok_or(CmdlineError::Syntax)?;
    let (digits, unit) = match size.as_bytes().last() {
        Some(b'K' | b'k') => (&size[..size.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&size[..size.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&size[..size.len() - 1], 1 << 30),
        _ => (size, 1),
    };
    let len_bytes = parse_number(digits)?.checked_mul(unit).ok_or(CmdlineError::Number)?;
    let base = base
        .strip_prefix("0x")
        .or_else(|| base.strip_prefix("0X"))
        .ok_or(CmdlineError::Syntax)
        .and_then(|hex| u64::from_str_radix(hex, 16).map_err(|_| CmdlineError::Number))?;
    let gsi = irq.parse::<u32>().map_err(|_| CmdlineError::Number)?;
    if len_bytes == 0 || base.checked_add(len_bytes).is_none() {
        return Err(CmdlineError::Range);
    }
    Ok(Slot {
        phys: PhysAddr::try_new(base).map_err(|_| CmdlineError::Range)?,
        len_bytes: usize::try_from(len_bytes).map_err(|_| CmdlineError::Range)?,
        interrupt: Some(Interrupt {
            gsi,
            trigger: TriggerMode::Level,
            polarity: Polarity::ActiveHigh,
        }),
        origin: Origin::Cmdline,
    })
}

fn parse_number(digits: &str) -> Result<u64, CmdlineError> {
    match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .map_err(|_| CmdlineError::Number)
}

static SLOTS: spin::Once<Vec<Slot>> = spin::Once::new();

/// The windows, from ACPI (needs `acpi::init`) and the command line; later
/// calls return the same list. Command-line values that do not parse are
/// logged and skipped.
pub fn slots() -> &'static [Slot] {
    SLOTS.call_once(|| {
        let mut slots: Vec<Slot> = acpi::try_platform()
            .map(|platform| platform.virtio_mmio.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|device| {
                Some(Slot {
                    phys: PhysAddr::try_new(device.phys).ok()?,
                    len_bytes: device.len_bytes as usize,
                    interrupt: device.interrupt,
                    origin: Origin::Acpi,
                })
            })
            .collect();
        let cmdline = crate::arch::boot_info::get().cmdline().unwrap_or("");
        for value in cmdline.split_whitespace().filter_map(|word| {
            word.split_once('=').filter(|(key, _)| *key == CMDLINE_KEY).map(|(_, value)| value)
        }) {
            match parse_cmdline_device(value) {
                Ok(slot) if slots.iter().all(|known| known.phys != slot.phys) => slots.push(slot),
                Ok(_) => {}
                Err(error) => log::warn!("virtio-mmio: {CMDLINE_KEY}={value} ignored: {error:?}"),
            }
        }
        slots
    })
}

mod tests {
    use super::*;
    use crate::{check, check_eq, check_ok, ktest};

    ktest!(
        fn cmdline_devices_parse_as_qemu_and_firecracker_write_them() {
            let slot = check_ok!(parse_cmdline_device("512@0xfeb00e00:12"));
            check_eq!((slot.phys.as_u64(), slot.len_bytes), (0xfeb0_0e00, 512));
            check_eq!(slot.interrupt.map(|irq| irq.gsi), Some(12));
            check_eq!(slot.origin, Origin::Cmdline);
            let slot = check_ok!(parse_cmdline_device("4K@0xd0000000:5:3"));
            check_eq!((slot.phys.as_u64(), slot.len_bytes), (0xd000_0000, 4096));
            for bad in ["", "512", "512@feb00e00:12", "512@0xfeb00e00", "0@0x1000:5", "x@0x1000:5"]
            {
                check!(parse_cmdline_device(bad).is_err(), "{:?} accepted", bad);
            }
            check_eq!(parse_cmdline_device("16G@0xffffffffffff0000:5"), Err(CmdlineError::Range));
            Ok(())
        }
    );
}
