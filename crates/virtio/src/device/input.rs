//! virtio-input (VirtIO 1.2 §5.8): the events a device writes into the
//! driver's buffers on the event queue, and the configuration queries
//! (`select`/`subsel`) that say what the device is and can report.
//!
//! Event types and codes are Linux's evdev ones
//! (`include/uapi/linux/input-event-codes.h`, which §5.8 defers to); a
//! driver keeps the event queue full of [`EVENT_BYTES`]-byte
//! device-writable buffers (§5.8.6.2) and decodes each one the queue
//! returns with [`Event::decode`].

use crate::config::read_consistent;
use crate::{Error, Transport};

/// Bytes of `struct virtio_input_event` (§5.8.6).
pub const EVENT_BYTES: usize = 8;

/// Event types (evdev `EV_*`).
pub mod kind {
    /// `EV_SYN`: the end of a group of events.
    pub const SYN: u16 = 0x00;
    /// `EV_KEY`: a key or button.
    pub const KEY: u16 = 0x01;
    /// `EV_REL`: relative motion.
    pub const REL: u16 = 0x02;
    /// `EV_ABS`: an absolute axis.
    pub const ABS: u16 = 0x03;
    /// `EV_MSC`: miscellaneous.
    pub const MSC: u16 = 0x04;
    /// `EV_SW`: a switch.
    pub const SW: u16 = 0x05;
    /// `EV_LED`: an LED (status queue, driver to device).
    pub const LED: u16 = 0x11;
    /// `EV_SND`: a sound (status queue).
    pub const SND: u16 = 0x12;
    /// `EV_REP`: autorepeat.
    pub const REP: u16 = 0x14;
}

/// `value` of an `EV_KEY` event.
pub mod key_value {
    /// The key went up.
    pub const RELEASED: u32 = 0;
    /// The key went down.
    pub const PRESSED: u32 = 1;
    /// The key is held (autorepeat).
    pub const REPEATED: u32 = 2;
}

/// One `struct virtio_input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// `type` ([`kind`]).
    pub kind: u16,
    /// `code`: which key, axis, ….
    pub code: u16,
    /// `value`: for keys, a [`key_value`].
    pub value: u32,
}

impl Event {
    /// From the first [`EVENT_BYTES`] little-endian bytes the device wrote;
    /// `None` when there are fewer (a short write carries no event).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; EVENT_BYTES] = bytes.get(..EVENT_BYTES)?.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// From exactly one event's bytes.
    pub fn from_bytes(bytes: &[u8; EVENT_BYTES]) -> Self {
        Self {
            kind: u16::from_le_bytes([bytes[0], bytes[1]]),
            code: u16::from_le_bytes([bytes[2], bytes[3]]),
            value: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// Its bytes (a status-queue event, or a device model's side).
    pub fn to_bytes(&self) -> [u8; EVENT_BYTES] {
        let mut bytes = [0; EVENT_BYTES];
        bytes[0..2].copy_from_slice(&self.kind.to_le_bytes());
        bytes[2..4].copy_from_slice(&self.code.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.value.to_le_bytes());
        bytes
    }
}

/// Field offsets of `struct virtio_input_config` (§5.8.4).
pub mod offset {
    /// `select` (u8, driver-written).
    pub const SELECT: usize = 0;
    /// `subsel` (u8, driver-written).
    pub const SUBSEL: usize = 1;
    /// `size` (u8): bytes of the answer in `u`, 0 for none.
    pub const SIZE: usize = 2;
    /// `u`: the answer.
    pub const ANSWER: usize = 8;
}

/// Bytes the answer union `u` holds at most.
pub const ANSWER_BYTES: usize = 128;

/// What a configuration query asks (`enum virtio_input_config_select`,
/// §5.8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// `VIRTIO_INPUT_CFG_ID_NAME`: the name, a string.
    IdName,
    /// `VIRTIO_INPUT_CFG_ID_SERIAL`: the serial number, a string.
    IdSerial,
    /// `VIRTIO_INPUT_CFG_ID_DEVIDS`: [`DevIds`].
    IdDevIds,
    /// `VIRTIO_INPUT_CFG_PROP_BITS`: the `INPUT_PROP_*` bitmap.
    PropBits,
    /// `VIRTIO_INPUT_CFG_EV_BITS`: the bitmap of codes the device reports
    /// for event type `subsel` ([`kind`]).
    EvBits(u8),
    /// `VIRTIO_INPUT_CFG_ABS_INFO`: [`AbsInfo`] of axis `subsel`.
    AbsInfo(u8),
}

impl Select {
    /// (`select`, `subsel`) as the device takes them.
    pub fn to_bytes(self) -> [u8; 2] {
        match self {
            Select::IdName => [0x01, 0],
            Select::IdSerial => [0x02, 0],
            Select::IdDevIds => [0x03, 0],
            Select::PropBits => [0x10, 0],
            Select::EvBits(kind) => [0x11, kind],
            Select::AbsInfo(axis) => [0x12, axis],
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// The configuration space could not be read or written, or kept
    /// changing ([`Error::ConfigUnstable`]).
    Config(Error),
    /// The device claimed an answer longer than `u` holds.
    SizeTooLarge(u8),
    /// The answer is shorter than its type (`DEVIDS`, `ABS_INFO`).
    ShortAnswer(u8),
}

impl From<Error> for QueryError {
    fn from(error: Error) -> Self {
        QueryError::Config(error)
    }
}

/// The device's answer to one query: `len` bytes of `bytes` (0: the
/// device has nothing for it, e.g. an event type it never reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The answer union, valid up to `len`.
    pub bytes: [u8; ANSWER_BYTES],
    /// `size`.
    pub len: u8,
}

impl Answer {
    /// The valid bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether bit `bit` is set in a bitmap answer (`PROP_BITS`,
    /// `EV_BITS`); bits past the answer are clear.
    pub fn has_bit(&self, bit: u16) -> bool {
        let byte = usize::from(bit / 8);
        self.as_slice().get(byte).is_some_and(|b| b & (1 << (bit % 8)) != 0)
    }

    /// A string answer (`ID_NAME`, `ID_SERIAL`; not NUL-terminated), each
    /// non-printable byte shown as `'?'`.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.as_slice()
            .iter()
            .map(|&byte| if byte.is_ascii_graphic() || byte == b' ' { byte as char } else { '?' })
    }
}

/// Asks the device `select` (writes `select` and `subsel`, §5.8.4) and
/// reads the answer consistently (§2.5.1).
///
/// # Errors
/// [`QueryError`]: the configuration space failed, or the device's `size`
/// exceeds [`ANSWER_BYTES`].
pub fn query<T: Transport>(transport: &mut T, select: Select) -> Result<Answer, QueryError> {
    let [select, subsel] = select.to_bytes();
    transport.write_config(offset::SELECT, &[select])?;
    transport.write_config(offset::SUBSEL, &[subsel])?;
    read_consistent(&*transport, |fields| {
        let len = fields.u8(offset::SIZE)?;
        if usize::from(len) > ANSWER_BYTES {
            return Err(QueryError::SizeTooLarge(len));
        }
        let mut bytes = [0; ANSWER_BYTES];
        for (index, byte) in bytes[..usize::from(len)].iter_mut().enumerate() {
            *byte = fields.u8(offset::ANSWER + index)?;
        }
        Ok(Answer { bytes, len })
    })
}

/// `struct virtio_input_devids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevIds {
    /// `bustype`.
    pub bustype: u16,
    /// `vendor`.
    pub vendor: u16,
    /// `product`.
    pub product: u16,
    /// `version`.
    pub version: u16,
}

impl DevIds {
    /// From an `ID_DEVIDS` answer.
    ///
    /// # Errors
    /// [`QueryError::ShortAnswer`] below 8 bytes.
    pub fn decode(answer: &Answer) -> Result<Self, QueryError> {
        let bytes = answer.as_slice();
        if bytes.len() < 8 {
            return Err(QueryError::ShortAnswer(answer.len));
        }
        let half = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Ok(Self { bustype: half(0), vendor: half(2), product: half(4), version: half(6) })
    }
}

/// `struct virtio_input_absinfo`: one absolute axis's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsInfo {
    /// `min`.
    pub min: u32,
    /// `max`.
    pub max: u32,
    /// `fuzz`.
    pub fuzz: u32,
    /// `flat`.
    pub flat: u32,
    /// `res`.
    pub res: u32,
}

impl AbsInfo {
    /// From an `ABS_INFO` answer.
    ///
    /// # Errors
    /// [`QueryError::ShortAnswer`] below 20 bytes.
    pub fn decode(answer: &Answer) -> Result<Self, QueryError> {
        let bytes = answer.as_slice();
        if bytes.len() < 20 {
            return Err(QueryError::ShortAnswer(answer.len));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Ok(Self { min: word(0), max: word(4), fuzz: word(8), flat: word(12), res: word(16) })
    }
}

#[cfg(test)]
mod tests;
