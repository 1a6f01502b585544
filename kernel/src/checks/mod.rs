//! Disk workloads judged from outside the guest (`blkcheck=<name>`).
//!
//! The runner (xtask/src/blk_checks) prepares a drive for each, boots with
//! `blkcheck=<name> blkcheck.seed=<n>`, watches the serial lines printed
//! here and then judges what it can see from outside: the image file byte
//! for byte, whether a line came before QEMU was killed, what QMP did to the
//! drive. The kernel side checks what only the guest sees (the data a read
//! returned, the error a caller got) and ends with one line,
//! `blkcheck: <name> passed: <summary>` or `blkcheck: <name> FAILED: <why>`,
//! and the matching exit status. Progress lines the runner waits for are
//! `blkcheck: <name>: <text>`.

mod devices;
mod faults;
mod four_k;
mod host_image;
mod pattern;

use crate::arch::qemu_exit::{ExitCode, exit_qemu};
use crate::cmdline::BlkCheck;
use crate::drivers::virtio::blk::{self, BlkDevice};
use crate::kprintln;
use crate::mm::dma::DmaBuffer;
use crate::sync::SpinLock;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use pattern::{BLOCK_BYTES, BLOCK_WORDS};

/// What a workload returns: a summary for the passed line, or why it failed.
type Outcome = Result<String, String>;

/// Runs `check` on the first virtio-blk device and powers off.
pub fn run(check: BlkCheck, seed: u64) -> ! {
    let name = check.name();
    let outcome = match blk::device() {
        None => Err(String::from("no virtio-blk device")),
        Some(device) => match check {
            BlkCheck::HostImage => host_image::run(device, seed),
            BlkCheck::FlushDurable => faults::flush_durable(device, seed),
            BlkCheck::Eio => faults::eio(device, seed),
            BlkCheck::ReadOnly => faults::read_only(device, seed),
            BlkCheck::Stall => devices::stall(device, seed),
            BlkCheck::Resize => devices::resize(device),
            BlkCheck::FourK => four_k::run(device, seed),
        },
    };
    match outcome {
        Ok(summary) => {
            kprintln!("blkcheck: {name} passed: {summary}");
            exit_qemu(ExitCode::Success)
        }
        Err(why) => {
            kprintln!("blkcheck: {name} FAILED: {why}");
            exit_qemu(ExitCode::Failure)
        }
    }
}

/// A progress line the runner may wait for.
fn progress(check: BlkCheck, text: &str) {
    kprintln!("blkcheck: {}: {}", check.name(), text);
}

/// Runs `job(cpu)` on every online CPU at once, each in a thread pinned
/// there; the results in CPU order, or the first failure.
fn on_every_cpu(
    job: impl Fn(u32) -> Outcome + Send + Sync + 'static,
) -> Result<Vec<String>, String> {
    let cpus = crate::smp::online_cpus() as u32;
    let job = Arc::new(job);
    let results: Arc<SpinLock<Vec<(u32, Outcome)>>> = Arc::new(SpinLock::new(Vec::new()));
    let mut threads = Vec::new();
    for cpu in 0..cpus {
        let (job, results) = (job.clone(), results.clone());
        let spawned =
            crate::sched::spawn("blkcheck", crate::sched::Placement::Pinned(cpu), move || {
                let outcome = job(cpu);
                results.lock().push((cpu, outcome));
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => return Err(format!("no thread on CPU {cpu}: {error:?}")),
        }
    }
    for thread in threads {
        thread.join();
    }
    let mut results = core::mem::take(&mut *results.lock());
    results.sort_by_key(|(cpu, _)| *cpu);
    results
        .into_iter()
        .map(|(cpu, outcome)| outcome.map_err(|why| format!("CPU {cpu}: {why}")))
        .collect()
}

/// A DMA buffer for `blocks` blocks.
fn buffer(blocks: u64) -> Result<DmaBuffer, String> {
    DmaBuffer::new(blocks * BLOCK_BYTES as u64 / crate::mm::PAGE_SIZE)
        .map_err(|_| String::from("no DMA memory for a buffer"))
}

/// The 512-byte sector where block `block` starts.
fn sector_of(block: u64) -> u64 {
    block * (BLOCK_BYTES as u64 / blk::SECTOR_BYTES)
}

/// Disk size in whole blocks.
fn disk_blocks(device: &BlkDevice) -> u64 {
    device.capacity_sectors() * blk::SECTOR_BYTES / BLOCK_BYTES as u64
}

fn word_at(data: &[u8], index: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[index * 8..index * 8 + 8]);
    u64::from_le_bytes(bytes)
}

/// Fills the first `blocks` blocks of `data` with `word(block, index)` for
/// blocks from `first_block` on.
fn fill(data: &mut [u8], first_block: u64, blocks: u64, word: impl Fn(u64, usize) -> u64) {
    for block in 0..blocks as usize {
        for index in 0..BLOCK_WORDS {
            let at = (block * BLOCK_WORDS + index) * 8;
            data[at..at + 8]
                .copy_from_slice(&word(first_block + block as u64, index).to_le_bytes());
        }
    }
}

/// Compares the first `blocks` blocks of `data` with `word`; the first
/// difference, described.
fn verify(
    data: &[u8],
    first_block: u64,
    blocks: u64,
    word: impl Fn(u64, usize) -> u64,
) -> Result<(), String> {
    for block in 0..blocks as usize {
        for index in 0..BLOCK_WORDS {
            let (got, want) = (
                word_at(data, block * BLOCK_WORDS + index),
                word(first_block + block as u64, index),
            );
            if got != want {
                let block = first_block + block as u64;
                return Err(format!(
                    "block {block} word {index}: read {got:#018x}, expected {want:#018x} \
                     (word 0 of that block read {:#018x})",
                    word_at(data, (block - first_block) as usize * BLOCK_WORDS)
                ));
            }
        }
    }
    Ok(())
}

/// Waits for the runner to type `word` and Enter on the serial line.
fn wait_for_runner(word: &str, timeout_us: u64) -> Result<(), String> {
    let deadline = crate::platform::time::uptime_us() + timeout_us;
    let mut line = String::new();
    while crate::platform::time::uptime_us() < deadline {
        match crate::arch::serial::try_read_byte() {
            Some(b'\n' | b'\r') if line.trim() == word => return Ok(()),
            Some(b'\n' | b'\r') => line.clear(),
            Some(byte) => line.push(char::from(byte)),
            None => crate::sched::timer::sleep_us(1_000),
        }
    }
    Err(format!("the runner did not answer {word:?} within {} s", timeout_us / 1_000_000))
}
