//! `RESP_OK_DISPLAY_INFO` (VirtIO 1.2 §5.7.6.8): one entry per scanout.

use super::{GpuError, HEADER_BYTES, MAX_SCANOUTS, Rect};

/// One scanout from `RESP_OK_DISPLAY_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    /// Its preferred mode.
    pub rect: Rect,
    /// Whether a display is connected.
    pub is_enabled: bool,
}

pub(super) fn decode_display_info(
    response: &[u8],
    written: u32,
) -> Result<[Display; MAX_SCANOUTS], GpuError> {
    const ENTRY_BYTES: usize = 24;
    let needed = HEADER_BYTES + MAX_SCANOUTS * ENTRY_BYTES;
    if (written as usize) < needed || response.len() < needed {
        return Err(GpuError::ShortResponse(written));
    }
    let word = |offset: usize| {
        u32::from_le_bytes(response[offset..offset + 4].try_into().unwrap_or([0; 4]))
    };
    Ok(core::array::from_fn(|index| {
        let base = HEADER_BYTES + index * ENTRY_BYTES;
        Display {
            rect: Rect {
                x: word(base),
                y: word(base + 4),
                width: word(base + 8),
                height: word(base + 12),
            },
            is_enabled: word(base + 16) != 0,
        }
    }))
}
