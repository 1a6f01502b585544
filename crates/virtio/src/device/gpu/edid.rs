//! `RESP_OK_EDID` (VirtIO 1.2 §5.7.6.8, `VIRTIO_GPU_F_EDID`) and the one
//! thing a 2D driver reads from the blob: the preferred mode.

use super::{GpuError, GpuResponse, HEADER_BYTES, RESP_OK_EDID};
use alloc::vec::Vec;

/// `RESP_OK_EDID`: the EDID blob (at most 1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edid {
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl GpuResponse for Edid {
    const TYPE: u32 = RESP_OK_EDID;
    fn decode(response: &[u8], written: u32) -> Result<Self, GpuError> {
        let needed = HEADER_BYTES + 8;
        if (written as usize) < needed || response.len() < needed {
            return Err(GpuError::ShortResponse(written));
        }
        let size = u32::from_le_bytes(response[24..28].try_into().unwrap_or([0; 4])) as usize;
        if size > 1024 || needed + size > written as usize || needed + size > response.len() {
            return Err(GpuError::ShortResponse(written));
        }
        Ok(Edid { bytes: response[needed..needed + size].to_vec() })
    }
}

impl Edid {
    /// The preferred mode: the first detailed timing descriptor (EDID 1.3
    /// §3.10.2, bytes 54..72), checked against the header and checksum.
    pub fn preferred_mode(&self) -> Option<(u32, u32)> {
        const HEADER: [u8; 8] = [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0];
        let block = self.bytes.get(..128)?;
        if block[..8] != HEADER || block.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) != 0 {
            return None;
        }
        let timing = &block[54..72];
        let pixel_clock = u16::from_le_bytes([timing[0], timing[1]]);
        if pixel_clock == 0 {
            return None;
        }
        let width = u32::from(timing[2]) | (u32::from(timing[4] >> 4) << 8);
        let height = u32::from(timing[5]) | (u32::from(timing[7] >> 4) << 8);
        (width > 0 && height > 0).then_some((width, height))
    }
}
