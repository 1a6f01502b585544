//! Loom model of the REAL split queue: the driver thread runs the crate's
//! own `SplitQueue` (add, kick decision, pop, interrupt enable/disable and
//! recheck), compiled with the `loom` feature so its ring accessors are loom
//! cells and atomics and its barriers loom fences; a loom device thread
//! serves the same memory the way rust-vmm's `virtio-queue` does
//! (`enable_notification` / `needs_notification`), through
//! [`vireo_virtio::queue::split::model::LoomDevice`].
//!
//! Run: `cargo test -p vireo-virtio --features loom --test loom_ring`.
//! `make test` runs it once as is and once per barrier site with
//! `VIREO_BARRIER_MUTANT=<site>`, and requires every mutant to fail.
//!
//! What loom checks here:
//! - data races on descriptors, indirect tables and ring entries (loom
//!   `UnsafeCell`s): the write barriers before `avail.idx` / `used.idx` and
//!   the read barriers after them are what order those accesses;
//! - lost kicks and lost interrupts (store buffering on the `Relaxed`
//!   index/flag/event fields, which only full barriers forbid): doorbell and
//!   interrupt line are sticky flags, so after both threads stop, a device
//!   asleep with `avail.idx` ahead and no kick pending, or a driver asleep
//!   with completions it never saw and no interrupt pending, is a lost
//!   notification;
//! - that every request comes back exactly once with the right owner.
//!
//! Scenarios: 2 and 3 requests, EVENT_IDX on and off, direct and indirect
//! chains, two handler shapes (interrupts on and "pop until `None`, return";
//! NAPI-style disable / poll / enable-and-recheck), and indices starting
//! just below the 2^16 wrap.
//!
//! The hand-written mirror this replaces (`loom_notify.rs`) is retired: the
//! real code expresses every step it modelled. Only the store-buffering
//! litmus tests remain model-only, because they check loom itself.
#![cfg(feature = "loom")]

use std::ptr::NonNull;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU16, Ordering::*, fence};
use loom::thread;
use vireo_virtio::queue::event::vring_need_event;
use vireo_virtio::queue::split::model::LoomDevice;
use vireo_virtio::{
    DeviceId, DeviceStatus, Error, Features, Hal, InterruptStatus, PAGE_SIZE, PhysAddr,
    QueueConfig, Segment, SplitQueue, Transport, UsedLenPolicy,
};

/// Heap pages; the model never lets the device touch them (it only sees
/// the loom copies of the ring fields).
#[derive(Clone, Copy, Debug)]
struct ModelHal;
// SAFETY (test): zeroed, page-aligned, exclusively owned heap pages.
unsafe impl Hal for ModelHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY (test): non-zero size.
        let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some((p.as_ptr() as u64, p))
    }
    unsafe fn dma_dealloc(&self, _p: PhysAddr, v: NonNull<u8>, pages: usize) {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY (test): allocated above with this layout.
        unsafe { std::alloc::dealloc(v.as_ptr(), layout) }
    }
}

/// Doorbell and interrupt line: sticky flags, raised with `fetch_or` and
/// consumed with `swap` (MMIO doorbells and interrupt delivery are not
/// reorderable plain stores; loom 0.7.3 also mis-models a `swap` racing a
/// plain `store`, so only read-modify-writes touch them).
#[derive(Default)]
struct Lines {
    kick: AtomicBool,
    irq: AtomicBool,
}

struct ModelTransport(Arc<Lines>);
// SAFETY (test): the model's device thread is the only "device"; it never
// accesses buffer memory, and no reset is modelled.
unsafe impl Transport for ModelTransport {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(1)
    }
    fn read_device_features(&mut self) -> u64 {
        0
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, _q: u16) -> u16 {
        4
    }
    fn queue_used(&mut self, _q: u16) -> bool {
        false
    }
    unsafe fn queue_set(&mut self, _q: u16, _s: u16, _d: PhysAddr, _a: PhysAddr, _u: PhysAddr) {}
    fn queue_unset(&mut self, _q: u16) {}
    fn notify(&mut self, _q: u16) {
        self.0.kick.fetch_or(true, AcqRel);
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::empty()
    }
    fn set_status(&mut self, _s: DeviceStatus) {}
    fn read_config(&self, _o: usize, _b: &mut [u8]) -> vireo_virtio::Result {
        Err(Error::ConfigOutOfRange)
    }
    fn write_config(&mut self, _o: usize, _d: &[u8]) -> vireo_virtio::Result {
        Err(Error::ConfigOutOfRange)
    }
    fn config_generation(&self) -> u32 {
        0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::QUEUE
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Interrupts stay on; the handler pops until `None` and sleeps.
    PopUntilNone,
    /// Interrupts off while polling; `enable_interrupts` + recheck before
    /// sleeping, off again on wake-up.
    DisablePollEnable,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    event_idx: bool,
    requests: u16,
    /// Segments per request (2 with indirect on goes through a table).
    segments: u16,
    indirect: bool,
    start: u16,
    shape: Shape,
    preemptions: usize,
}

const BASE: Scenario = Scenario {
    event_idx: true,
    requests: 2,
    segments: 1,
    indirect: false,
    start: 0,
    shape: Shape::PopUntilNone,
    preemptions: 3,
};

/// The fake device address of segment `s` of request `r` (never accessed).
fn seg_addr(r: u16, s: u16) -> u64 {
    0x10_0000 * (u64::from(r) + 1) + 0x100 * u64::from(s)
}

fn seg_len(r: u16, s: u16) -> u32 {
    u32::from(16 + r * 4 + s)
}

/// The driver: real `SplitQueue` calls only. Returns the owners it popped.
fn driver(q: &mut SplitQueue<ModelHal, u16>, t: &mut ModelTransport, lines: &Lines, sc: Scenario) {
    if sc.shape == Shape::DisablePollEnable {
        q.disable_interrupts().unwrap();
    }
    for r in 0..sc.requests {
        let segs: Vec<Segment> = (0..sc.segments)
            .map(|s| Segment { addr: seg_addr(r, s), len: seg_len(r, s) })
            .collect();
        // SAFETY (test): no device ever accesses these addresses; the model
        // device reads only the descriptors.
        unsafe { q.add_raw(&segs, &[], r) }.map_err(|r| r.error).unwrap();
        q.kick(t).unwrap();
    }
    let mut seen = Vec::new();
    loop {
        while let Some(used) = q.pop_used().unwrap() {
            assert!(!seen.contains(&used.buffers), "request {} came back twice", used.buffers);
            seen.push(used.buffers);
        }
        if seen.len() == usize::from(sc.requests) {
            break;
        }
        if sc.shape == Shape::DisablePollEnable && q.enable_interrupts().unwrap() {
            q.disable_interrupts().unwrap();
            continue; // completions raced in: poll again
        }
        // Sleep until interrupted; a driver left asleep is judged at the end.
        if !lines.irq.swap(false, AcqRel) {
            break;
        }
        if sc.shape == Shape::DisablePollEnable {
            q.disable_interrupts().unwrap();
        }
    }
}

/// The device, in the manner of rust-vmm `virtio-queue`: suppress kicks
/// while busy, serve, re-enable and recheck (`enable_notification`), and
/// interrupt when `needs_notification` says so. Returns the next avail
/// index it would serve when it went to sleep.
fn device(dev: &LoomDevice, lines: &Lines, sc: Scenario) -> u16 {
    let mut next_avail = sc.start;
    let mut used = sc.start;
    let end = sc.start.wrapping_add(sc.requests);
    loop {
        if !sc.event_idx {
            dev.set_used_flags(1); // VIRTQ_USED_F_NO_NOTIFY
        }
        loop {
            let avail = dev.avail_idx();
            fence(Acquire); // ring entries and descriptors after avail.idx
            while next_avail != avail && next_avail != end {
                let head = dev.avail_entry(next_avail);
                check_chain(dev, head, sc);
                dev.set_used_entry(used, u32::from(head), 0);
                fence(Release); // the entry before used.idx
                used = used.wrapping_add(1);
                dev.set_used_idx(used);
                fence(SeqCst); // used.idx before reading the driver's wish
                let irq = if sc.event_idx {
                    vring_need_event(dev.used_event(), used, used.wrapping_sub(1))
                } else {
                    dev.avail_flags() & 1 == 0
                };
                if irq {
                    lines.irq.fetch_or(true, AcqRel);
                }
                next_avail = next_avail.wrapping_add(1);
            }
            if sc.event_idx {
                dev.set_avail_event(next_avail);
            } else {
                dev.set_used_flags(0);
            }
            fence(SeqCst); // re-enable before the recheck
            if dev.avail_idx() == next_avail || next_avail == end {
                break;
            }
            if !sc.event_idx {
                dev.set_used_flags(1);
            }
        }
        if !lines.kick.swap(false, AcqRel) {
            return next_avail;
        }
    }
}

/// The chain at `head` is exactly one of the driver's requests.
fn check_chain(dev: &LoomDevice, head: u16, sc: Scenario) {
    let (addr, len, flags, _) = dev.desc(head);
    let direct = !sc.indirect || sc.segments == 1;
    let desc = |j: u16| if direct { dev.desc(head) } else { dev.indirect(addr, j).expect("table") };
    if !direct {
        assert_eq!((flags, len), (4, u32::from(sc.segments) * 16), "indirect head");
    }
    let first = desc(0);
    let r = (first.0 / 0x10_0000).checked_sub(1).expect("descriptor address");
    let r = u16::try_from(r).expect("request number");
    assert!(r < sc.requests, "descriptor of no request: {first:?}");
    for s in 0..sc.segments.min(if direct { 1 } else { sc.segments }) {
        let d = desc(s);
        assert_eq!((d.0, d.1), (seg_addr(r, s), seg_len(r, s)), "descriptor {s} of request {r}");
    }
}

fn check(sc: Scenario) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(sc.preemptions);
    b.check(move || {
        let lines = Arc::new(Lines::default());
        let mut t = ModelTransport(lines.clone());
        let mut features = Features::VERSION_1;
        if sc.event_idx {
            features |= Features::EVENT_IDX;
        }
        if sc.indirect {
            features |= Features::INDIRECT_DESC;
        }
        let used_len = UsedLenPolicy::Strict;
        let config = QueueConfig { index: 0, size: 4, features, indirect_max: 2, used_len };
        let mut q: SplitQueue<ModelHal, u16> = SplitQueue::new(&ModelHal, &mut t, config).unwrap();
        if sc.start != 0 {
            q.loom_start_at(sc.start);
        }
        let dev = q.loom_device();
        let device_saw = Arc::new(AtomicU16::new(sc.start));
        let d = {
            let (lines, device_saw) = (lines.clone(), device_saw.clone());
            thread::spawn(move || device_saw.store(device(&dev, &lines, sc), Relaxed))
        };
        driver(&mut q, &mut t, &lines, sc);
        d.join().unwrap();
        let end = sc.start.wrapping_add(sc.requests);
        let saw = device_saw.load(Relaxed);
        if saw != end && !lines.kick.swap(false, AcqRel) {
            panic!("lost kick: device asleep at {saw}, avail.idx {end}, no kick ({sc:?})");
        }
        let in_flight = q.in_flight();
        if saw == end && in_flight > 0 && !lines.irq.swap(false, AcqRel) {
            panic!("lost interrupt: driver asleep with {in_flight} completed unseen ({sc:?})");
        }
        // Both threads are done, so "the device stopped" is true: tear down
        // with proof so each of loom's many executions frees its rings.
        let proof = t.reset().unwrap();
        q.reclaim(&proof, |_, _| ()).unwrap();
    });
}

#[test]
fn event_idx_interrupts_on_pop_until_none() {
    check(BASE);
}

#[test]
fn event_idx_disable_poll_enable() {
    check(Scenario { shape: Shape::DisablePollEnable, ..BASE });
}

#[test]
fn flags_interrupts_on_pop_until_none() {
    check(Scenario { event_idx: false, ..BASE });
}

#[test]
fn flags_disable_poll_enable() {
    check(Scenario { event_idx: false, shape: Shape::DisablePollEnable, ..BASE });
}

#[test]
fn event_idx_indirect_tables() {
    check(Scenario { indirect: true, segments: 2, preemptions: 2, ..BASE });
}

#[test]
fn three_requests_across_the_wrap_event_idx() {
    let sc = Scenario { requests: 3, start: 65534, preemptions: 2, ..BASE };
    check(Scenario { shape: Shape::DisablePollEnable, ..sc });
    check(sc);
}

#[test]
fn three_requests_across_the_wrap_flags() {
    check(Scenario { event_idx: false, requests: 3, start: 65534, preemptions: 2, ..BASE });
}

/// Prints the barrier sites for the mutation check (`make test`).
#[test]
fn list_barrier_sites() {
    for site in vireo_virtio::barrier::Site::ALL {
        println!("barrier-site {}", site.name());
    }
}

/// Store-buffering litmus: proves loom explores the store→load reordering
/// without a full fence and rules it out with `fence(SeqCst)` on both
/// sides, so a green model is evidence, not an artefact of a weak checker.
fn store_buffering(fences: bool) {
    loom::model(move || {
        let x = Arc::new(AtomicU16::new(0));
        let y = Arc::new(AtomicU16::new(0));
        let t = {
            let (x, y) = (x.clone(), y.clone());
            thread::spawn(move || {
                x.store(1, Relaxed);
                if fences {
                    fence(SeqCst);
                }
                y.load(Relaxed)
            })
        };
        y.store(1, Relaxed);
        if fences {
            fence(SeqCst);
        }
        let r1 = x.load(Relaxed);
        let r2 = t.join().unwrap();
        assert!(r1 == 1 || r2 == 1, "store buffering observed");
    });
}

#[test]
#[should_panic(expected = "store buffering observed")]
fn loom_models_store_buffering() {
    store_buffering(false);
}

#[test]
fn loom_seqcst_fence_forbids_store_buffering() {
    store_buffering(true);
}
