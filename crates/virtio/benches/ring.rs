//! Round trips per second of a 3-segment request (16-byte header readable,
//! 512-byte data + 1-byte status writable, like a block read) through
//! vireo's split ring and through virtio-drivers 0.13's `VirtQueue`, both
//! against the same in-thread device model over the same kind of memory.
//!
//! Run: `cargo bench -p vireo-virtio --bench ring`
//!
//! Each case alternates nine vireo and virtio-drivers runs; `vireo=` and
//! `virtio_drivers=` are each side's median rate, `ratio=` the median of the
//! nine paired ratios (which shrugs off the host's speed drifting mid-run)
//! and `ratio_lo=`/`ratio_hi=` the smallest and largest of them.
//!
//! The device model is deliberately cheap (it writes 8 data bytes and the
//! status byte) so the numbers measure the driver side of the ring: add,
//! notify decision, completion. Each round trip is add → notify decision →
//! (device runs on notify, like a trapping MMIO write) → pop.

use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaChain, Features, Hal, InterruptStatus, PAGE_SIZE, PhysAddr,
    QueueConfig, SplitQueue, Transport, UsedLenPolicy,
};

const SIZE: u16 = 256;

/// Kicks virtio-drivers decided against although the device needed one.
static VD_LOST_KICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// ---------------------------------------------------------------- memory

fn alloc_pages(pages: usize) -> (u64, NonNull<u8>) {
    let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: non-zero size.
    let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    (p.as_ptr() as u64, p)
}

fn free_pages(vaddr: NonNull<u8>, pages: usize) {
    let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: allocated by `alloc_pages` with the same layout.
    unsafe { std::alloc::dealloc(vaddr.as_ptr(), layout) }
}

/// Identity-mapped heap "DMA" for vireo.
#[derive(Clone, Copy)]
struct BenchHal;
// SAFETY: page-aligned zeroed heap pages, phys == virt for the device model.
unsafe impl Hal for BenchHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        Some(alloc_pages(pages))
    }
    unsafe fn dma_dealloc(&self, _p: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        free_pages(vaddr, pages)
    }
}

/// The same for virtio-drivers.
struct VdHal;
// SAFETY: as `BenchHal`; sharing is the identity (coherent, no bounce).
unsafe impl virtio_drivers::Hal for VdHal {
    fn dma_alloc(
        pages: usize,
        _d: virtio_drivers::BufferDirection,
    ) -> (virtio_drivers::PhysAddr, NonNull<u8>) {
        alloc_pages(pages)
    }
    unsafe fn dma_dealloc(_p: virtio_drivers::PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        free_pages(vaddr, pages);
        0
    }
    unsafe fn mmio_phys_to_virt(paddr: virtio_drivers::PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap()
    }
    unsafe fn share(
        buffer: NonNull<[u8]>,
        _d: virtio_drivers::BufferDirection,
    ) -> virtio_drivers::PhysAddr {
        buffer.as_ptr() as *mut u8 as u64
    }
    unsafe fn unshare(
        _p: virtio_drivers::PhysAddr,
        _b: NonNull<[u8]>,
        _d: virtio_drivers::BufferDirection,
    ) {
    }
}

// ---------------------------------------------------------- device model

/// A minimal split-ring device working on raw identity-mapped memory.
struct Device {
    desc: *const u8,
    avail: *mut u8,
    used: *mut u8,
    size: u16,
    event_idx: bool,
    next_avail: u16,
    used_idx: u16,
}

impl Device {
    fn new(size: u16, d: u64, a: u64, u: u64, event_idx: bool) -> Self {
        Self {
            desc: d as *const u8,
            avail: a as *mut u8,
            used: u as *mut u8,
            size,
            event_idx,
            next_avail: 0,
            used_idx: 0,
        }
    }

    /// Reads descriptor `i` of `table`: (addr, len, flags, next).
    unsafe fn desc(table: *const u8, i: u16) -> (u64, u32, u16, u16) {
        // SAFETY: caller guarantees `i` is inside the table.
        unsafe {
            let p = table.add(usize::from(i) * 16);
            (
                (p as *const u64).read_volatile(),
                (p.add(8) as *const u32).read_volatile(),
                (p.add(12) as *const u16).read_volatile(),
                (p.add(14) as *const u16).read_volatile(),
            )
        }
    }

    /// Handles everything available; called on notify.
    fn process(&mut self) {
        // SAFETY: the ring was set up by the driver with these addresses.
        unsafe {
            let mask = self.size - 1;
            let avail_idx = (self.avail.add(2) as *const u16).read_volatile();
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            while self.next_avail != avail_idx {
                let slot = usize::from(self.next_avail & mask);
                let head = (self.avail.add(4 + slot * 2) as *const u16).read_volatile();
                self.next_avail = self.next_avail.wrapping_add(1);
                let (mut table, mut i) = (self.desc, head);
                let (a, l, f, _) = Self::desc(table, i);
                if f & 4 != 0 {
                    table = a as *const u8;
                    i = 0;
                    let _ = l;
                }
                let mut hdr = 0u8;
                let mut written = 0u32;
                let mut writable = 0;
                loop {
                    let (addr, len, flags, next) = Self::desc(table, i);
                    if flags & 2 == 0 {
                        hdr ^= (addr as *const u8).read_volatile();
                    } else {
                        // data: write 8 bytes; status: write 1 byte.
                        // Fixed-size stores: a variable-length
                        // write_bytes would call memset for 8 bytes.
                        if writable == 0 && len >= 8 {
                            (addr as *mut u64)
                                .write_unaligned(u64::from(hdr) * 0x0101_0101_0101_0101);
                        } else {
                            (addr as *mut u8).write_volatile(hdr);
                        }
                        written += if writable == 0 { len } else { 1 };
                        writable += 1;
                    }
                    if flags & 1 == 0 {
                        break;
                    }
                    i = next;
                }
                let us = usize::from(self.used_idx & mask);
                let e = self.used.add(4 + us * 8);
                (e as *mut u32).write_volatile(u32::from(head));
                (e.add(4) as *mut u32).write_volatile(written);
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                self.used_idx = self.used_idx.wrapping_add(1);
                (self.used.add(2) as *mut u16).write_volatile(self.used_idx);
            }
            // Ask to be kicked for the next entry (EVENT_IDX avail_event).
            if self.event_idx {
                let off = 4 + usize::from(self.size) * 8;
                (self.used.add(off) as *mut u16).write_volatile(self.next_avail);
            }
        }
    }
}

// ------------------------------------------------------------ transports

#[derive(Default)]
struct Regs {
    queue: Option<(u16, u64, u64, u64)>,
    device: Option<Device>,
    status: u8,
}

struct VireoTransport(Regs);
// SAFETY: the device model runs only inside `notify`, so it is stopped
// whenever `reset` runs; each transport is its own device (its address).
unsafe impl Transport for VireoTransport {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(self as *const Self as u64)
    }
    fn read_device_features(&mut self) -> u64 {
        (Features::VERSION_1 | Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, _q: u16) -> u16 {
        SIZE
    }
    fn queue_used(&mut self, _q: u16) -> bool {
        false
    }
    unsafe fn queue_set(&mut self, _q: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        self.0.queue = Some((size, d, a, u));
    }
    fn queue_unset(&mut self, _q: u16) {}
    fn notify(&mut self, _q: u16) {
        self.0.device.as_mut().unwrap().process();
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.0.status)
    }
    fn set_status(&mut self, s: DeviceStatus) {
        self.0.status = s.bits();
    }
    fn read_config(&self, _o: usize, _b: &mut [u8]) -> vireo_virtio::Result {
        Ok(())
    }
    fn write_config(&mut self, _o: usize, _d: &[u8]) -> vireo_virtio::Result {
        Ok(())
    }
    fn config_generation(&self) -> u32 {
        0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
}

struct VdTransport(Regs);
impl virtio_drivers::transport::Transport for VdTransport {
    fn device_type(&self) -> virtio_drivers::transport::DeviceType {
        virtio_drivers::transport::DeviceType::Block
    }
    fn read_device_features(&mut self) -> u64 {
        (Features::VERSION_1 | Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, _q: u16) -> u32 {
        u32::from(SIZE)
    }
    fn notify(&mut self, _q: u16) {
        self.0.device.as_mut().unwrap().process();
    }
    fn get_status(&self) -> virtio_drivers::transport::DeviceStatus {
        virtio_drivers::transport::DeviceStatus::from_bits_retain(u32::from(self.0.status))
    }
    fn set_status(&mut self, s: virtio_drivers::transport::DeviceStatus) {
        self.0.status = s.bits() as u8;
    }
    fn set_guest_page_size(&mut self, _s: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(&mut self, _q: u16, size: u32, d: u64, a: u64, u: u64) {
        self.0.queue = Some((size as u16, d, a, u));
    }
    fn queue_unset(&mut self, _q: u16) {}
    fn queue_used(&mut self, _q: u16) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> virtio_drivers::transport::InterruptStatus {
        virtio_drivers::transport::InterruptStatus::empty()
    }
    fn read_config_generation(&self) -> u32 {
        0
    }
    fn read_config_space<T: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &self,
        _o: usize,
    ) -> virtio_drivers::Result<T> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
    fn write_config_space<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        _o: usize,
        _v: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
}

// ------------------------------------------------------------- the runs

/// Round trips per second through vireo.
fn vireo(iters: u64, indirect: bool, batch: usize) -> f64 {
    let mut features = Features::VERSION_1 | Features::EVENT_IDX;
    if indirect {
        features |= Features::INDIRECT_DESC;
    }
    // Queue and transport live on the heap, like a driver's would, so
    // their addresses relative to the rings do not change with where ASLR
    // puts the stack (4 KiB aliasing made runs bimodal).
    let mut t = Box::new(VireoTransport(Regs::default()));
    let cfg = QueueConfig {
        index: 0,
        size: SIZE,
        features,
        indirect_max: 4,
        used_len: UsedLenPolicy::Strict,
    };
    // Requests are boxed once at setup so the queue moves an 8-byte
    // owner per request; nothing is allocated in the loop.
    let mut q: Box<SplitQueue<BenchHal, Box<DmaChain<BenchHal, 3>>>> =
        Box::new(SplitQueue::new(&BenchHal, &mut *t, cfg).unwrap());
    let (size, d, a, u) = t.0.queue.unwrap();
    t.0.device = Some(Device::new(size, d, a, u, true));
    q.disable_interrupts().unwrap(); // polling driver
    let mut chains: Vec<_> = (0..batch)
        .map(|_| {
            let mut c = DmaChain::new(Dma::new(BenchHal, 1).unwrap());
            c.set_segments(&[(0, 16)], &[(64, 512), (1024, 1)]).unwrap();
            Box::new(c)
        })
        .collect();
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        while let Some(c) = chains.pop() {
            q.add(c).map_err(|r| r.error).unwrap();
        }
        q.kick(&mut *t).unwrap();
        while chains.len() < batch {
            match q.pop_used().unwrap() {
                Some(used) => {
                    black_box(used.written_len);
                    chains.push(used.buffers);
                }
                None => std::hint::spin_loop(),
            }
        }
        done += batch as u64;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    // Device stopped (it only runs inside `notify`): free the rings.
    let proof = t.reset().unwrap();
    q.reclaim(&proof, |_, _| ()).unwrap();
    rate
}

/// vireo through the unsafe raw API with no owner (B = ()), for analysis.
fn vireo_raw(iters: u64) -> f64 {
    let features = Features::VERSION_1 | Features::EVENT_IDX;
    let mut t = VireoTransport(Regs::default());
    let used_len = UsedLenPolicy::Strict;
    let cfg = QueueConfig { index: 0, size: SIZE, features, indirect_max: 0, used_len };
    let mut q: SplitQueue<BenchHal, ()> = SplitQueue::new(&BenchHal, &mut t, cfg).unwrap();
    let (size, d, a, u) = t.0.queue.unwrap();
    t.0.device = Some(Device::new(size, d, a, u, true));
    q.disable_interrupts().unwrap();
    let dma = Dma::new(BenchHal, 1).unwrap();
    let p = dma.paddr();
    let r = [vireo_virtio::Segment { addr: p, len: 16 }];
    let w = [
        vireo_virtio::Segment { addr: p + 64, len: 512 },
        vireo_virtio::Segment { addr: p + 1024, len: 1 },
    ];
    let start = Instant::now();
    for _ in 0..iters {
        // SAFETY: `dma` outlives the queue's use of it (popped below).
        unsafe { q.add_raw(&r, &w, ()) }.map_err(|r| r.error).unwrap();
        q.kick(&mut t).unwrap();
        loop {
            if let Some(u) = q.pop_used().unwrap() {
                black_box(u.written_len);
                break;
            }
        }
    }
    iters as f64 / start.elapsed().as_secs_f64()
}

/// Round trips per second through virtio-drivers 0.13.
fn virtio_drivers_rt(iters: u64, indirect: bool, batch: usize) -> f64 {
    use virtio_drivers::queue::VirtQueue;
    let mut t = Box::new(VdTransport(Regs::default()));
    let mut q: Box<VirtQueue<VdHal, { SIZE as usize }>> =
        Box::new(VirtQueue::new(&mut *t, 0, indirect, true).unwrap());
    let (size, d, a, u) = t.0.queue.unwrap();
    t.0.device = Some(Device::new(size, d, a, u, true));
    q.set_dev_notify(false);
    let mut bufs: Vec<([u8; 16], [u8; 512], [u8; 1])> =
        (0..batch).map(|_| ([0; 16], [0; 512], [0; 1])).collect();
    let mut tokens = vec![0u16; batch];
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        for (i, (h, data, st)) in bufs.iter_mut().enumerate() {
            let inputs = [&h[..]];
            let mut outputs = [&mut data[..], &mut st[..]];
            // SAFETY: the buffers stay alive and untouched until popped below.
            tokens[i] = unsafe { q.add(&inputs, &mut outputs) }.unwrap();
        }
        if q.should_notify() {
            virtio_drivers::transport::Transport::notify(&mut *t, 0);
        } else if !q.can_pop() {
            // The device model always wants a kick for new entries (its
            // avail_event is its next_avail), so a "no" here is a lost
            // notification: virtio-drivers 0.13 compares `avail_idx >=
            // avail_event + 1` without wrapping, so once avail.idx wraps
            // past 65535 in the middle of a batch it stops kicking. Count
            // it and kick anyway so the benchmark can go on.
            VD_LOST_KICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            virtio_drivers::transport::Transport::notify(&mut *t, 0);
        }
        // virtio-drivers pops in order, by token.
        for (i, (h, data, st)) in bufs.iter_mut().enumerate() {
            while !q.can_pop() {
                std::hint::spin_loop();
            }
            let inputs = [&h[..]];
            let mut outputs = [&mut data[..], &mut st[..]];
            // SAFETY: same buffers as added with this token.
            let len = unsafe { q.pop_used(tokens[i], &inputs, &mut outputs) }.unwrap();
            black_box(len);
        }
        done += batch as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..5).map(|_| f()).fold(0.0, f64::max)
}

/// What [`paired`] measured: each side's median rate and the median,
/// smallest and largest of the per-pair ratios a/b.
struct Paired {
    a: f64,
    b: f64,
    ratio: f64,
    ratio_lo: f64,
    ratio_hi: f64,
}

/// Interleaved pairs per case.
const PAIRS: usize = 9;

/// Runs `a` and `b` in alternating pairs (this machine's speed drifts from
/// second to second) and returns both medians and the per-pair ratios'
/// median and range.
fn paired(mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> Paired {
    let (mut rates_a, mut rates_b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        let (ra, rb) = if pair % 2 == 0 {
            let ra = a();
            (ra, b())
        } else {
            let rb = b();
            (a(), rb)
        };
        rates_a.push(ra);
        rates_b.push(rb);
        ratios.push(ra / rb);
    }
    for v in [&mut rates_a, &mut rates_b, &mut ratios] {
        v.sort_by(f64::total_cmp);
    }
    Paired {
        a: rates_a[PAIRS / 2],
        b: rates_b[PAIRS / 2],
        ratio: ratios[PAIRS / 2],
        ratio_lo: ratios[0],
        ratio_hi: ratios[PAIRS - 1],
    }
}

fn main() {
    let iters: u64 =
        std::env::var("VIREO_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let only = std::env::var("VIREO_BENCH_ONLY").unwrap_or_default();
    if only == "raw" {
        println!("raw {:.0}", best(|| vireo_raw(iters)));
        return;
    }
    for (name, indirect, batch) in [
        ("ring_rt_per_s", false, 1),
        ("ring_rt_indirect_per_s", true, 1),
        ("ring_rt_batch8_per_s", false, 8),
    ] {
        if !only.is_empty() && only != name {
            continue;
        }
        let p =
            paired(|| vireo(iters, indirect, batch), || virtio_drivers_rt(iters, indirect, batch));
        let lost = VD_LOST_KICKS.swap(0, std::sync::atomic::Ordering::Relaxed);
        println!(
            "BENCH {name} vireo={:.0} virtio_drivers={:.0} ratio={:.2} ratio_lo={:.2} \
             ratio_hi={:.2} pairs={PAIRS} virtio_drivers_lost_kicks={lost}",
            p.a, p.b, p.ratio, p.ratio_lo, p.ratio_hi
        );
    }
}
