//! The crate's modern virtio-pci transport (VirtIO 1.2 §4.1) against a
//! fake function: a configuration space with the virtio capabilities and
//! BARs whose registers forward to the fake device's own `Transport`
//! calls. A queue driven through `PciTransport` only works if the
//! capability walk, the window checks and every register sequence are
//! right; a lying capability list must fail cleanly.

use std::sync::{Arc, Mutex};

use vireo_virtio::fake::{Echo, FakeHal, FakeTransport};
use vireo_virtio::transport::RegisterWindow;
use vireo_virtio::transport::pci::{PciError, PciFunction, PciTransport, cfg_type};
use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaChain, Error, Features, NO_VECTOR, QueueConfig, QueueNotifiers,
    SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};

const NOTIFY_BASE: usize = 0x1000;
const ISR_BASE: usize = 0x2000;

#[derive(Default)]
struct Latched {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: [u32; 2],
    queue_sel: u16,
    size: u16,
    addresses: [[u32; 2]; 3],
    config_vector: u16,
    /// Doorbell writes that did not match `queue * multiplier`.
    wrong_doorbells: u32,
}

struct Model {
    t: FakeTransport,
    l: Latched,
    multiplier: u32,
}

/// One mapped range of a BAR of the fake function.
#[derive(Clone)]
struct Window {
    model: Arc<Mutex<Model>>,
    bar: u8,
    base: usize,
    len: usize,
}

impl Window {
    fn read(&self, offset: usize, width: usize) -> u64 {
        if offset + width > self.len {
            return u64::MAX;
        }
        let mut m = self.model.lock().unwrap();
        let Model { t, l, .. } = &mut *m;
        let sel = l.queue_sel;
        let at = self.base + offset;
        if self.bar == 2 {
            let mut b = [0; 8];
            return t.read_config(at, &mut b[..width]).map_or(u64::MAX, |_| u64::from_le_bytes(b));
        }
        match at {
            0x04 => t.read_device_features() >> (32 * l.device_features_sel) & 0xffff_ffff,
            0x10 => u64::from(l.config_vector),
            0x12 => 2,
            0x14 => u64::from(t.status().bits()),
            0x15 => u64::from(t.config_generation() as u8),
            0x16 => u64::from(sel),
            0x18 => u64::from(t.max_queue_size(sel)),
            0x1a => u64::from(t.queue_vector(sel)),
            0x1c => u64::from(t.queue_used(sel)),
            0x1e => u64::from(sel), // queue_notify_off = the queue index
            0x3a => u64::from(!t.queue_reset_done(sel)),
            ISR_BASE => u64::from(t.ack_interrupt().bits()),
            _ => 0,
        }
    }

    fn write(&self, offset: usize, width: usize, v: u64) {
        if offset + width > self.len {
            return;
        }
        let mut m = self.model.lock().unwrap();
        let multiplier = m.multiplier;
        let Model { t, l, .. } = &mut *m;
        let sel = l.queue_sel;
        let at = self.base + offset;
        if self.bar == 2 {
            let _ = t.write_config(at, &v.to_le_bytes()[..width]);
            return;
        }
        match at {
            0x00 => l.device_features_sel = v as u32,
            0x08 => l.driver_features_sel = v as u32,
            0x0c => {
                l.driver_features[l.driver_features_sel as usize & 1] = v as u32;
                let [low, high] = l.driver_features;
                t.write_driver_features(u64::from(high) << 32 | u64::from(low));
            }
            0x10 => l.config_vector = t.set_config_vector(v as u16).map_or(NO_VECTOR, |_| v as u16),
            0x14 => t.set_status(DeviceStatus::from_bits_retain(v as u8)),
            0x16 => l.queue_sel = v as u16,
            0x18 => l.size = v as u16,
            0x1a => {
                let _ = t.set_queue_vector(sel, v as u16);
            }
            0x1c if v == 1 => {
                let a = l.addresses.map(|[low, high]| u64::from(high) << 32 | u64::from(low));
                // SAFETY (test): forwards what the transport under test
                // programmed; its caller (the ring) made the promises.
                unsafe { t.queue_set(sel, l.size, a[0], a[1], a[2]) };
            }
            0x20..0x38 => l.addresses[(at - 0x20) / 8][(at & 4) / 4] = v as u32,
            0x3a if v == 1 => t.start_queue_reset(sel),
            n if (NOTIFY_BASE..ISR_BASE).contains(&n) => {
                if (n - NOTIFY_BASE) as u64 != v * u64::from(multiplier) {
                    l.wrong_doorbells += 1;
                }
                t.notify(v as u16);
            }
            _ => {}
        }
    }
}

// SAFETY (test): accesses only the register model; out-of-range reads
// return all-ones and writes are dropped.
unsafe impl RegisterWindow for Window {
    fn len(&self) -> usize {
        self.len
    }
    fn read_u8(&self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }
    fn read_u16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.read(offset, 4) as u32
    }
    fn write_u8(&self, offset: usize, value: u8) {
        self.write(offset, 1, value.into());
    }
    fn write_u16(&self, offset: usize, value: u16) {
        self.write(offset, 2, value.into());
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.write(offset, 4, value.into());
    }
}

/// The function: a configuration space and two BARs (0: 16 KiB of
/// common/notify/ISR registers, 2: 4 KiB of device configuration).
struct Function {
    config: [u8; 256],
    model: Arc<Mutex<Model>>,
    mapped: Vec<(u8, u32, u32)>,
}

impl Function {
    /// Capabilities, in list order: a non-virtio one at 0x50 (shaped like
    /// a virtio ISR capability on a missing BAR, to be skipped), common at
    /// 0x40, notify at 0x60, ISR at 0x78, device at 0x88.
    fn new(t: FakeTransport, common_len: u32, multiplier: u32) -> Self {
        let mut config = [0u8; 256];
        config[0x06] = 1 << 4;
        config[0x34] = 0x50;
        let mut cap =
            |at: usize, next: u8, len: u8, kind: u8, bar: u8, offset: u32, length: u32| {
                config[at..at + 4].copy_from_slice(&[0x09, next, len, kind]);
                config[at + 4] = bar;
                config[at + 8..at + 12].copy_from_slice(&offset.to_le_bytes());
                config[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
            };
        cap(0x40, 0x60, 16, cfg_type::COMMON, 0, 0, common_len);
        cap(0x60, 0x78, 20, cfg_type::NOTIFY, 0, NOTIFY_BASE as u32, 0x100);
        cap(0x78, 0x88, 16, cfg_type::ISR, 0, ISR_BASE as u32, 4);
        cap(0x88, 0x00, 16, cfg_type::DEVICE, 2, 0, 0x100);
        cap(0x50, 0x40, 16, cfg_type::ISR, 5, 0, 4);
        config[0x50] = 0x11; // MSI-X: not a virtio capability
        config[0x70..0x74].copy_from_slice(&multiplier.to_le_bytes());
        let model = Arc::new(Mutex::new(Model { t, l: Latched::default(), multiplier }));
        Self { config, model, mapped: Vec::new() }
    }
}

impl PciFunction for Function {
    type Window = Window;
    fn config_u8(&self, offset: u8) -> u8 {
        self.config[usize::from(offset)]
    }
    fn config_u16(&self, offset: u8) -> u16 {
        let at = usize::from(offset);
        u16::from_le_bytes(self.config[at..at + 2].try_into().unwrap())
    }
    fn config_u32(&self, offset: u8) -> u32 {
        let at = usize::from(offset);
        u32::from_le_bytes(self.config[at..at + 4].try_into().unwrap())
    }
    fn map_bar(&mut self, bar: u8, offset: u32, length: u32) -> Option<Window> {
        let size = match bar {
            0 => 0x4000u64,
            2 => 0x1000,
            _ => return None,
        };
        (u64::from(offset) + u64::from(length) <= size).then(|| {
            self.mapped.push((bar, offset, length));
            let (base, len) = (offset as usize, length as usize);
            Window { model: self.model.clone(), bar, base, len }
        })
    }
}

fn function(common_len: u32, multiplier: u32) -> (FakeHal, FakeTransport, Function) {
    let hal = FakeHal::new();
    let t = FakeTransport::new(hal.memory(), Echo, &[32, 32]);
    let f = Function::new(t.clone(), common_len, multiplier);
    (hal, t, f)
}

#[test]
fn a_queue_runs_through_the_capabilities_and_registers() {
    let (hal, fake, mut f) = function(0x3c, 4);
    fake.set_config(&[7, 0, 9, 0, 1, 2, 3, 4]);
    fake.set_msix_entries(4);
    let mut t = PciTransport::new(&mut f, DeviceId::new(0x18)).unwrap();
    assert_eq!(f.mapped.len(), 4, "common, notify, ISR, device: the MSI-X capability skipped");
    assert_eq!(t.num_queues(), 2);
    let wanted = Features::EVENT_IDX | Features::RING_RESET;
    let features = negotiate_features(&mut t, wanted).unwrap();
    assert_eq!(features, wanted | Features::VERSION_1);
    assert_eq!(vireo_virtio::config::read_consistent(&t, |c| c.u32(4)).unwrap(), 0x0403_0201);
    t.set_config_vector(0).unwrap();
    t.set_queue_vector(1, 3).unwrap();
    assert_eq!(t.set_queue_vector(1, 9), Err(Error::VectorRefused), "beyond the MSI-X table");
    t.set_queue_vector(1, 3).unwrap();
    let used_len = UsedLenPolicy::Strict;
    let cfg = QueueConfig { index: 1, size: 32, features, indirect_max: 0, used_len };
    let mut q: SplitQueue<FakeHal, DmaChain<FakeHal, 2>> =
        SplitQueue::new(&hal, &mut t, cfg).unwrap();
    let a = q.ring_addresses();
    assert_eq!(fake.queue_addresses(1), Some((32, a.descriptors, a.driver_area, a.device_area)));
    t.set_status(t.status() | DeviceStatus::DRIVER_OK);
    let notifier = t.notifier(1).unwrap();
    for round in 0..40u8 {
        let mut c = DmaChain::new(Dma::new(hal.clone(), 1).unwrap());
        c.region_mut()[..2].fill(round);
        c.set_segments(&[(0, 2)], &[(64, 2)]).unwrap();
        q.add(c).map_err(|r| r.error).unwrap();
        if round % 2 == 0 {
            q.kick(&mut t).unwrap()
        } else {
            q.kick_with(&notifier).unwrap()
        };
        assert_eq!(q.pop_used().unwrap().expect("served").buffers.bytes(1), [round; 2]);
    }
    assert_eq!(f.model.lock().unwrap().l.wrong_doorbells, 0);
    let proof = q.reset_queue(&mut t).unwrap();
    q.reclaim(&proof, |_, _| {}).unwrap();
    assert_eq!(fake.queue_vector(1), NO_VECTOR, "a queue reset forgets the vector");
    q.restart(&mut t).unwrap();
    let proof = t.reset().unwrap();
    q.reclaim(&proof, |_, _| {}).unwrap();
    assert!(hal.memory().faults().is_empty());
}

#[test]
fn an_old_common_layout_has_no_queue_reset() {
    let (_, _, mut f) = function(0x38, 4);
    let mut t = PciTransport::new(&mut f, DeviceId::new(1)).unwrap();
    assert!(!t.has_queue_reset());
    let features = negotiate_features(&mut t, Features::RING_RESET).unwrap();
    assert!(!features.contains(Features::RING_RESET), "never negotiated without the register");
}

#[test]
fn a_doorbell_outside_the_notify_window_is_refused() {
    let (_, fake, mut f) = function(0x3c, 0x100); // queue 1 rings at 0x100: past the end
    let mut t = PciTransport::new(&mut f, DeviceId::new(1)).unwrap();
    assert!(t.notifier(0).is_ok());
    assert_eq!(t.notifier(1).err(), Some(Error::QueueUnavailable));
    t.notify(1); // dropped, not written somewhere else
    assert_eq!(fake.notifications(1), 0);
    assert_eq!(t.notifier(2).err(), Some(Error::QueueUnavailable), "no such queue");
}

#[test]
fn lying_capabilities_fail_cleanly() {
    let (_, _, good) = function(0x3c, 4);
    let model = good.model.clone();
    let with = |f: fn(&mut [u8; 256])| {
        let mut config = good.config;
        f(&mut config);
        let mut function = Function { config, model: model.clone(), mapped: Vec::new() };
        PciTransport::new(&mut function, DeviceId::new(1)).map(|_| ()).unwrap_err()
    };
    // The notify capability points back at the first: a loop, cut off
    // before the ISR capability is ever reached.
    assert_eq!(with(|c| c[0x61] = 0x40), PciError::MissingCapability(cfg_type::ISR));
    // A list pointing into the header, at bytes shaped like a virtio
    // capability: the header is never a capability.
    let into_header = |c: &mut [u8; 256]| {
        c[0x34] = 0x08;
        c[0x08..0x0d].copy_from_slice(&[0x09, 0, 16, cfg_type::COMMON, 7]);
    };
    assert_eq!(with(into_header), PciError::MissingCapability(cfg_type::COMMON));
    // No capability list at all.
    assert_eq!(with(|c| c[0x06] = 0), PciError::MissingCapability(cfg_type::COMMON));
    // The common window is too short to hold the queue registers.
    assert_eq!(with(|c| c[0x4c] = 0x20), PciError::BadCapability(cfg_type::COMMON));
    // The device window runs past the end of BAR 2.
    assert_eq!(with(|c| c[0x95] = 0x20), PciError::BadCapability(cfg_type::DEVICE));
    // A BAR that does not exist.
    assert_eq!(with(|c| c[0x7c] = 5), PciError::BadCapability(cfg_type::ISR));
    // A notify capability too short to carry its multiplier.
    assert_eq!(with(|c| c[0x62] = 16), PciError::BadCapability(cfg_type::NOTIFY));
}
