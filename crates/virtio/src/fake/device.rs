//! The device side of a split ring (VirtIO 1.2 §2.7), for the fakes: it
//! takes available chains, hands each to a [`DeviceModel`] and writes the
//! model's answer (or lie) into the used ring. Every access goes through
//! [`DeviceMemory`], so the device touches only what the HAL shared.

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use super::memory::{DeviceMemory, DmaFault};
use crate::hal::PhysAddr;
use crate::queue::event::vring_need_event;
use crate::queue::split::layout::{
    VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};

/// One request as a device model sees it: the bytes of its readable
/// segments, and room for its writable ones.
#[derive(Debug)]
pub struct Request<'a> {
    queue: u16,
    readable: &'a [u8],
    writable: &'a mut [u8],
}

impl Request<'_> {
    /// The queue it came from.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Everything the driver made device-readable, in order.
    pub fn readable(&self) -> &[u8] {
        self.readable
    }

    /// The device-writable space, in order (zeroed; only the first
    /// `written` bytes of [`Reply::Done`] reach the driver).
    pub fn writable(&mut self) -> &mut [u8] {
        self.writable
    }
}

/// What a device model does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Completed: the first `written` bytes of the writable space go to the
    /// driver and `written` is the used length.
    Done {
        /// Bytes written (the used length, §2.7.8).
        written: u32,
    },
    /// Completed, but the used ring says something false.
    Lie(Lie),
    /// Not completed: the device keeps the request (a stalled device) until
    /// a reset makes it forget it.
    Hold,
    /// Like [`Reply::Hold`], but the first `written` bytes of the writable
    /// space already reached the buffers (a read cut short by a reset).
    Started {
        /// Bytes written before the device stalled.
        written: u32,
    },
}

/// A false used-ring entry (each is a protocol violation the driver must
/// catch, VirtIO 1.2 §2.7.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// The right id with this used length (beyond the writable space, or
    /// not; nothing is written to the buffers).
    Length(u32),
    /// This id instead of the request's head.
    Id(u32),
    /// The right entry, published twice.
    Duplicate,
    /// The right entry, then `used.idx` moved this much further.
    IdxJump(u16),
}

/// The behaviour of a fake device: what it offers and how it answers.
pub trait DeviceModel: Send {
    /// The device feature bits it offers (include
    /// [`crate::Features::VERSION_1`] and the ring features it serves:
    /// the fake device side handles `INDIRECT_DESC`, `EVENT_IDX` and
    /// `RING_RESET`).
    fn features(&self) -> u64;

    /// Serves one request.
    fn serve(&mut self, request: &mut Request<'_>) -> Reply;

    /// The device was reset (status 0): forget any state. Default: nothing.
    fn reset(&mut self) {}
}

/// Copies readable bytes into the writable space: the simplest model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl DeviceModel for Echo {
    fn features(&self) -> u64 {
        (crate::Features::VERSION_1
            | crate::Features::INDIRECT_DESC
            | crate::Features::EVENT_IDX
            | crate::Features::RING_RESET)
            .bits()
    }

    fn serve(&mut self, request: &mut Request<'_>) -> Reply {
        let n = request.readable.len().min(request.writable.len());
        request.writable[..n].copy_from_slice(&request.readable[..n]);
        Reply::Done { written: n as u32 }
    }
}

/// Why a device stopped serving a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// It was given an address it may not access.
    Fault(DmaFault),
    /// The driver broke the ring rules (a descriptor loop, an out-of-range
    /// index, a readable segment after a writable one, §2.7.4.2).
    BadChain(u16),
}

impl From<DmaFault> for DeviceError {
    fn from(f: DmaFault) -> Self {
        DeviceError::Fault(f)
    }
}

/// One programmed queue, from the device's side.
pub(super) struct DeviceQueue {
    size: u16,
    desc: PhysAddr,
    avail: PhysAddr,
    used: PhysAddr,
    next_avail: u16,
    used_idx: u16,
    /// Heads the model held (in flight on the device).
    pub(super) held: Vec<u16>,
}

/// What one pass over the available ring did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// Whether the device decided to interrupt (§2.7.7).
    pub(super) interrupt: bool,
}

impl DeviceQueue {
    pub(super) fn new(size: u16, desc: PhysAddr, avail: PhysAddr, used: PhysAddr) -> Self {
        Self { size, desc, avail, used, next_avail: 0, used_idx: 0, held: Vec::new() }
    }

    /// `(size, descriptors, driver area, device area)`.
    pub(super) fn addresses(&self) -> (u16, PhysAddr, PhysAddr, PhysAddr) {
        (self.size, self.desc, self.avail, self.used)
    }

    fn slot(&self, i: u16) -> u64 {
        u64::from(i & (self.size - 1))
    }

    /// Takes every available chain, answers it through `model`, and
    /// decides about the interrupt.
    pub(super) fn process(
        &mut self,
        queue: u16,
        mem: &DeviceMemory,
        model: &mut dyn DeviceModel,
        event_idx: bool,
    ) -> Result<Pass, DeviceError> {
        let old_used = self.used_idx;
        // §2.7.13.3 (device side): read avail.idx, then the entries it
        // covers; the fakes run on the driver's thread, so no fence.
        let avail_idx = mem.read_u16(self.avail + 2)?;
        while self.next_avail != avail_idx {
            let head = mem.read_u16(self.avail + 4 + self.slot(self.next_avail) * 2)?;
            self.next_avail = self.next_avail.wrapping_add(1);
            self.serve(queue, head, mem, model)?;
        }
        if event_idx {
            // §2.7.10: ask for a kick as soon as anything new is added.
            let avail_event = self.used + 4 + u64::from(self.size) * 8;
            mem.write_u16(avail_event, self.next_avail)?;
        }
        let interrupt = if self.used_idx == old_used {
            false
        } else if event_idx {
            // §2.7.7.2: interrupt iff used.idx passed used_event.
            let used_event = mem.read_u16(self.avail + 4 + u64::from(self.size) * 2)?;
            vring_need_event(used_event, self.used_idx, old_used)
        } else {
            mem.read_u16(self.avail)? & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
        };
        Ok(Pass { interrupt })
    }

    /// The chain at `head`: `(address, length, writable)` per segment.
    fn chain(
        &self,
        head: u16,
        mem: &DeviceMemory,
    ) -> Result<Vec<(PhysAddr, u32, bool)>, DeviceError> {
        let bad = DeviceError::BadChain(head);
        if head >= self.size {
            return Err(bad);
        }
        let read_desc = |table: PhysAddr, i: u16| -> Result<(u64, u32, u16, u16), DeviceError> {
            let mut d = [0u8; 16];
            mem.read(table + u64::from(i) * 16, &mut d)?;
            let word = |r: core::ops::Range<usize>| {
                d[r].iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b))
            };
            Ok((word(0..8), word(8..12) as u32, word(12..14) as u16, word(14..16) as u16))
        };
        let (mut table, mut limit, mut i) = (self.desc, self.size, head);
        let (addr, len, flags, _) = read_desc(table, i)?;
        if flags & VIRTQ_DESC_F_INDIRECT != 0 {
            // §2.7.5.3.1: the table replaces the chain; INDIRECT with NEXT
            // is forbidden, as is an empty or ragged table.
            if flags & VIRTQ_DESC_F_NEXT != 0 || len == 0 || len % 16 != 0 {
                return Err(bad);
            }
            (table, limit, i) = (addr, u16::try_from(len / 16).map_err(|_| bad)?, 0);
        }
        let mut segments = Vec::new();
        loop {
            if i >= limit || segments.len() >= usize::from(limit) {
                return Err(bad); // out of range, or a loop
            }
            let (addr, len, flags, next) = read_desc(table, i)?;
            let writable = flags & VIRTQ_DESC_F_WRITE != 0;
            if flags & VIRTQ_DESC_F_INDIRECT != 0
                || (!writable && segments.iter().any(|s: &(u64, u32, bool)| s.2))
            {
                return Err(bad); // nested indirect, or readable after writable
            }
            segments.push((addr, len, writable));
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(segments);
            }
            i = next;
        }
    }

    fn serve(
        &mut self,
        queue: u16,
        head: u16,
        mem: &DeviceMemory,
        model: &mut dyn DeviceModel,
    ) -> Result<(), DeviceError> {
        let segments = self.chain(head, mem)?;
        let mut readable = Vec::new();
        let mut room = 0usize;
        for &(addr, len, writable) in &segments {
            if writable {
                room += len as usize;
            } else {
                let at = readable.len();
                readable.resize(at + len as usize, 0);
                mem.read(addr, &mut readable[at..])?;
            }
        }
        let mut written_bytes: Box<[u8]> = vec![0; room].into_boxed_slice();
        let reply =
            model.serve(&mut Request { queue, readable: &readable, writable: &mut written_bytes });
        if let Reply::Done { written } | Reply::Started { written } = reply {
            let mut left = &written_bytes[..(written as usize).min(room)];
            for &(addr, len, _) in segments.iter().filter(|s| s.2) {
                let n = left.len().min(len as usize);
                mem.write(addr, &left[..n])?;
                left = &left[n..];
            }
        }
        match reply {
            Reply::Hold | Reply::Started { .. } => self.held.push(head),
            Reply::Done { written } => self.publish(mem, u32::from(head), written, 1, 0)?,
            Reply::Lie(Lie::Length(len)) => self.publish(mem, u32::from(head), len, 1, 0)?,
            Reply::Lie(Lie::Id(id)) => self.publish(mem, id, 0, 1, 0)?,
            Reply::Lie(Lie::Duplicate) => self.publish(mem, u32::from(head), 0, 2, 0)?,
            Reply::Lie(Lie::IdxJump(n)) => self.publish(mem, u32::from(head), 0, 1, n)?,
        }
        Ok(())
    }

    /// Writes `(id, len)` into the next `copies` used slots, then `used.idx`
    /// (moved `jump` further than the entries written).
    fn publish(
        &mut self,
        mem: &DeviceMemory,
        id: u32,
        len: u32,
        copies: u16,
        jump: u16,
    ) -> Result<(), DmaFault> {
        for _ in 0..copies {
            let entry = self.used + 4 + self.slot(self.used_idx) * 8;
            mem.write(entry, &id.to_le_bytes())?;
            mem.write(entry + 4, &len.to_le_bytes())?;
            self.used_idx = self.used_idx.wrapping_add(1);
        }
        self.used_idx = self.used_idx.wrapping_add(jump);
        // §2.7.8.1 (device side): the entries before the index.
        mem.write_u16(self.used + 2, self.used_idx)
    }
}
