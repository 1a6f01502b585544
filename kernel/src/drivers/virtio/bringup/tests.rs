//! Bring-up and its failure path on a real device no driver owns: the
//! entropy device (VirtIO 1.2 §5.4) that the runner's standard machine adds
//! as `virtio-rng-pci`. The blk and gpu devices are never probed twice.
//!
//! The device is driven through [`Recorder`], which forwards to the real
//! transport, writes down what bring-up did to it (status writes, resets,
//! ring addresses) and can make it misbehave: refuse a queue's MSI-X
//! vector, or never finish a reset. What the device says afterwards comes
//! from a fresh look at its registers, not from the recording.

use super::*;
use crate::mm::{PhysAddr, frame};
use crate::platform::apic::lapic;
use crate::{check, check_eq, check_ok, ktest};
use alloc::rc::Rc;
use core::cell::RefCell;
use vireo_virtio::{Dma, DmaChain, InterruptStatus};

/// What bring-up did to the device, and how it should misbehave.
#[derive(Default)]
struct Record {
    /// Every status written, in order (a reset writes 0).
    statuses: Vec<DeviceStatus>,
    /// Resets asked for, and how many of them to let through.
    resets: u32,
    resets_that_complete: Option<u32>,
    /// This queue's MSI-X vector is refused.
    refuse_vector_of: Option<u16>,
    /// Descriptor-table addresses programmed, per queue.
    rings: Vec<u64>,
}

/// The record, shared between the test and the transport bring-up owns.
type Shared = Rc<RefCell<Record>>;

struct Recorder {
    inner: VirtioPci,
    record: Shared,
}

// SAFETY: forwards to `VirtioPci`, whose `reset` and `queue_set` keep the
// trait's promises; `reset` reports success only when the real reset
// succeeded (it may report a failure the device did not have, which only
// makes the caller more careful), and `queue_set` forwards unchanged.
unsafe impl Transport for Recorder {
    fn device_id(&self) -> vireo_virtio::DeviceId {
        self.inner.device_id()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, features: u64) {
        self.inner.write_driver_features(features);
    }
    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.inner.max_queue_size(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    unsafe fn queue_set(&mut self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) {
        self.record.borrow_mut().rings.push(desc);
        // SAFETY: forwarded unchanged; our caller made the promises.
        unsafe { self.inner.queue_set(queue, size, desc, driver, device) };
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue);
    }
    fn notify(&mut self, queue: u16) {
        Transport::notify(&mut self.inner, queue);
    }
    fn status(&self) -> DeviceStatus {
        self.inner.status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.record.borrow_mut().statuses.push(status);
        self.inner.set_status(status);
    }
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        self.inner.read_config(offset, buf)
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> vireo_virtio::Result {
        self.inner.write_config(offset, data)
    }
    fn config_generation(&self) -> u32 {
        self.inner.config_generation()
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn reset(&mut self) -> vireo_virtio::Result<vireo_virtio::DeviceReset> {
        // The real device always resets; the recording decides what the
        // driver is told (the real proof, or a timeout).
        self.set_status(DeviceStatus::empty());
        let proof = self.inner.reset()?;
        let mut record = self.record.borrow_mut();
        record.resets += 1;
        match record.resets_that_complete {
            Some(allowed) if record.resets > allowed => {
                Err(vireo_virtio::Error::DeviceResetTimeout)
            }
            _ => Ok(proof),
        }
    }
}

impl PciTransport for Recorder {
    fn num_queues(&mut self) -> u16 {
        PciTransport::num_queues(&mut self.inner)
    }
    fn set_config_msix_vector(&mut self, entry: u16) -> bool {
        self.inner.set_config_msix_vector(entry)
    }
    fn set_queue_msix_vector(&mut self, queue: u16, entry: u16) -> bool {
        let refused = self.record.borrow().refuse_vector_of == Some(queue);
        self.inner.set_queue_msix_vector(queue, if refused { NO_VECTOR } else { entry }) && !refused
    }
    fn queue_notifier(&mut self, queue: u16) -> Option<QueueNotifier> {
        self.inner.queue_notifier(queue)
    }
}

/// Requests of the entropy device: one device-writable buffer (§5.4.6).
type EntropyBuffer = DmaChain<KernelHal, 1>;

/// The entropy device as a driver would take it: one polled request queue.
struct Entropy;

impl VirtioDriver for Entropy {
    const NAME: &'static str = "virtio-rng (test)";
    const DEVICE_ID: u16 = 4;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::EVENT_IDX;
    type Config = ();
    type Buffers = EntropyBuffer;

    fn queues(_: &(), _: Features, _: &QueueLimits) -> Vec<QueueSpec> {
        alloc::vec![QueueSpec {
            index: 0,
            size: 8,
            indirect_max: 0,
            interrupt: QueueInterrupt::Polled,
            used_len: UsedLenPolicy::Strict,
        }]
    }
}

/// A driver that requires a feature the entropy device never offers: it
/// defines no feature bits (§5.4.3), so bit 0 is never there.
struct NeedsAbsentFeature;

const ABSENT_FEATURE: Features = Features::from_bits_retain(1 << 0);

impl VirtioDriver for NeedsAbsentFeature {
    const NAME: &'static str = "virtio-rng (needs bit 0)";
    const DEVICE_ID: u16 = 4;
    const REQUIRED: Features = ABSENT_FEATURE;
    const OPTIONAL: Features = Features::EVENT_IDX;
    type Config = ();
    type Buffers = EntropyBuffer;

    fn queues(config: &(), features: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        Entropy::queues(config, features, limits)
    }
}

/// A driver with two interrupting queues, routed to the last CPU and CPU 0.
struct TwoInterruptingQueues;

fn eoi_only(_: &mut crate::arch::interrupts::InterruptFrame) {
    lapic::eoi();
}

impl VirtioDriver for TwoInterruptingQueues {
    const NAME: &'static str = "virtio-rng (two queues)";
    const DEVICE_ID: u16 = 4;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::EVENT_IDX;
    const ON_INTERRUPT: Option<IrqHandler> = Some(eoi_only);
    type Config = ();
    type Buffers = EntropyBuffer;

    fn queues(_: &(), _: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        let on = |index, cpu| QueueSpec {
            index,
            size: 8,
            indirect_max: 0,
            interrupt: QueueInterrupt::OnCpu(cpu),
            used_len: UsedLenPolicy::Strict,
        };
        alloc::vec![on(0, limits.online_cpus - 1), on(1, 0)]
    }
}

const NO_DEVICE: &str = "no virtio-rng-pci device (the runner's standard machine has one)";

fn entropy_function() -> Option<&'static Function> {
    find_functions::<Entropy>().next()
}

/// Brings `function` up for `D` through a [`Recorder`] set up by `setup`.
fn recorded<D: VirtioDriver>(
    function: &Function,
    setup: impl FnOnce(&mut Record),
) -> (Result<Running<D, Recorder>, Failed>, Shared) {
    let record = Rc::new(RefCell::new(Record::default()));
    setup(&mut record.borrow_mut());
    let inner = VirtioPci::new(function).expect("the entropy device has a transport");
    let result = bring_up_with::<D, _>(function, Recorder { inner, record: record.clone() });
    (result, record)
}

/// The device status as the device reports it now, through a fresh mapping.
fn status_now(function: &Function) -> DeviceStatus {
    VirtioPci::new(function).expect("transport").status()
}

/// FAILED was written, after every other status write and before the
/// reset that followed it.
fn failed_then_reset(record: &Record) -> bool {
    let statuses = &record.statuses;
    let failed = statuses.iter().rposition(|status| status.contains(DeviceStatus::FAILED));
    failed.is_some_and(|at| statuses[at + 1..] == [DeviceStatus::empty()])
}

/// The first vector of a free run of two, released again.
fn next_free_vectors() -> Result<u8, IrqError> {
    let first = interrupts::allocate_irq_vectors(2, eoi_only)?;
    interrupts::unregister_irq(first);
    interrupts::unregister_irq(first + 1);
    Ok(first)
}

ktest!(
    fn a_missing_required_feature_fails_after_features_ok() {
        let Some(function) = entropy_function() else { return ktest::skip(NO_DEVICE) };
        let (result, record) = recorded::<NeedsAbsentFeature>(function, |_| {});
        let failed = result.err();
        check_eq!(
            failed,
            Some(Failed {
                error: BringUpError::MissingFeatures(ABSENT_FEATURE),
                teardown: Teardown::Reset
            })
        );
        let record = record.borrow();
        // Negotiation finished (FEATURES_OK accepted) before the check.
        check!(record.statuses.iter().any(|status| status.contains(DeviceStatus::FEATURES_OK)));
        check!(failed_then_reset(&record), "statuses {:?}", record.statuses);
        check!(record.rings.is_empty());
        check_eq!(status_now(function), DeviceStatus::empty());
        Ok(())
    }
);

ktest!(
    fn a_refused_vector_with_a_queue_live_resets_then_frees() {
        let Some(function) = entropy_function() else { return ktest::skip(NO_DEVICE) };
        let vectors_before = check_ok!(next_free_vectors());
        let (result, record) =
            recorded::<TwoInterruptingQueues>(function, |record| record.refuse_vector_of = Some(1));
        check_eq!(
            result.err(),
            Some(Failed {
                error: BringUpError::VectorRefused { queue: Some(1) },
                teardown: Teardown::Reset
            })
        );
        let record = record.borrow();
        check!(failed_then_reset(&record), "statuses {:?}", record.statuses);
        check!(!record.statuses.iter().any(|status| status.contains(DeviceStatus::DRIVER_OK)));
        // Queue 0's rings were live; freed only after the proven reset.
        check_eq!(record.rings.len(), 1);
        check!(!frame::is_allocated(PhysAddr::new(record.rings[0])), "ring of a reset device kept");
        check_eq!(status_now(function), DeviceStatus::empty());
        // The two vectors are free again.
        check_eq!(next_free_vectors(), Ok(vectors_before));
        check!(!check_ok!(MsiX::new(function)).is_enabled());
        Ok(())
    }
);

ktest!(
    fn an_unfinished_reset_leaks_everything_the_device_was_given() {
        let Some(function) = entropy_function() else { return ktest::skip(NO_DEVICE) };
        let vectors_before = check_ok!(next_free_vectors());
        // Negotiation's own reset completes; the one after the failure "hangs".
        let (result, record) = recorded::<TwoInterruptingQueues>(function, |record| {
            record.refuse_vector_of = Some(1);
            record.resets_that_complete = Some(1);
        });
        check_eq!(
            result.err(),
            Some(Failed {
                error: BringUpError::VectorRefused { queue: Some(1) },
                teardown: Teardown::ResetIncomplete { leaked_queues: 1 }
            })
        );
        let record = record.borrow();
        check!(failed_then_reset(&record), "statuses {:?}", record.statuses);
        check_eq!(record.rings.len(), 1);
        let ring = PhysAddr::new(record.rings[0]);
        check!(frame::is_allocated(ring), "ring freed under a device that did not reset");
        // The vectors stay installed: a late message still gets its EOI.
        check_eq!(
            interrupts::register_irq(vectors_before, eoi_only),
            Err(IrqError::InUse(vectors_before))
        );
        check!(!check_ok!(MsiX::new(function)).is_enabled());
        Ok(())
    }
);

ktest!(
    fn the_device_works_after_failed_bring_ups() {
        let Some(function) = entropy_function() else { return ktest::skip(NO_DEVICE) };
        let (result, record) = recorded::<Entropy>(function, |_| {});
        let mut running = match result {
            Ok(running) => running,
            Err(failed) => return Err(ktest::TestFailure::new(alloc::format!("{failed}"))),
        };
        check!(running.features.contains(Features::VERSION_1));
        check!(running.device.transport().status().contains(DeviceStatus::DRIVER_OK));
        // One request for 16 random bytes, polled (§5.4.6).
        let mut buffer = DmaChain::new(check_ok!(Dma::new(KernelHal, 1)));
        check_ok!(buffer.set_segments(&[], &[(0, 16)]));
        let queue = &mut running.queues[0];
        check_ok!(queue.ring.add(buffer).map_err(|rejected| rejected.error));
        if check_ok!(queue.ring.should_notify()) {
            queue.notifier.notify();
        }
        let deadline = crate::platform::time::uptime_us() + 1_000_000;
        let used = loop {
            if let Some(used) = check_ok!(queue.ring.pop_used()) {
                break used;
            }
            check!(crate::platform::time::uptime_us() < deadline, "no entropy within 1 s");
            core::hint::spin_loop();
        };
        check_eq!(used.written_len, 16);
        check!(used.buffers.bytes(0).iter().any(|&byte| byte != 0), "16 zero bytes");
        let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
        let failed = running.device.fail(rings, BringUpError::Driver("test finished"));
        check_eq!(failed.teardown, Teardown::Reset);
        check_eq!(record.borrow().resets, 2);
        check_eq!(status_now(function), DeviceStatus::empty());
        Ok(())
    }
);
