//! The machine around the CPU: ACPI tables, interrupt controllers (local
//! APIC, I/O APIC, the masked 8259s), the HPET, PCI, and the TSC clock
//! calibrated against the PIT or HPET.

pub mod acpi;
pub mod apic;
pub mod hpet;
pub mod pci;
pub mod pic;
pub mod time;
