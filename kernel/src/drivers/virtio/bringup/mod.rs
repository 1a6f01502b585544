//! One way to bring up a virtio device, shared by every driver.
//!
//! A driver describes itself ([`VirtioDriver`]): its device id, the
//! features it cannot work without and those it uses when offered, its
//! configuration structure and its queues. [`bring_up`] then runs the
//! device initialisation of VirtIO 1.2 §3.1.1 for it:
//!
//! 1. find the device (`discovery`: a PCI function of the driver's type,
//!    modern or transitional, then a virtio-mmio window) and map its
//!    transport: modern virtio-pci (§4.1.4) or virtio-mmio version 2
//!    (§4.2.2);
//! 2. reset, ACKNOWLEDGE, DRIVER, negotiate, FEATURES_OK (steps 1–6); a
//!    required feature the device does not offer is
//!    [`BringUpError::MissingFeatures`];
//! 3. read the configuration, retried until the generation counter is the
//!    same before and after (§2.5.1), each field at its natural width
//!    (§4.1.3.1);
//! 4. create the queues the driver plans from that configuration, each with
//!    its MSI-X vector routed to the CPU the driver chose (§4.1.5.1.2,
//!    §4.1.5.1.3) or, on a transport with one interrupt line, all of them
//!    on the line's vector (`interrupts`), or polled with interrupts
//!    suppressed (step 7);
//! 5. DRIVER_OK (step 8).
//!
//! Once the device has been touched, every failure — in these steps or in
//! the driver's own setup after them — goes through
//! [`VirtioDevice::fail`]: FAILED, a bounded reset, and the memory the
//! device was given freed only if the reset is proven complete, else
//! leaked (see `failure`). Every call into the `vireo-virtio` crate's
//! negotiation, queue creation and reset is in this module.

mod config;
mod discovery;
mod failure;
mod interrupts;
mod restart;
mod transport;

use super::hal::KernelHal;
use super::pci::{NO_VECTOR, QueueNotifier};
use crate::arch::interrupts::{IrqError, IrqHandler};
use crate::platform::apic::ioapic::IoApicError;
use crate::platform::pci::msix::{MsiX, MsixError};
use crate::sync::{SpinLock, SpinLockGuard};
use alloc::sync::Arc;
use alloc::vec::Vec;
use interrupts::{Line, Msix, VectorRun};
use vireo_virtio::{DeviceStatus, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy};

pub use config::{ConfigFields, DeviceConfig};
pub use discovery::{InterruptSource, Location, find_devices};
pub use failure::{Failed, Teardown};
pub use interrupts::ConfigSignal;
pub use transport::{BringUpTransport, KernelTransport, TransportError};

/// What a driver tells bring-up about its device.
pub trait VirtioDriver {
    /// For messages, e.g. `"virtio-blk"`.
    const NAME: &'static str;
    /// The virtio device id (§5): 2 block, 4 entropy, 16 GPU.
    const DEVICE_ID: u16;
    /// Features the driver cannot work without: bring-up fails unless the
    /// device offers every one (`VERSION_1` is always required).
    const REQUIRED: Features;
    /// Features the driver uses when the device offers them.
    const OPTIONAL: Features;
    /// Installed on the vectors of the queues that interrupt (all of this
    /// device's queues share it; it tells them apart by vector, and on a
    /// shared line, where they all have the same vector, must look at
    /// every queue). It sends the EOI.
    const ON_INTERRUPT: Option<IrqHandler> = None;
    /// Called when the device signals a configuration change (§2.5; e.g. a
    /// resized disk, a new display mode): from the interrupt handler of
    /// MSI-X entry 0, routed to CPU 0, or of the shared line (interrupt
    /// status bit 1, §4.1.4.5). Interrupt context: keep it to setting a
    /// flag or waking a thread; read the configuration in thread context.
    /// With `None` the device is told not to signal them (`NO_VECTOR`).
    /// Without MSI-X and without a line (a polled device) nothing arrives.
    const ON_CONFIG_CHANGE: Option<fn()> = None;
    /// The device configuration the driver needs.
    type Config: DeviceConfig;
    /// What the driver's requests own while the device has them.
    type Buffers;

    /// The queues to create, from the configuration, the negotiated
    /// features and what the device and the machine offer.
    fn queues(config: &Self::Config, features: Features, limits: &QueueLimits) -> Vec<QueueSpec>;
}

/// What the device and the machine allow a driver's queue plan.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Queues the device has (`num_queues`, §4.1.4.3; counted on
    /// virtio-mmio, which has no such register).
    pub device_queues: u16,
    /// MSI-X entries for queues (entry 0 stays with configuration changes);
    /// 0 without MSI-X.
    pub msix_queue_vectors: u16,
    /// Whether the device interrupts on one shared line (virtio-mmio): any
    /// number of queues may interrupt, all on the line's vector.
    pub shared_line: bool,
    /// CPUs online (ids `0..online_cpus`).
    pub online_cpus: u32,
}

impl QueueLimits {
    /// How many queues may interrupt: one per MSI-X entry, or any number on
    /// a shared line.
    pub fn interrupting_queues(&self) -> u16 {
        if self.shared_line { u16::MAX } else { self.msix_queue_vectors }
    }
}

/// One queue a driver wants.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    /// The device's queue index.
    pub index: u16,
    /// Descriptors (a power of two, at most the device's maximum).
    pub size: u16,
    /// Longest indirect table per request (0: never indirect).
    pub indirect_max: u16,
    /// How the driver learns of used buffers.
    pub interrupt: QueueInterrupt,
    /// What a used length beyond the writable bytes does: break the queue
    /// or clamp and count (each driver says why it chose).
    pub used_len: UsedLenPolicy,
}

/// How a queue reports used buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueInterrupt {
    /// The driver polls; the device is asked not to interrupt (§2.7.7).
    Polled,
    /// An MSI-X message to this CPU, on a vector of the queue's own; on a
    /// shared line, the line's vector, on the CPU the first interrupting
    /// queue names.
    OnCpu(u32),
}

/// A created queue.
pub struct Queue<B> {
    /// The ring, owning each request's buffers while the device has them.
    pub ring: SplitQueue<KernelHal, B>,
    /// Kicks this queue without the transport.
    pub notifier: QueueNotifier,
    /// The vector its interrupts arrive on (`None` when polled); the same
    /// for every queue on a shared line.
    pub vector: Option<u8>,
    /// The MSI-X table entry the queue was given (`None` when polled): a
    /// queue reset forgets it (§4.1.4.3.2), so a restart programs it again.
    pub msix_entry: Option<u16>,
}

/// Why bring-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BringUpError {
    /// No device of the driver's type, on PCI or virtio-mmio.
    NotFound,
    /// The device has no usable transport (a legacy-only device among them).
    Transport(TransportError),
    /// The device refused negotiation (no `VERSION_1`, `FEATURES_OK` not
    /// kept, or the first reset never completed).
    Negotiation(vireo_virtio::Error),
    /// The device does not offer these features, which the driver requires.
    MissingFeatures(Features),
    /// A configuration field lies outside the device's configuration window.
    Config(vireo_virtio::Error),
    /// The configuration kept changing while it was read (§2.5.1).
    ConfigUnstable,
    /// The configuration is one the driver cannot use.
    BadConfig(&'static str),
    /// A queue needs an interrupt but the driver gave no handler.
    NoInterruptHandler,
    /// A queue needs an interrupt but the device has no known way to send
    /// one (a virtio-mmio window whose interrupt nobody described).
    NoInterruptSource,
    /// Routing or unmasking the device's I/O APIC line failed.
    Line(IoApicError),
    /// No run of free interrupt vectors for the queues.
    Vectors(IrqError),
    /// A queue's interrupt was to go to a CPU that is not online.
    NoSuchCpu(u32),
    /// Programming or enabling the MSI-X table failed.
    Msix(MsixError),
    /// The device did not keep an MSI-X entry written for its configuration
    /// changes (`None`) or for this queue (§4.1.5.1.2: it reads back
    /// `NO_VECTOR` when it cannot use it).
    VectorRefused {
        /// The queue, or `None` for configuration changes.
        queue: Option<u16>,
    },
    /// The device's notify offset for this queue lies outside its notify
    /// window (§4.1.4.4).
    BadNotifyOffset(u16),
    /// Creating this queue failed.
    Queue {
        /// The queue index.
        index: u16,
        /// What the ring reported.
        error: vireo_virtio::Error,
    },
    /// The driver's own setup after bring-up failed.
    Driver(&'static str),
}

/// A device bring-up has touched. It owns the transport, the MSI-X table
/// or interrupt line, and the queues' interrupt vectors for as long as the
/// driver runs the device; give it back through [`VirtioDevice::fail`] if
/// the driver cannot.
pub struct VirtioDevice<T: BringUpTransport = KernelTransport> {
    name: &'static str,
    /// Locked only for diagnostics once the device runs: its queues kick
    /// through their own notifiers.
    transport: SpinLock<T>,
    msix: Option<MsiX>,
    /// MSI-X vectors.
    vectors: Option<VectorRun>,
    /// The shared line and its vector.
    line: Option<Line>,
    /// Counts configuration changes and calls the driver
    /// ([`VirtioDriver::ON_CONFIG_CHANGE`]); `None` when it has no callback.
    config_signal: Option<Arc<ConfigSignal>>,
    /// The MSI-X vector configuration changes arrive on (entry 0).
    config_vector: Option<u8>,
}

/// A device that reached DRIVER_OK, with what the driver needs to run it.
pub struct Running<D: VirtioDriver, T: BringUpTransport = KernelTransport> {
    /// Keep it for the device's lifetime.
    pub device: VirtioDevice<T>,
    /// The negotiated features (`VERSION_1` and a subset of the driver's).
    pub features: Features,
    /// The configuration, read consistently.
    pub config: D::Config,
    /// The queues, in the order the driver planned them.
    pub queues: Vec<Queue<D::Buffers>>,
}

/// Brings up the first device of `D`'s type whose transport opens (PCI
/// first, then virtio-mmio).
///
/// # Errors
/// [`BringUpError::NotFound`] without one, the last device's
/// [`BringUpError::Transport`] if none opened, else as [`bring_up_with`].
pub fn probe<D: VirtioDriver>() -> Result<Running<D>, Failed> {
    match discovery::open_first::<D>() {
        Ok(Some((location, transport))) => bring_up_with::<D, _>(location, transport),
        Ok(None) => Err(Failed::untouched(BringUpError::NotFound)),
        Err(error) => Err(Failed::untouched(BringUpError::Transport(error))),
    }
}

/// Brings up the device at `location` over `transport` (its own, or one
/// the tests wrap to make the device misbehave).
///
/// # Errors
/// [`Failed`] with the cause; when the device was touched, it has been
/// given up as [`VirtioDevice::fail`] describes.
pub fn bring_up_with<D: VirtioDriver, T: BringUpTransport>(
    location: Location,
    transport: T,
) -> Result<Running<D, T>, Failed> {
    let mut device = VirtioDevice {
        name: D::NAME,
        transport: SpinLock::new(transport),
        msix: None,
        vectors: None,
        line: None,
        config_signal: D::ON_CONFIG_CHANGE.map(|f| Arc::new(ConfigSignal::new(Some(f)))),
        config_vector: None,
    };
    let mut queues = Vec::new();
    match device.set_up::<D>(location.interrupts(), &mut queues) {
        Ok((features, config)) => Ok(Running { device, features, config, queues }),
        Err(error) => Err(device.fail(queues.into_iter().map(|queue| queue.ring).collect(), error)),
    }
}

/// How a device's interrupting queues are being routed.
enum Routing<'a> {
    Msix(Msix<'a>),
    Line { line: Line, destination: Option<u32> },
}

impl<T: BringUpTransport> VirtioDevice<T> {
    /// The transport, for diagnostics of a running device.
    pub fn transport(&self) -> SpinLockGuard<'_, T> {
        self.transport.lock()
    }

    /// Configuration-change notifications received so far (0 for a driver
    /// without [`VirtioDriver::ON_CONFIG_CHANGE`]): compare with an earlier
    /// value to use it as a flag.
    pub fn config_changes(&self) -> u64 {
        self.config_signal.as_ref().map_or(0, |signal| signal.changes())
    }

    /// The MSI-X vector configuration changes arrive on, if routed there.
    pub fn config_vector(&self) -> Option<u8> {
        self.config_vector
    }

    /// Whether configuration changes are signalled at all (an MSI-X entry,
    /// or the shared line's status bit).
    pub fn signals_config_changes(&self) -> bool {
        self.config_signal.is_some() && (self.config_vector.is_some() || self.line.is_some())
    }

    /// Steps 2–5 of the module description; every queue created is pushed
    /// to `queues` at once, so a failure can account for it.
    fn set_up<D: VirtioDriver>(
        &mut self,
        source: InterruptSource,
        queues: &mut Vec<Queue<D::Buffers>>,
    ) -> Result<(Features, D::Config), BringUpError> {
        // Split borrows: the routing holds the MSI-X table while the queues
        // are programmed through the transport.
        let VirtioDevice { transport, msix, vectors, line, config_signal, config_vector, .. } =
            self;
        let transport = transport.get_mut();
        let features = vireo_virtio::negotiate_features(transport, D::REQUIRED | D::OPTIONAL)
            .map_err(BringUpError::Negotiation)?;
        let missing = D::REQUIRED.difference(features);
        if !missing.is_empty() {
            return Err(BringUpError::MissingFeatures(missing));
        }
        let config = config::read::<D::Config>(transport, features)?;
        let limits = QueueLimits {
            device_queues: transport.num_queues(),
            msix_queue_vectors: match source {
                InterruptSource::Msix(function) => {
                    MsiX::table_size_of(function).map_or(0, |size| size - 1)
                }
                _ => 0,
            },
            shared_line: matches!(source, InterruptSource::Line { .. }),
            online_cpus: crate::smp::online_cpus() as u32,
        };
        let plan = D::queues(&config, features, &limits);
        let interrupting =
            plan.iter().filter(|spec| spec.interrupt != QueueInterrupt::Polled).count();
        // Mapped only when needed: polled devices that ignore configuration
        // changes never pay for it.
        let needs_table =
            (interrupting > 0 && D::ON_INTERRUPT.is_some()) || config_signal.is_some();
        if let (InterruptSource::Msix(function), true) = (source, needs_table)
            && (interrupting > 0 || MsiX::table_size_of(function).is_ok())
        {
            *msix = Some(MsiX::new(function).map_err(BringUpError::Msix)?);
        }
        let table = msix.as_ref();
        let mut routing = match (interrupting, D::ON_INTERRUPT) {
            (0, _) => None,
            (_, None) => return Err(BringUpError::NoInterruptHandler),
            (count, Some(handler)) => Some(match source {
                InterruptSource::Msix(_) => {
                    let run = allocate_vectors(vectors, count, handler)?;
                    let table = table.ok_or(BringUpError::NoInterruptSource)?;
                    Routing::Msix(Msix { table, run })
                }
                InterruptSource::Line { gsi, trigger, polarity } => {
                    let ack = transport.interrupt_ack().ok_or(BringUpError::NoInterruptSource)?;
                    let vector = interrupts::claim_line_vector(ack, handler, config_signal.clone())
                        .map_err(BringUpError::Vectors)?;
                    let claimed = *line.insert(Line { gsi, vector, trigger, polarity });
                    Routing::Line { line: claimed, destination: None }
                }
                InterruptSource::None => return Err(BringUpError::NoInterruptSource),
            }),
        };
        let mut next_entry = 0u8;
        for spec in &plan {
            let vector = match (spec.interrupt, &mut routing) {
                (QueueInterrupt::OnCpu(cpu), Some(Routing::Msix(msix))) => {
                    next_entry += 1;
                    Some(msix.route_queue(transport, spec.index, next_entry, cpu)?)
                }
                (QueueInterrupt::OnCpu(cpu), Some(Routing::Line { line, destination })) => {
                    if destination.is_none() {
                        line.route_to(cpu)?;
                        *destination = Some(cpu);
                    }
                    Some(line.vector)
                }
                _ => None,
            };
            let notifier = transport
                .queue_notifier(spec.index)
                .ok_or(BringUpError::BadNotifyOffset(spec.index))?;
            let ring_config = QueueConfig {
                index: spec.index,
                size: spec.size,
                features,
                indirect_max: spec.indirect_max,
                used_len: spec.used_len,
            };
            let mut ring = SplitQueue::new(&KernelHal, transport, ring_config)
                .map_err(|error| BringUpError::Queue { index: spec.index, error })?;
            let quiet = if vector.is_none() { ring.disable_interrupts() } else { Ok(()) };
            let msix_entry = match routing {
                Some(Routing::Msix(_)) if vector.is_some() => Some(u16::from(next_entry)),
                _ => None,
            };
            queues.push(Queue { ring, notifier, vector, msix_entry });
            quiet.map_err(|error| BringUpError::Queue { index: spec.index, error })?;
        }
        // Configuration changes: MSI-X entry 0 if the driver listens, else
        // `NO_VECTOR` (a shared line reports them in its status byte).
        if let Some(table) = table {
            match config_signal {
                Some(signal) => {
                    *config_vector =
                        Some(interrupts::route_config_changes(table, transport, signal)?);
                }
                None if !transport.set_config_msix_vector(NO_VECTOR) => {
                    return Err(BringUpError::VectorRefused { queue: None });
                }
                None => {}
            }
            table.enable().map_err(BringUpError::Msix)?;
        }
        if let Some(Routing::Line { line, .. }) = routing {
            line.enable()?;
        }
        let status = transport.status();
        transport.set_status(status | DeviceStatus::DRIVER_OK);
        Ok((features, config))
    }
}

/// Installs `handler` on `count` consecutive free vectors (recorded in
/// `vectors`, for the failure path).
fn allocate_vectors(
    vectors: &mut Option<VectorRun>,
    count: usize,
    handler: IrqHandler,
) -> Result<VectorRun, BringUpError> {
    let count = u8::try_from(count).map_err(|_| BringUpError::Vectors(IrqError::NoFreeVectors))?;
    let first = crate::arch::interrupts::allocate_irq_vectors(count, handler)
        .map_err(BringUpError::Vectors)?;
    Ok(*vectors.insert(VectorRun { first, count }))
}

mod tests;
