//! The crate's single error type.

use core::fmt;

use crate::features::Features;

/// Everything that can go wrong in the VirtIO core.
///
/// The six *protocol violations* ([`Error::is_protocol_violation`]) mean the
/// device broke the used-ring rules; the queue that saw one is marked broken
/// and every later call on it returns [`Error::Broken`] (the Linux
/// `BAD_RING` policy) until it is reset and restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The queue was marked broken by an earlier device protocol violation.
    Broken,
    /// Not enough free descriptors for this request right now.
    QueueFull,
    /// The request can never be submitted: no segments, a zero-length
    /// segment, more segments than the queue (or indirect table) holds, or
    /// more than 2³² bytes in total (VirtIO 1.2 §2.7.5.2).
    InvalidRequest,
    /// A segment lies outside the DMA region it was carved from.
    OutOfBounds,
    /// Queue size is zero, not a power of two, above 32768 or above the
    /// device maximum (VirtIO 1.2 §2.7: split queue sizes are powers of two
    /// up to 32768).
    InvalidQueueSize,
    /// `indirect_max` is longer than the queue (§2.7.5.3.1: no chain longer
    /// than the queue size) or the indirect-table pool would exceed
    /// [`crate::queue::split::MAX_INDIRECT_POOL_BYTES`].
    InvalidIndirectMax,
    /// The transport says this queue does not exist or is already in use.
    QueueUnavailable,
    /// The HAL could not provide DMA memory.
    DmaAlloc,
    /// The HAL could not share memory with the device right now (e.g. its
    /// bounce window is full, see [`crate::Hal::share`]). A request refused
    /// for it was not submitted and can be retried once others complete.
    DmaShare,
    /// A required feature (e.g. `VERSION_1`) was not negotiated, or the
    /// device did not accept `FEATURES_OK` (VirtIO 1.2 §3.1.1 step 6).
    FeaturesRejected,
    /// The queue was asked to run with features the crate does not
    /// implement (these bits); [`crate::negotiate_features`] never accepts
    /// them, so this means the caller bypassed negotiation.
    UnsupportedFeatures(Features),
    /// A config-space access was out of range.
    ConfigOutOfRange,
    /// The device's configuration kept changing while it was read: the
    /// generation counter moved across every one of
    /// [`crate::config::READ_ATTEMPTS`] reads (VirtIO 1.2 §2.5.1).
    ConfigUnstable,
    /// The transport has no MSI-X vectors (e.g. virtio-mmio); only
    /// [`crate::transport::NO_VECTOR`] can be set.
    VectorsUnsupported,
    /// The device did not keep the MSI-X vector written for it: it reads
    /// back [`crate::transport::NO_VECTOR`] (VirtIO 1.2 §4.1.5.1.2), or
    /// another value.
    VectorRefused,
    /// A [`crate::transport::Notifier`] for another queue was used to kick
    /// this one (the notification would ring the wrong doorbell).
    WrongNotifier,
    /// The device returned a used entry whose id is not a descriptor index
    /// of this queue (id ≥ queue size).
    DeviceIdOutOfRange,
    /// The device returned a used entry for a descriptor that heads no
    /// request in flight: a free descriptor, the body of a chain, or a
    /// request it already returned (a duplicate).
    DeviceIdNotInFlight,
    /// The device reported writing more bytes than the request's writable
    /// segments hold, on a queue whose policy is
    /// [`crate::UsedLenPolicy::Strict`].
    DeviceBadLength,
    /// `used.idx` advanced by more entries than there are requests in flight.
    DeviceIdxOverrun,
    /// `used.idx` moved backwards: below a value the driver already saw
    /// (§2.7.8: the device only ever increments it).
    DeviceIdxBackwards,
    /// The device did not finish a reset (status never read back 0): it
    /// may still be using its buffers, so they are not freed.
    DeviceResetTimeout,
    /// The device did not finish resetting one queue (`queue_reset` never
    /// read back 0, VirtIO 1.2 §4.1.4.3.2): its buffers stay with the queue.
    QueueResetTimeout,
    /// Per-queue reset needs `VIRTIO_F_RING_RESET` negotiated and a
    /// transport with a queue-reset register.
    QueueResetUnsupported,
    /// The reset proof is for another device or queue, or for a reset that
    /// happened before this queue was (re)programmed: it proves nothing
    /// about this queue, which is left untouched.
    WrongResetProof,
    /// The queue was reclaimed after a reset; [`restart`] it before use.
    ///
    /// [`restart`]: crate::SplitQueue::restart
    Stopped,
    /// [`restart`] needs a reclaimed queue; this one is still live.
    ///
    /// [`restart`]: crate::SplitQueue::restart
    NotStopped,
}

impl Error {
    /// Whether this error means the device broke the used-ring protocol
    /// (and the queue is now broken).
    pub fn is_protocol_violation(self) -> bool {
        matches!(
            self,
            Error::DeviceIdOutOfRange
                | Error::DeviceIdNotInFlight
                | Error::DeviceBadLength
                | Error::DeviceIdxOverrun
                | Error::DeviceIdxBackwards
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::Broken => "virtqueue is broken after a device protocol violation",
            Error::QueueFull => "not enough free descriptors",
            Error::InvalidRequest => "request can never be submitted",
            Error::OutOfBounds => "segment outside its DMA region",
            Error::InvalidQueueSize => "invalid queue size",
            Error::InvalidIndirectMax => "indirect tables longer than the queue or pool too big",
            Error::QueueUnavailable => "queue unavailable",
            Error::DmaAlloc => "DMA allocation failed",
            Error::DmaShare => "DMA memory could not be shared with the device",
            Error::FeaturesRejected => "feature negotiation failed",
            Error::UnsupportedFeatures(bits) => {
                return write!(f, "features {:#x} are not implemented", bits.bits());
            }
            Error::ConfigOutOfRange => "config space access out of range",
            Error::ConfigUnstable => "device configuration kept changing while read",
            Error::VectorsUnsupported => "transport has no MSI-X vectors",
            Error::VectorRefused => "device refused the MSI-X vector",
            Error::WrongNotifier => "notifier belongs to another queue",
            Error::DeviceIdOutOfRange => "device returned a used id outside the queue",
            Error::DeviceIdNotInFlight => "device returned a used id that is not in flight",
            Error::DeviceBadLength => "device returned a used length beyond the writable bytes",
            Error::DeviceIdxOverrun => "device advanced used.idx beyond the requests in flight",
            Error::DeviceIdxBackwards => "device moved used.idx backwards",
            Error::DeviceResetTimeout => "device did not complete its reset",
            Error::QueueResetTimeout => "device did not complete the queue reset",
            Error::QueueResetUnsupported => "per-queue reset not available",
            Error::WrongResetProof => "reset proof does not cover this queue",
            Error::Stopped => "queue was reset and reclaimed; restart it first",
            Error::NotStopped => "queue is still live",
        };
        f.write_str(s)
    }
}

impl core::error::Error for Error {}

/// The crate's result type.
pub type Result<T = ()> = core::result::Result<T, Error>;
