//! The split ring against a device nobody here wrote: rust-vmm's
//! `virtio-queue` (device side) over `vm-memory`, running in another thread
//! over shared memory. Every byte and length of every request is checked.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaChain, Error, Features, Hal, InterruptStatus, PAGE_SIZE,
    PhysAddr, QueueConfig, SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const BASE: u64 = 0x10_0000;
const MEM: usize = 96 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Guest memory plus a page allocator over it.
struct Guest {
    mem: GuestMemoryMmap<()>,
    host: *mut u8,
    used: Mutex<Vec<bool>>,
}
// SAFETY (test): `host` is the mapping owned by `mem`, shared on purpose.
unsafe impl Send for Guest {}
// SAFETY (test): as above; the page bitmap is behind a mutex.
unsafe impl Sync for Guest {}

#[derive(Clone)]
struct GHal(Arc<Guest>);

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
    fn phys_to_virt(&self, paddr: PhysAddr) -> Option<NonNull<u8>> {
        let off = paddr.checked_sub(BASE)? as usize;
        // SAFETY (test): bounds checked against the mapping size.
        (off < MEM).then(|| unsafe { NonNull::new_unchecked(self.0.host.add(off)) })
    }
    fn virt_to_phys(&self, vaddr: NonNull<u8>) -> Option<PhysAddr> {
        let off = (vaddr.as_ptr() as usize).checked_sub(self.0.host as usize)?;
        (off < MEM).then_some(BASE + off as u64)
    }
}

fn guest() -> GHal {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(BASE), MEM)]).unwrap();
    let host = mem.get_host_address(GuestAddress(BASE)).unwrap();
    GHal(Arc::new(Guest { mem, host, used: Mutex::new(vec![false; MEM / PAGE_SIZE]) }))
}

/// A counter threads can wait on (kick doorbell, interrupt line).
#[derive(Default)]
struct Signal {
    count: Mutex<u64>,
    cv: Condvar,
}
impl Signal {
    fn raise(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }
    fn get(&self) -> u64 {
        *self.count.lock().unwrap()
    }
    fn wait_change(&self, seen: u64) -> bool {
        let g = self.count.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, TIMEOUT, |c| *c == seen).unwrap();
        *g != seen
    }
}

#[derive(Default)]
struct Dev {
    kick: Signal,
    irq: Signal,
    setup: Mutex<Option<(u16, u64, u64, u64)>>,
    stop: AtomicBool,
}

struct TestTransport {
    dev: Arc<Dev>,
    status: u8,
}

// SAFETY (test): reset is used before the device thread starts and after
// it stopped; the id is the device's address.
unsafe impl Transport for TestTransport {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(Arc::as_ptr(&self.dev) as u64)
    }
    fn read_device_features(&mut self) -> u64 {
        (Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX).bits()
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, _q: u16) -> u16 {
        32768
    }
    fn queue_used(&mut self, _q: u16) -> bool {
        self.dev.setup.lock().unwrap().is_some()
    }
    unsafe fn queue_set(&mut self, _q: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        *self.dev.setup.lock().unwrap() = Some((size, d, a, u));
    }
    fn queue_unset(&mut self, _q: u16) {
        *self.dev.setup.lock().unwrap() = None;
    }
    fn notify(&mut self, _q: u16) {
        self.dev.kick.raise();
    }
    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.status)
    }
    fn set_status(&mut self, s: DeviceStatus) {
        self.status = s.bits();
    }
    fn read_config(&mut self, _o: usize, _b: &mut [u8]) -> vireo_virtio::Result {
        Err(Error::ConfigOutOfRange)
    }
    fn write_config(&mut self, _o: usize, _d: &[u8]) -> vireo_virtio::Result {
        Err(Error::ConfigOutOfRange)
    }
    fn config_generation(&mut self) -> u32 {
        0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::QUEUE
    }
}

/// The byte the device writes at position `pos` of the writable space.
fn pattern(seed: u32, sum: u32, pos: usize) -> u8 {
    let x = seed ^ sum.rotate_left(7) ^ (pos as u32).wrapping_mul(0x9e37_79b9);
    (x ^ (x >> 13) ^ (x >> 24)) as u8
}

fn checksum(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes.fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The device: pops chains, reads the readable part (header: want_len u32,
/// seed u32), writes `pattern` into the first `want_len` writable bytes and
/// returns `want_len`. Suppresses kicks while busy, signals interrupts only
/// when `needs_notification` says so.
fn device(dev: Arc<Dev>, hal: GHal, event_idx: bool, jitter: bool) -> u64 {
    let (size, d, a, u) = dev.setup.lock().unwrap().expect("queue set up");
    let mem = &hal.0.mem;
    let mut q = Queue::new(size).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(d as u32), Some((d >> 32) as u32));
    q.set_avail_ring_address(Some(a as u32), Some((a >> 32) as u32));
    q.set_used_ring_address(Some(u as u32), Some((u >> 32) as u32));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    assert!(q.is_valid(mem), "device rejects the ring layout");
    let mut handled = 0u64;
    let mut rng = Rng(0xdead_beef ^ u64::from(size));
    loop {
        let kicks = dev.kick.get();
        q.disable_notification(mem).unwrap();
        loop {
            while let Some(chain) = q.pop_descriptor_chain(mem) {
                let head = chain.head_index();
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
                if jitter && rng.next().is_multiple_of(8) {
                    thread::yield_now();
                }
                q.add_used(mem, head, want).unwrap();
                handled += 1;
                if q.needs_notification(mem).unwrap() {
                    dev.irq.raise();
                }
            }
            // Re-enable, then recheck (virtio-queue's enable has the mb).
            if !q.enable_notification(mem).unwrap() {
                break;
            }
            q.disable_notification(mem).unwrap();
        }
        if dev.stop.load(Ordering::SeqCst) {
            return handled;
        }
        assert!(dev.kick.wait_change(kicks), "device waited {TIMEOUT:?}: lost kick");
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

#[derive(Clone, Copy)]
struct Cfg {
    size: u16,
    indirect: bool,
    event_idx: bool,
    total: u64,
    max_batch: usize,
    max_segs: usize,
    max_len: usize,
    seed: u64,
}

type Chain = DmaChain<GHal, 8>;

struct Expect {
    seed: u32,
    sum: u32,
    want: u32,
}

fn run(cfg: Cfg) {
    let hal = guest();
    let dev = Arc::new(Dev::default());
    let mut t = TestTransport { dev: dev.clone(), status: 0 };
    let mut wanted = Features::empty();
    if cfg.indirect {
        wanted |= Features::INDIRECT_DESC;
    }
    if cfg.event_idx {
        wanted |= Features::EVENT_IDX;
    }
    let features = negotiate_features(&mut t, wanted).unwrap();
    assert_eq!(features, wanted | Features::VERSION_1);
    let qc = QueueConfig {
        index: 0,
        size: cfg.size,
        features,
        indirect_max: cfg.size.min(8),
        used_len: UsedLenPolicy::Strict,
    };
    let mut q: SplitQueue<GHal, Chain> = SplitQueue::new(&hal, &mut t, qc).unwrap();
    let s = t.status();
    t.set_status(s | DeviceStatus::DRIVER_OK);
    let dev_thread = {
        let (dev, hal) = (dev.clone(), hal.clone());
        let jitter = cfg.total < 10_000;
        thread::spawn(move || device(dev, hal, cfg.event_idx, jitter))
    };

    let pool_len = usize::from(cfg.size).clamp(2, 600);
    let mut pool: Vec<Chain> =
        (0..pool_len).map(|_| DmaChain::new(Dma::new(hal.clone(), 2).unwrap())).collect();
    let mut rng = Rng(cfg.seed);
    let mut expect: HashMap<u16, Expect> = HashMap::new();
    let (mut issued, mut done) = (0u64, 0u64);
    let max_direct = usize::from(cfg.size).min(8);
    while done < cfg.total {
        let batch = rng.range(1, cfg.max_batch);
        for _ in 0..batch {
            if issued == cfg.total {
                break;
            }
            let Some(mut chain) = pool.pop() else { break };
            let nseg = rng.range(1, cfg.max_segs.min(max_direct));
            let nread = rng.range(1, nseg);
            let mut off = 0;
            let mut segs = Vec::new();
            for i in 0..nseg {
                let lo = if i == 0 { 8 } else { 1 };
                let len = rng.range(lo, cfg.max_len.max(lo));
                off += rng.range(0, 64);
                segs.push((off, len));
                off += len;
            }
            assert!(off <= 2 * PAGE_SIZE);
            chain.set_segments(&segs[..nread], &segs[nread..]).unwrap();
            let wtotal: usize = segs[nread..].iter().map(|s| s.1).sum();
            let want = rng.range(0, wtotal) as u32;
            let seed = rng.next() as u32;
            let mut first = true;
            for i in 0..nseg {
                let b = chain.bytes_mut(i);
                if i < nread {
                    b.iter_mut().for_each(|x| *x = rng.next() as u8);
                    if first {
                        b[0..4].copy_from_slice(&want.to_le_bytes());
                        b[4..8].copy_from_slice(&seed.to_le_bytes());
                        first = false;
                    }
                } else {
                    b.fill(0xee);
                }
            }
            let sum = checksum((0..nread).flat_map(|i| chain.bytes(i).to_vec()));
            match q.add(chain) {
                Ok(tok) => {
                    assert!(expect.insert(tok.index(), Expect { seed, sum, want }).is_none());
                    issued += 1;
                }
                Err(r) => {
                    assert_eq!(r.error, Error::QueueFull);
                    pool.push(r.buffers);
                    break;
                }
            }
        }
        q.kick(&mut t).unwrap();
        let mut got = 0;
        loop {
            while let Some(u) = q.pop_used().unwrap() {
                let e = expect.remove(&u.token.index()).expect("token in flight");
                assert_eq!(u.written_len, e.want, "written length");
                let chain = u.buffers;
                let nread = vireo_virtio::DmaBuffers::readable_count(&chain);
                let n = vireo_virtio::DmaBuffers::segment_count(&chain);
                let mut pos = 0usize;
                for i in nread..n {
                    for &b in chain.bytes(i) {
                        let want =
                            if pos < e.want as usize { pattern(e.seed, e.sum, pos) } else { 0xee };
                        assert_eq!(b, want, "byte {pos} of writable space");
                        pos += 1;
                    }
                }
                pool.push(chain);
                done += 1;
                got += 1;
            }
            if expect.is_empty() || (got > 0 && rng.next().is_multiple_of(2) && !pool.is_empty()) {
                break;
            }
            if rng.next().is_multiple_of(4) {
                thread::yield_now();
                continue;
            }
            // Sleep until interrupted: re-enable, recheck, wait.
            let seen = dev.irq.get();
            if !q.enable_interrupts().unwrap() {
                assert!(dev.irq.wait_change(seen), "driver waited {TIMEOUT:?}: lost interrupt");
            }
            q.disable_interrupts().unwrap();
        }
    }
    dev.stop.store(true, Ordering::SeqCst);
    dev.kick.raise();
    let handled = dev_thread.join().expect("device thread");
    assert_eq!(handled, cfg.total);
    let st = q.stats();
    assert_eq!(st.added, cfg.total);
    assert_eq!(st.completions, cfg.total);
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.num_free(), cfg.size);
    // Tear down with proof (the device thread has stopped), so the rings
    // are freed rather than leaked.
    let proof = t.reset().unwrap();
    assert_eq!(q.reclaim(&proof, |_, _| panic!("nothing was in flight")), Ok(0));
}

fn cfg(size: u16, indirect: bool, event_idx: bool) -> Cfg {
    Cfg {
        size,
        indirect,
        event_idx,
        total: 3000,
        max_batch: 16,
        max_segs: 8,
        max_len: 900,
        seed: 0x1234_5678
            ^ u64::from(size)
            ^ ((indirect as u64) << 40)
            ^ ((event_idx as u64) << 41),
    }
}

#[test]
fn direct_event_idx() {
    run(cfg(256, false, true));
}

#[test]
fn direct_flags() {
    run(cfg(64, false, false));
}

#[test]
fn indirect_event_idx() {
    run(cfg(16, true, true));
}

#[test]
fn indirect_flags() {
    run(cfg(8, true, false));
}

#[test]
fn tiny_queues() {
    for size in [1, 2, 4] {
        for event_idx in [false, true] {
            run(Cfg { total: 800, ..cfg(size, size == 4, event_idx) });
        }
    }
}

#[test]
fn wraps_past_65535() {
    for event_idx in [true, false] {
        run(Cfg {
            total: 70_000,
            max_batch: 8,
            max_segs: 3,
            max_len: 16,
            ..cfg(8, false, event_idx)
        });
    }
}

#[test]
fn max_size_32768() {
    run(Cfg { total: 4000, max_batch: 512, max_len: 64, ..cfg(32768, true, true) });
}
