//! Ownership across resets: a queue hands its buffers back, or frees its
//! rings, only against a reset proof for *its* device or queue taken after
//! it was programmed; otherwise it leaks them, counted.

use core::cell::Cell;
use core::ptr::NonNull;
use std::vec::Vec;

use super::tests::{Device, chain, config};
use super::{QueueConfig, SplitQueue};
use crate::testing::{HeapHal, RecordingTransport};
use crate::transport::{DeviceStatus, Transport};
use crate::{
    DeviceId, Dma, DmaChain, Error, Features, Hal, PhysAddr, leak_counts, negotiate_features,
};

std::thread_local! {
    static FREED_PAGES: Cell<usize> = const { Cell::new(0) };
    static LEAKED_PAGES: Cell<usize> = const { Cell::new(0) };
}

/// [`HeapHal`] that counts, per thread, the pages it frees and those
/// reported leaked.
#[derive(Clone, Copy, Debug)]
struct CountingHal;
// SAFETY: delegates to `HeapHal`, which upholds the contract.
unsafe impl Hal for CountingHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        HeapHal.dma_alloc(pages)
    }
    unsafe fn dma_dealloc(&self, p: PhysAddr, v: NonNull<u8>, pages: usize) {
        FREED_PAGES.with(|c| c.set(c.get() + pages));
        // SAFETY: forwarded unchanged from our caller.
        unsafe { HeapHal.dma_dealloc(p, v, pages) }
    }
    fn dma_leaked(&self, _paddr: PhysAddr, pages: usize) {
        LEAKED_PAGES.with(|c| c.set(c.get() + pages));
    }
}

fn freed() -> usize {
    FREED_PAGES.with(Cell::get)
}
fn leaked() -> usize {
    LEAKED_PAGES.with(Cell::get)
}

type CChain = DmaChain<CountingHal, 2>;
type CQueue = SplitQueue<CountingHal, CChain>;

fn cchain() -> CChain {
    let mut c = DmaChain::new(Dma::new(CountingHal, 1).unwrap());
    c.set_segments(&[(0, 8)], &[(64, 8)]).unwrap();
    c
}

fn cqueue(t: &mut RecordingTransport, features: Features) -> CQueue {
    SplitQueue::new(&CountingHal, t, config(4, features)).unwrap()
}

/// Hole 3: the old `Drop` freed an idle queue's rings although the device
/// still had their addresses programmed (PCI cannot clear queue_enable).
#[test]
fn idle_queue_dropped_without_proof_leaks_its_rings() {
    let mut t = RecordingTransport::default();
    let q = cqueue(&mut t, Features::empty());
    let (freed0, leaked0, queues0) = (freed(), leaked(), leak_counts().queues);
    drop(q);
    assert_eq!(freed(), freed0, "freed rings the device still has programmed");
    assert_eq!(leaked(), leaked0 + 1, "the HAL was told about the leaked ring page");
    assert!(leak_counts().queues > queues0);
}

#[test]
fn live_queue_dropped_leaks_its_requests_too() {
    let mut t = RecordingTransport::default();
    let mut q = cqueue(&mut t, Features::empty());
    q.add(cchain()).unwrap();
    let (freed0, requests0) = (freed(), leak_counts().requests);
    drop(q);
    assert_eq!(freed(), freed0, "freed memory the device may still write");
    assert!(leak_counts().requests > requests0);
}

#[test]
fn device_reset_proof_hands_back_requests_and_frees_rings() {
    let mut t = RecordingTransport::default();
    let mut q = cqueue(&mut t, Features::empty());
    let tok = q.add(cchain()).unwrap();
    let proof = t.reset().unwrap();
    let mut back = Vec::new();
    assert_eq!(q.reclaim(&proof, |t, b| back.push((t, b))), Ok(1));
    assert_eq!((back[0].0, q.in_flight(), q.stats().reclaimed), (tok, 0, 1));
    assert!(q.is_stopped());
    assert_eq!(q.add(cchain()).unwrap_err().error, Error::Stopped);
    let freed0 = freed();
    drop(q);
    assert!(freed() > freed0, "rings freed once the device forgot them");
    let freed0 = freed();
    drop(back);
    assert_eq!(freed(), freed0 + 1, "request memory freed by its owner");
}

/// Hole 2: the old `SplitQueue::reset` took any transport, so resetting
/// another device handed back buffers the real device may still write.
#[test]
fn another_devices_reset_proves_nothing() {
    let (mut ta, mut tb) = (RecordingTransport::default(), RecordingTransport::default());
    let mut q = cqueue(&mut ta, Features::empty());
    q.add(cchain()).unwrap();
    ta.set_status(DeviceStatus::DRIVER_OK);
    let other = tb.reset().unwrap();
    let mut back = 0;
    assert_eq!(q.reclaim(&other, |_, _| back += 1), Err(Error::WrongResetProof));
    assert_eq!((back, q.in_flight(), q.is_stopped()), (0, 1, false));
    // The queue still works with its own device.
    let mut d = Device::of(&ta);
    d.ret(0, 8);
    assert_eq!(q.pop_used().unwrap().unwrap().written_len, 8);
}

#[test]
fn a_reset_before_the_queue_was_programmed_proves_nothing() {
    let mut t = RecordingTransport::default();
    let stale = t.reset().unwrap();
    let mut q = cqueue(&mut t, Features::empty());
    q.add(cchain()).unwrap();
    assert_eq!(q.reclaim(&stale, |_, _| ()), Err(Error::WrongResetProof));
    assert_eq!(q.in_flight(), 1);
}

#[test]
fn a_reset_that_never_completes_gives_no_proof() {
    let mut t = RecordingTransport::default();
    let mut q = cqueue(&mut t, Features::empty());
    q.add(cchain()).unwrap();
    t.set_status(DeviceStatus::DRIVER_OK);
    t.refuses_reset = true;
    assert_eq!(t.reset().unwrap_err(), Error::DeviceResetTimeout);
    let freed0 = freed();
    drop(q);
    assert_eq!(freed(), freed0, "freed memory of a device that did not reset");
}

#[test]
fn queue_reset_reclaims_one_queue_and_restarts_it() {
    let mut t = RecordingTransport::default();
    let mut q = cqueue(&mut t, Features::RING_RESET);
    let mut d = Device::of(&t);
    let done = q.add(cchain()).unwrap();
    let pending = q.add(cchain()).unwrap();
    d.ret(u32::from(done.index()), 8); // completed before the reset
    let proof = q.reset_queue(&mut t).unwrap();
    assert_eq!((proof.queue(), t.queue_resets, q.stats().queue_resets), (0, 1, 1));
    // What the device finished before it stopped still pops, with its length.
    assert_eq!(q.pop_used().unwrap().unwrap().token, done);
    let mut back = Vec::new();
    assert_eq!(q.reclaim(&proof, |t, _| back.push(t)), Ok(1));
    assert_eq!(back, [pending]);
    q.restart(&mut t).unwrap();
    assert_eq!((q.num_free(), q.in_flight(), q.is_stopped()), (4, 0, false));
    // Fresh rings at index 0 on both sides.
    let mut d = Device::of(&t);
    let tok = q.add(cchain()).unwrap();
    d.ret(u32::from(tok.index()), 3);
    assert_eq!(q.pop_used().unwrap().unwrap().written_len, 3);
}

#[test]
fn a_queue_reset_proves_nothing_for_another_queue() {
    let mut t = RecordingTransport::default();
    let mut q0 = cqueue(&mut t, Features::RING_RESET);
    let cfg1 = QueueConfig { index: 1, ..config(4, Features::RING_RESET) };
    let mut q1: CQueue = SplitQueue::new(&CountingHal, &mut t, cfg1).unwrap();
    q1.add(cchain()).unwrap();
    let proof0 = q0.reset_queue(&mut t).unwrap();
    assert_eq!(q1.reclaim(&proof0, |_, _| ()), Err(Error::WrongResetProof));
    assert_eq!(q1.in_flight(), 1);
    // ...while a device reset covers both.
    let all = t.reset().unwrap();
    assert_eq!(q1.reclaim(&all, |_, _| ()), Ok(1));
    assert_eq!(q0.reclaim(&all, |_, _| ()), Ok(0));
}

#[test]
fn a_restarted_queue_needs_a_newer_proof() {
    let mut t = RecordingTransport::default();
    let mut q = cqueue(&mut t, Features::RING_RESET);
    let first = q.reset_queue(&mut t).unwrap();
    q.reclaim(&first, |_, _| ()).unwrap();
    q.restart(&mut t).unwrap();
    q.add(cchain()).unwrap();
    assert_eq!(q.reclaim(&first, |_, _| ()), Err(Error::WrongResetProof));
    assert_eq!(q.restart(&mut t), Err(Error::NotStopped));
}

#[test]
fn queue_reset_needs_ring_reset_and_the_right_device() {
    let (mut t, mut other) = (RecordingTransport::default(), RecordingTransport::default());
    let mut q = cqueue(&mut t, Features::empty());
    assert_eq!(q.reset_queue(&mut t).unwrap_err(), Error::QueueResetUnsupported);
    let mut q = cqueue(&mut t, Features::RING_RESET);
    assert_eq!(q.reset_queue(&mut other).unwrap_err(), Error::WrongResetProof);
    q.add(cchain()).unwrap();
    t.refuses_reset = true;
    assert_eq!(q.reset_queue(&mut t).unwrap_err(), Error::QueueResetTimeout);
    assert_eq!(q.in_flight(), 1, "a queue reset that timed out kept the buffers");
}

/// A transport offering every ring feature, with or without a queue-reset
/// register.
struct Offers {
    inner: RecordingTransport,
    queue_reset: bool,
}
// SAFETY: delegates to `RecordingTransport` (no device at all).
unsafe impl Transport for Offers {
    fn device_id(&self) -> DeviceId {
        self.inner.device_id()
    }
    fn read_device_features(&mut self) -> u64 {
        u64::MAX
    }
    fn write_driver_features(&mut self, f: u64) {
        self.inner.write_driver_features(f)
    }
    fn max_queue_size(&mut self, q: u16) -> u16 {
        self.inner.max_queue_size(q)
    }
    fn queue_used(&mut self, q: u16) -> bool {
        self.inner.queue_used(q)
    }
    unsafe fn queue_set(&mut self, q: u16, s: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        // SAFETY: forwarded unchanged from our caller.
        unsafe { self.inner.queue_set(q, s, d, a, u) }
    }
    fn queue_unset(&mut self, q: u16) {
        self.inner.queue_unset(q)
    }
    fn notify(&mut self, q: u16) {
        self.inner.notify(q)
    }
    fn status(&self) -> DeviceStatus {
        self.inner.status()
    }
    fn set_status(&mut self, s: DeviceStatus) {
        self.inner.set_status(s)
    }
    fn read_config(&self, o: usize, b: &mut [u8]) -> crate::Result {
        self.inner.read_config(o, b)
    }
    fn write_config(&mut self, o: usize, d: &[u8]) -> crate::Result {
        self.inner.write_config(o, d)
    }
    fn config_generation(&self) -> u32 {
        0
    }
    fn ack_interrupt(&mut self) -> crate::InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn has_queue_reset(&self) -> bool {
        self.queue_reset
    }
}

#[test]
fn negotiation_accepts_only_what_the_ring_implements() {
    for queue_reset in [false, true] {
        let mut t = Offers { inner: RecordingTransport::default(), queue_reset };
        let device_bits = Features::from_bits_retain(1 << 5 | 1 << 60);
        let got = negotiate_features(&mut t, Features::all() | device_bits).unwrap();
        let mut want = Features::SUPPORTED_BY_RING | device_bits;
        if !queue_reset {
            want.remove(Features::RING_RESET);
        }
        assert_eq!(got, want, "queue_reset register: {queue_reset}");
        assert!(got.unsupported().is_empty());
        // What negotiation returns, a queue accepts.
        assert!(
            SplitQueue::<HeapHal, super::tests::Chain>::new(&HeapHal, &mut t, config(4, got))
                .is_ok()
        );
    }
}

#[test]
fn reclaimed_requests_are_whole() {
    // The buffers come back with their segments intact (ownership, not
    // just a count).
    let mut t = RecordingTransport::default();
    let mut q: SplitQueue<HeapHal, super::tests::Chain> =
        SplitQueue::new(&HeapHal, &mut t, config(4, Features::empty())).unwrap();
    let mut c = chain(1, 100);
    c.bytes_mut(0).fill(0x5a);
    q.add(c).unwrap();
    let proof = t.reset().unwrap();
    let mut back = Vec::new();
    q.reclaim(&proof, |_, b| back.push(b)).unwrap();
    assert!(back[0].bytes(0).iter().all(|&b| b == 0x5a));
    assert_eq!(crate::DmaBuffers::segment_count(&back[0]), 2);
}
