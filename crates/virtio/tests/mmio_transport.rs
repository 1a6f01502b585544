//! The crate's virtio-mmio transport (VirtIO 1.2 §4.2.2) against a fake
//! register file: each register access is translated into the fake
//! device's own `Transport` calls, so a queue driven through
//! `MmioTransport` only works if every register sequence is right (select,
//! the 64-bit address halves, QueueReady last, the ISR acknowledge...).

use std::sync::{Arc, Mutex};

use vireo_virtio::fake::{Echo, FakeHal, FakeTransport};
use vireo_virtio::transport::RegisterWindow;
use vireo_virtio::transport::mmio::{MMIO_MAGIC, MmioError, MmioTransport};
use vireo_virtio::{
    DeviceId, DeviceStatus, Dma, DmaChain, Features, InterruptStatus, QueueConfig, QueueNotifiers,
    SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};

#[derive(Default)]
struct Latched {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: [u32; 2],
    queue_sel: u16,
    num: u16,
    /// desc, driver, device: each `[low, high]`.
    addresses: [[u32; 2]; 3],
    isr: u32,
}

/// A virtio-mmio register block in front of a fake device.
#[derive(Clone)]
struct Registers {
    device: Arc<Mutex<(FakeTransport, Latched)>>,
    magic: u32,
    version: u32,
    device_id: u32,
    /// Every write, for the tests that check sequences.
    writes: Arc<Mutex<Vec<(usize, u32)>>>,
}

impl Registers {
    fn new(t: FakeTransport) -> Self {
        Self {
            device: Arc::new(Mutex::new((t, Latched::default()))),
            magic: MMIO_MAGIC,
            version: 2,
            device_id: 2,
            writes: Arc::default(),
        }
    }
}

// SAFETY (test): accesses only the register model; out-of-range reads
// return all-ones.
unsafe impl RegisterWindow for Registers {
    fn len(&self) -> usize {
        0x200
    }
    fn read_u8(&self, offset: usize) -> u8 {
        let mut b = [0];
        let d = self.device.lock().unwrap();
        let ok = offset.checked_sub(0x100).is_some_and(|o| d.0.read_config(o, &mut b).is_ok());
        if ok { b[0] } else { u8::MAX }
    }
    fn read_u16(&self, offset: usize) -> u16 {
        let mut b = [0; 2];
        let d = self.device.lock().unwrap();
        let ok = offset.checked_sub(0x100).is_some_and(|o| d.0.read_config(o, &mut b).is_ok());
        if ok { u16::from_le_bytes(b) } else { u16::MAX }
    }
    fn read_u32(&self, offset: usize) -> u32 {
        let mut d = self.device.lock().unwrap();
        let (t, l) = &mut *d;
        let sel = l.queue_sel;
        match offset {
            0x000 => self.magic,
            0x004 => self.version,
            0x008 => self.device_id,
            0x00c => 0x554d_4551,
            0x010 => (t.read_device_features() >> (32 * l.device_features_sel)) as u32,
            0x034 => u32::from(t.max_queue_size(sel)),
            0x044 => u32::from(t.queue_used(sel)),
            0x060 => {
                l.isr |= t.ack_interrupt().bits();
                l.isr
            }
            0x070 => u32::from(t.status().bits()),
            0x0c0 => u32::from(!t.queue_reset_done(sel)),
            0x0fc => t.config_generation(),
            o if o >= 0x100 => {
                let mut b = [0; 4];
                t.read_config(o - 0x100, &mut b).map_or(u32::MAX, |_| u32::from_le_bytes(b))
            }
            _ => u32::MAX,
        }
    }
    fn write_u8(&self, _offset: usize, _value: u8) {}
    fn write_u16(&self, _offset: usize, _value: u16) {}
    fn write_u32(&self, offset: usize, v: u32) {
        self.writes.lock().unwrap().push((offset, v));
        let mut d = self.device.lock().unwrap();
        let (t, l) = &mut *d;
        let sel = l.queue_sel;
        match offset {
            0x014 => l.device_features_sel = v,
            0x020 => {
                l.driver_features[l.driver_features_sel as usize & 1] = v;
                let [low, high] = l.driver_features;
                t.write_driver_features(u64::from(high) << 32 | u64::from(low));
            }
            0x024 => l.driver_features_sel = v,
            0x030 => l.queue_sel = v as u16,
            0x038 => l.num = v as u16,
            0x044 if v == 1 => {
                let a = l.addresses.map(|[low, high]| u64::from(high) << 32 | u64::from(low));
                // SAFETY (test): forwards what the transport under test
                // programmed; its caller (the ring) made the promises.
                unsafe { t.queue_set(sel, l.num, a[0], a[1], a[2]) };
            }
            0x044 => t.queue_unset(sel),
            0x050 => t.notify(v as u16),
            0x064 => l.isr &= !v,
            0x070 => t.set_status(DeviceStatus::from_bits_retain(v as u8)),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                let (which, half) = ((offset - 0x80) / 0x10, (offset & 4) / 4);
                l.addresses[which][half] = v;
            }
            0x0c0 if v == 1 => t.start_queue_reset(sel),
            _ => {}
        }
    }
}

fn mmio() -> (FakeHal, FakeTransport, Registers) {
    let hal = FakeHal::new();
    let t = FakeTransport::new(hal.memory(), Echo, &[16, 16]);
    let r = Registers::new(t.clone());
    (hal, t, r)
}

#[test]
fn only_a_virtio_mmio_v2_device_is_taken() {
    let (_, _, good) = mmio();
    let id = DeviceId::new(0x1000);
    let with = |f: fn(&mut Registers)| {
        let mut r = good.clone();
        f(&mut r);
        MmioTransport::new(r, id).map(|_| ()).unwrap_err()
    };
    assert_eq!(with(|r| r.magic = 0x1234), MmioError::BadMagic(0x1234));
    assert_eq!(with(|r| r.version = 1), MmioError::UnsupportedVersion(1));
    assert_eq!(with(|r| r.device_id = 0), MmioError::NoDevice);
    let t = MmioTransport::new(good, id).unwrap();
    assert_eq!((t.device_type(), t.device_id()), (2, id));
}

/// The whole driver path through the registers: negotiation, a queue
/// (64-bit addresses in halves, QueueReady last), kicks by transport and
/// by notifier, the interrupt acknowledged, a queue reset, a device reset.
#[test]
fn a_queue_runs_through_the_registers() {
    let (hal, fake, regs) = mmio();
    fake.set_config(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let mut t = MmioTransport::new(regs.clone(), DeviceId::new(0x1000)).unwrap();
    let wanted = Features::EVENT_IDX | Features::INDIRECT_DESC | Features::RING_RESET;
    let features = negotiate_features(&mut t, wanted).unwrap();
    assert_eq!(features, wanted | Features::VERSION_1);
    let config = vireo_virtio::config::read_consistent(&t, |f| f.u64(0)).unwrap();
    assert_eq!(config, 0x0123_4567_89ab_cdef);
    let used_len = UsedLenPolicy::Strict;
    let cfg = QueueConfig { index: 1, size: 16, features, indirect_max: 4, used_len };
    let mut q: SplitQueue<FakeHal, DmaChain<FakeHal, 3>> =
        SplitQueue::new(&hal, &mut t, cfg).unwrap();
    let a = q.ring_addresses();
    assert_eq!(fake.queue_addresses(1), Some((16, a.descriptors, a.driver_area, a.device_area)));
    let writes = regs.writes.lock().unwrap().clone();
    let ready = writes.iter().position(|&w| w == (0x044, 1)).unwrap();
    assert!(writes[..ready].contains(&(0x038, 16)), "QueueNum before QueueReady");
    t.set_status(t.status() | DeviceStatus::DRIVER_OK);
    let notifier = t.notifier(1).unwrap();
    for round in 0..40u8 {
        let mut c = DmaChain::new(Dma::new(hal.clone(), 1).unwrap());
        c.region_mut()[..3].fill(round);
        c.set_segments(&[(0, 1), (1, 2)], &[(64, 3)]).unwrap();
        q.add(c).map_err(|r| r.error).unwrap();
        if round % 2 == 0 {
            q.kick(&mut t).unwrap()
        } else {
            q.kick_with(&notifier).unwrap()
        };
        let used = q.pop_used().unwrap().expect("served on the notify");
        assert_eq!(used.buffers.bytes(2), [round; 3]);
    }
    assert!(t.ack_interrupt().contains(InterruptStatus::QUEUE));
    assert_eq!(t.ack_interrupt(), InterruptStatus::empty(), "acknowledged");
    let proof = q.reset_queue(&mut t).unwrap();
    q.reclaim(&proof, |_, _| {}).unwrap();
    q.restart(&mut t).unwrap();
    let proof = t.reset().unwrap();
    q.reclaim(&proof, |_, _| {}).unwrap();
    assert!(hal.memory().faults().is_empty());
}

#[test]
fn config_reads_stay_inside_the_device_area() {
    let (_, fake, regs) = mmio();
    fake.set_config(&[1, 2, 3, 4]);
    let t = MmioTransport::new(regs, DeviceId::new(1)).unwrap();
    let mut two = [0; 2];
    t.read_config(2, &mut two).unwrap();
    assert_eq!(two, [3, 4]);
    assert!(t.read_config(0x100, &mut two).is_err(), "past the register block");
    assert!(t.read_config(usize::MAX, &mut two).is_err());
}
