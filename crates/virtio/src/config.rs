//! Reading a device's configuration consistently (VirtIO 1.2 §2.5).
//!
//! The device may change its configuration at any time, and no read of
//! several fields, nor of a 64-bit field (read as two 32-bit halves, which
//! §4.1.3.1 allows), is atomic. So the whole structure is read between two
//! reads of the generation counter and read again until they agree
//! (§2.5.1), at most [`READ_ATTEMPTS`] times: a device still changing it
//! after that is broken, and the caller gets [`Error::ConfigUnstable`]
//! instead of a hang. Each field is read at its natural width (§4.1.3.1:
//! 8-bit accesses for 8-bit fields, 16 for 16, 32 for 32).
//!
//! ```
//! use vireo_virtio::config::{ConfigFields, DeviceConfig, read_config};
//! use vireo_virtio::{Error, Features, Transport};
//!
//! /// The part of virtio-blk's configuration a driver needs (§5.2.4).
//! struct BlkConfig {
//!     capacity_sectors: u64,
//!     seg_max: Option<u32>,
//! }
//!
//! const BLK_F_SEG_MAX: u64 = 1 << 2;
//!
//! impl DeviceConfig for BlkConfig {
//!     type Error = Error;
//!     fn read(fields: &ConfigFields<'_>, features: Features) -> Result<Self, Error> {
//!         let has_seg_max = features.bits() & BLK_F_SEG_MAX != 0;
//!         Ok(BlkConfig {
//!             capacity_sectors: fields.u64(0)?,
//!             seg_max: if has_seg_max { Some(fields.u32(12)?) } else { None },
//!         })
//!     }
//! }
//!
//! fn capacity(transport: &impl Transport, features: Features) -> Result<u64, Error> {
//!     Ok(read_config::<BlkConfig, _>(transport, features)?.capacity_sectors)
//! }
//! # let hal = vireo_virtio::fake::FakeHal::new();
//! # let mut config = [0u8; 16];
//! # config[0..8].copy_from_slice(&2048u64.to_le_bytes());
//! # let t = vireo_virtio::fake::FakeTransport::new(hal.memory(), vireo_virtio::fake::Echo, &[8]);
//! # t.set_config(&config);
//! # assert_eq!(capacity(&t, Features::empty()).unwrap(), 2048);
//! ```

use crate::features::Features;
use crate::transport::Transport;
use crate::{Error, Result};

/// Reads of the whole structure before a changing configuration is given
/// up on.
pub const READ_ATTEMPTS: usize = 16;

/// Little-endian fields of a device's configuration space, read through
/// its transport (offsets are from the start of the device-specific
/// configuration).
pub struct ConfigFields<'a> {
    transport: &'a dyn Transport,
}

impl ConfigFields<'_> {
    /// The `N` bytes at `offset`, in one access where `N` is 1, 2 or 4 and
    /// `offset` is aligned (the transport decides the access widths).
    ///
    /// # Errors
    ///
    /// [`Error::ConfigOutOfRange`] outside the configuration space.
    pub fn bytes<const N: usize>(&self, offset: usize) -> Result<[u8; N]> {
        let mut bytes = [0; N];
        self.transport.read_config(offset, &mut bytes)?;
        Ok(bytes)
    }

    /// The 8-bit field at `offset`.
    ///
    /// # Errors
    ///
    /// As [`ConfigFields::bytes`].
    pub fn u8(&self, offset: usize) -> Result<u8> {
        self.bytes::<1>(offset).map(|[byte]| byte)
    }

    /// The 16-bit field at `offset`.
    ///
    /// # Errors
    ///
    /// As [`ConfigFields::bytes`].
    pub fn u16(&self, offset: usize) -> Result<u16> {
        self.bytes(offset).map(u16::from_le_bytes)
    }

    /// The 32-bit field at `offset`.
    ///
    /// # Errors
    ///
    /// As [`ConfigFields::bytes`].
    pub fn u32(&self, offset: usize) -> Result<u32> {
        self.bytes(offset).map(u32::from_le_bytes)
    }

    /// The 64-bit field at `offset`, as two 32-bit halves, low first
    /// (§4.1.3.1); only the generation check makes the pair consistent.
    ///
    /// # Errors
    ///
    /// As [`ConfigFields::bytes`].
    pub fn u64(&self, offset: usize) -> Result<u64> {
        let low = self.u32(offset)?;
        let high = self.u32(offset + 4)?;
        Ok(u64::from(high) << 32 | u64::from(low))
    }
}

/// A device's configuration structure as a driver needs it.
pub trait DeviceConfig: Sized {
    /// What a failed read reports: the crate's [`Error`] or the driver's
    /// own type (which must say how to carry the crate's).
    type Error: From<Error>;

    /// Reads the fields the negotiated `features` make present, and checks
    /// their values.
    ///
    /// # Errors
    ///
    /// A field outside the configuration space, or a value the driver
    /// cannot use.
    fn read(
        fields: &ConfigFields<'_>,
        features: Features,
    ) -> core::result::Result<Self, Self::Error>;
}

/// A device without configuration the driver needs.
impl DeviceConfig for () {
    type Error = Error;
    fn read(_: &ConfigFields<'_>, _: Features) -> Result<Self> {
        Ok(())
    }
}

/// Reads `C` with the generation counter unchanged across the read.
///
/// # Errors
///
/// [`Error::ConfigUnstable`] (through `C::Error`) when every attempt saw
/// the counter move, else what `C::read` returns.
pub fn read_config<C: DeviceConfig, T: Transport>(
    transport: &T,
    features: Features,
) -> core::result::Result<C, C::Error> {
    read_consistent(transport, |fields| C::read(fields, features))
}

/// Runs `read` over the configuration until the generation counter is the
/// same before and after it (§2.5.1), at most [`READ_ATTEMPTS`] times.
///
/// # Errors
///
/// [`Error::ConfigUnstable`] (converted into `E`) when every attempt saw
/// the counter move, else the first error `read` returns.
pub fn read_consistent<T: Transport, R, E: From<Error>>(
    transport: &T,
    mut read: impl FnMut(&ConfigFields<'_>) -> core::result::Result<R, E>,
) -> core::result::Result<R, E> {
    let fields = ConfigFields { transport };
    for _ in 0..READ_ATTEMPTS {
        let before = transport.config_generation();
        let value = read(&fields)?;
        if transport.config_generation() == before {
            return Ok(value);
        }
    }
    Err(Error::ConfigUnstable.into())
}
