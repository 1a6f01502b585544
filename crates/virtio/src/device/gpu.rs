//! virtio-gpu 2D (VirtIO 1.2 §5.7): control and cursor commands (§5.7.6),
//! each a type bound to the response type it expects.
//!
//! Commands are encoded into little-endian bytes by hand (no transmutes of
//! device memory) after [`GpuRequest::check`] refused field values the
//! spec rules out; responses are decoded from bytes with every field
//! checked, so nothing the device writes is trusted as a Rust value. A
//! driver [`encode`]s a command into a buffer the device reads, gives the
//! device a buffer for the answer, and once the queue returns both runs
//! [`check_header`] and [`GpuResponse::decode`] over the written bytes.

mod display;
mod edid;

pub use display::Display;
use display::decode_display_info;
pub use edid::Edid;

/// `struct virtio_gpu_ctrl_hdr`: 24 bytes.
pub const HEADER_BYTES: usize = 24;
/// `VIRTIO_GPU_FLAG_FENCE`: complete only once the command's work is done.
pub const FLAG_FENCE: u32 = 1;
/// Scanouts a device may report (`VIRTIO_GPU_MAX_SCANOUTS`).
pub const MAX_SCANOUTS: usize = 16;

/// Command type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    /// `VIRTIO_GPU_CMD_GET_DISPLAY_INFO`.
    GetDisplayInfo = 0x0100,
    /// `VIRTIO_GPU_CMD_RESOURCE_CREATE_2D`.
    ResourceCreate2d = 0x0101,
    /// `VIRTIO_GPU_CMD_RESOURCE_UNREF`.
    ResourceUnref = 0x0102,
    /// `VIRTIO_GPU_CMD_SET_SCANOUT`.
    SetScanout = 0x0103,
    /// `VIRTIO_GPU_CMD_RESOURCE_FLUSH`.
    ResourceFlush = 0x0104,
    /// `VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D`.
    TransferToHost2d = 0x0105,
    /// `VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING`.
    ResourceAttachBacking = 0x0106,
    /// `VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING`.
    ResourceDetachBacking = 0x0107,
    /// `VIRTIO_GPU_CMD_GET_EDID` (with `VIRTIO_GPU_F_EDID`).
    GetEdid = 0x010a,
    /// `VIRTIO_GPU_CMD_UPDATE_CURSOR` (cursor queue).
    UpdateCursor = 0x0300,
    /// `VIRTIO_GPU_CMD_MOVE_CURSOR` (cursor queue).
    MoveCursor = 0x0301,
}

/// `VIRTIO_GPU_RESP_OK_NODATA`.
pub const RESP_OK_NODATA: u32 = 0x1100;
/// `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
/// `VIRTIO_GPU_RESP_OK_EDID`.
pub const RESP_OK_EDID: u32 = 0x1104;
/// `VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID`.
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
/// `VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID`.
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
/// `VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER`.
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

/// `VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM`: bytes B, G, R, A (the cursor).
pub const FORMAT_B8G8R8A8: u32 = 1;
/// `VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM`: bytes B, G, R, X in memory.
pub const FORMAT_B8G8R8X8: u32 = 2;
/// Every `enum virtio_gpu_formats` value (§5.7.6.8).
pub const FORMATS: [u32; 8] = [1, 2, 3, 4, 67, 68, 121, 134];
/// Side of a cursor image in pixels (§5.7.6.10: 64×64).
pub const CURSOR_SIZE: u32 = 64;

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// The smallest rectangle covering both (an empty one covers nothing).
    pub fn union(self, other: Rect) -> Rect {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = (self.x + self.width).max(other.x + other.width);
        let bottom = (self.y + self.height).max(other.y + other.height);
        Rect { x, y, width: right - x, height: bottom - y }
    }

    /// Whether every pixel of `other` lies in `self` (an empty `other`
    /// always does).
    pub fn contains(self, other: Rect) -> bool {
        other.is_empty()
            || (self.x <= other.x
                && self.y <= other.y
                && u64::from(other.x) + u64::from(other.width)
                    <= u64::from(self.x) + u64::from(self.width)
                && u64::from(other.y) + u64::from(other.height)
                    <= u64::from(self.y) + u64::from(self.height))
    }

    /// Whether it covers no pixel.
    pub fn is_empty(self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether it lies within a `width` × `height` surface.
    pub fn fits(self, width: u32, height: u32) -> bool {
        self.x.checked_add(self.width).is_some_and(|right| right <= width)
            && self.y.checked_add(self.height).is_some_and(|bottom| bottom <= height)
    }

    fn encode(self, out: &mut Encoder) {
        out.u32(self.x).u32(self.y).u32(self.width).u32(self.height);
    }
}

/// Builds a command in a byte buffer. Writes past the buffer's end are
/// dropped and remembered: [`Encoder::finish`] reports them.
pub struct Encoder<'a> {
    bytes: &'a mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'a> Encoder<'a> {
    /// Starts `command` with the standard header; `fence` sets the fence flag.
    pub fn new(bytes: &'a mut [u8], command: Command, fence: Option<u64>) -> Self {
        let mut encoder = Self { bytes, len: 0, overflowed: false };
        let flags = if fence.is_some() { FLAG_FENCE } else { 0 };
        encoder.u32(command as u32).u32(flags).u64(fence.unwrap_or(0)).u32(0).u32(0);
        encoder
    }

    fn put<const N: usize>(&mut self, bytes: [u8; N]) -> &mut Self {
        match self.bytes.get_mut(self.len..self.len + N) {
            Some(slot) => {
                slot.copy_from_slice(&bytes);
                self.len += N;
            }
            None => self.overflowed = true,
        }
        self
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written (never, after [`Encoder::new`] into a
    /// buffer that holds a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The command's length.
    ///
    /// # Errors
    /// [`GpuError::BufferTooSmall`] when a write did not fit.
    pub fn finish(&self) -> Result<usize, GpuError> {
        if self.overflowed { Err(GpuError::BufferTooSmall) } else { Ok(self.len) }
    }
}

/// Encodes `request` (header, fence if any, body) into `bytes` after
/// checking its fields; the command's length.
///
/// # Errors
/// What [`GpuRequest::check`] refuses, or [`GpuError::BufferTooSmall`].
pub fn encode<R: GpuRequest + ?Sized>(
    request: &R,
    fence: Option<u64>,
    bytes: &mut [u8],
) -> Result<usize, GpuError> {
    request.check()?;
    let mut out = Encoder::new(bytes, R::COMMAND, fence);
    request.encode_body(&mut out);
    out.finish()
}

/// A control command: its code, its body, and the response it expects.
pub trait GpuRequest {
    /// The command code.
    const COMMAND: Command;
    /// What a successful command answers.
    type Response: GpuResponse;
    /// Writes the body after the header.
    fn encode_body(&self, out: &mut Encoder);
    /// Bytes of the body, when it may be long (an entry list).
    fn body_bytes(&self) -> usize {
        0
    }
    /// Refuses field values the spec rules out before any byte is
    /// written.
    ///
    /// # Errors
    /// [`GpuError::InvalidField`] naming the field.
    fn check(&self) -> Result<(), GpuError> {
        Ok(())
    }
}

/// A success response, decoded from the bytes the device wrote.
pub trait GpuResponse: Sized {
    /// Its response code.
    const TYPE: u32;
    /// Decodes it (header already checked).
    ///
    /// # Errors
    /// [`GpuError::ShortResponse`] when the device wrote too little.
    fn decode(response: &[u8], written: u32) -> Result<Self, GpuError>;
}

/// `VIRTIO_GPU_RESP_OK_NODATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoData;

impl GpuResponse for NoData {
    const TYPE: u32 = RESP_OK_NODATA;
    fn decode(_: &[u8], _: u32) -> Result<Self, GpuError> {
        Ok(NoData)
    }
}

/// `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`: the scanouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayInfo(pub [Display; MAX_SCANOUTS]);

impl GpuResponse for DisplayInfo {
    const TYPE: u32 = RESP_OK_DISPLAY_INFO;
    fn decode(response: &[u8], written: u32) -> Result<Self, GpuError> {
        decode_display_info(response, written).map(DisplayInfo)
    }
}

/// `GET_DISPLAY_INFO`.
pub struct GetDisplayInfo;

impl GpuRequest for GetDisplayInfo {
    const COMMAND: Command = Command::GetDisplayInfo;
    type Response = DisplayInfo;
    fn encode_body(&self, _: &mut Encoder) {}
}

/// `RESOURCE_CREATE_2D`.
pub struct ResourceCreate2d {
    /// New resource id (non-zero).
    pub resource: u32,
    /// Pixel format.
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl GpuRequest for ResourceCreate2d {
    const COMMAND: Command = Command::ResourceCreate2d;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        out.u32(self.resource).u32(self.format).u32(self.width).u32(self.height);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)?;
        if !FORMATS.contains(&self.format) {
            return Err(GpuError::InvalidField("format"));
        }
        if self.width == 0 || self.height == 0 {
            return Err(GpuError::InvalidField("size"));
        }
        Ok(())
    }
}

/// Resource id 0 means "none" (§5.7.6.8): no command may create or name it.
fn check_resource(resource: u32) -> Result<(), GpuError> {
    if resource == 0 { Err(GpuError::InvalidField("resource")) } else { Ok(()) }
}

fn check_scanout(scanout: u32) -> Result<(), GpuError> {
    if scanout as usize >= MAX_SCANOUTS { Err(GpuError::InvalidField("scanout")) } else { Ok(()) }
}

/// `RESOURCE_UNREF`.
pub struct ResourceUnref {
    /// The resource to drop.
    pub resource: u32,
}

impl GpuRequest for ResourceUnref {
    const COMMAND: Command = Command::ResourceUnref;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        out.u32(self.resource).u32(0);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)
    }
}

/// `RESOURCE_ATTACH_BACKING`: guest memory behind a resource, as a scatter
/// list of `(device address, length)` entries (§5.7.6.8).
pub struct AttachBacking<'a> {
    /// The resource.
    pub resource: u32,
    /// The backing store's pieces, in order.
    pub entries: &'a [(u64, u32)],
}

impl GpuRequest for AttachBacking<'_> {
    const COMMAND: Command = Command::ResourceAttachBacking;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        out.u32(self.resource).u32(self.entries.len() as u32);
        for &(address, len) in self.entries {
            out.u64(address).u32(len).u32(0);
        }
    }
    fn body_bytes(&self) -> usize {
        8 + 16 * self.entries.len()
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)?;
        if self.entries.is_empty() || u32::try_from(self.entries.len()).is_err() {
            return Err(GpuError::InvalidField("nr_entries"));
        }
        if self
            .entries
            .iter()
            .any(|&(address, len)| len == 0 || address.checked_add(u64::from(len)).is_none())
        {
            return Err(GpuError::InvalidField("entry"));
        }
        Ok(())
    }
}

/// `RESOURCE_DETACH_BACKING`: the device lets go of the guest memory.
pub struct DetachBacking {
    /// The resource.
    pub resource: u32,
}

impl GpuRequest for DetachBacking {
    const COMMAND: Command = Command::ResourceDetachBacking;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        out.u32(self.resource).u32(0);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)
    }
}

/// `GET_EDID` for one scanout.
pub struct GetEdid {
    /// The scanout.
    pub scanout: u32,
}

impl GpuRequest for GetEdid {
    const COMMAND: Command = Command::GetEdid;
    type Response = Edid;
    fn encode_body(&self, out: &mut Encoder) {
        out.u32(self.scanout).u32(0);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_scanout(self.scanout)
    }
}

/// `SET_SCANOUT`: show `resource` (`rect` of it) on `scanout`.
pub struct SetScanout {
    /// The visible part.
    pub rect: Rect,
    /// Which display.
    pub scanout: u32,
    /// The resource (0 disables the scanout).
    pub resource: u32,
}

impl GpuRequest for SetScanout {
    const COMMAND: Command = Command::SetScanout;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        self.rect.encode(out);
        out.u32(self.scanout).u32(self.resource);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_scanout(self.scanout)?;
        // §5.7.6.8: resource 0 disables the scanout (any rect); a shown
        // resource needs a visible part.
        if self.resource != 0 && self.rect.is_empty() {
            return Err(GpuError::InvalidField("rect"));
        }
        Ok(())
    }
}

/// `TRANSFER_TO_HOST_2D`: copy `rect` from the backing store (starting at
/// byte `offset`) into the host resource.
pub struct TransferToHost2d {
    /// The region.
    pub rect: Rect,
    /// Byte offset of the region's first pixel in the backing store.
    pub offset: u64,
    /// The resource.
    pub resource: u32,
}

impl GpuRequest for TransferToHost2d {
    const COMMAND: Command = Command::TransferToHost2d;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        self.rect.encode(out);
        out.u64(self.offset).u32(self.resource).u32(0);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)?;
        check_rect(self.rect)
    }
}

fn check_rect(rect: Rect) -> Result<(), GpuError> {
    let overflows =
        rect.x.checked_add(rect.width).is_none() || rect.y.checked_add(rect.height).is_none();
    if rect.is_empty() || overflows { Err(GpuError::InvalidField("rect")) } else { Ok(()) }
}

/// `RESOURCE_FLUSH`: show the updated `rect` on every scanout using it.
pub struct ResourceFlush {
    /// The damaged region.
    pub rect: Rect,
    /// The resource.
    pub resource: u32,
}

impl GpuRequest for ResourceFlush {
    const COMMAND: Command = Command::ResourceFlush;
    type Response = NoData;
    fn encode_body(&self, out: &mut Encoder) {
        self.rect.encode(out);
        out.u32(self.resource).u32(0);
    }
    fn check(&self) -> Result<(), GpuError> {
        check_resource(self.resource)?;
        check_rect(self.rect)
    }
}

/// `struct virtio_gpu_update_cursor` for UPDATE_CURSOR and MOVE_CURSOR
/// (§5.7.6.10): where, on which scanout, which resource and hot spot.
pub struct Cursor {
    /// MOVE_CURSOR (position only) or UPDATE_CURSOR (image too).
    pub command: Command,
    /// Scanout.
    pub scanout: u32,
    /// Position on it.
    pub x: u32,
    /// Position on it.
    pub y: u32,
    /// A 64x64 resource, or 0 to hide the cursor.
    pub resource: u32,
    /// Hot spot within the image.
    pub hot_x: u32,
    /// Hot spot within the image.
    pub hot_y: u32,
}

/// Bytes of `struct virtio_gpu_update_cursor`.
pub const CURSOR_BYTES: usize = 56;

impl Cursor {
    /// Encodes it ([`CURSOR_BYTES`]; fewer only into a shorter buffer,
    /// which [`Cursor::encode`] refuses).
    pub fn encode_into(&self, bytes: &mut [u8]) -> usize {
        let mut out = Encoder::new(bytes, self.command, None);
        out.u32(self.scanout).u32(self.x).u32(self.y).u32(0);
        out.u32(self.resource).u32(self.hot_x).u32(self.hot_y).u32(0);
        out.len()
    }

    /// Encodes it after checking its fields: a cursor command, a scanout
    /// that can exist, a hot spot inside the 64×64 image.
    ///
    /// # Errors
    /// [`GpuError::InvalidField`], or [`GpuError::BufferTooSmall`].
    pub fn encode(&self, bytes: &mut [u8]) -> Result<usize, GpuError> {
        if !matches!(self.command, Command::UpdateCursor | Command::MoveCursor) {
            return Err(GpuError::InvalidField("command"));
        }
        check_scanout(self.scanout)?;
        if self.hot_x >= CURSOR_SIZE || self.hot_y >= CURSOR_SIZE {
            return Err(GpuError::InvalidField("hot spot"));
        }
        if bytes.len() < CURSOR_BYTES {
            return Err(GpuError::BufferTooSmall);
        }
        Ok(self.encode_into(bytes))
    }
}

/// What the device said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuError {
    /// An error response (`VIRTIO_GPU_RESP_ERR_*`, 0x1200..) or an
    /// unexpected response type: the raw code.
    Response(u32),
    /// A response too short for its type.
    ShortResponse(u32),
    /// A fenced command came back without the fence it was given.
    FenceMismatch,
    /// A command field the spec rules out (named); nothing was encoded.
    InvalidField(&'static str),
    /// The command does not fit the buffer given for it.
    BufferTooSmall,
}

/// Checks a response header: its type must be `expected` and, for fenced
/// commands, it must carry the same fence (§5.7.6.8).
///
/// # Errors
/// [`GpuError`] for anything else.
pub fn check_header(
    response: &[u8],
    written: u32,
    expected: u32,
    fence: Option<u64>,
) -> Result<(), GpuError> {
    if (written as usize) < HEADER_BYTES || response.len() < HEADER_BYTES {
        return Err(GpuError::ShortResponse(written));
    }
    let kind = u32::from_le_bytes(response[0..4].try_into().unwrap_or([0; 4]));
    if kind != expected {
        return Err(GpuError::Response(kind));
    }
    if let Some(fence) = fence {
        let flags = u32::from_le_bytes(response[4..8].try_into().unwrap_or([0; 4]));
        let echoed = u64::from_le_bytes(response[8..16].try_into().unwrap_or([0; 8]));
        if flags & FLAG_FENCE == 0 || echoed != fence {
            return Err(GpuError::FenceMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
