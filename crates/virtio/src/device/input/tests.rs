//! virtio-input protocol: events both ways, queries against a model
//! device that answers `select`/`subsel`, answers refused when too long
//! or too short.

use super::*;
use crate::fake::{Echo, FakeHal, FakeTransport};
use crate::{DeviceId, DeviceStatus, InterruptStatus, Result as CrateResult};

#[test]
fn events_round_trip_and_short_buffers_carry_none() {
    let event = Event { kind: kind::KEY, code: 30, value: key_value::PRESSED };
    assert_eq!(event.to_bytes(), [1, 0, 30, 0, 1, 0, 0, 0]);
    assert_eq!(Event::decode(&event.to_bytes()), Some(event));
    let wide = Event { kind: 0xfffe, code: 0x1234, value: 0xdead_beef };
    assert_eq!(Event::from_bytes(&wide.to_bytes()), wide);
    assert_eq!(Event::decode(&[1, 0, 30, 0, 1, 0, 0]), None);
    assert_eq!(Event::decode(&[]), None);
    // Bytes past the event are not part of it.
    assert_eq!(Event::decode(&[1, 0, 30, 0, 1, 0, 0, 0, 9, 9]), Some(event));
}

#[test]
fn selects_encode_as_the_spec_numbers_them() {
    let all = [
        (Select::IdName, [1, 0]),
        (Select::IdSerial, [2, 0]),
        (Select::IdDevIds, [3, 0]),
        (Select::PropBits, [0x10, 0]),
        (Select::EvBits(kind::KEY as u8), [0x11, 1]),
        (Select::AbsInfo(5), [0x12, 5]),
    ];
    for (select, bytes) in all {
        assert_eq!(select.to_bytes(), bytes, "{select:?}");
    }
}

/// A device that answers queries from a table, through a fake transport's
/// configuration space; `size` may lie.
struct Model {
    inner: FakeTransport,
    answers: Vec<([u8; 2], u8, Vec<u8>)>,
    selected: [u8; 2],
}

impl Model {
    fn new(answers: Vec<([u8; 2], u8, Vec<u8>)>) -> Self {
        let hal = FakeHal::new();
        let inner = FakeTransport::new(hal.memory(), Echo, &[8]);
        inner.set_config(&[0; 8 + ANSWER_BYTES]);
        Self { inner, answers, selected: [0; 2] }
    }

    fn publish(&self) {
        let mut image = [0u8; 8 + ANSWER_BYTES];
        image[..2].copy_from_slice(&self.selected);
        if let Some((_, size, bytes)) = self.answers.iter().find(|(key, ..)| *key == self.selected)
        {
            image[2] = *size;
            image[8..8 + bytes.len()].copy_from_slice(bytes);
        }
        self.inner.set_config(&image);
    }
}

// SAFETY: delegates to the fake transport; only configuration writes are
// intercepted.
unsafe impl Transport for Model {
    fn device_id(&self) -> DeviceId {
        self.inner.device_id()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, features: u64) {
        self.inner.write_driver_features(features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.inner.max_queue_size(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    unsafe fn queue_set(&mut self, _: u16, _: u16, _: u64, _: u64, _: u64) {
        unreachable!("no queues in these tests")
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn status(&self) -> DeviceStatus {
        self.inner.status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn read_config(&self, offset: usize, buf: &mut [u8]) -> CrateResult {
        self.inner.read_config(offset, buf)
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> CrateResult {
        match (offset, data) {
            (0, [select]) => self.selected[0] = *select,
            (1, [subsel]) => self.selected[1] = *subsel,
            _ => return Err(Error::ConfigOutOfRange),
        }
        self.publish();
        Ok(())
    }
    fn config_generation(&self) -> u32 {
        self.inner.config_generation()
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
}

#[test]
fn queries_select_then_read_the_answer() {
    let mut model = Model::new(vec![
        ([1, 0], 14, b"QEMU Keyboard\x07".to_vec()),
        ([0x11, 1], 2, vec![0b0100_0010, 0x01]),
        ([3, 0], 8, vec![6, 0, 0x27, 0x06, 1, 0, 2, 0]),
        ([0x12, 0], 20, [0u32, 32767, 1, 2, 3].iter().flat_map(|w| w.to_le_bytes()).collect()),
    ]);
    let name = query(&mut model, Select::IdName).unwrap();
    assert_eq!(name.chars().collect::<String>(), "QEMU Keyboard?");
    let keys = query(&mut model, Select::EvBits(kind::KEY as u8)).unwrap();
    assert_eq!(keys.as_slice(), [0b0100_0010, 0x01]);
    assert!(keys.has_bit(1) && keys.has_bit(6) && keys.has_bit(8));
    assert!(!keys.has_bit(0) && !keys.has_bit(9) && !keys.has_bit(16) && !keys.has_bit(u16::MAX));
    let ids = DevIds::decode(&query(&mut model, Select::IdDevIds).unwrap()).unwrap();
    assert_eq!(ids, DevIds { bustype: 6, vendor: 0x0627, product: 1, version: 2 });
    let abs = AbsInfo::decode(&query(&mut model, Select::AbsInfo(0)).unwrap()).unwrap();
    assert_eq!(abs, AbsInfo { min: 0, max: 32767, fuzz: 1, flat: 2, res: 3 });
    // Nothing for it: size 0.
    let none = query(&mut model, Select::EvBits(kind::REL as u8)).unwrap();
    assert_eq!((none.len, none.has_bit(0)), (0, false));
}

#[test]
fn answers_too_long_or_too_short_are_refused() {
    let mut model = Model::new(vec![
        ([2, 0], 129, vec![]),
        ([3, 0], 7, vec![1; 7]),
        ([0x12, 1], 19, vec![1; 19]),
    ]);
    assert_eq!(query(&mut model, Select::IdSerial), Err(QueryError::SizeTooLarge(129)));
    let short = query(&mut model, Select::IdDevIds).unwrap();
    assert_eq!(DevIds::decode(&short), Err(QueryError::ShortAnswer(7)));
    let short = query(&mut model, Select::AbsInfo(1)).unwrap();
    assert_eq!(AbsInfo::decode(&short), Err(QueryError::ShortAnswer(19)));
    // A full 128-byte answer is fine.
    let mut model = Model::new(vec![([1, 0], 128, vec![b'a'; 128])]);
    assert_eq!(query(&mut model, Select::IdName).unwrap().chars().count(), 128);
}

#[test]
fn a_configuration_space_too_small_is_a_config_error() {
    let hal = FakeHal::new();
    let mut tiny = FakeTransport::new(hal.memory(), Echo, &[8]);
    tiny.set_config(&[0; 1]);
    assert_eq!(query(&mut tiny, Select::IdName), Err(QueryError::Config(Error::ConfigOutOfRange)));
}
