//! QEMU's firmware configuration device (fw_cfg, I/O ports 0x510/0x511):
//! what the machine was started with, read by tests that compare the
//! kernel's view with the truth from outside (`-smp`, `-m`).
//!
//! Items are selected by writing a 16-bit key and read byte by byte
//! (QEMU's docs/specs/fw_cfg.rst). Only tests use it, one at a time: the
//! selector/data pair is not locked.

use x86_64::instructions::port::Port;

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
/// FW_CFG_SIGNATURE: "QEMU".
const SIGNATURE: u16 = 0x0000;
/// FW_CFG_RAM_SIZE: `-m`, in bytes (u64).
const RAM_SIZE: u16 = 0x0003;
/// FW_CFG_NB_CPUS: `-smp` (u16).
const CPU_COUNT: u16 = 0x0005;
/// FW_CFG_FILE_DIR: a big-endian count, then 64-byte entries (size,
/// selector, reserved, a 56-byte NUL-padded name).
const FILE_DIR: u16 = 0x0019;
/// Directory entries read at most.
const MAX_FILES: u32 = 256;

/// Whether the firmware directory lists `name` (e.g. `etc/acpi/rsdp`,
/// there exactly when QEMU builds ACPI tables); `None` without fw_cfg.
pub fn has_file(name: &str) -> Option<bool> {
    let count = u32::from_be_bytes(read::<4>(FILE_DIR)?).min(MAX_FILES);
    let mut data = Port::<u8>::new(DATA);
    let found = (0..count).any(|_| {
        let entry: [u8; 64] = core::array::from_fn(|_| {
            // SAFETY: as in `read`; the directory's entries follow its
            // count in the same item, read on from where `read` stopped.
            unsafe { data.read() }
        });
        let stored = &entry[8..];
        let end = stored.iter().position(|&byte| byte == 0).unwrap_or(stored.len());
        &stored[..end] == name.as_bytes()
    });
    Some(found)
}

/// Reads item `key` into `bytes`; `None` without fw_cfg.
fn read<const N: usize>(key: u16) -> Option<[u8; N]> {
    let mut selector = Port::<u16>::new(SELECTOR);
    let mut data = Port::<u8>::new(DATA);
    // SAFETY: ports 0x510/0x511 are QEMU's fw_cfg; selecting an item and
    // reading its bytes has no side effects (without fw_cfg the reads
    // return 0xff, and the signature check below fails).
    unsafe {
        selector.write(SIGNATURE);
        let signature: [u8; 4] = core::array::from_fn(|_| data.read());
        if &signature != b"QEMU" {
            return None;
        }
        selector.write(key);
        Some(core::array::from_fn(|_| data.read()))
    }
}

/// The number of CPUs QEMU was started with (`-smp`).
pub fn cpu_count() -> Option<u16> {
    read(CPU_COUNT).map(u16::from_le_bytes)
}

/// The guest RAM QEMU was given (`-m`), in bytes.
pub fn ram_bytes() -> Option<u64> {
    read(RAM_SIZE).map(u64::from_le_bytes)
}
