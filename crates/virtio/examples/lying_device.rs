//! A device that lies, and how a driver recovers without losing a buffer
//! or handing the device freed memory.
//!
//! The device stalls on two requests and answers the third with a used
//! length far beyond its buffer (VirtIO 1.2 §2.7.8.1 forbids it). The
//! queue refuses the lie with a typed error and breaks; nothing it owns is
//! lost. Then three ways out:
//!
//! 1. reset only that queue (`VIRTIO_F_RING_RESET`, §2.6.1): the proof it
//!    returns lets the queue hand back every request, and restart;
//! 2. reset the whole device (§2.4): the same, for every queue, followed by
//!    the initialisation again (§3.1.1);
//! 3. a device that never finishes its reset: no proof, so the queue and
//!    its buffers are leaked (and counted), never freed — a device still
//!    doing DMA must not get memory back from the allocator.
//!
//! Run: `cargo run -p vireo-virtio --example lying_device`

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use vireo_virtio::fake::{DeviceModel, Echo, FakeHal, FakeTransport, Lie, Reply, Request};
use vireo_virtio::{
    DeviceStatus, Dma, DmaChain, Error, Features, QueueConfig, SplitQueue, Transport,
    UsedLenPolicy, leak_counts, negotiate_features,
};

/// An echo device that first plays back a script of replies.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Scripted {
    fn then(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies);
    }
}

impl DeviceModel for Scripted {
    fn features(&self) -> u64 {
        Echo.features() // VERSION_1, INDIRECT_DESC, EVENT_IDX, RING_RESET
    }
    fn serve(&mut self, request: &mut Request<'_>) -> Reply {
        let next = self.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Echo.serve(request))
    }
}

type Chain = DmaChain<FakeHal, 2>;
type Queue = SplitQueue<FakeHal, Chain>;

fn echo_request(hal: &FakeHal, byte: u8) -> Chain {
    let mut chain = DmaChain::new(Dma::new(hal.clone(), 1).expect("memory"));
    chain.region_mut()[..8].fill(byte);
    chain.set_segments(&[(0, 8)], &[(512, 8)]).expect("layout");
    chain
}

/// Brings the device up (§3.1.1) with one queue, or restarts `queue`.
fn bring_up(hal: &FakeHal, t: &mut FakeTransport, queue: Option<&mut Queue>) -> Option<Queue> {
    let features =
        negotiate_features(t, Features::EVENT_IDX | Features::RING_RESET).expect("negotiation");
    let created = match queue {
        Some(queue) => {
            queue.restart(t).expect("restart after the reset");
            None
        }
        None => {
            let used_len = UsedLenPolicy::Strict;
            let config = QueueConfig { index: 0, size: 8, features, indirect_max: 0, used_len };
            Some(SplitQueue::new(hal, t, config).expect("queue"))
        }
    };
    t.set_status(t.status() | DeviceStatus::DRIVER_OK);
    created
}

/// Submits three requests; the device holds two and lies about the third.
/// Returns the error the lie produced.
fn meet_the_liar(hal: &FakeHal, device: &Scripted, t: &mut FakeTransport, q: &mut Queue) -> Error {
    device.then(&[Reply::Hold, Reply::Hold, Reply::Lie(Lie::Length(1 << 20))]);
    for byte in 1..=3 {
        q.add(echo_request(hal, byte)).map_err(|r| r.error).expect("room");
    }
    q.kick(t).expect("live");
    let error = q.pop_used().expect_err("the lie is refused");
    assert!(error.is_protocol_violation() && q.is_broken());
    // A broken queue fails fast, and hands a refused request straight back.
    let rejected = q.add(echo_request(hal, 9)).expect_err("broken");
    assert_eq!(rejected.error, Error::Broken);
    assert_eq!(q.in_flight(), 3, "the queue still owns all three requests");
    error
}

/// After recovery: requests round-trip again, with the right bytes.
fn works_again(hal: &FakeHal, t: &mut FakeTransport, q: &mut Queue) {
    q.add(echo_request(hal, 0x5a)).map_err(|r| r.error).expect("live again");
    q.kick(t).expect("live");
    let used = q.pop_used().expect("honest").expect("answered");
    assert_eq!((used.written_len, used.buffers.bytes(1)), (8, &[0x5a; 8][..]));
}

fn main() {
    let hal = FakeHal::new();
    let device = Scripted::default();
    let mut t = FakeTransport::new(hal.memory(), device.clone(), &[8]);
    let mut q = bring_up(&hal, &mut t, None).expect("created");

    // 1. Per-queue reset: the other queues of the device would keep going.
    let error = meet_the_liar(&hal, &device, &mut t, &mut q);
    println!("queue broke: {error}");
    let proof = q.reset_queue(&mut t).expect("RING_RESET");
    let back = q.reclaim(&proof, |_token, buffers| drop(buffers)).expect("proof for this queue");
    assert_eq!(back, 3);
    q.restart(&mut t).expect("re-enable");
    works_again(&hal, &mut t, &mut q);
    println!("1. queue reset: {back} requests handed back, queue restarted");

    // 2. Device reset: every queue reclaims with the same proof, then the
    //    device is initialised again and each queue restarted.
    meet_the_liar(&hal, &device, &mut t, &mut q);
    let proof = t.reset().expect("device reset");
    let back = q.reclaim(&proof, |_token, buffers| drop(buffers)).expect("proof for this device");
    bring_up(&hal, &mut t, Some(&mut q));
    works_again(&hal, &mut t, &mut q);
    println!("2. device reset: {back} requests handed back, device brought up again");

    // 3. A device that never finishes its reset may still write the
    //    buffers: no proof, so they are leaked, never freed.
    meet_the_liar(&hal, &device, &mut t, &mut q);
    t.set_reset_stuck(true);
    assert_eq!(t.reset().unwrap_err(), Error::DeviceResetTimeout);
    let before = leak_counts();
    drop(q);
    let after = leak_counts();
    assert_eq!((after.queues - before.queues, after.requests - before.requests), (1, 3));
    println!(
        "3. reset timed out: queue and {} requests leaked, not freed",
        after.requests - before.requests
    );

    assert!(hal.memory().faults().is_empty(), "the device never touched freed memory");
    assert!(hal.stats().leaked_pages > 0, "the HAL was told which pages it will never get back");
}

#[test]
fn runs() {
    main();
}
