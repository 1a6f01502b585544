//! How a device's queues interrupt: through MSI-X, a vector of their own
//! per queue routed to the queue's CPU (§4.1.5.1.2), or through one shared
//! line (virtio-mmio, §4.2.3.3): every interrupting queue on one vector,
//! the line routed by the I/O APIC to the CPU of the first interrupting
//! queue. A shared line's handler must read and acknowledge the device's
//! interrupt status before the driver looks at its queues, or a
//! level-triggered line stays asserted; [`on_line_interrupt`] does that for
//! every device on a line, then calls the driver's handler.
//!
//! Configuration changes (§2.5: the device changed a field of its
//! configuration space) are signalled separately: on MSI-X through the
//! entry in `config_msix_vector` (§4.1.4.3; bring-up gives it entry 0, on
//! a vector of its own routed to CPU 0), on a shared line by bit 1 of the
//! interrupt status (§4.1.4.5, §4.2.2). Either way the device's
//! [`ConfigSignal`] counts it and calls the driver's callback.

use super::{BringUpError, BringUpTransport};
use crate::arch::interrupts::{self, InterruptFrame, IrqError, IrqHandler};
use crate::arch::percpu;
use crate::drivers::virtio::mmio::window::InterruptAck;
use crate::platform::apic::{Polarity, TriggerMode, ioapic, lapic};
use crate::platform::pci::msix::MsiX;
use crate::sync::IrqSpinLock;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
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

/// Routes MSI-X entry 0 to CPU 0 on a vector of its own that raises
/// `signal`, and tells the device to signal configuration changes through
/// it (§4.1.5.1.2: it reads `config_msix_vector` back as `NO_VECTOR` when
/// it cannot). Returns the vector; on an error nothing stays installed.
pub(super) fn route_config_changes(
    table: &MsiX,
    transport: &mut impl BringUpTransport,
    signal: &Arc<ConfigSignal>,
) -> Result<u8, BringUpError> {
    let apic_id = apic_id_of(0)?;
    let vector = claim_config_vector(signal.clone()).map_err(BringUpError::Vectors)?;
    let routed = table.route(CONFIG_MSIX_ENTRY, vector, apic_id).map_err(BringUpError::Msix);
    let kept = routed.and_then(|()| {
        if transport.set_config_msix_vector(CONFIG_MSIX_ENTRY) {
            Ok(())
        } else {
            Err(BringUpError::VectorRefused { queue: None })
        }
    });
    match kept {
        Ok(()) => Ok(vector),
        Err(error) => {
            release_config_vector(vector);
            Err(error)
        }
    }
}

/// The MSI-X table entry configuration changes use (queues take 1..).
pub(super) const CONFIG_MSIX_ENTRY: u16 = 0;

/// Where a device's configuration-change notifications end up: a count
/// anyone may read (a driver that wants a flag compares it with the value
/// it saw last) and the driver's callback.
pub struct ConfigSignal {
    changes: AtomicU64,
    on_change: Option<fn()>,
}

impl ConfigSignal {
    pub(super) fn new(on_change: Option<fn()>) -> Self {
        Self { changes: AtomicU64::new(0), on_change }
    }

    /// A notification arrived (interrupt context): count it, then call the
    /// driver, so a callback that reads the count sees this one.
    pub(super) fn raise(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(on_change) = self.on_change {
            on_change();
        }
    }

    /// Configuration-change notifications seen so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

/// A device's configuration-change vector (MSI-X).
struct ConfigListener {
    vector: u8,
    signal: Arc<ConfigSignal>,
}

/// The configuration-change vectors, found by vector in the handler.
static CONFIG_LISTENERS: IrqSpinLock<Vec<ConfigListener>> = IrqSpinLock::new(Vec::new());

/// Installs [`on_config_interrupt`] on a free vector raising `signal`.
fn claim_config_vector(signal: Arc<ConfigSignal>) -> Result<u8, IrqError> {
    let vector = interrupts::allocate_irq_vectors(1, on_config_interrupt)?;
    CONFIG_LISTENERS.lock().push(ConfigListener { vector, signal });
    Ok(vector)
}

/// Undoes [`claim_config_vector`].
pub(super) fn release_config_vector(vector: u8) {
    CONFIG_LISTENERS.lock().retain(|listener| listener.vector != vector);
    interrupts::unregister_irq(vector);
}

/// A configuration-change message arrived: raise its device's signal
/// (outside the table's lock: the callback may look at other devices).
fn on_config_interrupt(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    let signal = CONFIG_LISTENERS
        .lock()
        .iter()
        .find(|listener| listener.vector == vector)
        .map(|listener| listener.signal.clone());
    if let Some(signal) = signal {
        signal.raise();
    }
    lapic::eoi();
}

/// One device on a shared line.
#[derive(Clone)]
struct LineDevice {
    vector: u8,
    ack: InterruptAck,
    handler: IrqHandler,
    /// Raised when the interrupt status says the configuration changed.
    config: Option<Arc<ConfigSignal>>,
}

/// The devices on shared lines, found by vector in the interrupt handler.
static LINE_DEVICES: IrqSpinLock<Vec<LineDevice>> = IrqSpinLock::new(Vec::new());

/// Installs [`on_line_interrupt`] on a free vector for a device that
/// acknowledges with `ack` and whose driver handles its queues in
/// `handler` (and hears of configuration changes through `config`);
/// returns the vector.
pub(super) fn claim_line_vector(
    ack: InterruptAck,
    handler: IrqHandler,
    config: Option<Arc<ConfigSignal>>,
) -> Result<u8, IrqError> {
    let vector = interrupts::allocate_irq_vectors(1, on_line_interrupt)?;
    LINE_DEVICES.lock().push(LineDevice { vector, ack, handler, config });
    Ok(vector)
}

/// Undoes [`claim_line_vector`].
pub(super) fn release_line_vector(vector: u8) {
    LINE_DEVICES.lock().retain(|device| device.vector != vector);
    interrupts::unregister_irq(vector);
}

/// A shared line fired: acknowledge the device's causes first (§4.2.3.3),
/// then let its driver look at every queue ("a used buffer notification
/// for each active virtqueue"); a configuration change (bit 1) raises the
/// device's signal; a cause already acknowledged only needs the EOI.
fn on_line_interrupt(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    let device = LINE_DEVICES.lock().iter().find(|device| device.vector == vector).cloned();
    let Some(device) = device else {
        lapic::eoi();
        return;
    };
    let status = device.ack.acknowledge();
    if status.contains(InterruptStatus::CONFIG)
        && let Some(config) = &device.config
    {
        config.raise();
    }
    if status.contains(InterruptStatus::QUEUE) {
        // The driver's handler sends the EOI.
        (device.handler)(frame);
    } else {
        lapic::eoi();
    }
}
