//! I/O APICs: route global system interrupts (GSIs) to local APIC vectors.
//!
//! Each I/O APIC has an index/data register pair (IOREGSEL at +0x00, IOWIN
//! at +0x10) and one 64-bit redirection entry per input, at index
//! `0x10 + 2 * pin` (low half) and `0x11 + 2 * pin` (high half) (Intel
//! 82093AA datasheet §3.2). The pair is stateful, so each controller's
//! accesses are serialised by a lock, taken with interrupts off.

use super::{Polarity, TriggerMode};
use crate::mm::mmio::{self, MmioRegion};
use crate::mm::paging::MapError;
use crate::platform::acpi::{self, IsaRoute};
use alloc::vec::Vec;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;

// Redirection entry fields (82093AA datasheet §3.2.4).
const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
const ENTRY_LEVEL: u64 = 1 << 15;
const ENTRY_MASKED: u64 = 1 << 16;

/// Why a routing request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoApicError {
    /// No I/O APIC serves this GSI.
    NoSuchGsi(u32),
    /// Physical destination mode addresses APIC ids up to 255 only (more
    /// needs interrupt remapping).
    BadDestination(u32),
    /// Vectors below 32 are exceptions.
    BadVector(u8),
}

/// One I/O APIC.
#[derive(Debug)]
pub struct IoApic {
    id: u8,
    gsi_base: u32,
    entries: u32,
    version: u8,
    registers: spin::Mutex<MmioRegion>,
}

impl IoApic {
    fn new(info: &acpi::IoApicInfo) -> Result<Self, MapError> {
        let region = mmio::map(info.phys, 0x20)?;
        let mut ioapic = IoApic {
            id: info.id,
            gsi_base: info.gsi_base,
            entries: 0,
            version: 0,
            registers: spin::Mutex::new(region),
        };
        let version = ioapic.read(REG_VERSION);
        // Bits 16-23 hold the highest redirection entry index.
        ioapic.entries = ((version >> 16) & 0xff) + 1;
        ioapic.version = version as u8;
        Ok(ioapic)
    }

    /// The id the MADT gives.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The id register's value (bits 24-27).
    pub fn hardware_id(&self) -> u8 {
        ((self.read(REG_ID) >> 24) & 0xf) as u8
    }

    /// The version register's version field (0x11 or 0x20 on PCs).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// First GSI this controller serves.
    pub fn gsi_base(&self) -> u32 {
        self.gsi_base
    }

    /// Number of inputs (redirection entries).
    pub fn entry_count(&self) -> u32 {
        self.entries
    }

    fn serves(&self, gsi: u32) -> bool {
        gsi >= self.gsi_base && gsi - self.gsi_base < self.entries
    }

    fn read(&self, index: u32) -> u32 {
        x86_64::instructions::interrupts::without_interrupts(|| {
            let region = self.registers.lock();
            // SAFETY: the window is this I/O APIC's registers, mapped
            // uncached; the lock keeps the select/data pair together.
            unsafe {
                (region.virt() + IOREGSEL).as_mut_ptr::<u32>().write_volatile(index);
                (region.virt() + IOWIN).as_ptr::<u32>().read_volatile()
            }
        })
    }

    fn write(&self, index: u32, value: u32) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            let region = self.registers.lock();
            // SAFETY: as in `read`.
            unsafe {
                (region.virt() + IOREGSEL).as_mut_ptr::<u32>().write_volatile(index);
                (region.virt() + IOWIN).as_mut_ptr::<u32>().write_volatile(value);
            }
        })
    }

    fn read_entry(&self, pin: u32) -> u64 {
        let index = REG_REDIRECTION + 2 * pin;
        u64::from(self.read(index)) | (u64::from(self.read(index + 1)) << 32)
    }

    /// Writes an entry so that it is never live half-updated: the low half
    /// (with the mask bit) is written masked first, then the high half,
    /// then the final low half.
    fn write_entry(&self, pin: u32, entry: u64) {
        let index = REG_REDIRECTION + 2 * pin;
        self.write(index, (entry as u32) | ENTRY_MASKED as u32);
        self.write(index + 1, (entry >> 32) as u32);
        self.write(index, entry as u32);
    }
}

/// The number of inputs and the id register of the I/O APIC at `phys`
/// (for platform descriptions without GSI bases, or with ids of their own).
pub fn probe(phys: crate::mm::PhysAddr) -> Option<(u32, u8)> {
    let info = acpi::IoApicInfo { id: 0, phys, gsi_base: 0 };
    IoApic::new(&info).ok().map(|ioapic| (ioapic.entries, ioapic.hardware_id()))
}

static IOAPICS: spin::Once<Vec<IoApic>> = spin::Once::new();

/// Maps every I/O APIC the MADT lists and masks all their inputs. Needs
/// `acpi::init`; later calls do nothing.
pub fn init() {
    IOAPICS.call_once(|| {
        let mut ioapics = Vec::new();
        for info in &acpi::platform().ioapics {
            match IoApic::new(info) {
                Ok(ioapic) => {
                    for pin in 0..ioapic.entries {
                        ioapic.write_entry(pin, ENTRY_MASKED);
                    }
                    log::info!(
                        "ioapic: id {} version {:#x}, GSIs {}..{}",
                        ioapic.id,
                        ioapic.version,
                        ioapic.gsi_base,
                        ioapic.gsi_base + ioapic.entries
                    );
                    ioapics.push(ioapic);
                }
                Err(error) => log::error!("ioapic: cannot map id {}: {error:?}", info.id),
            }
        }
        ioapics
    });
}

/// The I/O APICs (empty before [`init`] or without any).
pub fn controllers() -> &'static [IoApic] {
    IOAPICS.get().map_or(&[], Vec::as_slice)
}

fn find(gsi: u32) -> Result<(&'static IoApic, u32), IoApicError> {
    let ioapic = controllers()
        .iter()
        .find(|ioapic| ioapic.serves(gsi))
        .ok_or(IoApicError::NoSuchGsi(gsi))?;
    Ok((ioapic, gsi - ioapic.gsi_base))
}

/// Routes `gsi` to `vector` on the CPU with APIC id `dest_apic_id` (fixed
/// delivery, physical destination). The input is left **masked**: install
/// the handler, then [`unmask`].
///
/// # Errors
/// [`IoApicError`] for an unknown GSI, a destination above 255 or an
/// exception vector.
pub fn route(
    gsi: u32,
    vector: u8,
    dest_apic_id: u32,
    trigger: TriggerMode,
    polarity: Polarity,
) -> Result<(), IoApicError> {
    let (ioapic, pin) = find(gsi)?;
    if dest_apic_id > 0xff {
        return Err(IoApicError::BadDestination(dest_apic_id));
    }
    if vector < crate::arch::interrupts::FIRST_IRQ_VECTOR {
        return Err(IoApicError::BadVector(vector));
    }
    let mut entry = u64::from(vector) | ENTRY_MASKED | (u64::from(dest_apic_id) << 56);
    if trigger == TriggerMode::Level {
        entry |= ENTRY_LEVEL;
    }
    if polarity == Polarity::ActiveLow {
        entry |= ENTRY_ACTIVE_LOW;
    }
    ioapic.write_entry(pin, entry);
    Ok(())
}

fn set_mask(gsi: u32, masked: bool) -> Result<(), IoApicError> {
    let (ioapic, pin) = find(gsi)?;
    let index = REG_REDIRECTION + 2 * pin;
    // Only the low half changes; a lock per access is enough because
    // nothing else rewrites a routed entry concurrently.
    let low = u64::from(ioapic.read(index));
    let low = if masked { low | ENTRY_MASKED } else { low & !ENTRY_MASKED };
    ioapic.write(index, low as u32);
    Ok(())
}

/// Stops `gsi` from interrupting.
///
/// # Errors
/// [`IoApicError::NoSuchGsi`].
pub fn mask(gsi: u32) -> Result<(), IoApicError> {
    set_mask(gsi, true)
}

/// Lets `gsi` interrupt (after [`route`]).
///
/// # Errors
/// [`IoApicError::NoSuchGsi`].
pub fn unmask(gsi: u32) -> Result<(), IoApicError> {
    set_mask(gsi, false)
}

/// The raw redirection entry for `gsi`, for diagnostics and tests.
pub fn entry(gsi: u32) -> Option<u64> {
    find(gsi).ok().map(|(ioapic, pin)| ioapic.read_entry(pin))
}

/// Where ISA IRQ `irq` arrives, after the MADT's overrides.
pub fn isa_irq_to_gsi(irq: u8) -> IsaRoute {
    acpi::platform().isa_route(irq)
}

/// Routes ISA IRQ `irq` (with its override's polarity and trigger) to
/// `vector` on `dest_apic_id`, masked; returns the GSI to [`unmask`].
///
/// # Errors
/// As [`route`].
pub fn route_isa_irq(irq: u8, vector: u8, dest_apic_id: u32) -> Result<u32, IoApicError> {
    let isa = isa_irq_to_gsi(irq);
    route(isa.gsi, vector, dest_apic_id, isa.trigger, isa.polarity)?;
    Ok(isa.gsi)
}
