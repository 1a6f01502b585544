//! Reading a device's configuration consistently (VirtIO 1.2 §2.5): the
//! crate's generation-counter retry (`vireo_virtio::config`), with the
//! driver's errors in bring-up's terms.

use super::BringUpError;
pub use vireo_virtio::config::{ConfigFields, READ_ATTEMPTS};
use vireo_virtio::{Features, Transport};

/// A device's configuration structure as a driver needs it.
pub trait DeviceConfig: Sized {
    /// Reads the fields the negotiated `features` make present.
    ///
    /// # Errors
    /// A field outside the device's window ([`BringUpError::Config`]), or
    /// [`BringUpError::BadConfig`] for values the driver cannot use.
    fn read(fields: &ConfigFields<'_>, features: Features) -> Result<Self, BringUpError>;
}

/// A device without configuration the driver needs.
impl DeviceConfig for () {
    fn read(_: &ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        Ok(())
    }
}

/// A field the crate could not read: outside the window, or (from the
/// retry) a configuration that never settled.
impl From<vireo_virtio::Error> for BringUpError {
    fn from(error: vireo_virtio::Error) -> Self {
        match error {
            vireo_virtio::Error::ConfigUnstable => BringUpError::ConfigUnstable,
            other => BringUpError::Config(other),
        }
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
    vireo_virtio::config::read_consistent(&*transport, |fields| C::read(fields, features))
}

mod tests;
