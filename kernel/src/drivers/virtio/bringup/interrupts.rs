//! How a device's queues interrupt: through MSI-X, a vector of their own
//! per queue routed to the queue's CPU (§4.1.5.1.2), or through one shared
//! line (virtio-mmio, §4.2.3.3): every interrupting queue on one vector,
//! the line routed by the I/O APIC to the CPU of the first interrupting
//! queue. A shared line's handler must read and acknowledge the device's
//! interrupt status before the driver looks at its queues, or a
//! level-triggered line stays asserted; [`on_line_interrupt`] does that for
//! every device on a line, then calls the driver's handler.

use super::{BringUpError, BringUpTransport};
use crate::arch::interrupts::{self, InterruptFrame, IrqError, IrqHandler};
use crate::arch::percpu;
use crate::drivers::virtio::mmio::window::InterruptAck;
use crate::platform::apic::{Polarity, TriggerMode, ioapic, lapic};
use crate::platform::pci::msix::MsiX;
use crate::sync::IrqSpinLock;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vireo_virtio::InterruptStatus;

/// Consecutive interrupt vectors allocated for one device's queues.
#[derive(Debug, Clone, Copy)]
pub(super) struct VectorRun {
    pub first: u8,
    pub count: u8,
}

/// A device's I/O APIC line and the vector its queues share.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line {
    pub gsi: u32,
    pub vector: u8,
    pub trigger: TriggerMode,
    pub polarity: Polarity,
}

/// The APIC id of `cpu`, if it is online.
fn apic_id_of(cpu: u32) -> Result<u32, BringUpError> {
    Ok(percpu::cpu(cpu as usize)
        .filter(|_| (cpu as usize) < crate::smp::online_cpus())
        .ok_or(BringUpError::NoSuchCpu(cpu))?
        .apic_id
        .load(Ordering::Relaxed))
}

/// A device's MSI-X table and the vectors its queues interrupt on.
pub(super) struct Msix<'a> {
    pub table: &'a MsiX,
    pub run: VectorRun,
}

impl Msix<'_> {
    /// Routes MSI-X entry `entry` (the `entry`-th interrupting queue) to
    /// `cpu` and gives it to queue `index`; returns the entry's vector.
    pub fn route_queue(
        &self,
        transport: &mut impl BringUpTransport,
        index: u16,
        entry: u8,
        cpu: u32,
    ) -> Result<u8, BringUpError> {
        let apic_id = apic_id_of(cpu)?;
        let vector = self.run.first + (entry - 1);
        self.table.route(u16::from(entry), vector, apic_id).map_err(BringUpError::Msix)?;
        if !transport.set_queue_msix_vector(index, u16::from(entry)) {
            return Err(BringUpError::VectorRefused { queue: Some(index) });
        }
        Ok(vector)
    }
}

impl Line {
    /// Routes the line to `cpu`, masked (unmasked by [`Line::enable`]).
    pub fn route_to(&self, cpu: u32) -> Result<(), BringUpError> {
        let apic_id = apic_id_of(cpu)?;
        ioapic::route(self.gsi, self.vector, apic_id, self.trigger, self.polarity)
            .map_err(BringUpError::Line)
    }

    /// Lets the line interrupt.
    pub fn enable(&self) -> Result<(), BringUpError> {
        ioapic::unmask(self.gsi).map_err(BringUpError::Line)
    }

    /// Stops the line (best effort: a GSI that was routed can be masked).
    pub fn mask(&self) {
        let _ = ioapic::mask(self.gsi);
    }
}

/// One device on a shared line.
#[derive(Clone, Copy)]
struct LineDevice {
    vector: u8,
    ack: InterruptAck,
    handler: IrqHandler,
}

/// The devices on shared lines, found by vector in the interrupt handler.
static LINE_DEVICES: IrqSpinLock<Vec<LineDevice>> = IrqSpinLock::new(Vec::new());

/// Installs [`on_line_interrupt`] on a free vector for a device that
/// acknowledges with `ack` and whose driver handles its queues in
/// `handler`; returns the vector.
pub(super) fn claim_line_vector(ack: InterruptAck, handler: IrqHandler) -> Result<u8, IrqError> {
    let vector = interrupts::allocate_irq_vectors(1, on_line_interrupt)?;
    LINE_DEVICES.lock().push(LineDevice { vector, ack, handler });
    Ok(vector)
}

/// Undoes [`claim_line_vector`].
pub(super) fn release_line_vector(vector: u8) {
    LINE_DEVICES.lock().retain(|device| device.vector != vector);
    interrupts::unregister_irq(vector);
}

/// A shared line fired: acknowledge the device's causes first (§4.2.3.3),
/// then let its driver look at every queue ("a used buffer notification
/// for each active virtqueue"); a configuration change alone, or a cause
/// already acknowledged, only needs the EOI.
fn on_line_interrupt(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    let device = LINE_DEVICES.lock().iter().find(|device| device.vector == vector).copied();
    match device {
        Some(device) if device.ack.acknowledge().contains(InterruptStatus::QUEUE) => {
            // The driver's handler sends the EOI.
            (device.handler)(frame);
        }
        _ => lapic::eoi(),
    }
}
