//! Finding memory-mapped devices in the DSDT without an AML interpreter.
//!
//! QEMU's `microvm` describes each virtio-mmio transport that has a device
//! as a `Device` object with `Name (_HID, "LNRO0005")` and a static
//! `Name (_CRS, ResourceTemplate () { Memory32Fixed, Interrupt })`
//! (the form Linux's `virtio_mmio` ACPI binding reads). Both are plain data
//! in the AML byte stream (ACPI 6.5 §20.2: DefDevice, DefName, String,
//! DefBuffer), so they can be found by decoding just those encodings:
//!
//! - every `DeviceOp` (0x5B 0x82) with its package length bounds one
//!   device body;
//! - inside it, `NameOp "_HID"` with a `String` must equal the wanted id;
//! - `NameOp "_CRS"` with a `Buffer` holds the resource descriptors
//!   (ACPI 6.5 §6.4), of which the 32-bit fixed memory range and the
//!   (extended or legacy) interrupt descriptor are read.
//!
//! This is a bounded scan, not an interpreter: a `_CRS` computed by a
//! method, or an id given as an EISA integer, is not seen. A false match
//! costs nothing: every window found is still checked for the virtio magic
//! value before it is used. Every read is bounds-checked; no input hangs or
//! panics the scan.

use crate::platform::apic::{Polarity, TriggerMode};
use alloc::vec::Vec;

/// A memory-mapped device the DSDT describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Physical base of its register window.
    pub phys: u64,
    /// Bytes of the window.
    pub len_bytes: u32,
    /// Its interrupt (a GSI), if the `_CRS` names one.
    pub interrupt: Option<Interrupt>,
}

/// A device interrupt: a GSI with its polarity and trigger mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The global system interrupt.
    pub gsi: u32,
    /// Edge or level.
    pub trigger: TriggerMode,
    /// Active high or low.
    pub polarity: Polarity,
}

const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const NAME_OP: u8 = 0x08;
const STRING_PREFIX: u8 = 0x0d;
const BUFFER_OP: u8 = 0x11;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;

/// A `PkgLength` at `at` (ACPI 6.5 §20.2.4): the package's length (which
/// counts the encoding itself) and the encoding's size.
fn package_length(aml: &[u8], at: usize) -> Option<(usize, usize)> {
    let lead = *aml.get(at)?;
    let follow = usize::from(lead >> 6);
    if follow == 0 {
        return Some((usize::from(lead & 0x3f), 1));
    }
    let mut length = usize::from(lead & 0x0f);
    for index in 0..follow {
        length |= usize::from(*aml.get(at + 1 + index)?) << (4 + 8 * index);
    }
    Some((length, 1 + follow))
}

/// An integer constant at `at` (`ByteConst`, `WordConst`, `DWordConst`,
/// `ZeroOp`, `OneOp`) and its size.
fn integer(aml: &[u8], at: usize) -> Option<(usize, usize)> {
    let bytes = |count: usize| -> Option<usize> {
        let slice = aml.get(at + 1..at + 1 + count)?;
        Some(slice.iter().rev().fold(0usize, |value, &byte| value << 8 | usize::from(byte)))
    };
    match *aml.get(at)? {
        0x00 => Some((0, 1)),
        0x01 => Some((1, 1)),
        BYTE_PREFIX => Some((bytes(1)?, 2)),
        WORD_PREFIX => Some((bytes(2)?, 3)),
        DWORD_PREFIX => Some((bytes(4)?, 5)),
        _ => None,
    }
}

/// Where `NameOp <name>` occurs in `body`: the offset just after the name.
fn find_name(body: &[u8], name: &[u8; 4]) -> Option<usize> {
    body.windows(5).position(|window| window[0] == NAME_OP && &window[1..] == name).map(|at| at + 5)
}

/// The `_HID` string of a device body.
fn hardware_id(body: &[u8]) -> Option<&[u8]> {
    let at = find_name(body, b"_HID")?;
    if *body.get(at)? != STRING_PREFIX {
        return None;
    }
    let rest = body.get(at + 1..)?;
    let end = rest.iter().position(|&byte| byte == 0)?;
    Some(&rest[..end])
}

/// The bytes of a device body's `_CRS` buffer.
fn resources(body: &[u8]) -> Option<&[u8]> {
    let at = find_name(body, b"_CRS")?;
    if *body.get(at)? != BUFFER_OP {
        return None;
    }
    let (package, encoding) = package_length(body, at + 1)?;
    let package_end = (at + 1).checked_add(package)?;
    let (size, size_encoding) = integer(body, at + 1 + encoding)?;
    let start = at + 1 + encoding + size_encoding;
    let end = start.checked_add(size)?.min(package_end).min(body.len());
    body.get(start..end)
}

/// Decodes the memory range and interrupt of a resource template.
fn decode_resources(template: &[u8]) -> Option<MmioDeviceInfo> {
    let mut memory = None;
    let mut interrupt = None;
    let mut at = 0;
    while let Some(&tag) = template.get(at) {
        if tag & 0x80 == 0 {
            // Small descriptor (ACPI 6.5 §6.4.2): type in bits 6:3, length 2:0.
            let (kind, len) = (tag >> 3 & 0x0f, usize::from(tag & 0x07));
            let body = template.get(at + 1..at + 1 + len)?;
            match kind {
                // End tag.
                0x0f => break,
                // IRQ descriptor (§6.4.2.1): a 16-bit mask, optional flags
                // (bit 0 edge, bit 3 active low); without flags edge, high.
                0x04 if len >= 2 && interrupt.is_none() => {
                    let mask = u16::from_le_bytes([body[0], body[1]]);
                    let flags = body.get(2).copied().unwrap_or(0x01);
                    interrupt = (mask != 0).then(|| Interrupt {
                        gsi: mask.trailing_zeros(),
                        trigger: if flags & 0x01 != 0 {
                            TriggerMode::Edge
                        } else {
                            TriggerMode::Level
                        },
                        polarity: if flags & 0x08 != 0 {
                            Polarity::ActiveLow
                        } else {
                            Polarity::ActiveHigh
                        },
                    });
                }
                _ => {}
            }
            at += 1 + len;
        } else {
            // Large descriptor (§6.4.3): type in bits 6:0, 16-bit length.
            let len =
                usize::from(u16::from_le_bytes([*template.get(at + 1)?, *template.get(at + 2)?]));
            let body = template.get(at + 3..at + 3 + len)?;
            match tag & 0x7f {
                // 32-bit fixed memory range (§6.4.3.4): info, base, length.
                0x06 if len >= 9 && memory.is_none() => {
                    let base = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
                    let size = u32::from_le_bytes([body[5], body[6], body[7], body[8]]);
                    memory = Some((u64::from(base), size));
                }
                // Extended interrupt (§6.4.3.6): flags (bit 1 edge, bit 2
                // active low), count, then 32-bit interrupt numbers.
                0x09 if len >= 6 && interrupt.is_none() && body[1] >= 1 => {
                    let flags = body[0];
                    interrupt = Some(Interrupt {
                        gsi: u32::from_le_bytes([body[2], body[3], body[4], body[5]]),
                        trigger: if flags & 0x02 != 0 {
                            TriggerMode::Edge
                        } else {
                            TriggerMode::Level
                        },
                        polarity: if flags & 0x04 != 0 {
                            Polarity::ActiveLow
                        } else {
                            Polarity::ActiveHigh
                        },
                    });
                }
                _ => {}
            }
            at += 3 + len;
        }
    }
    let (phys, len_bytes) = memory.filter(|&(phys, len)| phys != 0 && len != 0)?;
    Some(MmioDeviceInfo { phys, len_bytes, interrupt })
}

/// Every `Device` in `aml` whose `_HID` is `hid` and whose `_CRS` names a
/// fixed memory window, in table order, each window once.
pub fn find_mmio_devices(aml: &[u8], hid: &[u8]) -> Vec<MmioDeviceInfo> {
    let mut found: Vec<MmioDeviceInfo> = Vec::new();
    // One pass first: a DSDT that never names the id (q35's, pc's) is not
    // walked device by device, which costs a millisecond or two under TCG.
    if hid.is_empty() || !aml.windows(hid.len()).any(|window| window == hid) {
        return found;
    }
    let mut at = 0;
    while at + 2 < aml.len() {
        if aml[at] != EXT_OP_PREFIX || aml[at + 1] != DEVICE_OP {
            at += 1;
            continue;
        }
        let Some((package, _)) = package_length(aml, at + 2) else { break };
        let body_end = (at + 2).saturating_add(package).min(aml.len());
        let body = &aml[at + 2..body_end];
        let device = (hardware_id(body) == Some(hid)).then(|| resources(body)).flatten();
        if let Some(device) = device.and_then(decode_resources)
            && found.iter().all(|other| other.phys != device.phys)
        {
            found.push(device);
        }
        // Nested devices lie inside this body: keep scanning byte by byte.
        at += 2;
    }
    found
}

mod tests {
    use super::*;
    use crate::{check, check_eq, ktest};
    use alloc::vec;

    /// `Device (VR07) { Name (_HID, "LNRO0005") Name (_UID, 7)
    /// Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite,
    /// 0xFEB00E00, 0x200) Interrupt (ResourceConsumer, Level, ActiveHigh,
    /// Exclusive) { 31 } }) }`, as QEMU's microvm encodes it.
    fn microvm_device(base: u32, gsi: u8) -> Vec<u8> {
        let mut crs = vec![0x86, 0x09, 0x00, 0x01];
        crs.extend_from_slice(&base.to_le_bytes());
        crs.extend_from_slice(&0x200u32.to_le_bytes());
        crs.extend_from_slice(&[0x89, 0x06, 0x00, 0x01, 0x01, gsi, 0, 0, 0]);
        crs.extend_from_slice(&[0x79, 0x00]);
        let mut body = b"VR07".to_vec();
        body.extend_from_slice(&[NAME_OP, b'_', b'H', b'I', b'D', STRING_PREFIX]);
        body.extend_from_slice(b"LNRO0005\0");
        body.extend_from_slice(&[NAME_OP, b'_', b'U', b'I', b'D', BYTE_PREFIX, 7]);
        body.extend_from_slice(&[NAME_OP, b'_', b'C', b'R', b'S', BUFFER_OP]);
        // PkgLength (one byte) + ByteConst size + the template.
        body.push((1 + 2 + crs.len()) as u8);
        body.extend_from_slice(&[BYTE_PREFIX, crs.len() as u8]);
        body.extend_from_slice(&crs);
        // A two-byte PkgLength, as devices this size get.
        let package = body.len() + 2;
        let mut device =
            vec![EXT_OP_PREFIX, DEVICE_OP, 0x40 | (package & 0x0f) as u8, (package >> 4) as u8];
        device.extend_from_slice(&body);
        device
    }

    ktest!(
        fn microvm_style_virtio_mmio_devices_are_found() {
            let mut aml = b"\x10\x0f\\_SB_".to_vec(); // a Scope header before them
            aml.extend(microvm_device(0xfeb0_0e00, 31));
            aml.extend(microvm_device(0xfeb0_0c00, 30));
            let found = find_mmio_devices(&aml, b"LNRO0005");
            check_eq!(found.len(), 2);
            check_eq!(
                found[0],
                MmioDeviceInfo {
                    phys: 0xfeb0_0e00,
                    len_bytes: 0x200,
                    interrupt: Some(Interrupt {
                        gsi: 31,
                        trigger: TriggerMode::Level,
                        polarity: Polarity::ActiveHigh
                    })
                }
            );
            check_eq!(found[1].phys, 0xfeb0_0c00);
            check!(find_mmio_devices(&aml, b"LNRO0006").is_empty());
            Ok(())
        }
    );

    ktest!(
        fn truncated_or_lying_aml_finds_nothing_and_never_panics() {
            let device = microvm_device(0xfeb0_0e00, 31);
            // Every prefix of a valid device, and every single-byte change
            // of one: no panic, and no window that is not in the bytes.
            for len in 0..device.len() {
                let found = find_mmio_devices(&device[..len], b"LNRO0005");
                check!(found.iter().all(|d| d.phys == 0xfeb0_0e00), "{:?}", found);
            }
            for at in 0..device.len() {
                for value in [0x00, 0x7f, 0xff] {
                    let mut broken = device.clone();
                    broken[at] = value;
                    let _ = find_mmio_devices(&broken, b"LNRO0005");
                }
            }
            // A package length running past the end.
            check!(
                find_mmio_devices(&[EXT_OP_PREFIX, DEVICE_OP, 0xff, 0xff], b"LNRO0005").is_empty()
            );
            Ok(())
        }
    );
}
