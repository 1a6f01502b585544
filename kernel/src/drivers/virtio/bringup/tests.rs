//! Bring-up and its failure path on a real device no driver owns: the
//! entropy device (VirtIO 1.2 §5.4) that the runner's machines add
//! (`virtio-rng-pci` on q35 and pc, `virtio-rng-device` on microvm), over
//! whichever transport it sits on. The blk and gpu devices are never probed
//! twice.
//!
//! The device is driven through [`Recorder`], which forwards to the real
//! transport, writes down what bring-up did to it (status writes, resets,
//! ring addresses) and can make it misbehave: refuse a queue's MSI-X
//! vector, or never finish a reset. What the device says afterwards comes
//! from a fresh look at its registers, not from the recording.

use super::*;
use crate::arch::interrupts::{self, InterruptFrame, register_irq, unregister_irq};
use crate::drivers::virtio::mmio::window::InterruptAck;
use crate::mm::{PhysAddr, frame};
use crate::platform::apic::{ioapic, lapic};
use crate::{check, check_eq, check_ok, ktest};
use alloc::rc::Rc;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU32, Ordering};
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
    inner: KernelTransport,
    record: Shared,
}

// SAFETY: forwards to `KernelTransport`, whose `reset` and `queue_set` keep the
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

impl BringUpTransport for Recorder {
    fn num_queues(&mut self) -> u16 {
        BringUpTransport::num_queues(&mut self.inner)
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
    fn interrupt_ack(&self) -> Option<InterruptAck> {
        self.inner.interrupt_ack()
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

fn eoi_only(_: &mut InterruptFrame) {
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

/// Interrupts seen by [`count_and_eoi`].
static INTERRUPTS_SEEN: AtomicU32 = AtomicU32::new(0);

fn count_and_eoi(_: &mut InterruptFrame) {
    INTERRUPTS_SEEN.fetch_add(1, Ordering::Relaxed);
    lapic::eoi();
}

/// The entropy device's one queue, interrupting the last CPU (through
/// MSI-X, or the device's shared line).
struct InterruptingQueue;

impl VirtioDriver for InterruptingQueue {
    const NAME: &'static str = "virtio-rng (interrupting)";
    const DEVICE_ID: u16 = 4;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::empty();
    const ON_INTERRUPT: Option<IrqHandler> = Some(count_and_eoi);
    type Config = ();
    type Buffers = EntropyBuffer;

    fn queues(_: &(), _: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        alloc::vec![QueueSpec {
            index: 0,
            size: 8,
            indirect_max: 0,
            interrupt: QueueInterrupt::OnCpu(limits.online_cpus - 1),
            used_len: UsedLenPolicy::Strict,
        }]
    }
}

const NO_DEVICE: &str =
    "no virtio entropy device (the runner adds virtio-rng-pci, or virtio-rng-device on microvm)";

fn entropy_device() -> Option<Location> {
    find_devices::<Entropy>().next()
}

/// Brings the device at `location` up for `D` through a [`Recorder`] set
/// up by `setup`.
fn recorded<D: VirtioDriver>(
    location: Location,
    setup: impl FnOnce(&mut Record),
) -> (Result<Running<D, Recorder>, Failed>, Shared) {
    let record = Rc::new(RefCell::new(Record::default()));
    setup(&mut record.borrow_mut());
    let inner = location.open().expect("the entropy device has a transport");
    let result = bring_up_with::<D, _>(location, Recorder { inner, record: record.clone() });
    (result, record)
}

/// The device status as the device reports it now, through a fresh handle.
fn status_now(location: Location) -> DeviceStatus {
    location.open().expect("transport").status()
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
    unregister_irq(first);
    unregister_irq(first + 1);
    Ok(first)
}

/// Whether the device's interrupts are off: MSI-X disabled, or its I/O
/// APIC line masked.
fn interrupts_off(location: Location) -> bool {
    match location.interrupts() {
        InterruptSource::Msix(function) => !MsiX::is_enabled_on(function),
        InterruptSource::Line { gsi, .. } => {
            ioapic::entry(gsi).is_some_and(|entry| entry & (1 << 16) != 0)
        }
        InterruptSource::None => true,
    }
}

/// One request for 16 random bytes on `queue` (§5.4.6); waits up to 1 s
/// for it to come back, polling.
fn entropy_request(queue: &mut Queue<EntropyBuffer>) -> Result<(), crate::ktest::TestFailure> {
    let mut buffer = DmaChain::new(check_ok!(Dma::new(KernelHal, 1)));
    check_ok!(buffer.set_segments(&[], &[(0, 16)]));
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
    Ok(())
}

ktest!(
    fn a_missing_required_feature_fails_after_features_ok() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        let (result, record) = recorded::<NeedsAbsentFeature>(location, |_| {});
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
        check_eq!(status_now(location), DeviceStatus::empty());
        Ok(())
    }
);

ktest!(
    fn a_refused_vector_with_a_queue_live_resets_then_frees() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        let Location::Pci(function) = location else {
            return ktest::skip("the entropy device is on virtio-mmio: no MSI-X vectors to refuse");
        };
        if MsiX::table_size_of(function).unwrap_or(0) < 3 {
            return ktest::skip("fewer than 3 MSI-X entries (the runner adds vectors=3)");
        }
        let vectors_before = check_ok!(next_free_vectors());
        let (result, record) =
            recorded::<TwoInterruptingQueues>(location, |record| record.refuse_vector_of = Some(1));
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
        check_eq!(status_now(location), DeviceStatus::empty());
        // The two vectors are free again.
        check_eq!(next_free_vectors(), Ok(vectors_before));
        check!(!MsiX::is_enabled_on(function));
        Ok(())
    }
);

ktest!(
    fn an_interrupting_queue_interrupts_then_is_torn_down() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        let vectors_before = check_ok!(next_free_vectors());
        let (result, record) = recorded::<InterruptingQueue>(location, |_| {});
        let mut running = match result {
            Ok(running) => running,
            Err(failed) => return Err(ktest::TestFailure::new(alloc::format!("{failed}"))),
        };
        let vector = check_ok!(running.queues[0].vector.ok_or("no vector"));
        check!(!interrupts_off(location), "interrupts not enabled");
        // The completion interrupt arrives (on a shared line only after the
        // handler acknowledged the device: a level line left asserted would
        // interrupt without end and this test would never finish).
        let seen_before = INTERRUPTS_SEEN.load(Ordering::Relaxed);
        entropy_request(&mut running.queues[0])?;
        let deadline = crate::platform::time::uptime_us() + 1_000_000;
        while INTERRUPTS_SEEN.load(Ordering::Relaxed) == seen_before {
            check!(crate::platform::time::uptime_us() < deadline, "no interrupt within 1 s");
            core::hint::spin_loop();
        }
        // One request, one notification: a line still asserted after its
        // handler (no InterruptACK) would fire again and again meanwhile.
        crate::platform::time::busy_wait_us(20_000);
        let seen = INTERRUPTS_SEEN.load(Ordering::Relaxed) - seen_before;
        check!(seen <= 2, "{} interrupts for one request: the line was not acknowledged", seen);
        let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
        let failed = running.device.fail(rings, BringUpError::Driver("test finished"));
        check_eq!(failed.teardown, Teardown::Reset);
        check!(failed_then_reset(&record.borrow()));
        check!(!frame::is_allocated(PhysAddr::new(record.borrow().rings[0])), "ring kept");
        check!(interrupts_off(location), "interrupts left on after the reset");
        // The vector is free again.
        check_ok!(register_irq(vector, eoi_only));
        unregister_irq(vector);
        check_eq!(next_free_vectors(), Ok(vectors_before));
        Ok(())
    }
);

ktest!(
    fn an_unfinished_reset_leaks_everything_the_device_was_given() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        // Negotiation's own reset completes; the one after the failure "hangs".
        let (result, record) = recorded::<InterruptingQueue>(location, |record| {
            record.resets_that_complete = Some(1);
        });
        let running = match result {
            Ok(running) => running,
            Err(failed) => return Err(ktest::TestFailure::new(alloc::format!("{failed}"))),
        };
        let vector = check_ok!(running.queues[0].vector.ok_or("no vector"));
        let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
        let failed = running.device.fail(rings, BringUpError::Driver("test finished"));
        check_eq!(failed.teardown, Teardown::ResetIncomplete { leaked_queues: 1 });
        let record = record.borrow();
        check!(failed_then_reset(&record), "statuses {:?}", record.statuses);
        check_eq!(record.rings.len(), 1);
        let ring = PhysAddr::new(record.rings[0]);
        check!(frame::is_allocated(ring), "ring freed under a device that did not reset");
        // The vector stays installed: a late interrupt still gets its EOI.
        check_eq!(register_irq(vector, eoi_only), Err(IrqError::InUse(vector)));
        check!(interrupts_off(location), "interrupts left on");
        Ok(())
    }
);

ktest!(
    fn the_device_works_after_failed_bring_ups() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        let (result, record) = recorded::<Entropy>(location, |_| {});
        let mut running = match result {
            Ok(running) => running,
            Err(failed) => return Err(ktest::TestFailure::new(alloc::format!("{failed}"))),
        };
        check!(running.features.contains(Features::VERSION_1));
        check!(running.device.transport().status().contains(DeviceStatus::DRIVER_OK));
        entropy_request(&mut running.queues[0])?;
        let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
        let failed = running.device.fail(rings, BringUpError::Driver("test finished"));
        check_eq!(failed.teardown, Teardown::Reset);
        check_eq!(record.borrow().resets, 2);
        check_eq!(status_now(location), DeviceStatus::empty());
        Ok(())
    }
);

/// Calls of [`count_config_change`].
static CONFIG_CALLBACKS: AtomicU32 = AtomicU32::new(0);

fn count_config_change() {
    CONFIG_CALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// The interrupting queue of [`InterruptingQueue`], listening for
/// configuration changes too.
struct ListensForConfigChanges;

impl VirtioDriver for ListensForConfigChanges {
    const NAME: &'static str = "virtio-rng (config changes)";
    const DEVICE_ID: u16 = 4;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::empty();
    const ON_INTERRUPT: Option<IrqHandler> = Some(count_and_eoi);
    const ON_CONFIG_CHANGE: Option<fn()> = Some(count_config_change);
    type Config = ();
    type Buffers = EntropyBuffer;

    fn queues(config: &(), features: Features, limits: &QueueLimits) -> Vec<QueueSpec> {
        InterruptingQueue::queues(config, features, limits)
    }
}

ktest!(
    fn a_config_change_interrupt_reaches_the_driver_then_is_released() {
        let Some(location) = entropy_device() else { return ktest::skip(NO_DEVICE) };
        let (result, record) = recorded::<ListensForConfigChanges>(location, |_| {});
        let running = match result {
            Ok(running) => running,
            Err(failed) => return Err(ktest::TestFailure::new(alloc::format!("{failed}"))),
        };
        check!(running.device.signals_config_changes());
        let Some(vector) = running.device.config_vector() else {
            let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
            let _ = running.device.fail(rings, BringUpError::Driver("test finished"));
            return ktest::skip(
                "a shared line: its status bit 1 cannot be raised from inside the guest",
            );
        };
        check!(
            running.queues.iter().all(|queue| queue.vector != Some(vector)),
            "the config vector is also a queue's"
        );
        // The device kept entry 0 (bring-up checked the read-back); make
        // the message arrive as the device would send it, on its vector.
        let (calls, changes) =
            (CONFIG_CALLBACKS.load(Ordering::Relaxed), running.device.config_changes());
        check_ok!(lapic::send_ipi(lapic::id(), vector));
        let deadline = crate::platform::time::uptime_us() + 1_000_000;
        while running.device.config_changes() == changes {
            check!(crate::platform::time::uptime_us() < deadline, "no config interrupt within 1 s");
            core::hint::spin_loop();
        }
        check_eq!(running.device.config_changes(), changes + 1);
        check_eq!(CONFIG_CALLBACKS.load(Ordering::Relaxed), calls + 1);
        let rings = running.queues.into_iter().map(|queue| queue.ring).collect();
        let failed = running.device.fail(rings, BringUpError::Driver("test finished"));
        check_eq!(failed.teardown, Teardown::Reset);
        check!(failed_then_reset(&record.borrow()));
        // The vector is free again.
        check_ok!(register_irq(vector, eoi_only));
        unregister_irq(vector);
        Ok(())
    }
);
