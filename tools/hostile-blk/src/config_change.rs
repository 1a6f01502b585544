//! The `generation-unsettled` lie: the capacity flaps and QEMU is told
//! about it every few milliseconds, so the config generation counter the
//! guest reads (§4.1.4.3, `config_generation`) never holds still.
//!
//! The counter is QEMU's, not the backend's: QEMU bumps it (and raises the
//! config interrupt) only in `virtio_notify_config`, which it calls when a
//! `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG` on the backend channel leads to a
//! `GET_CONFIG` whose capacity differs from its cached one — and only once
//! the driver set DRIVER_OK. So this is the one way a vhost-user backend
//! can keep the generation moving: change the capacity, send the message,
//! repeat.
//!
//! vhost 0.18's `Backend` cannot send that message, and keeps the channel's
//! socket private, so the message is written by hand on the socket QEMU
//! passed in `SET_BACKEND_REQ_FD`: the one unnamed Unix socket this process
//! holds (the vhost-user connection itself is named by its listening path).

use crate::device::log;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG`.
const CONFIG_CHANGE_MSG: u32 = 2;
/// Header flags: protocol version 1, no reply wanted.
const VERSION_1: u32 = 0x1;
/// Pause between two changes.
const PERIOD: Duration = Duration::from_millis(2);
/// Sectors the capacity flaps by: 4 KiB past the true end.
const FLAP_SECTORS: u64 = 8;

/// The flapping capacity, shared by the config space and the sender.
pub struct Flapper {
    pub capacity_sectors: AtomicU64,
    honest_sectors: u64,
    started: AtomicBool,
}

impl Flapper {
    pub fn new(honest_sectors: u64) -> Arc<Self> {
        Arc::new(Self {
            capacity_sectors: AtomicU64::new(honest_sectors),
            honest_sectors,
            started: AtomicBool::new(false),
        })
    }

    /// Starts flapping on `channel` (once).
    pub fn start(self: &Arc<Self>, channel: OwnedFd) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let flapper = self.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            loop {
                let now = flapper.capacity_sectors.load(Ordering::Relaxed);
                let next = if now == flapper.honest_sectors {
                    flapper.honest_sectors + FLAP_SECTORS
                } else {
                    flapper.honest_sectors
                };
                flapper.capacity_sectors.store(next, Ordering::Relaxed);
                if let Err(error) = send_config_change(&channel) {
                    log(format_args!("config change #{sent} not sent ({error}); stopping"));
                    return;
                }
                sent += 1;
                if sent.is_power_of_two() {
                    log(format_args!("{sent} config changes sent"));
                }
                std::thread::sleep(PERIOD);
            }
        });
    }
}

/// One `CONFIG_CHANGE_MSG`: a 12-byte header, no payload.
fn send_config_change(channel: &OwnedFd) -> std::io::Result<()> {
    let mut header = [0u8; 12];
    header[0..4].copy_from_slice(&CONFIG_CHANGE_MSG.to_le_bytes());
    header[4..8].copy_from_slice(&VERSION_1.to_le_bytes());
    let file = std::fs::File::from(channel.try_clone()?);
    use std::io::Write;
    (&file).write_all(&header)
}

/// A duplicate of the backend channel's socket: the only unnamed Unix
/// socket among this process's descriptors.
pub fn find_backend_channel() -> Option<OwnedFd> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let found: Vec<i32> = fds.into_iter().filter(|&fd| is_unnamed_unix_socket(fd)).collect();
    match found[..] {
        [fd] => {
            // SAFETY: dup(2) on a descriptor this process holds; the new
            // descriptor is owned by nothing else.
            let copy = unsafe { libc::dup(fd) };
            // SAFETY: `copy` is a fresh descriptor we own (checked >= 0).
            (copy >= 0).then(|| unsafe { OwnedFd::from_raw_fd(copy) })
        }
        _ => {
            log(format_args!("backend channel not found ({} candidates)", found.len()));
            None
        }
    }
}

fn is_unnamed_unix_socket(fd: i32) -> bool {
    // SAFETY: an all-zero sockaddr_un is a valid value to be overwritten.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `address` and `len` are valid for writes of `len` bytes; a
    // descriptor that is not a socket only makes the call fail.
    let named =
        unsafe { libc::getsockname(fd, (&raw mut address).cast::<libc::sockaddr>(), &raw mut len) };
    // An unnamed (socketpair) Unix socket reports only the family.
    named == 0
        && i32::from(address.sun_family) == libc::AF_UNIX
        && len as usize <= std::mem::size_of::<libc::sa_family_t>()
}
