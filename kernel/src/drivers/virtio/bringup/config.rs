//! Reading a device's configuration consistently (VirtIO 1.2 §2.5).
//!
//! The device may change its configuration at any time, and no read of
//! several fields, nor of a 64-bit field (read as two 32-bit halves, which
//! §4.1.3.1 allows), is atomic. So the whole structure is read between two
//! reads of the generation counter and read again until they agree
//! (§2.5.1). Each field is read at its natural width (§4.1.3.1: 8-bit
//! accesses for 8-bit fields, 16 for 16, 32 for 32).

use super::BringUpError;
use vireo_virtio::{Features, Transport};

/// Reads of the whole structure before a changing configuration is given
/// up on: a device that is still changing it after this many is broken.
const READ_ATTEMPTS: usize = 16;

/// A device's configuration structure as a driver needs it.
pub trait DeviceConfig: Sized {
    /// Reads the fields the negotiated `features` make present.
    ///
    /// # Errors
    /// A field outside the device's window ([`vireo_virtio::Error::ConfigOutOfRange`]),
    /// or [`BringUpError::BadConfig`] for values the driver cannot use.
    fn read(fields: &mut ConfigFields<'_>, features: Features) -> Result<Self, BringUpError>;
}

/// A device without configuration the driver needs.
impl DeviceConfig for () {
    fn read(_: &mut ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        Ok(())
    }
}

/// Little-endian fields of the device's configuration window.
pub struct ConfigFields<'a> {
    transport: &'a mut dyn Transport,
}

impl ConfigFields<'_> {
    fn read<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], BringUpError> {
        let mut bytes = [0; N];
        self.transport.read_config(offset, &mut bytes).map_err(BringUpError::Config)?;
        Ok(bytes)
    }

    /// The 8-bit field at `offset`.
    ///
    /// # Errors
    /// [`BringUpError::Config`] outside the window.
    pub fn u8(&mut self, offset: usize) -> Result<u8, BringUpError> {
        self.read::<1>(offset).map(|[byte]| byte)
    }

    /// The 16-bit field at `offset`.
    ///
    /// # Errors
    /// As [`ConfigFields::u8`].
    pub fn u16(&mut self, offset: usize) -> Result<u16, BringUpError> {
        self.read(offset).map(u16::from_le_bytes)
    }

    /// The 32-bit field at `offset`.
    ///
    /// # Errors
    /// As [`ConfigFields::u8`].
    pub fn u32(&mut self, offset: usize) -> Result<u32, BringUpError> {
        self.read(offset).map(u32::from_le_bytes)
    }

    /// The 64-bit field at `offset`, low half first.
    ///
    /// # Errors
    /// As [`ConfigFields::u8`].
    pub fn u64(&mut self, offset: usize) -> Result<u64, BringUpError> {
        let low = self.u32(offset)?;
        let high = self.u32(offset + 4)?;
        Ok(u64::from(high) << 32 | u64::from(low))
    }
}

/// Reads `C` with the generation counter unchanged across the read.
///
/// # Errors
/// [`BringUpError::ConfigUnstable`] when every attempt saw the counter
/// move, else what `C::read` returns.
pub(super) fn read<C: DeviceConfig>(
    transport: &mut impl Transport,
    features: Features,
) -> Result<C, BringUpError> {
    for _ in 0..READ_ATTEMPTS {
        let before = transport.config_generation();
        let config = C::read(&mut ConfigFields { transport: &mut *transport }, features)?;
        if transport.config_generation() == before {
            return Ok(config);
        }
    }
    Err(BringUpError::ConfigUnstable)
}

mod tests;
