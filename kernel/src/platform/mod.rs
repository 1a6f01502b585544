//! The machine around the CPU: ACPI tables, interrupt controllers (local
//! APIC, I/O APIC, the masked 8259s), the HPET, PCI (ECAM or the
//! configuration ports), where the virtio-mmio windows are, and the TSC
//! clock cross-checked against every reference the machine has.

pub mod acpi;
pub mod apic;
pub mod hpet;
pub mod pci;
pub mod pic;
pub mod time;
pub mod virtio_mmio;
