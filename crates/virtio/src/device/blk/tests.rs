//! virtio-blk protocol: round trips, refused values, configuration
//! defaults, transfer checks and layouts.

use super::*;
use crate::config::read_config;
use crate::fake::{Echo, FakeHal, FakeTransport};

fn features(bits: u64) -> Features {
    Features::from_bits_retain(bits)
}

/// A 60-byte configuration with every field set to a distinct value.
fn config_bytes() -> [u8; 60] {
    let mut c = [0u8; 60];
    c[0..8].copy_from_slice(&0x1_0000_0800u64.to_le_bytes());
    c[8..12].copy_from_slice(&(65536u32 + 100).to_le_bytes());
    c[12..16].copy_from_slice(&7u32.to_le_bytes());
    c[20..24].copy_from_slice(&4096u32.to_le_bytes());
    c[24] = 3;
    c[25] = 1;
    c[26..28].copy_from_slice(&8u16.to_le_bytes());
    c[28..32].copy_from_slice(&64u32.to_le_bytes());
    c[32] = 1;
    c[34..36].copy_from_slice(&4u16.to_le_bytes());
    c[36..40].copy_from_slice(&1000u32.to_le_bytes());
    c[40..44].copy_from_slice(&2u32.to_le_bytes());
    c[44..48].copy_from_slice(&8u32.to_le_bytes());
    c[48..52].copy_from_slice(&2000u32.to_le_bytes());
    c[52..56].copy_from_slice(&3u32.to_le_bytes());
    c[56] = 1;
    c
}

fn read(bytes: &[u8], bits: u64) -> BlkConfig {
    let hal = FakeHal::new();
    let transport = FakeTransport::new(hal.memory(), Echo, &[8]);
    transport.set_config(bytes);
    read_config::<BlkConfig, _>(&transport, features(bits)).unwrap()
}

#[test]
fn every_field_is_read_when_its_feature_is_negotiated() {
    let config = read(&config_bytes(), feature::ALL);
    assert_eq!(
        config,
        BlkConfig {
            capacity_sectors: 0x1_0000_0800,
            size_max: 65536,
            seg_max: 7,
            block_bytes: 4096,
            topology: Some((3, 1, 8, 64)),
            writeback: Some(1),
            device_queues: 4,
            discard: Some((1000, 2, 8)),
            write_zeroes: Some((2000, 3, true)),
        }
    );
}

#[test]
fn fields_without_their_feature_are_defaults() {
    let config = read(&config_bytes(), 0);
    assert_eq!(config.capacity_sectors, 0x1_0000_0800);
    assert_eq!(config.size_max, DEFAULT_SIZE_MAX);
    assert_eq!(config.seg_max, DEFAULT_SEG_MAX);
    assert_eq!(config.block_bytes, 512);
    assert_eq!((config.topology, config.writeback, config.discard), (None, None, None));
    assert_eq!((config.device_queues, config.write_zeroes), (1, None));
}

#[test]
fn unusable_device_values_are_replaced() {
    let mut bytes = config_bytes();
    bytes[8..12].copy_from_slice(&4095u32.to_le_bytes());
    bytes[12..16].fill(0);
    bytes[20..24].copy_from_slice(&3000u32.to_le_bytes());
    bytes[34..36].fill(0);
    let config = read(&bytes, feature::ALL);
    assert_eq!(config.size_max, DEFAULT_SIZE_MAX);
    assert_eq!(config.seg_max, DEFAULT_SEG_MAX);
    assert_eq!(config.block_bytes, 512);
    assert_eq!(config.device_queues, 1);
    for bad in [256u32, 131072, 0] {
        bytes[20..24].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(read(&bytes, feature::BLK_SIZE).block_bytes, 512, "{bad}");
    }
}

#[test]
fn a_short_configuration_space_is_an_error() {
    let hal = FakeHal::new();
    let transport = FakeTransport::new(hal.memory(), Echo, &[8]);
    transport.set_config(&config_bytes()[..40]);
    let read = read_config::<BlkConfig, _>(&transport, features(feature::WRITE_ZEROES));
    assert_eq!(read, Err(Error::ConfigOutOfRange));
}

#[test]
fn cache_mode_follows_writeback_then_flush() {
    let mut config = read(&config_bytes(), 0);
    assert_eq!(config.cache_mode(features(0)), CacheMode::WriteThrough);
    assert_eq!(config.cache_mode(features(feature::FLUSH)), CacheMode::WriteBack);
    config.writeback = Some(0);
    assert_eq!(config.cache_mode(features(feature::FLUSH)), CacheMode::WriteThrough);
    config.writeback = Some(1);
    assert_eq!(config.cache_mode(features(0)), CacheMode::WriteBack);
}

#[test]
fn request_limits_are_whole_blocks() {
    let mut config = read(&config_bytes(), feature::ALL);
    // 7 segments of 64 KiB, in 4 KiB blocks.
    assert_eq!(config.max_request_bytes(32), 7 * 65536);
    assert_eq!(config.max_request_bytes(2), 2 * 65536);
    config.size_max = 1000;
    assert_eq!(config.max_request_bytes(1), 4096);
    config.size_max = u32::MAX;
    assert_eq!(config.max_request_bytes(32), u64::from(u32::MAX) / 4096 * 4096);
    assert_eq!(config.range_step(0), u64::from(DEFAULT_RANGE_SECTORS));
    assert_eq!(config.range_step(1001), 1000);
    assert_eq!(config.range_step(3), 8);
}

#[test]
fn headers_round_trip_and_ranged_kinds_drop_the_sector() {
    for kind in
        [Kind::Read, Kind::Write, Kind::Flush, Kind::GetId, Kind::Discard, Kind::WriteZeroes]
    {
        assert_eq!(Kind::from_u32(kind.to_u32()), Some(kind));
        let header = RequestHeader::new(kind, 0x0102_0304_0506_0708);
        let bytes = header.to_bytes();
        assert_eq!(RequestHeader::from_bytes(&bytes), Ok(header));
        assert_eq!(bytes[0..4], kind.to_u32().to_le_bytes());
        let expected = if kind.has_range() { 0 } else { 0x0102_0304_0506_0708 };
        assert_eq!(header.sector, expected);
    }
    assert_eq!(RequestHeader::new(Kind::Read, 9).to_bytes()[8..], 9u64.to_le_bytes());
}

#[test]
fn bad_headers_are_refused() {
    let mut bytes = RequestHeader::new(Kind::Read, 1).to_bytes();
    bytes[0] = 3;
    assert_eq!(RequestHeader::from_bytes(&bytes), Err(DecodeError::UnknownKind(3)));
    let mut bytes = RequestHeader::new(Kind::Read, 1).to_bytes();
    bytes[6] = 1;
    assert_eq!(RequestHeader::from_bytes(&bytes), Err(DecodeError::Reserved));
    for unknown in [2, 3, 5, 6, 7, 9, 10, 12, 14, u32::MAX] {
        assert_eq!(Kind::from_u32(unknown), None);
    }
}

#[test]
fn every_status_byte_decodes_to_a_status_or_an_error() {
    assert_eq!(Status::from_byte(0), Ok(Status::Ok));
    assert_eq!(Status::from_byte(1), Ok(Status::IoErr));
    assert_eq!(Status::from_byte(2), Ok(Status::Unsupported));
    for byte in 3..=u8::MAX {
        assert_eq!(Status::from_byte(byte), Err(DecodeError::UnknownStatus(byte)));
    }
    assert!(Status::from_byte(STATUS_NOT_WRITTEN).is_err());
}

#[test]
fn ranges_round_trip_and_reserved_flags_are_refused() {
    let range = RangeSegment { sector: 0x1_2345_6789, sectors: 77, flags: FLAG_UNMAP };
    let bytes = range.to_bytes();
    assert_eq!(bytes[0..8], 0x1_2345_6789u64.to_le_bytes());
    assert_eq!(bytes[8..12], 77u32.to_le_bytes());
    assert_eq!(RangeSegment::from_bytes(&bytes), Ok(range));
    for bit in 1..32 {
        let bad = RangeSegment { flags: 1 << bit, ..range };
        assert_eq!(RangeSegment::from_bytes(&bad.to_bytes()), Err(DecodeError::Reserved));
    }
}

#[test]
fn ids_stop_at_nul_and_hide_unprintable_bytes() {
    let mut answer = [0u8; ID_BYTES];
    answer[..6].copy_from_slice(b"disk 1");
    assert_eq!(id_chars(&answer).collect::<String>(), "disk 1");
    answer[2] = 0x07;
    answer[3] = 0xc3;
    assert_eq!(id_chars(&answer).collect::<String>(), "di?? 1");
    let full = [b'x'; ID_BYTES];
    assert_eq!(id_chars(&full).count(), ID_BYTES);
    assert_eq!(id_chars(&[0; ID_BYTES]).count(), 0);
}

fn transfer(kind: Kind, sector: u64, len: u64) -> Transfer {
    Transfer { kind, sector, len, buffer_bytes: 1 << 20 }
}

#[test]
fn transfers_are_checked_in_order() {
    let config = BlkConfig { block_bytes: 4096, ..read(&config_bytes(), 0) };
    let all = features(feature::ALL & !feature::RO);
    let check = |t: Transfer, f: Features| check_transfer(&t, f, &config, 1024);
    assert_eq!(check(transfer(Kind::Read, 8, 4096), all), Ok(()));
    assert_eq!(check(transfer(Kind::Write, 0, 1024 * 512), all), Ok(()));
    assert_eq!(check(transfer(Kind::Flush, u64::MAX, 0), all), Ok(()));
    assert_eq!(check(transfer(Kind::GetId, 0, 0), all), Ok(()));
    assert_eq!(check(transfer(Kind::Discard, 8, 16), all), Ok(()));
    // Read-only first, then features.
    let ro = features(feature::RO);
    for kind in [Kind::Write, Kind::Discard, Kind::WriteZeroes] {
        assert_eq!(check(transfer(kind, 0, 4096), ro), Err(TransferError::ReadOnly));
    }
    assert_eq!(check(transfer(Kind::Read, 0, 4096), ro), Ok(()));
    for kind in [Kind::Flush, Kind::Discard, Kind::WriteZeroes] {
        assert_eq!(check(transfer(kind, 0, 8), features(0)), Err(TransferError::Unsupported));
    }
    // Ranges.
    let bad = [
        transfer(Kind::Read, 0, 0),
        transfer(Kind::Read, 0, 4097),
        transfer(Kind::Read, 1016, 8192),
        transfer(Kind::Read, u64::MAX - 7, 4096),
        Transfer { buffer_bytes: 4095, ..transfer(Kind::Write, 0, 4096) },
        Transfer { buffer_bytes: u64::MAX, ..transfer(Kind::Write, 0, 1 << 32) },
        transfer(Kind::Discard, 0, 0),
        transfer(Kind::WriteZeroes, 1020, 8),
        transfer(Kind::Discard, 0, 1 << 32),
    ];
    for t in bad {
        assert_eq!(check(t, all), Err(TransferError::BadRange), "{t:?}");
    }
    // Block alignment (§5.2.5).
    assert_eq!(check(transfer(Kind::Read, 1, 4096), all), Err(TransferError::Unaligned));
    assert_eq!(check(transfer(Kind::Read, 0, 512), all), Err(TransferError::Unaligned));
    assert_eq!(check(transfer(Kind::Discard, 0, 9), all), Err(TransferError::Unaligned));
}

#[test]
fn layouts_cut_at_size_max_skip_and_stop() {
    let mut out = [DataSegment::default(); 8];
    let n = lay_out([10_000u64], (0, 10_000), 4096, &mut out).unwrap();
    let lens: Vec<_> = out[..n].iter().map(|s| (s.buffer, s.offset, s.len)).collect();
    assert_eq!(lens, [(0, 0, 4096), (0, 4096, 4096), (0, 8192, 1808)]);
    // Skip into the second buffer, stop inside the third.
    let n = lay_out([100u64, 200, 300, 400], (150, 300), 4096, &mut out).unwrap();
    let lens: Vec<_> = out[..n].iter().map(|s| (s.buffer, s.offset, s.len)).collect();
    assert_eq!(lens, [(1, 50, 150), (2, 0, 150)]);
    assert_eq!(lay_out([100u64], (0, 0), 4096, &mut out), Ok(0));
}

#[test]
fn layouts_needing_more_slots_are_refused() {
    let mut out = [DataSegment::default(); 2];
    assert_eq!(lay_out([4096u64 * 2], (0, 8192), 4096, &mut out), Ok(2));
    assert_eq!(lay_out([4096u64 * 2 + 1], (0, 8193), 4096, &mut out), Err(TooManySegments));
    assert_eq!(lay_out([1u64, 1, 1], (0, 3), 4096, &mut out), Err(TooManySegments));
    let many = core::iter::repeat_n(0u64, 256).chain([1]);
    let mut big = [DataSegment::default(); 300];
    assert_eq!(lay_out(many, (0, 1), 4096, &mut big), Err(TooManySegments));
    let mut one = [DataSegment::default(); 1];
    assert_eq!(lay_out([1u64 << 33], (1 << 32, 512), u32::MAX, &mut one), Err(TooManySegments));
}
