//! The crate's single error type.

use core::fmt;

/// Everything that can go wrong in the VirtIO core.
///
/// Errors whose name starts with `Device` mean the device broke the ring
/// protocol; the queue that saw them is marked broken and every later call on
/// it returns [`Error::Broken`] (the Linux `BAD_RING` policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The queue was marked broken by an earlier device protocol violation.
    Broken,
    /// Not enough free descriptors for this request right now.
    QueueFull,
    /// The request can never be submitted: no segments, a zero-length
    /// segment, or more segments than the queue (or indirect table) holds.
    InvalidRequest,
    /// A segment lies outside the DMA region it was carved from.
    OutOfBounds,
    /// Queue size is zero, not a power of two, above 32768 or above the
    /// device maximum (VirtIO 1.2 §2.7: split queue sizes are powers of two
    /// up to 32768).
    InvalidQueueSize,
    /// The transport says this queue does not exist or is already in use.
    QueueUnavailable,
    /// The HAL could not provide DMA memory.
    DmaAlloc,
    /// A required feature (e.g. `VERSION_1`) was not negotiated, or the
    /// device did not accept `FEATURES_OK` (VirtIO 1.2 §3.1.1 step 6).
    FeaturesRejected,
    /// A config-space access was out of range.
    ConfigOutOfRange,
    /// The device returned a used entry whose id is out of range, not the
    /// head of a chain, or not in flight (including duplicates).
    DeviceBadId,
    /// The device reported writing more bytes than the request's writable
    /// segments hold.
    DeviceBadLength,
    /// `used.idx` advanced by more entries than there are requests in flight.
    DeviceIdxOverrun,
    /// The device did not finish a reset (status never read back 0): it
    /// may still be using its buffers, so they are not freed.
    DeviceResetTimeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::Broken => "virtqueue is broken after a device protocol violation",
            Error::QueueFull => "not enough free descriptors",
            Error::InvalidRequest => "request can never be submitted",
            Error::OutOfBounds => "segment outside its DMA region",
            Error::InvalidQueueSize => "invalid queue size",
            Error::QueueUnavailable => "queue unavailable",
            Error::DmaAlloc => "DMA allocation failed",
            Error::FeaturesRejected => "feature negotiation failed",
            Error::ConfigOutOfRange => "config space access out of range",
            Error::DeviceBadId => "device returned a bad used id",
            Error::DeviceBadLength => "device returned a used length beyond the writable bytes",
            Error::DeviceIdxOverrun => "device advanced used.idx beyond the requests in flight",
            Error::DeviceResetTimeout => "device did not complete its reset",
        };
        f.write_str(s)
    }
}

impl core::error::Error for Error {}

/// The crate's result type.
pub type Result<T = ()> = core::result::Result<T, Error>;
