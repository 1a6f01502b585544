//! virtio-gpu 2D protocol: encodings byte for byte, refused fields,
//! response checks against short, wrong and unfenced answers, EDID.

use super::*;

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn encoded<R: GpuRequest>(request: &R, fence: Option<u64>) -> Result<Vec<u8>, GpuError> {
    let mut bytes = [0u8; 512];
    let len = encode(request, fence, &mut bytes)?;
    Ok(bytes[..len].to_vec())
}

const RECT: Rect = Rect { x: 1, y: 2, width: 3, height: 4 };

#[test]
fn headers_carry_command_and_fence() {
    let bytes = encoded(&GetDisplayInfo, None).unwrap();
    assert_eq!(words(&bytes), [0x0100, 0, 0, 0, 0, 0]);
    let bytes = encoded(&GetDisplayInfo, Some(0x1_0000_0002)).unwrap();
    assert_eq!(words(&bytes), [0x0100, FLAG_FENCE, 2, 1, 0, 0]);
}

#[test]
fn every_command_encodes_its_fields_in_order() {
    let body = |bytes: Vec<u8>| words(&bytes[HEADER_BYTES..]);
    let create = ResourceCreate2d { resource: 5, format: FORMAT_B8G8R8X8, width: 640, height: 480 };
    assert_eq!(body(encoded(&create, None).unwrap()), [5, 2, 640, 480]);
    assert_eq!(body(encoded(&ResourceUnref { resource: 5 }, None).unwrap()), [5, 0]);
    assert_eq!(body(encoded(&DetachBacking { resource: 5 }, None).unwrap()), [5, 0]);
    assert_eq!(body(encoded(&GetEdid { scanout: 3 }, None).unwrap()), [3, 0]);
    let attach = AttachBacking { resource: 5, entries: &[(0x1_0000_1000, 4096), (0x2000, 8)] };
    assert_eq!(body(encoded(&attach, None).unwrap()), [5, 2, 0x1000, 1, 4096, 0, 0x2000, 0, 8, 0]);
    assert_eq!(attach.body_bytes(), 8 + 32);
    let set = SetScanout { rect: RECT, scanout: 1, resource: 5 };
    assert_eq!(body(encoded(&set, None).unwrap()), [1, 2, 3, 4, 1, 5]);
    let transfer = TransferToHost2d { rect: RECT, offset: 0x1_0000_0010, resource: 5 };
    assert_eq!(body(encoded(&transfer, None).unwrap()), [1, 2, 3, 4, 0x10, 1, 5, 0]);
    let flush = ResourceFlush { rect: RECT, resource: 5 };
    assert_eq!(body(encoded(&flush, None).unwrap()), [1, 2, 3, 4, 5, 0]);
}

#[test]
fn every_ruled_out_field_is_refused() {
    let field = |r: Result<Vec<u8>, GpuError>| match r {
        Err(GpuError::InvalidField(name)) => name,
        other => panic!("{other:?}"),
    };
    let create = ResourceCreate2d { resource: 5, format: FORMAT_B8G8R8X8, width: 1, height: 1 };
    assert_eq!(field(encoded(&ResourceCreate2d { resource: 0, ..create }, None)), "resource");
    assert_eq!(field(encoded(&ResourceCreate2d { format: 0x7777, ..create }, None)), "format");
    assert_eq!(field(encoded(&ResourceCreate2d { width: 0, ..create }, None)), "size");
    assert_eq!(field(encoded(&ResourceCreate2d { height: 0, ..create }, None)), "size");
    for format in FORMATS {
        assert!(encoded(&ResourceCreate2d { format, ..create }, None).is_ok());
    }
    assert_eq!(field(encoded(&ResourceUnref { resource: 0 }, None)), "resource");
    assert_eq!(field(encoded(&DetachBacking { resource: 0 }, None)), "resource");
    assert_eq!(field(encoded(&GetEdid { scanout: 16 }, None)), "scanout");
    let attach = |resource, entries: &[(u64, u32)]| {
        field(encoded(&AttachBacking { resource, entries }, None))
    };
    assert_eq!(attach(0, &[(0, 1)]), "resource");
    assert_eq!(attach(1, &[]), "nr_entries");
    assert_eq!(attach(1, &[(0, 1), (0x1000, 0)]), "entry");
    assert_eq!(attach(1, &[(u64::MAX, 1)]), "entry");
    let set = SetScanout { rect: RECT, scanout: 0, resource: 1 };
    assert_eq!(field(encoded(&SetScanout { scanout: 16, ..set }, None)), "scanout");
    assert_eq!(field(encoded(&SetScanout { rect: Rect::default(), ..set }, None)), "rect");
    // Disabling a scanout: resource 0, any rect.
    assert!(encoded(&SetScanout { rect: Rect::default(), resource: 0, ..set }, None).is_ok());
    let wraps = Rect { x: u32::MAX, y: 0, width: 1, height: 1 };
    for rect in [Rect::default(), Rect { width: 0, ..RECT }, wraps] {
        let flush = ResourceFlush { rect, resource: 1 };
        assert_eq!(field(encoded(&flush, None)), "rect", "{rect:?}");
        let transfer = TransferToHost2d { rect, offset: 0, resource: 1 };
        assert_eq!(field(encoded(&transfer, None)), "rect");
    }
    assert_eq!(field(encoded(&ResourceFlush { rect: RECT, resource: 0 }, None)), "resource");
    let transfer = TransferToHost2d { rect: RECT, offset: 0, resource: 0 };
    assert_eq!(field(encoded(&transfer, None)), "resource");
}

#[test]
fn a_command_too_long_for_its_buffer_is_refused_not_cut() {
    let mut bytes = [0u8; HEADER_BYTES + 4];
    let create = ResourceCreate2d { resource: 5, format: 1, width: 1, height: 1 };
    assert_eq!(encode(&create, None, &mut bytes), Err(GpuError::BufferTooSmall));
    assert_eq!(encode(&GetDisplayInfo, None, &mut bytes[..HEADER_BYTES]), Ok(HEADER_BYTES));
    assert_eq!(
        encode(&GetDisplayInfo, None, &mut bytes[..HEADER_BYTES - 1]),
        Err(GpuError::BufferTooSmall)
    );
}

#[test]
fn cursors_encode_and_refuse_bad_fields() {
    let cursor = Cursor {
        command: Command::UpdateCursor,
        scanout: 0,
        x: 10,
        y: 20,
        resource: 9,
        hot_x: 1,
        hot_y: 2,
    };
    let mut bytes = [0u8; CURSOR_BYTES];
    assert_eq!(cursor.encode(&mut bytes), Ok(CURSOR_BYTES));
    assert_eq!(words(&bytes), [0x0300, 0, 0, 0, 0, 0, 0, 10, 20, 0, 9, 1, 2, 0]);
    let bad = [
        (Cursor { command: Command::ResourceFlush, ..cursor }, "command"),
        (Cursor { scanout: 16, ..cursor }, "scanout"),
        (Cursor { hot_x: 64, ..cursor }, "hot spot"),
        (Cursor { hot_y: 64, ..cursor }, "hot spot"),
    ];
    for (bad, name) in bad {
        assert_eq!(bad.encode(&mut bytes), Err(GpuError::InvalidField(name)));
    }
    assert_eq!(cursor.encode(&mut bytes[..55]), Err(GpuError::BufferTooSmall));
}

fn response(kind: u32, flags: u32, fence: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    bytes[0..4].copy_from_slice(&kind.to_le_bytes());
    bytes[4..8].copy_from_slice(&flags.to_le_bytes());
    bytes[8..16].copy_from_slice(&fence.to_le_bytes());
    bytes
}

#[test]
fn headers_are_checked_for_type_length_and_fence() {
    let ok = response(RESP_OK_NODATA, 0, 0, 24);
    assert_eq!(check_header(&ok, 24, RESP_OK_NODATA, None), Ok(()));
    assert_eq!(check_header(&ok, 23, RESP_OK_NODATA, None), Err(GpuError::ShortResponse(23)));
    assert_eq!(check_header(&ok[..23], 24, RESP_OK_NODATA, None), Err(GpuError::ShortResponse(24)));
    let error = response(RESP_ERR_INVALID_PARAMETER, 0, 0, 24);
    assert_eq!(
        check_header(&error, 24, RESP_OK_NODATA, None),
        Err(GpuError::Response(RESP_ERR_INVALID_PARAMETER))
    );
    assert_eq!(check_header(&ok, 24, RESP_OK_NODATA, Some(7)), Err(GpuError::FenceMismatch));
    let fenced = response(RESP_OK_NODATA, FLAG_FENCE, 7, 24);
    assert_eq!(check_header(&fenced, 24, RESP_OK_NODATA, Some(7)), Ok(()));
    assert_eq!(check_header(&fenced, 24, RESP_OK_NODATA, Some(8)), Err(GpuError::FenceMismatch));
    let unflagged = response(RESP_OK_NODATA, 0, 7, 24);
    assert_eq!(check_header(&unflagged, 24, RESP_OK_NODATA, Some(7)), Err(GpuError::FenceMismatch));
}

#[test]
fn display_info_decodes_every_scanout_and_refuses_short_answers() {
    let len = HEADER_BYTES + MAX_SCANOUTS * 24;
    let mut bytes = response(RESP_OK_DISPLAY_INFO, 0, 0, len);
    for index in 0..MAX_SCANOUTS {
        let base = HEADER_BYTES + index * 24;
        for (k, value) in [index as u32, 1, 640, 480, u32::from(index == 2)].iter().enumerate() {
            bytes[base + 4 * k..base + 4 * k + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
    let DisplayInfo(info) = DisplayInfo::decode(&bytes, len as u32).unwrap();
    assert_eq!(info[5].rect, Rect { x: 5, y: 1, width: 640, height: 480 });
    assert_eq!(info.iter().filter(|d| d.is_enabled).count(), 1);
    assert!(info[2].is_enabled);
    assert_eq!(
        DisplayInfo::decode(&bytes, len as u32 - 1),
        Err(GpuError::ShortResponse(len as u32 - 1))
    );
    assert!(DisplayInfo::decode(&bytes[..len - 1], len as u32).is_err());
}

fn edid_block(width: u32, height: u32) -> [u8; 128] {
    let mut block = [0u8; 128];
    block[..8].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    block[54] = 1;
    block[56] = width as u8;
    block[58] = ((width >> 8) as u8) << 4;
    block[59] = height as u8;
    block[61] = ((height >> 8) as u8) << 4;
    let sum = block.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    block[127] = 0u8.wrapping_sub(sum);
    block
}

fn edid_response(blob: &[u8]) -> Vec<u8> {
    let mut bytes = response(RESP_OK_EDID, 0, 0, HEADER_BYTES + 8 + blob.len());
    bytes[24..28].copy_from_slice(&(blob.len() as u32).to_le_bytes());
    bytes[32..].copy_from_slice(blob);
    bytes
}

#[test]
fn edid_blobs_are_bounded_and_their_mode_checked() {
    let bytes = edid_response(&edid_block(1280, 800));
    let edid = Edid::decode(&bytes, bytes.len() as u32).unwrap();
    assert_eq!(edid.bytes.len(), 128);
    assert_eq!(edid.preferred_mode(), Some((1280, 800)));
    // The size says more than was written, or more than 1024.
    assert!(Edid::decode(&bytes, bytes.len() as u32 - 1).is_err());
    let mut huge = edid_response(&[0; 1025]);
    assert!(Edid::decode(&huge, huge.len() as u32).is_err());
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Edid::decode(&huge, huge.len() as u32).is_err());
    assert!(Edid::decode(&bytes[..31], 31).is_err());
    // Bad checksum, bad header, no timing, short blob.
    let mut block = edid_block(1280, 800);
    block[100] ^= 1;
    assert_eq!(Edid { bytes: block.to_vec() }.preferred_mode(), None);
    let mut block = edid_block(1280, 800);
    block[0] = 1;
    block[127] = block[127].wrapping_sub(1);
    assert_eq!(Edid { bytes: block.to_vec() }.preferred_mode(), None);
    assert_eq!(Edid { bytes: edid_block(0, 800).to_vec() }.preferred_mode(), None);
    assert_eq!(Edid { bytes: edid_block(1280, 800)[..127].to_vec() }.preferred_mode(), None);
}

#[test]
fn rect_union_and_fit() {
    let a = Rect { x: 0, y: 0, width: 10, height: 10 };
    let b = Rect { x: 20, y: 5, width: 5, height: 10 };
    assert_eq!(a.union(b), Rect { x: 0, y: 0, width: 25, height: 15 });
    assert_eq!(a.union(Rect::default()), a);
    assert_eq!(Rect::default().union(b), b);
    assert!(a.fits(10, 10));
    assert!(!a.fits(9, 10));
    assert!(!Rect { x: u32::MAX, y: 0, width: 2, height: 1 }.fits(u32::MAX, 1));
}

#[test]
fn rect_contains_only_what_lies_wholly_inside() {
    let outer = Rect { x: 10, y: 20, width: 30, height: 40 };
    assert!(outer.contains(outer));
    assert!(outer.contains(Rect { x: 39, y: 59, width: 1, height: 1 }));
    assert!(!outer.contains(Rect { x: 40, y: 20, width: 1, height: 1 }));
    assert!(!outer.contains(Rect { x: 10, y: 59, width: 1, height: 2 }));
    assert!(!outer.contains(Rect { x: 9, y: 20, width: 2, height: 2 }));
    assert!(outer.contains(Rect { x: 500, y: 500, width: 0, height: 3 }));
    assert!(!Rect::default().contains(outer));
    // No wrap-around at the top of the coordinate space.
    let edge = Rect { x: u32::MAX - 1, y: 0, width: 1, height: 1 };
    assert!(!edge.contains(Rect { x: u32::MAX, y: 0, width: u32::MAX, height: 1 }));
}
