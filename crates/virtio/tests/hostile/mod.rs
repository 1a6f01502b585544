//! A hostile-device harness shared by the proptest suite
//! (`tests/hostile_device.rs`) and the `cargo fuzz` target
//! (`fuzz/fuzz_targets/hostile_device.rs`, which includes this file by
//! path); it uses only the crate's public API.
//!
//! Memory is ordinary heap memory ([`FakeHal`]) with physical address =
//! virtual address, so the "device" here pokes the rings directly. Besides returning
//! requests honestly or with lies, it scribbles garbage over the descriptor
//! table, the available ring and indirect tables (the driver must not care:
//! it never reads them back), toggles its suppression state, and resets
//! the queue (RING_RESET) mid-session. The harness panics only on a
//! violated invariant of the queue:
//! - every request `pop_used` returns was in flight, and its length fits;
//! - an error is only ever reported after the device actually lied;
//! - after a device error every call fails fast with `Error::Broken`;
//! - a queue reset hands back exactly the requests still in flight.

#![allow(dead_code)]

use vireo_virtio::fake::{Echo, FakeHal, FakeTransport};
use vireo_virtio::queue::split::layout::{RingLayout, VIRTQ_DESC_F_INDIRECT};
use vireo_virtio::{
    Dma, DmaChain, Error, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy, Virtqueue,
};

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
}

/// The device half: writes into the used ring like a (mis)behaving device,
/// and scribbles over the driver's areas.
struct EvilDevice {
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    size: u16,
    used_idx: u16,
    /// `(token, writable)` the device may still legitimately return.
    returnable: Vec<(u16, u32)>,
    /// Indirect tables seen in published descriptors: `(address, bytes)`.
    tables: Vec<(u64, u32)>,
    lied: bool,
}

impl EvilDevice {
    fn write_entry(&mut self, id: u32, len: u32) {
        let slot = usize::from(self.used_idx & (self.size - 1));
        // SAFETY: `used` is the device area of a live ring of `size`
        // entries; slot < size, so the 8-byte entry is in bounds and aligned.
        unsafe {
            let e = self.used.add(4 + slot * 8);
            core::ptr::write_volatile(e.cast::<u32>(), id.to_le());
            core::ptr::write_volatile(e.add(4).cast::<u32>(), len.to_le());
        }
    }
    fn set_idx(&mut self, idx: u16) {
        self.used_idx = idx;
        // SAFETY: used.idx is at offset 2 of the live, 4-aligned device area.
        unsafe { core::ptr::write_volatile(self.used.add(2).cast::<u16>(), idx.to_le()) }
    }
    fn set_word(&mut self, offset: usize, v: u16) {
        // SAFETY: callers pass offset 0 (flags) or the avail_event offset,
        // both inside the device area and 2-aligned.
        unsafe { core::ptr::write_volatile(self.used.add(offset).cast::<u16>(), v.to_le()) }
    }
    /// Reads the head descriptor the driver just published, as a device
    /// would, and remembers its indirect table.
    fn saw_head(&mut self, head: u16) {
        let d = self.desc_ptr(head);
        // SAFETY: descriptor `head` (< size) of the live, 16-aligned table.
        let (addr, len, flags) = unsafe {
            (
                core::ptr::read_volatile(d.cast::<u64>()),
                core::ptr::read_volatile(d.add(8).cast::<u32>()),
                core::ptr::read_volatile(d.add(12).cast::<u16>()),
            )
        };
        if flags & VIRTQ_DESC_F_INDIRECT != 0 && !self.tables.iter().any(|t| t.0 == addr) {
            self.tables.push((addr, len));
        }
    }
    fn desc_ptr(&self, i: u16) -> *mut u8 {
        self.desc.wrapping_add(usize::from(i & (self.size - 1)) * 16)
    }
    /// Overwrites 8 bytes of the driver's memory with garbage: a
    /// descriptor, an available ring slot (or its header/used_event), or an
    /// indirect table entry.
    fn scribble(&mut self, what: u8, at: u16, garbage: u64) {
        let layout = RingLayout::new(self.size);
        let p: *mut u8 = match what % 3 {
            0 => self.desc_ptr(at).wrapping_add(usize::from(at >> 15) * 8),
            1 => {
                // Header, ring entries and used_event: 4 + 2 * size + 2 bytes,
                // scribbled 2 bytes at a time.
                let words = 2 + usize::from(self.size) + 1;
                let off = usize::from(at) % words * 2;
                debug_assert!(off + 2 <= layout.used - layout.avail);
                // SAFETY: inside the driver area, 2-aligned.
                unsafe {
                    core::ptr::write_volatile(self.avail.add(off).cast::<u16>(), garbage as u16)
                };
                return;
            }
            _ => {
                let Some(&(addr, len)) =
                    self.tables.get(usize::from(at) % self.tables.len().max(1))
                else {
                    return;
                };
                let entry = (u32::from(at >> 4) % (len / 16).max(1)) as usize;
                (addr as *mut u8).wrapping_add(entry * 16 + usize::from(at & 8))
            }
        };
        // SAFETY: an 8-aligned word inside a descriptor of the live table
        // or of an indirect table of the live pool (both outlive the queue's
        // use here).
        unsafe { core::ptr::write_volatile(p.cast::<u64>(), garbage) };
    }
}

/// What one [`hostile_device`] session saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Requests accepted.
    pub added: u32,
    /// Requests popped.
    pub popped: u32,
    /// Requests handed back by queue resets.
    pub reclaimed: u32,
    /// Whether the queue ended broken.
    pub broken: bool,
    /// The protocol violation that broke it (the last one, after resets).
    pub error: Option<Error>,
}

/// Runs one hostile-device session driven by `data`. Panics iff the queue
/// violates one of the invariants in the module docs.
pub fn hostile_device(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let mut bytes = Bytes(data);
    let size = 1u16 << (bytes.u8() % 6); // 1..=32
    let flags = bytes.u8();
    let mut features = Features::VERSION_1 | Features::RING_RESET;
    if flags & 1 != 0 {
        features |= Features::EVENT_IDX;
    }
    if flags & 2 != 0 {
        features |= Features::INDIRECT_DESC;
    }
    // Bit 2 of the flags byte lets the device lie; otherwise it is honest
    // (and the queue must then never report an error).
    let may_lie = flags & 4 != 0;
    // Bit 3 clamps long lengths instead of breaking the queue.
    let used_len = if flags & 8 != 0 { UsedLenPolicy::Clamp } else { UsedLenPolicy::Strict };
    let hal = FakeHal::new();
    let mut transport = FakeTransport::new(hal.memory(), Echo, &[32768]);
    // The harness is the device: notifications only count.
    transport.set_serves_on_notify(false);
    let config = QueueConfig { index: 0, size, features, indirect_max: size.min(4), used_len };
    let mut q: SplitQueue<FakeHal, DmaChain<FakeHal, 4>> =
        SplitQueue::new(&hal, &mut transport, config).expect("queue setup");
    let (_, desc, avail, used) = transport.queue_addresses(0).expect("queue_set called");
    let mut dev = EvilDevice {
        desc: desc as *mut u8,
        avail: avail as *mut u8,
        used: used as *mut u8,
        size,
        used_idx: 0,
        returnable: Vec::new(),
        tables: Vec::new(),
        lied: false,
    };
    // Driver-side model: tokens in flight with their writable byte count.
    let mut in_flight: Vec<(u16, u32)> = Vec::new();
    let mut broken = false;
    let check =
        |r: core::result::Result<(), Error>, out: &mut Outcome, broken: &mut bool, lied: bool| {
            match r {
                Ok(()) => assert!(!*broken, "call succeeded on a broken queue"),
                Err(Error::Broken) => assert!(*broken, "Broken before any device error"),
                Err(e) if e.is_protocol_violation() => {
                    assert!(lied, "device error {e:?} reported but the device never lied");
                    assert!(!*broken, "device error reported twice");
                    assert!(
                        !(e == Error::DeviceBadLength && used_len == UsedLenPolicy::Clamp),
                        "a clamping queue broke on a long length"
                    );
                    *broken = true;
                    out.error = Some(e);
                }
                Err(Error::QueueFull | Error::InvalidRequest) => assert!(!*broken),
                Err(e) => panic!("unexpected error {e:?}"),
            }
        };
    for _ in 0..256 {
        if bytes.0.is_empty() {
            break;
        }
        match bytes.u8() % 18 {
            0..=4 => {
                let nseg = 1 + usize::from(bytes.u8() % 4);
                let nread = usize::from(bytes.u8()) % (nseg + 1);
                let mut chain = DmaChain::new(Dma::new(hal.clone(), 1).expect("dma"));
                let mut segs = [(0usize, 0usize); 4];
                for (i, s) in segs.iter_mut().enumerate().take(nseg) {
                    *s = (i * 1024, 1 + usize::from(bytes.u8()));
                }
                let writable: u32 = segs[nread..nseg].iter().map(|s| s.1 as u32).sum();
                chain.set_segments(&segs[..nread], &segs[nread..nseg]).expect("layout");
                match Virtqueue::add(&mut q, chain) {
                    Ok(t) => {
                        assert!(!broken);
                        out.added += 1;
                        in_flight.push((t.index(), writable));
                        dev.returnable.push((t.index(), writable));
                        dev.saw_head(t.index());
                    }
                    Err(r) => check(Err(r.error), &mut out, &mut broken, dev.lied),
                }
            }
            5 | 6 => check(q.should_notify().map(drop), &mut out, &mut broken, dev.lied),
            7..=9 => {
                // Device returns a request: honestly, or with a lie.
                let mode = bytes.u8();
                let pick = usize::from(bytes.u8());
                let (id, len) = if (!may_lie || mode % 16 != 0) && !dev.returnable.is_empty() {
                    let (t, w) = dev.returnable.swap_remove(pick % dev.returnable.len());
                    let len = if mode % 2 == 1 { bytes.u32() % (w + 1) } else { w };
                    (u32::from(t), len)
                } else if !may_lie {
                    continue;
                } else {
                    dev.lied = true;
                    (bytes.u32() % (u32::from(size) * 2), bytes.u32())
                };
                dev.write_entry(id, len);
                dev.set_idx(dev.used_idx.wrapping_add(1));
            }
            10 if may_lie => {
                dev.lied = true;
                let idx = bytes.u16();
                dev.set_idx(idx);
            }
            11..=13 => match Virtqueue::pop_used(&mut q) {
                Ok(Some(u)) => {
                    assert!(!broken);
                    out.popped += 1;
                    let pos = in_flight
                        .iter()
                        .position(|&(t, _)| t == u.token.index())
                        .expect("popped a token that was not in flight");
                    let (_, w) = in_flight.swap_remove(pos);
                    assert!(u.written_len <= w, "length beyond writable bytes");
                    // A lying device may have returned it early: forget it.
                    dev.returnable.retain(|&(t, _)| t != u.token.index());
                }
                Ok(None) => assert!(!broken),
                Err(e) => check(Err(e), &mut out, &mut broken, dev.lied),
            },
            10 => {}
            14 => {
                let r = if bytes.u8() & 1 == 0 {
                    q.enable_interrupts().map(drop)
                } else {
                    q.disable_interrupts()
                };
                check(r, &mut out, &mut broken, dev.lied);
            }
            15 => {
                // Arbitrary suppression state: harmless, never a lie.
                let off = if bytes.u8() & 1 == 0 {
                    0
                } else {
                    RingLayout::new(size).total - RingLayout::new(size).used - 2
                };
                let v = bytes.u16();
                dev.set_word(off, v);
            }
            16 => {
                // Garbage over the driver's areas: harmless, never a lie.
                let (what, at) = (bytes.u8(), bytes.u16());
                dev.scribble(what, at, u64::from(bytes.u32()) << 32 | u64::from(bytes.u32()));
            }
            _ => {
                // Reset the queue alone, take everything back, start over.
                let proof =
                    q.reset_queue(&mut transport).expect("the fake transport resets queues");
                let mut back = Vec::new();
                let n = q.reclaim(&proof, |t, _| back.push(t.index())).expect("own proof");
                assert_eq!(n, in_flight.len(), "reclaimed a different number");
                back.sort_unstable();
                let mut want: Vec<u16> = in_flight.iter().map(|t| t.0).collect();
                want.sort_unstable();
                assert_eq!(back, want, "reclaimed other tokens than in flight");
                out.reclaimed += n as u32;
                q.restart(&mut transport).expect("restart");
                in_flight.clear();
                dev.returnable.clear();
                dev.used_idx = 0;
                broken = false;
            }
        }
        assert_eq!(q.is_broken(), broken);
        if !broken {
            assert_eq!(usize::from(q.in_flight()), in_flight.len());
        }
    }
    // A device reset hands back exactly the requests still in flight.
    let proof = transport.reset().expect("the fake transport resets at once");
    let mut back = 0;
    q.reclaim(&proof, |_, _| back += 1).expect("proof for this device");
    assert_eq!(back, in_flight.len());
    out.broken = broken;
    out
}
