//! The legacy 8259A PIC pair, remapped out of the exception vectors and
//! fully masked: vireo takes device interrupts through the I/O APIC.
//!
//! Remapping matters even when masked: a spurious IRQ 7 or 15 can still be
//! raised, and at the BIOS's vectors (8..16) it would look like a CPU
//! exception. The initialisation sequence is ICW1..ICW4 (Intel 8259A
//! datasheet, "Initialization Command Words"), then OCW1 for the masks.

use x86_64::instructions::port::Port;

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;

/// First vector of the master PIC after remapping (IRQ 0..8).
pub const MASTER_VECTOR_BASE: u8 = 0x20;
/// First vector of the slave PIC after remapping (IRQ 8..16).
pub const SLAVE_VECTOR_BASE: u8 = 0x28;

/// ICW1: edge-triggered, cascade mode, ICW4 follows.
const ICW1_INIT_WITH_ICW4: u8 = 0x11;
/// ICW4: 8086 mode, normal EOI.
const ICW4_8086: u8 = 0x01;

/// A write to the unused POST port takes about a microsecond, enough for
/// old PICs to settle between initialisation words.
fn io_wait() {
    // SAFETY: port 0x80 is the POST diagnostic port; writes have no effect.
    unsafe { Port::<u8>::new(0x80).write(0) };
}

/// Remaps the PICs to vectors 0x20..0x30 and masks every line.
pub fn remap_and_mask() {
    let words: [(u16, u8); 10] = [
        (MASTER_COMMAND, ICW1_INIT_WITH_ICW4),
        (SLAVE_COMMAND, ICW1_INIT_WITH_ICW4),
        (MASTER_DATA, MASTER_VECTOR_BASE), // ICW2: vector base
        (SLAVE_DATA, SLAVE_VECTOR_BASE),
        (MASTER_DATA, 1 << 2), // ICW3: slave on master's IRQ 2
        (SLAVE_DATA, 2),       // ICW3: slave's cascade identity
        (MASTER_DATA, ICW4_8086),
        (SLAVE_DATA, ICW4_8086),
        (MASTER_DATA, 0xff), // OCW1: mask all
        (SLAVE_DATA, 0xff),
    ];
    x86_64::instructions::interrupts::without_interrupts(|| {
        for (port, value) in words {
            // SAFETY: 0x20/0x21/0xa0/0xa1 are the PICs' ports, used by
            // nothing else in vireo; the sequence is the documented one.
            unsafe { Port::<u8>::new(port).write(value) };
            io_wait();
        }
    });
}

/// The interrupt mask registers (master, slave); 0xff each when masked.
pub fn masks() -> (u8, u8) {
    // SAFETY: reading a PIC data port in the OCW state returns the IMR.
    unsafe { (Port::<u8>::new(MASTER_DATA).read(), Port::<u8>::new(SLAVE_DATA).read()) }
}

mod tests {
    use super::*;
    use crate::{check_eq, ktest};

    ktest!(
        fn pic_is_fully_masked() {
            check_eq!(masks(), (0xff, 0xff));
            Ok(())
        }
    );

    ktest!(
        fn remapping_again_keeps_everything_masked() {
            remap_and_mask();
            check_eq!(masks(), (0xff, 0xff));
            Ok(())
        }
    );
}
