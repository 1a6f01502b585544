//! `blk`: the way a user pokes at the disk — what the device is, a sector
//! as an `xxd`-style hexdump, a line of text written to a sector, a flush,
//! and a short random-read benchmark.

use crate::drivers::virtio::blk::{self, BlkDevice, CacheMode, Operation, Pending, SECTOR_BYTES};
use crate::kprintln;
use crate::mm::dma::DmaBuffer;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

/// What `help` shows after the name; also the one-line usage.
pub const USAGE: &str =
    "[read <sector> [count] | write <sector> <text> | flush | bench [qd] [seconds]]";
/// Most sectors one `blk read` dumps (32 KiB).
const MAX_READ_SECTORS: u64 = 64;
/// `blk bench` limits: queue depth and seconds.
const MAX_BENCH_DEPTH: u64 = 64;
const MAX_BENCH_SECS: u64 = 60;

/// `blk [subcommand ...]`.
pub fn run(arguments: Option<&str>) {
    let Some(device) = blk::device() else {
        kprintln!("blk: no virtio-blk device");
        return;
    };
    let (subcommand, rest) = split_word(arguments.unwrap_or(""));
    let (first, after_first) = split_word(rest);
    let (second, rest) = split_word(after_first);
    let outcome = match (subcommand, first, second) {
        (None, _, _) => {
            info(device);
            Ok(())
        }
        (Some("read"), Some(sector), count) if rest.is_empty() => read(device, sector, count),
        // The text is the rest of the line after the sector, as typed.
        (Some("write"), Some(sector), Some(_)) => write(device, sector, after_first),
        (Some("flush"), None, _) => {
            device.flush().map(|()| kprintln!("flushed")).map_err(|e| format!("flush: {e:?}"))
        }
        (Some("bench"), depth, secs) if rest.is_empty() => bench(device, depth, secs),
        _ => Err(String::new()),
    };
    match outcome {
        Ok(()) => {}
        Err(why) if why.is_empty() => kprintln!("usage: blk {USAGE}"),
        Err(why) => kprintln!("blk: {why}"),
    }
}

fn info(device: &'static BlkDevice) {
    let sectors = device.capacity_sectors();
    kprintln!("model:      virtio-blk (VirtIO 1.2 §5.2)");
    kprintln!(
        "capacity:   {} sectors of {} bytes ({} MiB)",
        sectors,
        SECTOR_BYTES,
        (sectors * SECTOR_BYTES) >> 20
    );
    kprintln!("block size: {} bytes", device.block_bytes());
    kprintln!("queues:     {} (one per CPU, as far as the device allows)", device.queue_count());
    kprintln!(
        "features:   {}, {}, queue reset {}",
        if device.is_read_only() { "read-only" } else { "read-write" },
        device.feature_names().join(" "),
        if device.has_queue_reset() { "yes" } else { "no" }
    );
    match device.serial() {
        Ok(serial) if serial.is_empty() => kprintln!("serial:     (empty)"),
        Ok(serial) => kprintln!("serial:     {}", serial),
        Err(error) => kprintln!("serial:     not available ({:?})", error),
    }
    let cache = match device.cache_mode() {
        CacheMode::WriteBack => "write-back (durable after flush)",
        CacheMode::WriteThrough => "write-through (durable when acknowledged)",
    };
    kprintln!("cache:      {}", cache);
    let held = device.quarantined_frames();
    if held > 0 {
        kprintln!("quarantine: {} frames held from the device after resets", held);
    }
}

/// The first word and the rest of `text`, both trimmed.
fn split_word(text: &str) -> (Option<&str>, &str) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (Some(word), rest.trim_start()),
        None if text.is_empty() => (None, ""),
        None => (Some(text), ""),
    }
}

fn number(what: &str, word: &str) -> Result<u64, String> {
    word.parse().map_err(|_| format!("{what} '{word}' is not a number"))
}

/// A buffer of whole pages for `bytes`.
fn buffer_for(bytes: u64) -> Result<DmaBuffer, String> {
    DmaBuffer::new(bytes.div_ceil(crate::mm::PAGE_SIZE)).map_err(|_| String::from("no DMA memory"))
}

fn read(device: &'static BlkDevice, sector: &str, count: Option<&str>) -> Result<(), String> {
    let sector = number("sector", sector)?;
    let count = count.map_or(Ok(1), |count| number("count", count))?;
    if !(1..=MAX_READ_SECTORS).contains(&count) {
        return Err(format!("count must be 1 to {MAX_READ_SECTORS}"));
    }
    let bytes = count * SECTOR_BYTES;
    let data = device
        .read(sector, buffer_for(bytes)?, bytes as usize)
        .map_err(|(error, _)| describe(device, "read", sector, count, error))?;
    hexdump(sector * SECTOR_BYTES, &data.as_slice()[..bytes as usize]);
    Ok(())
}

fn write(device: &'static BlkDevice, sector: &str, text: &str) -> Result<(), String> {
    let sector = number("sector", sector)?;
    let mut data = buffer_for(SECTOR_BYTES)?;
    let bytes = text.as_bytes();
    let sector_data = &mut data.as_mut_slice()[..SECTOR_BYTES as usize];
    sector_data.fill(0);
    sector_data[..bytes.len()].copy_from_slice(bytes);
    device
        .write(sector, data, SECTOR_BYTES as usize)
        .map_err(|(error, _)| describe(device, "write", sector, 1, error))?;
    kprintln!(
        "wrote {} bytes to sector {} (zero-padded to {} bytes)",
        bytes.len(),
        sector,
        SECTOR_BYTES
    );
    Ok(())
}

fn describe(
    device: &BlkDevice,
    what: &str,
    sector: u64,
    count: u64,
    error: blk::BlkError,
) -> String {
    match error {
        blk::BlkError::BadRange => format!(
            "{what} of {count} sector(s) at {sector}: past the end (capacity {} sectors)",
            device.capacity_sectors()
        ),
        other => format!("{what} of {count} sector(s) at {sector}: {other:?}"),
    }
}

/// `xxd -a`: 16 bytes a line, offset, hex in pairs, printable ASCII; a run
/// of lines equal to the one before is shown as one `*`.
fn hexdump(base: u64, data: &[u8]) {
    let mut previous: Option<&[u8]> = None;
    let mut skipping = false;
    for (index, line) in data.chunks(16).enumerate() {
        let is_last = (index + 1) * 16 >= data.len();
        if previous == Some(line) && !is_last {
            if !skipping {
                kprintln!("*");
                skipping = true;
            }
            continue;
        }
        skipping = false;
        previous = Some(line);
        let mut hex = String::new();
        for (at, byte) in line.iter().enumerate() {
            hex.push_str(&format!("{byte:02x}"));
            if at % 2 == 1 {
                hex.push(' ');
            }
        }
        let ascii: String = line
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
            .collect();
        kprintln!("{:08x}: {:<40} {}", base + (index * 16) as u64, hex, ascii);
    }
}

/// Random 4 KiB reads, `depth` in flight, for `secs` seconds.
fn bench(
    device: &'static BlkDevice,
    depth: Option<&str>,
    secs: Option<&str>,
) -> Result<(), String> {
    let depth = depth.map_or(Ok(1), |word| number("qd", word))?;
    let secs = secs.map_or(Ok(1), |word| number("seconds", word))?;
    if !(1..=MAX_BENCH_DEPTH).contains(&depth) || !(1..=MAX_BENCH_SECS).contains(&secs) {
        return Err(format!("qd must be 1 to {MAX_BENCH_DEPTH}, seconds 1 to {MAX_BENCH_SECS}"));
    }
    let slots = device.capacity_sectors() / 8;
    if slots == 0 {
        return Err(String::from("the disk is smaller than 4 KiB"));
    }
    let time = crate::platform::time::uptime_us;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_sector = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % slots) * 8
    };
    let mut in_flight: VecDeque<(u64, Pending)> = VecDeque::new();
    let mut free: alloc::vec::Vec<DmaBuffer> = alloc::vec::Vec::new();
    for _ in 0..depth {
        free.push(buffer_for(4096)?);
    }
    let (start, mut ops, mut latency_us) = (time(), 0u64, 0u64);
    let end = start + secs * 1_000_000;
    loop {
        while let Some(buffer) = free.pop().filter(|_| time() < end) {
            let pending = device
                .submit(Operation::Read, next_sector(), Some(buffer), 4096)
                .map_err(|(error, _)| format!("bench: submit: {error:?}"))?;
            in_flight.push_back((time(), pending));
        }
        let Some((submitted, pending)) = in_flight.pop_front() else { break };
        let (result, buffer) = pending.wait();
        result.map_err(|error| format!("bench: read: {error:?}"))?;
        latency_us += time() - submitted;
        ops += 1;
        free.extend(buffer);
    }
    let elapsed_us = (time() - start).max(1);
    kprintln!(
        "4 KiB random reads, qd {}: {} ops in {} ms, {} IOPS, {:.1} MB/s, mean latency {} us",
        depth,
        ops,
        elapsed_us / 1000,
        ops * 1_000_000 / elapsed_us,
        (ops * 4096) as f64 / elapsed_us as f64,
        latency_us / ops.max(1)
    );
    Ok(())
}
