//! The split ring against a hostile device driven by arbitrary bytes
//! (the same harness the fuzz target runs): proptests, plus one
//! deterministic session per kind of lie asserting its exact error.

mod hostile;

use hostile::{Outcome, hostile_device};
use proptest::prelude::*;
use vireo_virtio::Error;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn honest_device_never_errors(flags in 0u8..4, size in 0u8..6, ops in proptest::collection::vec(any::<u8>(), 0..800)) {
        let mut data = vec![size, flags];
        data.extend_from_slice(&ops);
        let o = hostile_device(&data);
        prop_assert!(!o.broken);
    }

    #[test]
    fn hostile_device_never_breaks_invariants(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let o = hostile_device(&data);
        prop_assert!(o.popped + o.reclaimed <= o.added);
    }
}

/// size 4 with lies allowed (flags 4, or 12 to clamp lengths), add one
/// 1-segment request (10 writable bytes), then `device` op bytes, then
/// two pops.
fn run_with(flags: u8, device: &[u8]) -> Outcome {
    let mut d = vec![2u8, flags, 0, 0, 0, 9];
    // ops: 0 add, 7 device return, 10 idx lie, 11 pop, 17 queue reset
    d.extend_from_slice(device);
    d.extend_from_slice(&[11, 11]);
    hostile_device(&d)
}

fn run(device: &[u8]) -> Outcome {
    run_with(4, device)
}

#[test]
fn honest_return_pops() {
    let o = run(&[7, 2, 0]);
    assert_eq!((o.added, o.popped, o.broken, o.error), (1, 1, false, None));
}

#[test]
fn free_id_breaks_queue() {
    // mode 0 = lie: id 3 (a free descriptor), len 0.
    let o = run(&[7, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!((o.popped, o.error), (0, Some(Error::DeviceIdNotInFlight)));
}

#[test]
fn id_out_of_range_breaks_queue() {
    // mode 0 = lie: id 5 >= size 4.
    let o = run(&[7, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!((o.popped, o.error), (0, Some(Error::DeviceIdOutOfRange)));
}

#[test]
fn bad_len_breaks_queue() {
    // mode 0 = lie: id 0 (the head in flight), len 1000 > 10 writable.
    let o = run(&[7, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0]);
    assert_eq!((o.popped, o.error), (0, Some(Error::DeviceBadLength)));
}

#[test]
fn bad_len_is_clamped_under_clamp_policy() {
    let o = run_with(12, &[7, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0]);
    assert_eq!((o.popped, o.broken, o.error), (1, false, None));
}

#[test]
fn idx_overrun_breaks_queue() {
    let o = run(&[10, 5, 0]);
    assert_eq!((o.popped, o.error), (0, Some(Error::DeviceIdxOverrun)));
}

#[test]
fn duplicate_breaks_queue() {
    // Two requests in flight (heads 0 and 1); the device returns head 0
    // honestly, the driver pops it, then the device returns head 0
    // again in the next used slot: one entry for one request still in
    // flight, so not an overrun but a duplicate.
    let o = run(&[0, 0, 0, 9, 7, 2, 0, 11, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!((o.added, o.popped, o.error), (2, 1, Some(Error::DeviceIdNotInFlight)));
}

#[test]
fn queue_reset_mid_session_hands_back_and_unbreaks() {
    // A lie breaks the queue; a queue reset reclaims the request and
    // restarts it; a new request then round-trips.
    let o = run(&[10, 5, 0, 11, 17, 0, 0, 0, 9, 7, 2, 0]);
    assert_eq!((o.added, o.popped, o.reclaimed, o.broken), (2, 1, 1, false));
    assert_eq!(o.error, Some(Error::DeviceIdxOverrun));
}
