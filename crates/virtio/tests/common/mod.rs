//! Shared by the device-model tests: guest memory, a virtio device whose
//! queues are served by rust-vmm's `virtio-queue` (a device nobody here
//! wrote) in threads, with device and per-queue reset, and request traffic
//! whose every byte and length is checked.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaBuffers, DmaChain, Error, Features, Hal, InterruptStatus,
    PAGE_SIZE, PhysAddr, SplitQueue, Token, Transport, Used,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const BASE: u64 = 0x10_0000;
const MEM: usize = 96 << 20;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Guest memory plus a page allocator over it.
pub struct Guest {
    pub mem: GuestMemoryMmap<()>,
    host: *mut u8,
    used: Mutex<Vec<bool>>,
}
// SAFETY (test): `host` is the mapping owned by `mem`, shared on purpose.
unsafe impl Send for Guest {}
// SAFETY (test): as above; the page bitmap is behind a mutex.
unsafe impl Sync for Guest {}

#[derive(Clone)]
pub struct GHal(pub Arc<Guest>);

// SAFETY (test): pages come from one contiguous mmap, handed out once each
// and zeroed; phys is the guest address the device model uses.
unsafe impl Hal for GHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let mut used = self.0.used.lock().unwrap();
        let mut run = 0;
        for i in 0..used.len() {
            run = if used[i] { 0 } else { run + 1 };
            if run == pages {
                let first = i + 1 - pages;
                used[first..=i].iter_mut().for_each(|u| *u = true);
                // SAFETY (test): inside the mapping.
                let p = unsafe { self.0.host.add(first * PAGE_SIZE) };
                // SAFETY (test): freshly reserved pages, nobody else uses them.
                unsafe { p.write_bytes(0, pages * PAGE_SIZE) };
                return Some((BASE + (first * PAGE_SIZE) as u64, NonNull::new(p)?));
            }
        }
        None
    }
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) {
        let first = ((paddr - BASE) as usize) / PAGE_SIZE;
        let mut used = self.0.used.lock().unwrap();
        used[first..first + pages].iter_mut().for_each(|u| *u = false);
    }
}

pub fn guest() -> GHal {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(BASE), MEM)]).unwrap();
    let host = mem.get_host_address(GuestAddress(BASE)).unwrap();
    GHal(Arc::new(Guest { mem, host, used: Mutex::new(vec![false; MEM / PAGE_SIZE]) }))
}

/// A counter threads can wait on (kick doorbell, interrupt line).
#[derive(Default)]
pub struct Signal {
    count: Mutex<u64>,
    cv: Condvar,
}
impl Signal {
    pub fn raise(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }
    pub fn get(&self) -> u64 {
        *self.count.lock().unwrap()
    }
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> bool {
        let g = self.count.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, timeout, |c| *c == seen).unwrap();
        *g != seen
    }
}

/// One queue of the device model.
#[derive(Default)]
pub struct QueueDev {
    pub kick: Signal,
    pub irq: Signal,
    setup: Mutex<Option<(u16, u64, u64, u64)>>,
    /// A reset was requested; the serving thread acknowledges in `reset_done`.
    reset_requested: AtomicBool,
    reset_done: Mutex<bool>,
    reset_cv: Condvar,
    served: AtomicBool,
    /// While set, the device takes no new chains (they stay available, in
    /// flight for the driver): tests use it to have requests a reset must
    /// hand back, whatever the threads' timing.
    pub hold: AtomicBool,
}

impl QueueDev {
    fn reset_pending(&self) -> bool {
        self.reset_requested.load(Ordering::SeqCst)
    }
    /// The device side of a reset: forget the rings, say so.
    fn acknowledge_reset(&self) {
        *self.setup.lock().unwrap() = None;
        self.reset_requested.store(false, Ordering::SeqCst);
        *self.reset_done.lock().unwrap() = true;
        self.reset_cv.notify_all();
    }
}

/// The device: status plus its queues.
pub struct Device {
    pub queues: Vec<QueueDev>,
    status: Mutex<u8>,
    pub stop: AtomicBool,
}

impl Device {
    pub fn new(queues: usize) -> Arc<Self> {
        Arc::new(Self {
            queues: (0..queues).map(|_| QueueDev::default()).collect(),
            status: Mutex::new(0),
            stop: AtomicBool::new(false),
        })
    }

    /// Stops every serving thread.
    pub fn shut_down(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queues.iter().for_each(|q| q.kick.raise());
    }
}

/// A transport to [`Device`]; clones drive the same device (same id).
#[derive(Clone)]
pub struct TestTransport {
    pub dev: Arc<Device>,
}

// SAFETY (test): `reset` and queue resets return only after the serving
// threads acknowledged, which they do between chains and then never touch
// the old rings again; ids are the device's address, shared by clones.
unsafe impl Transport for TestTransport {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(Arc::as_ptr(&self.dev) as u64)
    }
    fn read_device_features(&mut self) -> u64 {
        (Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX | Features::RING_RESET)
            .bits()
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, q: u16) -> u16 {
        if usize::from(q) < self.dev.queues.len() { 32768 } else { 0 }
    }
    fn queue_used(&mut self, q: u16) -> bool {
        self.dev.queues[usize::from(q)].setup.lock().unwrap().is_some()
    }
    unsafe fn queue_set(&mut self, q: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        let qd = &self.dev.queues[usize::from(q)];
        *qd.setup.lock().unwrap() = Some((size, d, a, u));
        qd.kick.raise();
    }
    fn queue_unset(&mut self, _q: u16) {}
    fn notify(&mut self, q: u16) {
        self.dev.queues[usize::from(q)].kick.raise();
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(*self.dev.status.lock().unwrap())
    }
    fn set_status(&mut self, s: DeviceStatus) {
        if s.is_empty() {
            // Like QEMU: the reset is synchronous; every queue stops first.
            for q in 0..self.dev.queues.len() as u16 {
                if self.dev.queues[usize::from(q)].served.load(Ordering::SeqCst) {
                    self.start_queue_reset(q);
                    assert!(self.queue_reset_done(q), "device thread ignored the reset");
                }
                *self.dev.queues[usize::from(q)].setup.lock().unwrap() = None;
            }
        }
        *self.dev.status.lock().unwrap() = s.bits();
    }
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
    fn has_queue_reset(&self) -> bool {
        true
    }
    fn start_queue_reset(&mut self, q: u16) {
        let qd = &self.dev.queues[usize::from(q)];
        *qd.reset_done.lock().unwrap() = false;
        qd.reset_requested.store(true, Ordering::SeqCst);
        qd.kick.raise();
    }
    fn queue_reset_done(&mut self, q: u16) -> bool {
        // A slow register read: waits (bounded) for the serving thread.
        let qd = &self.dev.queues[usize::from(q)];
        if !qd.served.load(Ordering::SeqCst) {
            qd.acknowledge_reset();
        }
        let g = qd.reset_done.lock().unwrap();
        let (g, _) = qd.reset_cv.wait_timeout_while(g, TIMEOUT, |done| !*done).unwrap();
        *g
    }
}

/// The byte the device writes at position `pos` of the writable space.
pub fn pattern(seed: u32, sum: u32, pos: usize) -> u8 {
    let x = seed ^ sum.rotate_left(7) ^ (pos as u32).wrapping_mul(0x9e37_79b9);
    (x ^ (x >> 13) ^ (x >> 24)) as u8
}

pub fn checksum(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes.fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Serves queue `index` of `dev` until `dev.stop`: pops chains, reads the
/// readable part (header: want_len u32, seed u32), writes `pattern` into
/// the first `want_len` writable bytes and returns `want_len`. Suppresses
/// kicks while busy, raises `irq` only when `needs_notification` says so.
/// A reset is honoured between chains: the rings are forgotten until the
/// queue is programmed again. Returns the chains handled.
pub fn serve(dev: Arc<Device>, index: u16, hal: GHal, event_idx: bool, jitter: bool) -> u64 {
    let qd = &dev.queues[usize::from(index)];
    /// Marks the queue served while the thread runs (resets wait for it).
    struct Serving<'a>(&'a QueueDev);
    impl Drop for Serving<'_> {
        fn drop(&mut self) {
            self.0.served.store(false, Ordering::SeqCst);
        }
    }
    qd.served.store(true, Ordering::SeqCst);
    let _serving = Serving(qd);
    let mem = &hal.0.mem;
    let mut handled = 0u64;
    let mut rng = Rng(0xdead_beef ^ u64::from(index));
    loop {
        // Not programmed (start, or after a reset): wait for queue_set.
        let (size, d, a, u) = loop {
            if dev.stop.load(Ordering::SeqCst) {
                return handled;
            }
            // The kick count is read before the reset check: a reset asked
            // for after the check then raises a kick this wait sees (read
            // after, its kick was counted already and the wait slept through
            // it while the driver waited for the acknowledgement).
            let seen = qd.kick.get();
            if qd.reset_pending() {
                qd.acknowledge_reset();
            }
            if let Some(s) = *qd.setup.lock().unwrap() {
                break s;
            }
            qd.kick.wait_change(seen, TIMEOUT);
        };
        let mut q = Queue::new(size).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(d as u32), Some((d >> 32) as u32));
        q.set_avail_ring_address(Some(a as u32), Some((a >> 32) as u32));
        q.set_used_ring_address(Some(u as u32), Some((u >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        assert!(q.is_valid(mem), "device rejects the ring layout");
        'programmed: loop {
            let kicks = qd.kick.get();
            q.disable_notification(mem).unwrap();
            loop {
                let held = || qd.hold.load(Ordering::SeqCst);
                while !held() && !qd.reset_pending() {
                    let Some(chain) = q.pop_descriptor_chain(mem) else { break };
                    let head = chain.head_index();
                    let want = answer_chain(mem, chain);
                    if jitter && rng.next().is_multiple_of(8) {
                        thread::yield_now();
                    }
                    q.add_used(mem, head, want).unwrap();
                    handled += 1;
                    if q.needs_notification(mem).unwrap() {
                        qd.irq.raise();
                    }
                }
                if qd.reset_pending() {
                    qd.acknowledge_reset();
                    break 'programmed;
                }
                // Re-enable, then recheck (virtio-queue's enable has the mb).
                // Held: wait for the next kick (a reset kicks) instead.
                if !q.enable_notification(mem).unwrap() || held() {
                    break;
                }
                q.disable_notification(mem).unwrap();
            }
            if dev.stop.load(Ordering::SeqCst) {
                return handled;
            }
            assert!(qd.kick.wait_change(kicks, TIMEOUT), "device waited {TIMEOUT:?}: lost kick");
        }
    }
}

/// Reads a chain's header, writes the pattern; returns the length written.
pub fn answer_chain<M: vm_memory::GuestMemory>(
    mem: &M,
    chain: virtio_queue::DescriptorChain<&M>,
) -> u32 {
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    for desc in chain {
        assert!(!desc.refers_to_indirect_table(), "nested indirect");
        if desc.is_write_only() {
            writable.push((desc.addr(), desc.len() as usize));
        } else {
            assert!(writable.is_empty(), "readable after writable (§2.7.4.2)");
            let mut b = vec![0u8; desc.len() as usize];
            mem.read_slice(&mut b, desc.addr()).unwrap();
            readable.extend_from_slice(&b);
        }
    }
    let want = u32::from_le_bytes(readable[0..4].try_into().unwrap());
    let seed = u32::from_le_bytes(readable[4..8].try_into().unwrap());
    let total: usize = writable.iter().map(|w| w.1).sum();
    assert!(want as usize <= total, "driver asked for more than it gave");
    let sum = checksum(readable.iter().copied());
    let mut pos = 0usize;
    for (addr, len) in writable {
        let n = len.min(want as usize - pos);
        let bytes: Vec<u8> = (pos..pos + n).map(|p| pattern(seed, sum, p)).collect();
        mem.write_slice(&bytes, addr).unwrap();
        pos += n;
    }
    want
}

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

pub type Chain = DmaChain<GHal, 8>;
pub type Q = SplitQueue<GHal, Chain>;

struct Expect {
    seed: u32,
    sum: u32,
    want: u32,
}

/// Verified request traffic on one queue: random chains out, every byte
/// of every answer checked, every request accounted for exactly once.
pub struct Traffic {
    rng: Rng,
    expect: HashMap<u16, Expect>,
    pub pool: Vec<Chain>,
    max_segs: usize,
    max_len: usize,
    pub completed: u64,
    pub reclaimed: u64,
}

impl Traffic {
    pub fn new(hal: &GHal, pool_len: usize, seed: u64, max_segs: usize, max_len: usize) -> Self {
        let pool =
            (0..pool_len).map(|_| DmaChain::new(Dma::new(hal.clone(), 2).unwrap())).collect();
        Self {
            rng: Rng(seed),
            expect: HashMap::new(),
            pool,
            max_segs,
            max_len,
            completed: 0,
            reclaimed: 0,
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn in_flight(&self) -> usize {
        self.expect.len()
    }

    /// Adds up to `n` random requests; returns how many the queue took.
    pub fn add(&mut self, q: &mut Q, n: usize) -> usize {
        let max_direct = usize::from(q.size()).min(8);
        let mut added = 0;
        for _ in 0..n {
            let Some(mut chain) = self.pool.pop() else { break };
            let rng = &mut self.rng;
            let nseg = rng.range(1, self.max_segs.min(max_direct));
            let nread = rng.range(1, nseg);
            let mut off = 0;
            let mut segs = Vec::new();
            for i in 0..nseg {
                let lo = if i == 0 { 8 } else { 1 };
                let len = rng.range(lo, self.max_len.max(lo));
                off += rng.range(0, 64);
                segs.push((off, len));
                off += len;
            }
            assert!(off <= 2 * PAGE_SIZE);
            chain.set_segments(&segs[..nread], &segs[nread..]).unwrap();
            let wtotal: usize = segs[nread..].iter().map(|s| s.1).sum();
            let want = rng.range(0, wtotal) as u32;
            let seed = rng.next() as u32;
            for i in 0..nseg {
                let b = chain.bytes_mut(i);
                if i < nread {
                    b.iter_mut().for_each(|x| *x = rng.next() as u8);
                    if i == 0 {
                        b[0..4].copy_from_slice(&want.to_le_bytes());
                        b[4..8].copy_from_slice(&seed.to_le_bytes());
                    }
                } else {
                    b.fill(0xee);
                }
            }
            let sum = checksum((0..nread).flat_map(|i| chain.bytes(i).to_vec()));
            match q.add(chain) {
                Ok(tok) => {
                    assert!(self.expect.insert(tok.index(), Expect { seed, sum, want }).is_none());
                    added += 1;
                }
                Err(r) => {
                    assert_eq!(r.error, Error::QueueFull);
                    self.pool.push(r.buffers);
                    break;
                }
            }
        }
        added
    }

    /// Checks a completion against what its request asked for.
    pub fn complete(&mut self, u: Used<Chain>) {
        let e = self.expect.remove(&u.token.index()).expect("completed a token not in flight");
        assert_eq!(u.written_len, e.want, "written length");
        let chain = u.buffers;
        let mut pos = 0usize;
        for i in chain.readable_count()..chain.segment_count() {
            for &b in chain.bytes(i) {
                let want = if pos < e.want as usize { pattern(e.seed, e.sum, pos) } else { 0xee };
                assert_eq!(b, want, "byte {pos} of writable space");
                pos += 1;
            }
        }
        self.pool.push(chain);
        self.completed += 1;
    }

    /// Takes back a request a reset reclaimed: it was in flight, and the
    /// device (which finishes chains before honouring a reset) never
    /// wrote it.
    pub fn reclaimed(&mut self, token: Token, chain: Chain) {
        assert!(self.expect.remove(&token.index()).is_some(), "reclaimed a token not in flight");
        for i in chain.readable_count()..chain.segment_count() {
            assert!(chain.bytes(i).iter().all(|&b| b == 0xee), "device wrote a reclaimed buffer");
        }
        self.pool.push(chain);
        self.reclaimed += 1;
    }

    /// Pops and checks everything completed.
    pub fn drain(&mut self, q: &mut Q) -> u64 {
        let mut n = 0;
        while let Some(u) = q.pop_used().unwrap() {
            self.complete(u);
            n += 1;
        }
        n
    }
}
