//! A window of device registers: what the crate's transports read and
//! write, so the kernel only has to map it (and tests can fake it).

use core::ptr::NonNull;

/// A window of little-endian device registers: a mapped BAR region, a
/// virtio-mmio device, or a test double.
///
/// Accesses take `&self`: registers are not Rust memory, and a window can
/// be shared (a per-queue notifier writes its doorbell through its own
/// copy). Register *sequences* that must not interleave are serialised by
/// the transport's `&mut self` methods, not here.
///
/// # Safety
///
/// The transports trust a window to reach the device faithfully (the ring
/// addresses they program go through it). Implementations promise that,
/// for `offset + width <= len()` and `offset` a multiple of the width,
/// each method is one access of that width to the device register at
/// `offset` (values little-endian on the device side, native here), and
/// that no method touches any memory but the window's registers; an access
/// outside the window must do nothing (reads return all-ones, what a
/// missing device reads as).
pub unsafe trait RegisterWindow {
    /// Size of the window in bytes.
    fn len(&self) -> usize;
    /// Whether the window is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the 8-bit register at `offset`.
    fn read_u8(&self, offset: usize) -> u8;
    /// Reads the 16-bit register at `offset`.
    fn read_u16(&self, offset: usize) -> u16;
    /// Reads the 32-bit register at `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes the 8-bit register at `offset`.
    fn write_u8(&self, offset: usize, value: u8);
    /// Writes the 16-bit register at `offset`.
    fn write_u16(&self, offset: usize, value: u16);
    /// Writes the 32-bit register at `offset`.
    fn write_u32(&self, offset: usize, value: u32);
}

/// Memory-mapped registers at a CPU address, with every access checked
/// against the window's bounds and alignment (a device-supplied offset
/// can never reach outside it).
#[derive(Clone, Copy, Debug)]
pub struct MmioWindow {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the window is device registers, not Rust memory: any CPU may
// access them, and each access is a single volatile load or store.
unsafe impl Send for MmioWindow {}
// SAFETY: as above; `&self` accesses are single volatile register accesses.
unsafe impl Sync for MmioWindow {}

impl MmioWindow {
    /// A window of `len` bytes of registers at `base`.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be mapped as device memory (uncached, or
    /// whatever the platform needs for registers) for as long as this
    /// window or any copy of it lives, and must not be memory that Rust
    /// code accesses otherwise.
    pub const unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
    }

    fn at<T>(&self, offset: usize) -> Option<*mut T> {
        let width = size_of::<T>();
        let fits = offset.is_multiple_of(width) && offset.checked_add(width)? <= self.len;
        fits.then(|| self.base.as_ptr().wrapping_add(offset).cast())
    }
}

macro_rules! access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&self, offset: usize) -> $t {
            match self.at::<$t>(offset) {
                // SAFETY: inside the mapped window (checked) and aligned;
                // `new`'s caller promised it is device registers.
                Some(p) => <$t>::from_le(unsafe { p.read_volatile() }),
                None => <$t>::MAX,
            }
        }
        fn $write(&self, offset: usize, value: $t) {
            if let Some(p) = self.at::<$t>(offset) {
                // SAFETY: as in the read.
                unsafe { p.write_volatile(value.to_le()) }
            }
        }
    };
}

// SAFETY: each access is one volatile access of its width, bounds- and
// alignment-checked; out of range, reads return all-ones and writes are
// dropped.
unsafe impl RegisterWindow for MmioWindow {
    fn len(&self) -> usize {
        self.len
    }
    access!(read_u8, write_u8, u8);
    access!(read_u16, write_u16, u16);
    access!(read_u32, write_u32, u32);
}

/// Reads the 64 feature bits as two 32-bit words through a select register
/// (`device_feature_select` §4.1.4.3, `DeviceFeaturesSel` §4.2.2).
pub(crate) fn read_features<W: RegisterWindow>(window: &W, select: usize, word: usize) -> u64 {
    window.write_u32(select, 0);
    let low = window.read_u32(word);
    window.write_u32(select, 1);
    let high = window.read_u32(word);
    u64::from(high) << 32 | u64::from(low)
}

/// Writes the 64 accepted feature bits as two 32-bit words through a
/// select register (`driver_feature_select`, `DriverFeaturesSel`).
pub(crate) fn write_features<W: RegisterWindow>(window: &W, select: usize, word: usize, bits: u64) {
    window.write_u32(select, 0);
    window.write_u32(word, bits as u32);
    window.write_u32(select, 1);
    window.write_u32(word, (bits >> 32) as u32);
}

/// Reads `buf.len()` bytes of a device configuration window at `offset`
/// (VirtIO 1.2 §4.1.3.1, §4.2.2: a 16- or 32-bit field is read at its
/// natural width, anything else byte by byte).
pub(crate) fn read_config<W: RegisterWindow>(
    window: &W,
    base: usize,
    offset: usize,
    buf: &mut [u8],
) -> crate::Result {
    let end = offset.checked_add(buf.len()).ok_or(crate::Error::ConfigOutOfRange)?;
    if end > window.len().saturating_sub(base) {
        return Err(crate::Error::ConfigOutOfRange);
    }
    let at = base + offset;
    match buf.len() {
        2 if offset.is_multiple_of(2) => buf.copy_from_slice(&window.read_u16(at).to_le_bytes()),
        4 if offset.is_multiple_of(4) => buf.copy_from_slice(&window.read_u32(at).to_le_bytes()),
        _ => buf.iter_mut().enumerate().for_each(|(i, b)| *b = window.read_u8(at + i)),
    }
    Ok(())
}

/// Writes `data` to a device configuration window at `offset`, at the
/// fields' natural widths as [`read_config`] reads them.
pub(crate) fn write_config<W: RegisterWindow>(
    window: &W,
    base: usize,
    offset: usize,
    data: &[u8],
) -> crate::Result {
    let end = offset.checked_add(data.len()).ok_or(crate::Error::ConfigOutOfRange)?;
    if end > window.len().saturating_sub(base) {
        return Err(crate::Error::ConfigOutOfRange);
    }
    let at = base + offset;
    match *data {
        [a, b] if offset.is_multiple_of(2) => window.write_u16(at, u16::from_le_bytes([a, b])),
        [a, b, c, d] if offset.is_multiple_of(4) => {
            window.write_u32(at, u32::from_le_bytes([a, b, c, d]))
        }
        _ => data.iter().enumerate().for_each(|(i, &b)| window.write_u8(at + i, b)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MmioWindow, RegisterWindow, read_config};
    use core::ptr::NonNull;

    #[test]
    fn accesses_outside_or_misaligned_do_nothing() {
        let mut regs = [0u8; 16];
        let base = NonNull::new(regs.as_mut_ptr()).unwrap();
        // SAFETY: (test) the array outlives the window and is only reached
        // through it below.
        let w = unsafe { MmioWindow::new(base, 8) };
        w.write_u32(4, 0x0403_0201);
        assert_eq!((w.read_u8(4), w.read_u16(6), w.read_u32(4)), (1, 0x0403, 0x0403_0201));
        w.write_u32(8, 0xdead_beef); // past the window: dropped
        w.write_u16(3, 0xffff); // misaligned: dropped
        assert_eq!(
            (w.read_u32(8), w.read_u16(3), w.read_u8(usize::MAX)),
            (u32::MAX, u16::MAX, u8::MAX)
        );
        let mut buf = [0; 2];
        assert!(read_config(&w, 4, 2, &mut buf).is_ok());
        assert_eq!(buf, [3, 4]);
        assert!(read_config(&w, 4, 3, &mut buf).is_err(), "config past the window");
        assert_eq!(regs, [0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
