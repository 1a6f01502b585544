//! virtio-blk benchmarks, the same workloads as the Linux peer guest
//! (`../shared/peers/linux-guest/run-peer.sh blk`): 4 KiB random reads at
//! queue depth 1 and 32, 4 KiB random writes at depth 1, 1 MiB sequential
//! reads at depth 1. Latency is submit-to-completion as the caller sees it.

use crate::drivers::virtio::blk::{self, BlkCounters, BlkDevice, Operation, Pending, SECTOR_BYTES};
use crate::mm::dma::DmaBuffer;
use crate::platform::time;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Warm-up before each workload's timed `run_us`.
const WARMUP_US: u64 = 100_000;

/// xorshift64*: cheap, reproducible offsets.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random `bytes`-aligned sector on the disk.
    fn sector(&mut self, device: &BlkDevice, bytes: u64) -> u64 {
        let slots = device.capacity_sectors() * SECTOR_BYTES / bytes;
        (self.next() % slots) * (bytes / SECTOR_BYTES)
    }
}

fn print(
    name: &str,
    ops: u64,
    elapsed_ticks: u64,
    latencies: &mut [u64],
    bytes: u64,
    counted: (BlkCounters, BlkCounters),
) {
    let seconds = time::ticks_to_ns(elapsed_ticks).max(1) as f64 / 1e9;
    let iops = ops as f64 / seconds;
    let (p50, p99) = super::Stats::percentiles_us(latencies);
    // Per request over the timed part: what the targets bound
    // (kicks, interrupts taken, full barriers) and the empty looks.
    let (before, after) = counted;
    let requests = (after.completions - before.completions).max(1) as f64;
    let per = |a: u64, b: u64| (a - b) as f64 / requests;
    crate::kprintln!(
        "BENCH blk_{} iops={:.0} mb_s={:.1} lat_us_p50={} lat_us_p99={} ops={} \
         kicks_per_req={:.3} irqs_per_req={:.3} barriers_per_req={:.3} empty_polls_per_req={:.2}",
        name,
        iops,
        iops * bytes as f64 / 1e6,
        p50,
        p99,
        ops,
        per(after.kicks, before.kicks),
        per(after.interrupts, before.interrupts),
        per(after.full_barriers, before.full_barriers),
        per(after.empty_polls, before.empty_polls),
    );
}

/// Keeps `depth` requests of `bytes` in flight for `run_us`.
fn run(
    device: &'static BlkDevice,
    run_us: u64,
    name: &str,
    operation: Operation,
    bytes: u64,
    depth: usize,
    random: bool,
) {
    let pages = bytes.div_ceil(crate::mm::PAGE_SIZE);
    let mut buffers: Vec<DmaBuffer> = Vec::new();
    for _ in 0..depth {
        match DmaBuffer::new(pages) {
            Ok(buffer) => buffers.push(buffer),
            Err(_) => {
                crate::kprintln!("BENCH blk_{} skipped (no DMA memory)", name);
                return;
            }
        }
    }
    let mut offsets = Random(0x9e37_79b9_7f4a_7c15 ^ bytes);
    let mut next_sequential = 0;
    let mut next_sector = |device: &BlkDevice| {
        if random {
            offsets.sector(device, bytes)
        } else {
            let sector = next_sequential;
            next_sequential = (next_sequential + bytes / SECTOR_BYTES)
                % (device.capacity_sectors() - bytes / SECTOR_BYTES);
            sector
        }
    };
    let mut in_flight: VecDeque<(u64, Pending)> = VecDeque::with_capacity(depth);
    let mut latencies = Vec::with_capacity(200_000);
    let start = time::rdtsc();
    let warm_until = start + time::tsc_hz() * WARMUP_US / 1_000_000;
    let end = warm_until + time::tsc_hz() * run_us / 1_000_000;
    let mut measured_from = 0;
    let mut counted_from = BlkCounters::default();
    let mut ops = 0u64;
    let mut finished: Vec<(u64, Pending)> = Vec::with_capacity(depth);
    loop {
        // Refill every free slot, then one notification decision for all of
        // them (as the peer's io_submit of a batch, and the limit probe).
        let mut batch = device.batch();
        while let Some(buffer) = buffers.pop() {
            let submitted_at = time::rdtsc();
            match batch.submit(operation, next_sector(device), Some(buffer), bytes as usize) {
                Ok(pending) => in_flight.push_back((submitted_at, pending)),
                Err((error, _)) => {
                    crate::kprintln!("BENCH blk_{} failed: {:?}", name, error);
                    return;
                }
            }
        }
        batch.finish();
        // Whichever request finishes first, as the peer reaps them, and
        // with it every other one already finished.
        let Some(first) = Pending::wait_any(in_flight.make_contiguous(), |(_, p)| p) else { break };
        finished.extend(in_flight.remove(first));
        let mut index = 0;
        while index < in_flight.len() {
            if in_flight[index].1.is_done() {
                finished.extend(in_flight.remove(index));
            } else {
                index += 1;
            }
        }
        for (submitted_at, pending) in finished.drain(..) {
            let (result, buffer) = pending.wait();
            let now = time::rdtsc();
            if let Err(error) = result {
                crate::kprintln!("BENCH blk_{} failed: {:?}", name, error);
                return;
            }
            if now >= warm_until {
                if measured_from == 0 {
                    measured_from = now;
                    counted_from = device.counters();
                }
                ops += 1;
                if latencies.len() < latencies.capacity() {
                    latencies.push(now - submitted_at);
                }
            }
            if let Some(buffer) = buffer
                && now < end
            {
                buffers.push(buffer);
            }
        }
        if time::rdtsc() >= end && in_flight.is_empty() {
            break;
        }
    }
    let counted = (counted_from, device.counters());
    print(name, ops, time::rdtsc() - measured_from.max(start), &mut latencies, bytes, counted);
}

/// Runs the four workloads on the first virtio-blk device, `run_us` each,
/// then prints each queue's ring counters.
pub fn all(run_us: u64) {
    let Some(device) = blk::device() else {
        crate::kprintln!("BENCH blk skipped (no virtio-blk device)");
        return;
    };
    crate::kprintln!(
        "bench: virtio-blk {} MiB, {} queues",
        (device.capacity_sectors() * SECTOR_BYTES) >> 20,
        device.queue_count()
    );
    run(device, run_us, "randread4k_qd1", Operation::Read, 4096, 1, true);
    run(device, run_us, "randread4k_qd32", Operation::Read, 4096, 32, true);
    run(device, run_us, "randwrite4k_qd1", Operation::Write, 4096, 1, true);
    run(device, run_us, "seqread1m_qd1", Operation::Read, 1 << 20, 1, false);
    for queue in 0..device.queue_count() {
        if let Some(stats) = device.queue_stats(queue) {
            crate::kprintln!("bench: blk queue{} {:?}", queue, stats);
        }
    }
}
