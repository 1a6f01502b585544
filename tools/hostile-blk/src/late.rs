//! Late completions: a request answered from a timer thread long after it
//! was taken, the way a device that missed the driver's deadline would.
//!
//! The completion goes to the addresses the request had when it was taken:
//! its data buffers, its status byte, and the used ring it came from. If the
//! driver reset the device and set up a new ring meanwhile, the write lands
//! in the old ring and the old buffers — memory the driver must either still
//! own or have fenced off. Read data is a marker pattern rather than disk
//! contents so a stray copy is easy to recognise, and every address written
//! is logged for the runner.

use crate::device::log;
use crate::request::{self, Request};
use crate::used_ring::UsedRing;
use std::time::Duration;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// What a late read leaves in the buffers.
pub const MARKER: &[u8; 16] = b"HOSTILE-LATE-WR!";

pub struct LateCompletion {
    pub request: Request,
    /// The ring the request was taken from.
    pub ring: UsedRing,
    pub vring: VringRwLock,
    pub mem: GuestMemoryAtomic<GuestMemoryMmap>,
    pub queue: usize,
    pub delay: Duration,
}

/// Delivers `late` after its delay, on its own thread.
pub fn schedule(late: LateCompletion) {
    log(format_args!(
        "  queue {} head {}: holding for {} ms",
        late.queue,
        late.request.head,
        late.delay.as_millis()
    ));
    std::thread::spawn(move || {
        std::thread::sleep(late.delay);
        deliver(&late);
    });
}

fn deliver(late: &LateCompletion) {
    let mem = late.mem.memory();
    let request = &late.request;
    let bytes = request.writable_bytes() as usize - 1;
    let data: Vec<u8> = MARKER.iter().copied().cycle().take(bytes).collect();
    let _ = request::scatter(&*mem, &request.data_in, &data);
    request.write_status(&*mem, request::S_OK);
    let len = bytes as u32 + 1;
    for segment in &request.data_in {
        log(format_args!(
            "late write: queue {} head {} data gpa {:#x}..{:#x}",
            late.queue,
            request.head,
            segment.addr.0,
            segment.addr.0 + u64::from(segment.len)
        ));
    }
    log(format_args!("late write: status gpa {:#x}", request.status.0));
    let live = {
        let state = late.vring.get_ref();
        let queue = state.get_queue();
        UsedRing { addr: GuestAddress(queue.used_ring()), size: queue.size() }
    };
    if live == late.ring {
        let _ = late.vring.add_used(request.head, len);
        log(format_args!("late write: completed into the live ring at {:#x}", live.addr.0));
    } else {
        // The ring moved (reset): stale DMA into the old one.
        let idx = late.ring.read_idx(&*mem).unwrap_or(0);
        let _ = late.ring.push(&*mem, idx, u32::from(request.head), len);
        log(format_args!(
            "late write: ring moved ({:#x} -> {:#x}); wrote used element into the old ring",
            late.ring.addr.0, live.addr.0
        ));
    }
    let _ = late.vring.signal_used_queue();
}
