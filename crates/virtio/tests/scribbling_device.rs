//! The shadow-state claim, tested: a device that overwrites the descriptor
//! table, the whole available ring and every indirect table with garbage
//! while requests are in flight (after reading them, as it may) changes
//! nothing the driver reports — not the results, not which buffers come
//! back, not the counters — because the driver never reads those areas
//! back. The device is rust-vmm's `virtio-queue`, run synchronously on each
//! notification.

mod common;

use common::{GHal, Q, Rng, Traffic, guest};
use vireo_virtio::{
    DeviceId, DeviceStatus, Error, Features, InterruptStatus, PhysAddr, QueueConfig, SplitQueue,
    Transport, UsedLenPolicy,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

struct Scribbler {
    hal: GHal,
    queue: Option<(Queue, u64, u64)>,
    rng: Rng,
    /// Indirect tables seen: (address, bytes).
    tables: Vec<(u64, u32)>,
    scribbled: u64,
}

impl Scribbler {
    fn garbage(&mut self, addr: u64, len: usize) {
        let bytes: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
        self.hal.0.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        self.scribbled += 1;
    }

    /// Handles everything available, scribbling between taking the chains
    /// and completing them.
    fn process(&mut self) {
        let Some((mut q, desc, avail)) = self.queue.take() else { return };
        let hal = self.hal.clone();
        let mem = &hal.0.mem;
        let size = q.size();
        let mut taken = Vec::new();
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // Remember the indirect table before the garbage hides it.
            let mut d = [0u8; 16];
            mem.read_slice(&mut d, GuestAddress(desc + u64::from(head) * 16)).unwrap();
            let (addr, len) = (u64::from_le_bytes(d[0..8].try_into().unwrap()), d[8..12].to_vec());
            if u16::from_le_bytes([d[12], d[13]]) & 4 != 0 {
                self.tables.push((addr, u32::from_le_bytes(len.try_into().unwrap())));
            }
            taken.push((head, common::answer_chain(mem, chain)));
        }
        // Everything the driver wrote for the device, now garbage:
        // descriptors (free ones too), the available ring with its flags,
        // idx, entries and used_event, and every indirect table.
        self.garbage(desc, usize::from(size) * 16);
        self.garbage(avail, 4 + 2 * usize::from(size) + 2);
        for (addr, len) in std::mem::take(&mut self.tables) {
            self.garbage(addr, len as usize);
        }
        for (head, len) in taken {
            q.add_used(mem, head, len).unwrap();
        }
        // EVENT_IDX: ask to be kicked for the next entry.
        q.enable_notification(mem).unwrap();
        self.queue = Some((q, desc, avail));
    }
}

struct ScribbleTransport(Scribbler);

// SAFETY (test): the device runs only inside `notify`, synchronously;
// `reset` drops it.
unsafe impl Transport for ScribbleTransport {
    fn device_id(&self) -> DeviceId {
        DeviceId::new(self as *const Self as u64)
    }
    fn read_device_features(&mut self) -> u64 {
        (Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX).bits()
    }
    fn write_driver_features(&mut self, _f: u64) {}
    fn max_queue_size(&mut self, _q: u16) -> u16 {
        256
    }
    fn queue_used(&mut self, _q: u16) -> bool {
        self.0.queue.is_some()
    }
    unsafe fn queue_set(&mut self, _q: u16, size: u16, d: PhysAddr, a: PhysAddr, u: PhysAddr) {
        let mut q = Queue::new(size).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(d as u32), Some((d >> 32) as u32));
        q.set_avail_ring_address(Some(a as u32), Some((a >> 32) as u32));
        q.set_used_ring_address(Some(u as u32), Some((u >> 32) as u32));
        q.set_event_idx(true);
        q.set_ready(true);
        self.0.queue = Some((q, d, a));
    }
    fn queue_unset(&mut self, _q: u16) {}
    fn notify(&mut self, _q: u16) {
        self.0.process();
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::empty()
    }
    fn set_status(&mut self, s: DeviceStatus) {
        if s.is_empty() {
            self.0.queue = None;
        }
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
}

fn scribbled_run(indirect: bool) {
    let hal = guest();
    let mut t = Box::new(ScribbleTransport(Scribbler {
        hal: hal.clone(),
        queue: None,
        rng: Rng(0x5c21_bb1e),
        tables: Vec::new(),
        scribbled: 0,
    }));
    let mut features = Features::VERSION_1 | Features::EVENT_IDX;
    if indirect {
        features |= Features::INDIRECT_DESC;
    }
    let used_len = UsedLenPolicy::Strict;
    let config = QueueConfig { index: 0, size: 32, features, indirect_max: 8, used_len };
    let mut q: Q = SplitQueue::new(&hal, &mut *t, config).unwrap();
    let mut traffic = Traffic::new(&hal, 40, 0xfeed, 8, 600);
    let rounds = 400u64;
    let mut issued = 0;
    for _ in 0..rounds {
        let n = traffic.rng().range(1, 12);
        issued += traffic.add(&mut q, n) as u64;
        q.kick(&mut *t).unwrap();
        // Results, ownership: every answer checked and matched to its token.
        traffic.drain(&mut q);
        // Counters: what the driver believes is exactly what is in flight.
        assert_eq!(usize::from(q.in_flight()), traffic.in_flight());
        assert!(!q.is_broken());
    }
    assert!(t.0.scribbled > rounds, "the device did not scribble");
    assert_eq!(traffic.in_flight(), 0);
    let s = q.stats();
    assert_eq!((s.added, s.completions, traffic.completed), (issued, issued, issued));
    assert_eq!((q.num_free(), q.in_flight()), (32, 0));
    let proof = t.reset().unwrap();
    assert_eq!(q.reclaim(&proof, |_, _| ()), Ok(0));
}

#[test]
fn scribbled_descriptors_and_avail_ring_change_nothing() {
    scribbled_run(false);
}

#[test]
fn scribbled_indirect_tables_change_nothing() {
    scribbled_run(true);
}
