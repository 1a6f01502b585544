//! The transport-facing API: per-queue notifiers (concurrent kicks without
//! the transport), MSI-X vector hooks, generation-checked config reads and
//! the diagnostics a driver reads off a queue.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::thread;

use vireo_virtio::config::{READ_ATTEMPTS, read_consistent};
use vireo_virtio::fake::{Echo, FakeHal, FakeTransport};
use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaChain, Error, Features, InterruptStatus, NO_VECTOR, PhysAddr,
    QueueConfig, QueueNotifiers, SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};

type Queue = SplitQueue<FakeHal, DmaChain<FakeHal, 2>>;

fn device(queues: &[u16]) -> (FakeHal, FakeTransport, Features) {
    let hal = FakeHal::new();
    let mut t = FakeTransport::new(hal.memory(), Echo, queues);
    let features = negotiate_features(&mut t, Features::EVENT_IDX | Features::RING_RESET).unwrap();
    (hal, t, features)
}

fn queue(hal: &FakeHal, t: &mut FakeTransport, index: u16, features: Features) -> Queue {
    let used_len = UsedLenPolicy::Strict;
    SplitQueue::new(hal, t, QueueConfig { index, size: 8, features, indirect_max: 0, used_len })
        .unwrap()
}

fn echo(hal: &FakeHal, byte: u8) -> DmaChain<FakeHal, 2> {
    let mut c = DmaChain::new(Dma::new(hal.clone(), 1).unwrap());
    c.region_mut()[..4].fill(byte);
    c.set_segments(&[(0, 4)], &[(64, 4)]).unwrap();
    c
}

/// Each queue kicks through its own notifier under its own lock, from its
/// own thread, while the transport sits unborrowed.
#[test]
fn notifiers_kick_queues_concurrently_without_the_transport() {
    let (hal, mut t, features) = device(&[8, 8]);
    let lanes: Vec<_> = (0..2)
        .map(|i| {
            let q = queue(&hal, &mut t, i, features);
            (Arc::new(Mutex::new(q)), t.notifier(i).unwrap())
        })
        .collect();
    t.set_status(t.status() | DeviceStatus::DRIVER_OK);
    let threads: Vec<_> = lanes
        .iter()
        .map(|(q, notifier)| {
            let (q, notifier, hal) = (q.clone(), notifier.clone(), hal.clone());
            thread::spawn(move || {
                for round in 0..200u32 {
                    let mut q = q.lock().unwrap();
                    q.add(echo(&hal, round as u8)).map_err(|r| r.error).unwrap();
                    assert!(q.kick_with(&notifier).unwrap(), "the device wants every kick");
                    let used = q.pop_used().unwrap().expect("served during the kick");
                    assert_eq!(used.buffers.bytes(1), [round as u8; 4]);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!((t.notifications(0), t.notifications(1)), (200, 200));
}

#[test]
fn a_notifier_for_another_queue_is_refused_before_deciding() {
    let (hal, mut t, features) = device(&[8, 8]);
    let mut q = queue(&hal, &mut t, 0, features);
    let other = t.notifier(1).unwrap();
    q.add(echo(&hal, 1)).map_err(|r| r.error).unwrap();
    assert_eq!(q.kick_with(&other).unwrap_err(), Error::WrongNotifier);
    let stats = q.stats();
    assert_eq!((stats.kicks, stats.kicks_suppressed, t.notifications(1)), (0, 0, 0));
    // The decision is still pending for the right notifier.
    assert!(q.kick_with(&t.notifier(0).unwrap()).unwrap());
    assert_eq!(t.notifier(2).unwrap_err(), Error::QueueUnavailable);
}

#[test]
fn msix_vectors_are_checked_by_reading_back() {
    let (hal, mut t, features) = device(&[8]);
    // Without MSI-X only "no vector" is accepted.
    assert_eq!(t.set_queue_vector(0, NO_VECTOR), Ok(()));
    assert_eq!(t.set_queue_vector(0, 1), Err(Error::VectorsUnsupported));
    t.set_msix_entries(3);
    assert_eq!(t.set_config_vector(0), Ok(()));
    assert_eq!(t.set_queue_vector(0, 2), Ok(()));
    assert_eq!(t.set_queue_vector(0, 3), Err(Error::VectorRefused), "entry beyond the table");
    assert_eq!(t.queue_vector(0), NO_VECTOR);
    // §4.1.4.3.2: a queue reset forgets the vector; it is the caller's to
    // restore before the restart.
    t.set_queue_vector(0, 2).unwrap();
    let mut q = queue(&hal, &mut t, 0, features);
    let proof = q.reset_queue(&mut t).unwrap();
    q.reclaim(&proof, |_, _| {}).unwrap();
    assert_eq!(t.queue_vector(0), NO_VECTOR);
    t.set_queue_vector(0, 2).unwrap();
    q.restart(&mut t).unwrap();
    assert_eq!(t.queue_vector(0), 2);
}

#[test]
fn ring_addresses_are_what_the_device_was_given() {
    let (hal, mut t, features) = device(&[8]);
    let q = queue(&hal, &mut t, 0, features);
    let a = q.ring_addresses();
    let (size, desc, driver, device) = t.queue_addresses(0).unwrap();
    assert_eq!((size, a.descriptors, a.driver_area, a.device_area), (8, desc, driver, device));
    assert_eq!((q.size(), q.num_free(), q.in_flight(), a.indirect_pool), (8, 8, 0, None));
}

/// A device whose 64-bit config field changes between its two halves
/// `changes` times (the tear §4.1.3.1 allows), bumping the generation.
/// Reads change it, so it keeps its registers in cells (`&self` reads).
struct Tearing {
    wide: Cell<u64>,
    generation: Cell<u32>,
    changes: Cell<u32>,
    reads: Cell<usize>,
}

// SAFETY (test): no queues, no DMA: nothing for a reset to stop.
unsafe impl Transport for Tearing {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(u64::MAX)
    }
    fn read_device_features(&mut self) -> u64 {
        0
    }
    fn write_driver_features(&mut self, _: u64) {}
    fn max_queue_size(&mut self, _: u16) -> u16 {
        0
    }
    fn queue_used(&mut self, _: u16) -> bool {
        false
    }
    unsafe fn queue_set(&mut self, _: u16, _: u16, _: PhysAddr, _: PhysAddr, _: PhysAddr) {}
    fn queue_unset(&mut self, _: u16) {}
    fn notify(&mut self, _: u16) {}
    fn status(&self) -> DeviceStatus {
        DeviceStatus::empty()
    }
    fn set_status(&mut self, _: DeviceStatus) {}
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> vireo_virtio::Result {
        let bytes = self.wide.get().to_le_bytes();
        buf.copy_from_slice(bytes.get(offset..offset + buf.len()).ok_or(Error::ConfigOutOfRange)?);
        self.reads.set(self.reads.get() + 1);
        if offset == 0 && self.changes.get() > 0 {
            self.changes.set(self.changes.get() - 1);
            self.wide.set(self.wide.get() + 1);
            self.generation.set(self.generation.get() + 1);
        }
        Ok(())
    }
    fn write_config(&mut self, _: usize, _: &[u8]) -> vireo_virtio::Result {
        Err(Error::ConfigOutOfRange)
    }
    fn config_generation(&self) -> u32 {
        self.generation.get()
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
}

fn tearing(changes: u32) -> Tearing {
    let (wide, generation, reads) = (Cell::new(0x1_ffff_ffff), Cell::new(0), Cell::new(0));
    Tearing { wide, generation, changes: Cell::new(changes), reads }
}

#[test]
fn a_config_read_torn_by_a_change_is_read_again() {
    let device = tearing(1);
    // 0x1_ffff_ffff becomes 0x2_0000_0000 between the halves: without the
    // retry the driver would see the halves mixed, 0x2_ffff_ffff.
    let wide = read_consistent(&device, |f| f.u64(0)).unwrap();
    assert_eq!((wide, device.reads.get()), (0x2_0000_0000, 4));
}

#[test]
fn a_config_that_never_settles_is_an_error_not_a_hang() {
    let device = tearing(u32::MAX);
    assert_eq!(read_consistent(&device, |f| f.u64(0)), Err(Error::ConfigUnstable));
    assert_eq!(device.reads.get(), READ_ATTEMPTS * 2);
    assert_eq!(read_consistent(&tearing(0), |f| f.u32(6)), Err(Error::ConfigOutOfRange));
}
