//! DMA sharing through a bouncing HAL (`fake::BounceHal`): the device sees
//! nothing the ring did not share, and every buffer reaches it only as a
//! copy in a bounce slot. So data arrives intact only if the ring shares
//! every segment it publishes (and every ring area), in the right
//! direction, and unshares each exactly when the device has provably
//! finished with it: `pop_used`, `reclaim` after a reset. A leaked queue
//! keeps its mappings.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use vireo_virtio::fake::{
    BounceHal, DeviceModel, Echo, FakeHal, FakeTransport, Lie, Reply, Request,
};
use vireo_virtio::{
    DeviceStatus, Dma, DmaBuffers, DmaChain, Error, Features, Hal, QueueConfig, SplitQueue,
    Transport, UsedLenPolicy, leak_counts, negotiate_features,
};

/// Written into device-writable space by the driver before submitting: a
/// byte the device did not write must come back as this (a bounce must
/// copy FromDevice buffers in, not only out).
const SENTINEL: u8 = 0xee;

fn pattern(seed: u32, pos: usize) -> u8 {
    let x = seed ^ (pos as u32).wrapping_mul(0x9e37_79b9);
    (x ^ (x >> 11) ^ (x >> 23)) as u8
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    /// Requests whose readable bytes were not what the driver wrote.
    corrupted: u32,
    served: u32,
}

/// Reads a request's header (`seed`, `want`, checksum of the rest of the
/// readable bytes), checks the readable bytes, and writes `want` bytes of
/// `pattern(seed)` — or what the script says.
#[derive(Clone, Default)]
struct Checker(Arc<Mutex<State>>);

impl DeviceModel for Checker {
    fn features(&self) -> u64 {
        Echo.features()
    }
    fn serve(&mut self, request: &mut Request<'_>) -> Reply {
        let mut state = self.0.lock().unwrap();
        state.served += 1;
        let input = request.readable();
        let word = |at: usize| u32::from_le_bytes(input[at..at + 4].try_into().unwrap());
        let (seed, want, sum) = (word(0), word(4), word(8));
        if checksum(&input[12..]) != sum {
            state.corrupted += 1;
        }
        let out = request.writable();
        let want = (want as usize).min(out.len());
        for (i, b) in out[..want].iter_mut().enumerate() {
            *b = pattern(seed, i);
        }
        state.script.pop_front().unwrap_or(Reply::Done { written: want as u32 })
    }
}

type Chain<H> = DmaChain<H, 8>;

struct Sent {
    seed: u32,
    want: usize,
}

/// A request of `nread` readable and `nwrite` writable segments, each in
/// its own 1 KiB slot of a two-page region, of random lengths; the device
/// is asked to write `want` of its writable bytes.
fn request<H: Hal>(
    hal: &H,
    rng: &mut u64,
    nread: usize,
    nwrite: usize,
    partial: bool,
) -> (Chain<H>, Sent) {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut chain = DmaChain::new(Dma::new(hal.clone(), 2).unwrap());
    let slots: Vec<(usize, usize)> =
        (0..nread + nwrite).map(|k| (k * 1024, 12 + (next() % 1000) as usize)).collect();
    let region = chain.region_mut();
    let mut readable = Vec::new();
    for &(off, len) in &slots[..nread] {
        for (i, b) in region[off..off + len].iter_mut().enumerate() {
            *b = (next() as u8) ^ i as u8;
        }
        readable.extend_from_slice(&region[off..off + len]);
    }
    for &(off, len) in &slots[nread..] {
        region[off..off + len].fill(SENTINEL);
    }
    let room: usize = slots[nread..].iter().map(|s| s.1).sum();
    let want = if partial { (next() as usize) % room } else { room };
    let seed = next() as u32;
    let sum = checksum(&readable[12..]);
    for (at, v) in [(0, seed), (4, want as u32), (8, sum)] {
        readable[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    region[..12].copy_from_slice(&readable[..12]); // the header sits in segment 0
    chain.set_segments(&slots[..nread], &slots[nread..]).unwrap();
    (chain, Sent { seed, want })
}

/// The writable bytes, in order: `written` of the pattern, then sentinels.
fn check_written<H: Hal>(chain: &Chain<H>, sent: &Sent, written: usize) {
    let bytes: Vec<u8> = (chain.readable_count()..chain.segment_count())
        .flat_map(|i| chain.bytes(i).to_vec())
        .collect();
    for (i, &b) in bytes.iter().enumerate() {
        let want = if i < written { pattern(sent.seed, i) } else { SENTINEL };
        assert_eq!(b, want, "writable byte {i} of {} ({written} written)", bytes.len());
    }
}

struct Rig<H: Hal> {
    hal: H,
    model: Checker,
    t: FakeTransport,
    q: SplitQueue<H, Chain<H>>,
}

fn rig<H: Hal>(
    hal: H,
    memory: &vireo_virtio::fake::DeviceMemory,
    indirect: bool,
    event_idx: bool,
) -> Rig<H> {
    let model = Checker::default();
    let mut t = FakeTransport::new(memory, model.clone(), &[32]);
    let mut wanted = Features::RING_RESET;
    if indirect {
        wanted |= Features::INDIRECT_DESC;
    }
    if event_idx {
        wanted |= Features::EVENT_IDX;
    }
    let features = negotiate_features(&mut t, wanted).unwrap();
    let used_len = UsedLenPolicy::Strict;
    let config = QueueConfig { index: 0, size: 32, features, indirect_max: 8, used_len };
    let q = SplitQueue::new(&hal, &mut t, config).unwrap();
    t.set_status(t.status() | DeviceStatus::DRIVER_OK);
    Rig { hal, model, t, q }
}

fn bouncing(indirect: bool, event_idx: bool) -> (Rig<BounceHal>, BounceHal) {
    let hal = BounceHal::new();
    (rig(hal.clone(), &hal.memory().clone(), indirect, event_idx), hal)
}

#[test]
fn bounced_data_arrives_intact_both_ways_direct_and_indirect() {
    for (indirect, event_idx) in [(false, false), (false, true), (true, false), (true, true)] {
        let (mut r, hal) = bouncing(indirect, event_idx);
        let mut rng = 0x1234_5678_9abc_def1 ^ u64::from(indirect) << 7 ^ u64::from(event_idx);
        let mut segments = 0u64;
        for round in 0..60 {
            let (mut sent, mut in_flight) = (Vec::new(), 0);
            for k in 0..1 + round % 4 {
                let (nread, nwrite) = (1 + (round + k) % 3, 1 + (round / 3 + k) % 3);
                let (chain, s) = request(&r.hal, &mut rng, nread, nwrite, round % 2 == 1);
                segments += chain.segment_count() as u64;
                in_flight += chain.segment_count();
                let token = r.q.add(chain).map_err(|e| e.error).unwrap();
                sent.push((token, s));
            }
            // Every published segment is shared (bounced) until popped.
            assert_eq!(hal.stats().live_bounces, in_flight);
            r.q.kick(&mut r.t).unwrap();
            while let Some(used) = r.q.pop_used().unwrap() {
                let pos = sent.iter().position(|(t, _)| *t == used.token).unwrap();
                let (_, s) = sent.swap_remove(pos);
                assert_eq!(used.written_len as usize, s.want);
                check_written(&used.buffers, &s, s.want);
            }
            assert!(sent.is_empty());
            assert_eq!(hal.stats().live_bounces, 0, "pop_used left a mapping");
        }
        let stats = hal.stats();
        assert_eq!(stats.bounces, segments, "every segment published was shared");
        assert_eq!(r.model.0.lock().unwrap().corrupted, 0, "the device read what was written");
        assert!(hal.memory().faults().is_empty(), "{:?}", hal.memory().faults());
        let ring_areas = if indirect { 2 } else { 1 };
        assert_eq!(stats.live_coherent, ring_areas, "rings are shared while the queue lives");
        let proof = r.t.reset().unwrap();
        r.q.reclaim(&proof, |_, _| panic!("nothing in flight")).unwrap();
        drop(r);
        let stats = hal.stats();
        assert_eq!((stats.live_coherent, stats.live_allocations), (0, 0), "{stats:?}");
    }
}

/// Requests the device stalled on come back through `reclaim` with what
/// the device wrote before the reset copied back, the rest untouched, and
/// nothing left shared — after a queue reset and after a device reset.
#[test]
fn reclaim_after_a_reset_copies_back_and_unshares() {
    for queue_reset in [true, false] {
        for indirect in [false, true] {
            let (mut r, hal) = bouncing(indirect, true);
            let mut rng = 0xfeed_f00d_u64 + u64::from(indirect);
            let script =
                [Reply::Started { written: 5 }, Reply::Hold, Reply::Started { written: 300 }];
            r.model.0.lock().unwrap().script.extend(script);
            let mut sent = Vec::new();
            for _ in 0..3 {
                let (chain, s) = request(&r.hal, &mut rng, 2, 2, false);
                sent.push((r.q.add(chain).map_err(|e| e.error).unwrap(), s));
            }
            r.q.kick(&mut r.t).unwrap();
            assert!(r.q.pop_used().unwrap().is_none(), "the device holds all three");
            assert_eq!(hal.stats().live_bounces, 12, "held requests stay shared");
            let mut back = Vec::new();
            if queue_reset {
                let proof = r.q.reset_queue(&mut r.t).unwrap();
                r.q.reclaim(&proof, |token, chain| back.push((token, chain))).unwrap();
            } else {
                let proof = r.t.reset().unwrap();
                r.q.reclaim(&proof, |token, chain| back.push((token, chain))).unwrap();
            }
            assert_eq!(hal.stats().live_bounces, 0, "reclaim left a mapping");
            for (token, chain) in &back {
                let i = sent.iter().position(|(t, _)| t == token).unwrap();
                let written = [5, 0, 300][i];
                check_written(chain, &sent[i].1, written);
            }
            assert_eq!(back.len(), 3);
            assert!(hal.memory().faults().is_empty());
        }
    }
}

/// A lie breaks the queue, but the device may still be writing the
/// request it lied about: its mappings stay until a reset proves
/// otherwise, then `reclaim` ends them.
#[test]
fn a_broken_queue_keeps_its_mappings_until_reclaimed() {
    let (mut r, hal) = bouncing(false, false);
    let mut rng = 7;
    r.model.0.lock().unwrap().script.push_back(Reply::Lie(Lie::Length(1 << 30)));
    let (chain, _) = request(&r.hal, &mut rng, 1, 2, false);
    r.q.add(chain).map_err(|e| e.error).unwrap();
    r.q.kick(&mut r.t).unwrap();
    assert_eq!(r.q.pop_used().unwrap_err(), Error::DeviceBadLength);
    assert_eq!(hal.stats().live_bounces, 3, "no proof yet that the device stopped");
    let proof = r.q.reset_queue(&mut r.t).unwrap();
    assert_eq!(r.q.reclaim(&proof, |_, _| {}).unwrap(), 1);
    assert_eq!(hal.stats().live_bounces, 0);
}

/// A queue dropped while live leaks its rings and its in-flight buffers,
/// and keeps everything shared: the device may still use it, and
/// unsharing would let the HAL hand the same bounce slot (or IOVA, or
/// shared page) to other memory while a stale device writes there.
#[test]
fn a_leaked_queue_keeps_its_mappings() {
    for indirect in [false, true] {
        let (mut r, hal) = bouncing(indirect, true);
        let mut rng = 99;
        r.model.0.lock().unwrap().script.extend([Reply::Hold, Reply::Hold]);
        for _ in 0..2 {
            let (chain, _) = request(&r.hal, &mut rng, 1, 1, false);
            r.q.add(chain).map_err(|e| e.error).unwrap();
        }
        r.q.kick(&mut r.t).unwrap();
        let before = leak_counts();
        drop(r.q);
        let stats = hal.stats();
        assert_eq!(stats.live_bounces, 4, "in-flight buffers stay shared");
        assert_eq!(stats.live_coherent, 1 + usize::from(indirect), "rings stay shared");
        assert!(stats.leaked_pages > 0 && stats.live_allocations > 0);
        assert!(leak_counts().requests >= before.requests + 2);
    }
}

/// When the HAL cannot share (its bounce window is full) the request is
/// refused with `DmaShare` before anything is published: the segments
/// already shared are unshared, the buffers come back, and the queue keeps
/// working.
#[test]
fn a_refused_share_undoes_the_request_and_hands_it_back() {
    for indirect in [false, true] {
        let hal = BounceHal::with_window(3000);
        let mut r = rig(hal.clone(), &hal.memory().clone(), indirect, false);
        let mut rng = 5;
        r.model.0.lock().unwrap().script.push_back(Reply::Hold);
        let (first, _) = request(&r.hal, &mut rng, 1, 1, false);
        r.q.add(first).map_err(|e| e.error).unwrap();
        let held = hal.stats().live_bounces;
        // Six segments of up to ~1 KiB each cannot all fit beside it.
        let (big, _) = request(&r.hal, &mut rng, 3, 3, false);
        let free = r.q.num_free();
        let rejected = r.q.add(big).unwrap_err();
        assert_eq!(rejected.error, Error::DmaShare);
        assert_eq!(rejected.buffers.segment_count(), 6, "the request came back whole");
        assert_eq!(hal.stats().live_bounces, held, "the shared part was undone");
        assert!(hal.stats().refused > 0);
        assert_eq!((r.q.num_free(), r.q.in_flight(), r.q.is_broken()), (free, 1, false));
        let (small, s) = request(&r.hal, &mut rng, 1, 1, false);
        r.q.add(small).map_err(|e| e.error).unwrap();
        r.q.kick(&mut r.t).unwrap();
        let used = r.q.pop_used().unwrap().expect("the small one fits and completes");
        check_written(&used.buffers, &s, s.want);
    }
}

/// The coherent fast path: the ring shares its ring areas (identity) and
/// never calls `share` for a buffer.
#[test]
fn a_coherent_hal_shares_ring_areas_only() {
    let hal = FakeHal::new();
    let mut r = rig(hal.clone(), &hal.memory().clone(), true, true);
    let mut rng = 11;
    let (chain, s) = request(&r.hal, &mut rng, 2, 2, true);
    r.q.add(chain).map_err(|e| e.error).unwrap();
    r.q.kick(&mut r.t).unwrap();
    let used = r.q.pop_used().unwrap().unwrap();
    check_written(&used.buffers, &s, s.want);
    let stats = hal.stats();
    assert_eq!((stats.bounces, stats.live_coherent), (0, 2));
    assert!(hal.memory().faults().is_empty());
}
