//! Drives the runner changes while the guest uses them, through QMP:
//! throttled to a standstill (`stall`) and grown (`resize`).
//!
//! Both need what the issue-9 driver adds (request deadlines with reset
//! and recovery; the config-change interrupt), so the runner keeps them
//! out of `make test` until it lands (xtask/src/blk_checks/mod.rs,
//! `NEEDS_DRIVER_DEADLINES_AND_CONFIG_IRQ`). They compile and run against
//! today's driver and fail there, saying why.

use super::{Outcome, buffer, progress, sector_of, wait_for_runner};
use crate::cmdline::BlkCheck;
use crate::drivers::virtio::blk::{BlkDevice, BlkError, Operation, Pending};
use alloc::format;
use alloc::vec::Vec;

/// Requests in flight while the drive stands still.
const STALLED_REQUESTS: u64 = 8;
/// How long the runner gets to act on a progress line.
const RUNNER_US: u64 = 30_000_000;

/// Whether `error` is the driver's deadline error.
///
/// By name, so this compiles before the issue-9 driver adds
/// `BlkError::Timeout`; once it has, this is `matches!(error,
/// BlkError::Timeout)`.
fn is_timeout(error: &BlkError) -> bool {
    matches!(error, BlkError::Timeout)
}

/// `blkcheck=stall`: with the drive throttled to a byte a second, requests
/// must fail at their deadline; once the runner lifts the throttle, I/O
/// must work again without a reboot.
pub fn stall(device: &'static BlkDevice) -> Outcome {
    progress(BlkCheck::Stall, "ready for the throttle");
    wait_for_runner("throttled", RUNNER_US)?;
    let started = crate::platform::time::uptime_us();
    let mut pending: Vec<Pending> = Vec::new();
    for index in 0..STALLED_REQUESTS {
        let data = buffer(1)?;
        match device.submit(Operation::Read, sector_of(index * 8), Some(data), 4096) {
            Ok(request) => pending.push(request),
            Err((error, _)) => {
                return Err(format!("submit {index} on the stalled drive: {error:?}"));
            }
        }
    }
    let outcomes: Vec<Result<(), BlkError>> =
        pending.into_iter().map(|request| request.wait().0).collect();
    let waited_ms = (crate::platform::time::uptime_us() - started) / 1000;
    let timed_out =
        outcomes.iter().filter(|outcome| matches!(outcome, Err(e) if is_timeout(e))).count();
    progress(
        BlkCheck::Stall,
        &format!("stalled requests ended after {waited_ms} ms: {outcomes:?}"),
    );
    if timed_out == 0 {
        return Err(format!(
            "no request of {STALLED_REQUESTS} failed at a deadline; they ended after {waited_ms} ms as {outcomes:?}"
        ));
    }
    progress(BlkCheck::Stall, "timed out; lift the throttle");
    wait_for_runner("released", RUNNER_US)?;
    let mut data = buffer(1)?;
    for index in 0..32 {
        data = device
            .read(sector_of(index), data, 4096)
            .map_err(|(error, _)| format!("read {index} after the stall: {error:?}"))?;
    }
    Ok(format!(
        "{timed_out} of {STALLED_REQUESTS} requests timed out after {waited_ms} ms; 32 reads after recovery succeeded"
    ))
}

/// `blkcheck=resize`: announces the capacity, waits up to 20 s for the
/// runner's `block_resize` to show through the config-change interrupt,
/// then reads the last sector of the new capacity.
pub fn resize(device: &'static BlkDevice) -> Outcome {
    let before = device.capacity_sectors();
    progress(BlkCheck::Resize, &format!("capacity {before} sectors; resize me"));
    let deadline = crate::platform::time::uptime_us() + 20_000_000;
    while device.capacity_sectors() == before {
        if crate::platform::time::uptime_us() > deadline {
            return Err(format!(
                "the capacity stayed {before} sectors for 20 s after the announcement"
            ));
        }
        crate::sched::timer::sleep_us(10_000);
    }
    let after = device.capacity_sectors();
    let data = buffer(1)?;
    device
        .read(after - 1, data, 512)
        .map_err(|(error, _)| format!("read of the new last sector {}: {error:?}", after - 1))?;
    Ok(format!("capacity {before} -> {after} sectors; the new last sector reads"))
}
