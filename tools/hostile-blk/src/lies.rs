//! How each request-level lie is told: one match arm per [`Lie`].
//!
//! Lies the library can express (a wrong len, the same id twice) go through
//! `virtio-queue`'s `add_used`; the ones it refuses (an id past the queue
//! size, a used index that jumps or runs back) are written into the used
//! ring directly ([`UsedRing`]). After any lie the interrupt is raised
//! unconditionally: EVENT_IDX suppression assumes an honest index.

use crate::device::log;
use crate::late;
use crate::request::Request;
use crate::scenario::Lie;
use crate::used_ring::UsedRing;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

/// Interrupts in a storm, and the pause between two.
const STORM_INTERRUPTS: u32 = 20_000;
const STORM_GAP: Duration = Duration::from_micros(50);

/// What one request's handling needs.
pub struct Ctx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub atomic: &'a GuestMemoryAtomic<GuestMemoryMmap>,
    pub vring: &'a VringRwLock,
    pub queue: usize,
    pub image: &'a Arc<File>,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub late_ms: u64,
}

/// What became of the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (truthfully or not).
    Done,
    /// Kept by the device, never to be answered on this connection.
    Held,
    /// The connection must be closed.
    HangUp,
}

impl Ctx<'_> {
    fn execute(&self, request: &Request) -> (u8, u32) {
        request.execute(self.mem, self.image, self.capacity_sectors, self.read_only)
    }

    /// Transfers the data and writes the true status; returns the true len.
    fn execute_with_status(&self, request: &Request) -> u32 {
        let (status, len) = self.execute(request);
        request.write_status(self.mem, status);
        len
    }

    fn ring(&self) -> (UsedRing, u16) {
        let state = self.vring.get_ref();
        let queue = state.get_queue();
        (UsedRing { addr: GuestAddress(queue.used_ring()), size: queue.size() }, queue.next_used())
    }

    /// Posts `{id, len}` past the library (any id), keeping its index in step.
    fn raw_push(&self, id: u32, len: u32) {
        let (ring, next) = self.ring();
        match ring.push(self.mem, next, id, len) {
            Ok(idx) => self.vring.set_queue_next_used(idx),
            Err(error) => log(format_args!("used ring write failed: {error}")),
        }
    }

    fn add_used(&self, head: u16, len: u32) {
        if let Err(error) = self.vring.add_used(head, len) {
            log(format_args!("add_used({head}, {len}) failed: {error:?}"));
        }
    }

    fn interrupt(&self) {
        let _ = self.vring.signal_used_queue();
    }
}

/// The truth: data, status, used element, and an interrupt if the driver
/// asked for one (§2.7.10).
pub fn honest(ctx: &Ctx, request: &Request) {
    let len = ctx.execute_with_status(request);
    ctx.add_used(request.head, len);
    if ctx.vring.needs_notification().unwrap_or(true) {
        ctx.interrupt();
    }
}

/// Tells `lie` about `request`. `held` are the heads this queue keeps back.
pub fn tell(ctx: &Ctx, request: &Request, lie: Lie, held: &[u16]) -> Outcome {
    let head = request.head;
    match lie {
        Lie::UsedIdOutOfRange => {
            let len = ctx.execute_with_status(request);
            let size = ctx.ring().0.size;
            ctx.raw_push(u32::from(size) + 7, len);
        }
        Lie::UsedIdFree => {
            let len = ctx.execute_with_status(request);
            let mut busy = held.to_vec();
            busy.push(head);
            match free_descriptor(ctx, &busy) {
                Some(id) => {
                    log(format_args!("  posting free descriptor {id} instead of {head}"));
                    ctx.raw_push(u32::from(id), len);
                }
                None => log(format_args!("  no free descriptor: the whole ring is in use")),
            }
        }
        Lie::CompletedTwice => {
            let len = ctx.execute_with_status(request);
            ctx.add_used(head, len);
            ctx.add_used(head, len);
        }
        Lie::UsedLenTooLarge => {
            ctx.execute_with_status(request);
            ctx.add_used(head, request.writable_bytes() + 4096);
        }
        Lie::UsedIdxJump => {
            let len = ctx.execute_with_status(request);
            ctx.add_used(head, len);
            let (ring, next) = ctx.ring();
            let jumped = next.wrapping_add(ring.size).wrapping_add(1);
            log(format_args!("  used.idx {next} -> {jumped}"));
            let _ = ring.write_idx(ctx.mem, jumped);
            ctx.vring.set_queue_next_used(jumped);
        }
        Lie::UsedIdxBackwards => {
            let len = ctx.execute_with_status(request);
            ctx.add_used(head, len);
            let (ring, next) = ctx.ring();
            log(format_args!("  used.idx {next} -> {}", next.wrapping_sub(2)));
            let _ = ring.write_idx(ctx.mem, next.wrapping_sub(2));
        }
        Lie::Stall => return Outcome::Held,
        Lie::Late => {
            let (ring, _) = ctx.ring();
            late::schedule(late::LateCompletion {
                request: request.clone(),
                ring,
                vring: ctx.vring.clone(),
                mem: ctx.atomic.clone(),
                queue: ctx.queue,
                delay: Duration::from_millis(ctx.late_ms),
            });
            return Outcome::Held;
        }
        Lie::InterruptStorm => {
            let vring = ctx.vring.clone();
            std::thread::spawn(move || {
                for _ in 0..STORM_INTERRUPTS {
                    let _ = vring.signal_used_queue();
                    std::thread::sleep(STORM_GAP);
                }
                log(format_args!("interrupt storm over: {STORM_INTERRUPTS} interrupts"));
            });
            let len = ctx.execute_with_status(request);
            ctx.add_used(head, len);
        }
        Lie::Status(status) => {
            let (_, len) = ctx.execute(request);
            request.write_status(ctx.mem, status);
            ctx.add_used(head, len);
        }
        Lie::StatusLenZero => {
            ctx.execute(request);
            ctx.add_used(head, 0);
        }
        Lie::HangUp => return Outcome::HangUp,
    }
    ctx.interrupt();
    Outcome::Done
}

/// The lowest descriptor id the driver has not handed to the device: not
/// `busy` (taken and unanswered) and not waiting in the available ring.
fn free_descriptor(ctx: &Ctx, busy: &[u16]) -> Option<u16> {
    let (avail_addr, size, next_avail) = {
        let state = ctx.vring.get_ref();
        let queue = state.get_queue();
        (GuestAddress(queue.avail_ring()), queue.size(), queue.next_avail())
    };
    let avail_idx: u16 = ctx.mem.read_obj(avail_addr.unchecked_add(2)).ok()?;
    let waiting: Vec<u16> = (0..avail_idx.wrapping_sub(next_avail))
        .filter_map(|i| {
            let slot = u64::from(next_avail.wrapping_add(i) % size);
            ctx.mem.read_obj::<u16>(avail_addr.unchecked_add(4 + 2 * slot)).ok()
        })
        .collect();
    (0..size).find(|id| !busy.contains(id) && !waiting.contains(id))
}
