//! Per-queue reset (VIRTIO_F_RING_RESET, VirtIO 1.2 §2.6.1) against QEMU's
//! virtio-blk while the other queues keep running verified I/O.
//!
//! Built so QEMU cannot fool them: requests are really in flight at the
//! reset; each comes back exactly once (completed with the disk's data, or
//! reclaimed with its canary untouched); 20 ms later no returned buffer has
//! changed (a device still writing after its reset "completed" would show
//! here, see `reset.rs`); the queue then does verified I/O again, the
//! device did not flag DEVICE_NEEDS_RESET (QEMU's reaction to a stale
//! completion in a re-enabled ring), and the other queues made progress.

use super::tests::{blk, filled, scratch};
use super::{BlkDevice, Operation, Request, SECTOR_BYTES};
use crate::mm::dma::DmaBuffer;
use crate::sched::{Placement, spawn};
use crate::smp::online_cpus;
use crate::sync::SpinLock;
use crate::{check, check_eq, ktest};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vireo_virtio::{DeviceStatus, Token, Transport};

/// Requests per test.
const REQUESTS: u64 = 8;
/// How long returned buffers are watched for late DMA.
const WATCH_US: u64 = 20_000;

fn area(device: &BlkDevice) -> u64 {
    scratch(device) + 1024
}

/// The byte sector `sector` holds after `write_pattern(.., seed)`.
fn pattern(sector: u64, seed: u8) -> u8 {
    (sector as u8).wrapping_mul(31) ^ seed
}

fn write_pattern(device: &'static BlkDevice, seed: u8) -> Result<(), String> {
    for i in 0..REQUESTS {
        let sector = area(device) + i;
        let written = device.write(sector, filled(pattern(sector, seed), 1), 512);
        written.map_err(|e| format!("write {sector}: {:?}", e.0))?;
    }
    Ok(())
}

fn holds(buffer: &DmaBuffer, byte: u8) -> bool {
    buffer.as_slice()[..SECTOR_BYTES as usize].iter().all(|&b| b == byte)
}

/// Runs `f` in a thread pinned to `cpu` (so its I/O uses that CPU's queue).
fn on_cpu(
    cpu: usize,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), crate::ktest::TestFailure> {
    let result = Arc::new(SpinLock::new(None));
    let slot = result.clone();
    let thread = spawn("blk-reset", Placement::Pinned(cpu as u32), move || {
        *slot.lock() = Some(f());
    });
    thread.map_err(|_| crate::ktest::TestFailure::new("spawn failed".into()))?.join();
    let outcome = result.lock().take().unwrap_or_else(|| Err("test thread vanished".into()));
    outcome.map_err(crate::ktest::TestFailure::new)
}

/// Verified write/read loops on every queue but `busy`'s, until stopped.
struct OtherQueues {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU32>,
    errors: Arc<AtomicU32>,
    threads: Vec<crate::sched::JoinHandle>,
}

impl OtherQueues {
    fn start(device: &'static BlkDevice, busy: usize) -> Self {
        let (stop, done, errors) = Default::default();
        let mut others = Self { stop, done, errors, threads: Vec::new() };
        for cpu in (0..online_cpus()).filter(|cpu| cpu % device.queue_count() != busy) {
            let (stop, done, errors) =
                (others.stop.clone(), others.done.clone(), others.errors.clone());
            let run = move || {
                let sector = scratch(device) + 512 + 16 * cpu as u64;
                let mut round = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    let ok = device.write(sector, filled(round, 1), 512).is_ok()
                        && device.read(sector, filled(0, 1), 512).is_ok_and(|b| holds(&b, round));
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            };
            if let Ok(thread) = spawn("blk-other", Placement::Pinned(cpu as u32), run) {
                others.threads.push(thread);
            }
        }
        others
    }

    /// Waits (bounded) until the others completed `n` more round trips.
    fn wait_for(&self, n: u32) -> bool {
        let target = self.done.load(Ordering::Relaxed) + n;
        let deadline = crate::platform::time::uptime_us() + 5_000_000;
        while self.done.load(Ordering::Relaxed) < target {
            if crate::platform::time::uptime_us() > deadline {
                return false;
            }
            crate::sched::timer::sleep_us(100);
        }
        true
    }

    /// Stops them; returns (round trips, errors).
    fn stop(self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().for_each(crate::sched::JoinHandle::join);
        (self.done.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }
}

/// Whether the test can run; logs why not.
fn can_reset(device: &BlkDevice) -> bool {
    if !device.has_queue_reset() || device.queue_count() < 2 {
        log::warn!("skip: needs VIRTIO_F_RING_RESET and two queues");
        return false;
    }
    true
}

ktest!(
    fn queue_reset_hands_back_requests_the_device_never_took() {
        let device = blk()?;
        if !can_reset(device) {
            return Ok(());
        }
        let index = device.queue_count() - 1;
        on_cpu(index, move || write_pattern(device, 0x11))?;
        let others = OtherQueues::start(device, index);
        check!(others.wait_for(2), "the other queues do no I/O");
        let base = area(device);
        let mut requests = Vec::new();
        for i in 0..REQUESTS {
            let request = Request::new().map_err(|e| format!("{e}"));
            let mut request = request.map_err(crate::ktest::TestFailure::new)?;
            let prepared = request.prepare(
                Operation::Read,
                base + i,
                super::Data::One(filled(0xa5, 1)),
                (0, 512),
                (4096, 1),
                (0, 0),
            );
            check!(prepared.is_ok());
            requests.push(request);
        }
        let (tokens, popped, reclaimed, stats) = {
            let mut state = device.queues[index].state.lock();
            let idle = device.drain_locked(&mut state, &mut 0).is_ok();
            check!(idle, "queue {} would not go idle", index);
            // Made available, never notified: an idle QEMU device looks at
            // the ring only when kicked, so these are surely not taken.
            let mut tokens: Vec<(Token, u64)> = Vec::new();
            for (sector, request) in (base..).zip(requests) {
                let added = state.queue.add(request).map_err(|r| format!("{}", r.error));
                tokens.push((added.map_err(crate::ktest::TestFailure::new)?, sector));
            }
            let mut transport = device.virtio.transport();
            let proof = state.queue.reset_queue(&mut *transport);
            let proof = proof.map_err(|e| crate::ktest::TestFailure::new(format!("{e}")))?;
            let mut popped = Vec::new();
            while let Ok(Some(used)) = state.queue.pop_used() {
                popped.push((used.token, used.buffers));
            }
            let mut reclaimed = Vec::new();
            let count =
                state.queue.reclaim(&proof, |token, request| reclaimed.push((token, request)));
            check_eq!(count, Ok(reclaimed.len()));
            check!(device.restart_locked(&mut state, &mut transport).is_ok());
            (tokens, popped, reclaimed, state.queue.stats())
        };
        // Every request back exactly once, each token once.
        let mut back: Vec<Token> = popped.iter().chain(&reclaimed).map(|(t, _)| *t).collect();
        back.sort_unstable();
        let mut sent: Vec<Token> = tokens.iter().map(|(t, _)| *t).collect();
        sent.sort_unstable();
        check_eq!(back, sent);
        check_eq!(
            (stats.queue_resets >= 1, stats.reclaimed >= reclaimed.len() as u64),
            (true, true)
        );
        if !popped.is_empty() {
            log::warn!("the device completed {} never-kicked request(s)", popped.len());
        }
        // No late DMA into what the reset handed back.
        crate::sched::timer::sleep_us(WATCH_US);
        for (_, mut request) in reclaimed {
            check_eq!(request.status(), 0xff);
            let data = request.take_data();
            check!(data.as_ref().is_some_and(|d| holds(d, 0xa5)), "a reclaimed buffer changed");
        }
        for (token, mut request) in popped {
            let sector = tokens.iter().find(|(t, _)| *t == token).map_or(0, |(_, s)| *s);
            check_eq!(request.status(), super::request::STATUS_OK);
            let data = request.take_data();
            check!(data.as_ref().is_some_and(|d| holds(d, pattern(sector, 0x11))));
        }
        // The restarted queue works, the others kept running.
        on_cpu(index, move || {
            for i in 0..REQUESTS {
                let sector = base + i;
                let read =
                    device.read(sector, filled(0, 1), 512).map_err(|e| format!("{:?}", e.0))?;
                if !holds(&read, pattern(sector, 0x11)) {
                    return Err(format!("sector {sector} read back wrong after the restart"));
                }
            }
            Ok(())
        })?;
        check!(others.wait_for(2), "the other queues stalled after the reset");
        let (done, errors) = others.stop();
        check_eq!(errors, 0);
        check!(done >= 4);
        Ok(())
    }
);

/// Bytes per request of the in-flight test: big enough that QEMU's block
/// layer is still busy with them when the reset arrives.
const BIG_BYTES: usize = 64 * 1024;
const BIG_SECTORS: u64 = BIG_BYTES as u64 / SECTOR_BYTES;

fn big_holds(buffer: &DmaBuffer, byte: u8) -> bool {
    buffer.as_slice()[..BIG_BYTES].iter().all(|&b| b == byte)
}

/// One round: write a pattern, submit the reads (kicked), wait `delay_us`
/// so the device is under way, reset the queue, and check every request
/// came back once, untouched after 20 ms, and that I/O works afterwards.
/// Returns (completed, cancelled).
fn in_flight_round(
    device: &'static BlkDevice,
    seed: u8,
    delay_us: u64,
) -> Result<(u64, u64), String> {
    let base = area(device);
    let first = |i: u64| base + i * BIG_SECTORS;
    for i in 0..REQUESTS {
        let data = filled(pattern(first(i), seed), BIG_BYTES as u64 / 4096);
        device.write(first(i), data, BIG_BYTES).map_err(|e| format!("write: {:?}", e.0))?;
    }
    // A flush first: QEMU answers it after fdatasync of what was just
    // written, so it is likely still in its hands when the reset comes.
    let flush = device.submit(Operation::Flush, 0, None, 0).map_err(|e| format!("{:?}", e.0))?;
    let pending: Vec<_> = (0..REQUESTS)
        .map(|i| device.submit(Operation::Read, first(i), Some(filled(0x5a, 16)), BIG_BYTES))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("submit: {:?}", e.0))?;
    let deadline =
        crate::platform::time::rdtsc() + crate::platform::time::tsc_hz() / 1_000_000 * delay_us;
    while crate::platform::time::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    let index = device.queue_count() - 1;
    let cancelled = device.reset_queue(index).map_err(|e| format!("reset: {e:?}"))?;
    let mut returned: Vec<DmaBuffer> = Vec::new();
    let (mut ok, mut reclaimed) = match flush.wait() {
        (Ok(()), None) => (1, 0),
        (Err(super::BlkError::Cancelled), None) => (0, 1),
        (result, _) => return Err(format!("flush: {result:?}")),
    };
    for (i, request) in (0..).zip(pending) {
        match request.wait() {
            (Ok(()), Some(data)) if big_holds(&data, pattern(first(i), seed)) => {
                ok += 1;
                returned.push(data);
            }
            (Err(super::BlkError::Cancelled), Some(data)) if big_holds(&data, 0x5a) => {
                reclaimed += 1;
                returned.push(data);
            }
            (result, data) => {
                let byte = data.map(|d| d.as_slice()[0]);
                return Err(format!("request {i}: {result:?}, first byte {byte:?}"));
            }
        }
    }
    if (ok + reclaimed, reclaimed) != (REQUESTS + 1, cancelled as u64) {
        return Err(format!("{ok} ok + {reclaimed} reclaimed, the reset said {cancelled}"));
    }
    let sums: Vec<u64> = returned.iter().map(sum).collect();
    crate::sched::timer::sleep_us(WATCH_US);
    if returned.iter().map(sum).ne(sums) {
        return Err("a buffer changed after it came back: DMA after the reset".into());
    }
    // Verified I/O on the restarted queue.
    for i in 0..REQUESTS {
        let read =
            device.read(first(i), filled(0, 16), BIG_BYTES).map_err(|e| format!("{:?}", e.0))?;
        if !big_holds(&read, pattern(first(i), seed)) {
            return Err(format!("request {i} read back wrong after the restart"));
        }
    }
    Ok((ok, reclaimed))
}

ktest!(
    fn queue_reset_with_requests_in_flight_returns_each_once_and_io_goes_on() {
        let device = blk()?;
        if !can_reset(device) {
            return Ok(());
        }
        let index = device.queue_count() - 1;
        let others = OtherQueues::start(device, index);
        check!(others.wait_for(2), "the other queues do no I/O");
        let before = device.queue_stats(index).unwrap_or_default();
        let delays_us = [0u64, 30, 100, 300, 1000];
        on_cpu(index, move || {
            let (mut ok, mut cancelled) = (0, 0);
            for (round, delay) in (0u8..).zip(delays_us) {
                let (o, c) = in_flight_round(device, 0x20 + round, delay)?;
                (ok, cancelled) = (ok + o, cancelled + c);
            }
            log::info!(
                "queue reset with requests in flight: {ok} completed, {cancelled} cancelled"
            );
            Ok(())
        })?;
        let after = device.queue_stats(index).unwrap_or_default();
        check_eq!(after.queue_resets, before.queue_resets + delays_us.len() as u64);
        let status = device.virtio.transport().status();
        check!(!status.contains(DeviceStatus::DEVICE_NEEDS_RESET), "device status {:?}", status);
        check!(!device.health.is_failed());
        {
            let state = device.queues[index].state.lock();
            check_eq!((state.queue.in_flight(), state.queue.is_broken()), (0, false));
            check_eq!(state.pool.len(), state.requests_made);
        }
        check!(others.wait_for(2), "the other queues stalled after the reset");
        let (_, errors) = others.stop();
        check_eq!(errors, 0);
        Ok(())
    }
);

fn sum(buffer: &DmaBuffer) -> u64 {
    buffer.as_slice().iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}
