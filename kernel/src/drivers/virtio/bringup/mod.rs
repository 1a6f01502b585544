//! One way to bring up a virtio device, shared by every driver.
//!
//! A driver describes itself ([`VirtioDriver`]): its device id, the
//! features it cannot work without and those it uses when offered, its
//! configuration structure and its queues. [`bring_up`] then runs the
//! device initialisation of VirtIO 1.2 §3.1.1 for it:
//!
//! 1. map the modern virtio-pci transport of the function (§4.1.4);
//! 2. reset, ACKNOWLEDGE, DRIVER, negotiate, FEATURES_OK (steps 1–6); a
//!    required feature the device does not offer is
//!    [`BringUpError::MissingFeatures`];
//! 3. read the configuration, retried until the generation counter is the
//!    same before and after (§2.5.1), each field at its natural width
//!    (§4.1.3.1);
//! 4. create the queues the driver plans from that configuration, each with
//!    its MSI-X vector routed to the CPU the driver chose (§4.1.5.1.2,
//!    §4.1.5.1.3), or polled with interrupts suppressed (step 7);
//! 5. DRIVER_OK (step 8).
//!
//! Once the device has been touched, every failure — in these steps or in
//! the driver's own setup after them — goes through
//! [`VirtioDevice::fail`]: FAILED, a bounded reset, and the memory the
//! device was given freed only if the reset is proven complete, else
//! leaked (see `failure`). Every call into the `vireo-virtio` crate's
//! negotiation, queue creation and reset is in this module.

mod config;
mod failure;
mod transport;

use super::hal::KernelHal;
use super::pci::{NO_VECTOR, QueueNotifier, VirtioPci};
use crate::arch::interrupts::{self, IrqError, IrqHandler};
use crate::arch::percpu;
use crate::platform::pci::Function;
use crate::platform::pci::msix::{MsiX, MsixError};
use crate::sync::{SpinLock, SpinLockGuard};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vireo_virtio::{DeviceStatus, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy};

pub use config::{ConfigFields, DeviceConfig};
pub use failure::{Failed, Teardown};
pub use transport::PciTransport;

/// PCI vendor id of every virtio device (§4.1.2).
const VIRTIO_VENDOR: u16 = 0x1af4;
/// A modern device's PCI device id is this plus its virtio device id (§4.1.2).
const MODERN_DEVICE_ID_BASE: u16 = 0x1040;

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
    /// device's queues share it; it tells them apart by vector).
    const ON_INTERRUPT: Option<IrqHandler> = None;
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
    /// Queues the device has (`num_queues`, §4.1.4.3).
    pub device_queues: u16,
    /// MSI-X entries for queues (entry 0 stays with configuration changes);
    /// 0 without MSI-X.
    pub msix_queue_vectors: u16,
    /// CPUs online (ids `0..online_cpus`).
    pub online_cpus: u32,
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
    /// An MSI-X message to this CPU, on a vector of the queue's own.
    OnCpu(u32),
}

/// A created queue.
pub struct Queue<B> {
    /// The ring, owning each request's buffers while the device has them.
    pub ring: SplitQueue<KernelHal, B>,
    /// Kicks this queue without the transport.
    pub notifier: QueueNotifier,
    /// The vector its interrupts arrive on (`None` when polled).
    pub vector: Option<u8>,
    /// The MSI-X table entry the queue was given (`None` when polled): a
    /// queue reset forgets it (§4.1.4.3.2), so a restart programs it again.
    pub msix_entry: Option<u16>,
}

/// Why bring-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BringUpError {
    /// No PCI function with the driver's device id.
    NotFound,
    /// The function is not a usable modern virtio-pci device.
    Transport(super::pci::VirtioPciError),
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
/// and the queues' interrupt vectors for as long as the driver runs the
/// device; give it back through [`VirtioDevice::fail`] if the driver
/// cannot.
pub struct VirtioDevice<T: PciTransport = VirtioPci> {
    name: &'static str,
    /// Locked only for diagnostics once the device runs: its queues kick
    /// through their own notifiers.
    transport: SpinLock<T>,
    msix: Option<MsiX>,
    vectors: Option<VectorRun>,
}

/// Consecutive interrupt vectors allocated for one device's queues.
#[derive(Debug, Clone, Copy)]
struct VectorRun {
    first: u8,
    count: u8,
}

/// A device that reached DRIVER_OK, with what the driver needs to run it.
pub struct Running<D: VirtioDriver, T: PciTransport = VirtioPci> {
    /// Keep it for the device's lifetime.
    pub device: VirtioDevice<T>,
    /// The negotiated features (`VERSION_1` and a subset of the driver's).
    pub features: Features,
    /// The configuration, read consistently.
    pub config: D::Config,
    /// The queues, in the order the driver planned them.
    pub queues: Vec<Queue<D::Buffers>>,
}

/// The PCI functions that are modern virtio devices of `D`'s type.
pub fn find_functions<D: VirtioDriver>() -> impl Iterator<Item = &'static Function> {
    crate::platform::pci::find(VIRTIO_VENDOR, MODERN_DEVICE_ID_BASE + D::DEVICE_ID)
}

/// Brings up the first device of `D`'s type.
///
/// # Errors
/// [`BringUpError::NotFound`] without one, else as [`bring_up`].
pub fn probe<D: VirtioDriver>() -> Result<Running<D>, Failed> {
    let function = find_functions::<D>().next().ok_or(Failed::untouched(BringUpError::NotFound))?;
    bring_up::<D>(function)
}

/// Brings up `function` for `D` through its virtio-pci transport.
///
/// # Errors
/// [`Failed`] with the cause; when the device was touched, it has been
/// given up as [`VirtioDevice::fail`] describes.
pub fn bring_up<D: VirtioDriver>(function: &Function) -> Result<Running<D>, Failed> {
    let transport = VirtioPci::new(function)
        .map_err(|error| Failed::untouched(BringUpError::Transport(error)))?;
    bring_up_with::<D, _>(function, transport)
}

/// [`bring_up`] over a given transport of `function` (tests wrap the real
/// one to make the device misbehave).
///
/// # Errors
/// As [`bring_up`].
pub fn bring_up_with<D: VirtioDriver, T: PciTransport>(
    function: &Function,
    transport: T,
) -> Result<Running<D, T>, Failed> {
    let mut device = VirtioDevice {
        name: D::NAME,
        transport: SpinLock::new(transport),
        msix: None,
        vectors: None,
    };
    let mut queues = Vec::new();
    match device.set_up::<D>(function, &mut queues) {
        Ok((features, config)) => Ok(Running { device, features, config, queues }),
        Err(error) => Err(device.fail(queues.into_iter().map(|queue| queue.ring).collect(), error)),
    }
}

impl<T: PciTransport> VirtioDevice<T> {
    /// The transport, for diagnostics of a running device.
    pub fn transport(&self) -> SpinLockGuard<'_, T> {
        self.transport.lock()
    }

    /// Steps 2–5 of the module description; every queue created is pushed
    /// to `queues` at once, so a failure can account for it.
    fn set_up<D: VirtioDriver>(
        &mut self,
        function: &Function,
        queues: &mut Vec<Queue<D::Buffers>>,
    ) -> Result<(Features, D::Config), BringUpError> {
        let features =
            vireo_virtio::negotiate_features(self.transport.get_mut(), D::REQUIRED | D::OPTIONAL)
                .map_err(BringUpError::Negotiation)?;
        let missing = D::REQUIRED.difference(features);
        if !missing.is_empty() {
            return Err(BringUpError::MissingFeatures(missing));
        }
        let config = config::read::<D::Config>(self.transport.get_mut(), features)?;
        let limits = QueueLimits {
            device_queues: self.transport.get_mut().num_queues(),
            msix_queue_vectors: MsiX::table_size_of(function).map_or(0, |size| size - 1),
            online_cpus: crate::smp::online_cpus() as u32,
        };
        let plan = D::queues(&config, features, &limits);
        let interrupting =
            plan.iter().filter(|spec| spec.interrupt != QueueInterrupt::Polled).count();
        let routing = match interrupting {
            0 => None,
            count => {
                let run = self.allocate_vectors(count, D::ON_INTERRUPT)?;
                // Mapped only when needed: polled devices never pay for it.
                let msix = MsiX::new(function).map_err(BringUpError::Msix)?;
                Some(Routing { msix: self.msix.insert(msix), run })
            }
        };
        let mut next_entry = 0u8;
        for spec in &plan {
            let vector = match (spec.interrupt, &routing) {
                (QueueInterrupt::OnCpu(cpu), Some(routing)) => {
                    next_entry += 1;
                    let transport = self.transport.get_mut();
                    Some(routing.route_queue(transport, spec.index, next_entry, cpu)?)
                }
                _ => None,
            };
            let notifier = self
                .transport
                .get_mut()
                .queue_notifier(spec.index)
                .ok_or(BringUpError::BadNotifyOffset(spec.index))?;
            let ring_config = QueueConfig {
                index: spec.index,
                size: spec.size,
                features,
                indirect_max: spec.indirect_max,
                used_len: spec.used_len,
            };
            let mut ring = SplitQueue::new(&KernelHal, self.transport.get_mut(), ring_config)
                .map_err(|error| BringUpError::Queue { index: spec.index, error })?;
            let quiet = if vector.is_none() { ring.disable_interrupts() } else { Ok(()) };
            let msix_entry = vector.map(|_| u16::from(next_entry));
            queues.push(Queue { ring, notifier, vector, msix_entry });
            quiet.map_err(|error| BringUpError::Queue { index: spec.index, error })?;
        }
        if let Some(routing) = routing {
            routing.msix.enable().map_err(BringUpError::Msix)?;
        }
        let status = self.transport.get_mut().status();
        self.transport.get_mut().set_status(status | DeviceStatus::DRIVER_OK);
        Ok((features, config))
    }

    /// Installs `handler` on `count` consecutive free vectors and keeps
    /// configuration changes silent (the drivers do not use them).
    fn allocate_vectors(
        &mut self,
        count: usize,
        handler: Option<IrqHandler>,
    ) -> Result<VectorRun, BringUpError> {
        let handler = handler.ok_or(BringUpError::NoInterruptHandler)?;
        let count =
            u8::try_from(count).map_err(|_| BringUpError::Vectors(IrqError::NoFreeVectors))?;
        let first =
            interrupts::allocate_irq_vectors(count, handler).map_err(BringUpError::Vectors)?;
        let run = VectorRun { first, count };
        self.vectors = Some(run);
        if !self.transport.get_mut().set_config_msix_vector(NO_VECTOR) {
            return Err(BringUpError::VectorRefused { queue: None });
        }
        Ok(run)
    }
}

/// A device's MSI-X table and the vectors its queues interrupt on.
struct Routing<'a> {
    msix: &'a MsiX,
    run: VectorRun,
}

impl Routing<'_> {
    /// Routes MSI-X entry `entry` (the `entry`-th interrupting queue) to
    /// `cpu` and gives it to queue `index`; returns the entry's vector.
    fn route_queue(
        &self,
        transport: &mut impl PciTransport,
        index: u16,
        entry: u8,
        cpu: u32,
    ) -> Result<u8, BringUpError> {
        let apic_id = percpu::cpu(cpu as usize)
            .filter(|_| (cpu as usize) < crate::smp::online_cpus())
            .ok_or(BringUpError::NoSuchCpu(cpu))?
            .apic_id
            .load(Ordering::Relaxed);
        let vector = self.run.first + (entry - 1);
        self.msix.route(u16::from(entry), vector, apic_id).map_err(BringUpError::Msix)?;
        if !transport.set_queue_msix_vector(index, u16::from(entry)) {
            return Err(BringUpError::VectorRefused { queue: Some(index) });
        }
        Ok(vector)
    }
}

mod tests;
