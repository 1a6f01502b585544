//! One virtio-blk request (VirtIO 1.2 §5.2.6), taken apart from its
//! descriptor chain and carried out honestly against the image file.
//!
//! A request is a 16-byte header the device reads, data, and a status byte
//! the device writes last. The chain may split any of them over several
//! descriptors (§2.7.4: the device must not assume a layout), so bytes are
//! gathered and scattered over segments rather than read per descriptor.

use std::fs::File;
use std::os::unix::fs::FileExt;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// Request types (§5.2.6).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
/// Status values (§5.2.6).
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

const SECTOR_BYTES: u64 = 512;
const HEADER_BYTES: usize = 16;
/// `VIRTIO_BLK_ID_BYTES`: the serial GET_ID returns.
const ID_BYTES: usize = 20;
pub const SERIAL: &[u8] = b"hostile-blk";

/// One descriptor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A request as the driver laid it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The head descriptor index: the id the used ring must name.
    pub head: u16,
    pub kind: u32,
    pub sector: u64,
    /// Device-readable bytes after the header (write data).
    pub data_out: Vec<Segment>,
    /// Device-writable bytes before the status byte (read data).
    pub data_in: Vec<Segment>,
    /// Where the status byte goes: the last writable byte.
    pub status: GuestAddress,
}

/// Why a chain is not a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    ShortHeader,
    NoStatus,
    Memory,
}

impl Request {
    /// Takes `descriptors` (in chain order, `(segment, device_writable)`)
    /// apart; the header is read from guest memory.
    ///
    /// # Errors
    /// [`Malformed`] when the chain has no 16-byte header or no writable
    /// byte for the status.
    pub fn parse<M: GuestMemory>(
        mem: &M,
        head: u16,
        descriptors: &[(Segment, bool)],
    ) -> Result<Self, Malformed> {
        let readable: Vec<Segment> =
            descriptors.iter().filter(|(_, w)| !w).map(|(s, _)| *s).collect();
        let mut writable: Vec<Segment> =
            descriptors.iter().filter(|(_, w)| *w).map(|(s, _)| *s).collect();
        let mut header = [0u8; HEADER_BYTES];
        if total_bytes(&readable) < HEADER_BYTES as u64 {
            return Err(Malformed::ShortHeader);
        }
        gather(mem, &readable, 0, &mut header).map_err(|_| Malformed::Memory)?;
        let data_out = skip(&readable, HEADER_BYTES as u64);
        // The status byte is the last writable byte; trim it off the data.
        let last = writable.pop().filter(|s| s.len > 0).ok_or(Malformed::NoStatus)?;
        let status = last.addr.unchecked_add(u64::from(last.len) - 1);
        if last.len > 1 {
            writable.push(Segment { addr: last.addr, len: last.len - 1 });
        }
        Ok(Self {
            head,
            kind: u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")),
            sector: u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
            data_out,
            data_in: writable,
            status,
        })
    }

    /// Bytes the device may write, status byte included: the most an
    /// honest used `len` can be.
    pub fn writable_bytes(&self) -> u32 {
        (total_bytes(&self.data_in) + 1) as u32
    }

    /// Carries the request out against `image` (of `capacity_sectors`),
    /// without writing the status byte. Returns the status and the used
    /// `len` an honest device reports (data written + the status byte).
    pub fn execute<M: GuestMemory>(
        &self,
        mem: &M,
        image: &File,
        capacity_sectors: u64,
        read_only: bool,
    ) -> (u8, u32) {
        let span_ok = |bytes: u64| {
            bytes.is_multiple_of(SECTOR_BYTES)
                && self
                    .sector
                    .checked_add(bytes / SECTOR_BYTES)
                    .is_some_and(|end| end <= capacity_sectors)
        };
        let offset = self.sector.saturating_mul(SECTOR_BYTES);
        match self.kind {
            T_IN => {
                let bytes = total_bytes(&self.data_in);
                let mut data = vec![0u8; bytes as usize];
                if !span_ok(bytes) || image.read_exact_at(&mut data, offset).is_err() {
                    return (S_IOERR, 1);
                }
                match scatter(mem, &self.data_in, &data) {
                    Ok(()) => (S_OK, bytes as u32 + 1),
                    Err(_) => (S_IOERR, 1),
                }
            }
            T_OUT => {
                let bytes = total_bytes(&self.data_out);
                let mut data = vec![0u8; bytes as usize];
                if read_only
                    || !span_ok(bytes)
                    || gather(mem, &self.data_out, 0, &mut data).is_err()
                {
                    return (S_IOERR, 1);
                }
                match image.write_all_at(&data, offset) {
                    Ok(()) => (S_OK, 1),
                    Err(_) => (S_IOERR, 1),
                }
            }
            T_FLUSH => match image.sync_data() {
                Ok(()) => (S_OK, 1),
                Err(_) => (S_IOERR, 1),
            },
            T_GET_ID => {
                let mut id = [0u8; ID_BYTES];
                id[..SERIAL.len()].copy_from_slice(SERIAL);
                let room = (total_bytes(&self.data_in) as usize).min(ID_BYTES);
                match scatter(mem, &self.data_in, &id[..room]) {
                    Ok(()) => (S_OK, room as u32 + 1),
                    Err(_) => (S_IOERR, 1),
                }
            }
            _ => (S_UNSUPP, 1),
        }
    }

    /// Writes the status byte.
    pub fn write_status<M: GuestMemory>(&self, mem: &M, status: u8) {
        // A status address outside guest RAM only loses the status: the
        // driver sees whatever it left there.
        let _ = mem.write_obj(status, self.status);
    }
}

fn total_bytes(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

/// `segments` without their first `bytes` bytes.
fn skip(segments: &[Segment], mut bytes: u64) -> Vec<Segment> {
    let mut rest = Vec::new();
    for segment in segments {
        let len = u64::from(segment.len);
        if bytes >= len {
            bytes -= len;
            continue;
        }
        rest.push(Segment { addr: segment.addr.unchecked_add(bytes), len: (len - bytes) as u32 });
        bytes = 0;
    }
    rest
}

/// Reads `out.len()` bytes starting `from` bytes into `segments`.
fn gather<M: GuestMemory>(
    mem: &M,
    segments: &[Segment],
    from: u64,
    out: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut done = 0;
    for segment in skip(segments, from) {
        if done == out.len() {
            break;
        }
        let n = (segment.len as usize).min(out.len() - done);
        mem.read_slice(&mut out[done..done + n], segment.addr)?;
        done += n;
    }
    Ok(())
}

/// Writes `data` over `segments` in order.
pub fn scatter<M: GuestMemory>(
    mem: &M,
    segments: &[Segment],
    data: &[u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut done = 0;
    for segment in segments {
        if done == data.len() {
            break;
        }
        let n = (segment.len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], segment.addr)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr: GuestAddress(addr), len }
    }

    fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        mem.write_obj(kind, GuestAddress(at)).unwrap();
        mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn image(bytes: usize) -> File {
        // Tests run in parallel threads of one process: a name per call, or
        // one test removes the file another is about to open.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("hostile-blk-test-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path);
        let file = file.unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(bytes as u64).unwrap();
        file
    }

    #[test]
    fn vireo_layout_header_data_status() {
        let mem = memory();
        header(&mem, 0x100, T_IN, 7);
        let chain = [(seg(0x100, 16), false), (seg(0x1000, 4096), true), (seg(0x140, 1), true)];
        let request = Request::parse(&mem, 3, &chain).unwrap();
        assert_eq!((request.head, request.kind, request.sector), (3, T_IN, 7));
        assert_eq!(request.data_in, vec![seg(0x1000, 4096)]);
        assert_eq!(request.status, GuestAddress(0x140));
        assert_eq!(request.writable_bytes(), 4097);
    }

    #[test]
    fn status_may_share_the_data_descriptor_and_header_may_carry_data() {
        let mem = memory();
        header(&mem, 0x200, T_OUT, 1);
        // Header and 512 bytes of data in one readable descriptor; status
        // is the last byte of a 2-byte writable one.
        let chain = [(seg(0x200, 16 + 512), false), (seg(0x900, 2), true)];
        let request = Request::parse(&mem, 0, &chain).unwrap();
        assert_eq!(request.data_out, vec![seg(0x210, 512)]);
        assert_eq!(request.data_in, vec![seg(0x900, 1)]);
        assert_eq!(request.status, GuestAddress(0x901));
    }

    #[test]
    fn chains_without_header_or_status_are_malformed() {
        let mem = memory();
        assert_eq!(
            Request::parse(&mem, 0, &[(seg(0, 8), false), (seg(0x10, 1), true)]),
            Err(Malformed::ShortHeader)
        );
        assert_eq!(Request::parse(&mem, 0, &[(seg(0, 16), false)]), Err(Malformed::NoStatus));
    }

    #[test]
    fn write_then_read_round_trips_through_the_image() {
        let mem = memory();
        let file = image(8 * 512);
        mem.write_slice(&[0xab; 1024], GuestAddress(0x2000)).unwrap();
        header(&mem, 0x100, T_OUT, 2);
        let write = [(seg(0x100, 16), false), (seg(0x2000, 1024), false), (seg(0x150, 1), true)];
        let write = Request::parse(&mem, 0, &write).unwrap();
        assert_eq!(write.execute(&mem, &file, 8, false), (S_OK, 1));
        assert_eq!(write.execute(&mem, &file, 8, true), (S_IOERR, 1));
        header(&mem, 0x300, T_IN, 2);
        let read = [(seg(0x300, 16), false), (seg(0x4000, 1024), true), (seg(0x350, 1), true)];
        let read = Request::parse(&mem, 1, &read).unwrap();
        assert_eq!(read.execute(&mem, &file, 8, false), (S_OK, 1025));
        let mut back = [0u8; 1024];
        mem.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
        assert!(back.iter().all(|&b| b == 0xab));
    }

    #[test]
    fn out_of_range_and_unknown_requests_fail() {
        let mem = memory();
        let file = image(8 * 512);
        header(&mem, 0x100, T_IN, 7);
        let chain = [(seg(0x100, 16), false), (seg(0x1000, 1024), true), (seg(0x150, 1), true)];
        let past_end = Request::parse(&mem, 0, &chain).unwrap();
        assert_eq!(past_end.execute(&mem, &file, 8, false).0, S_IOERR);
        header(&mem, 0x100, 99, 0);
        let unknown = Request::parse(&mem, 0, &chain).unwrap();
        assert_eq!(unknown.execute(&mem, &file, 8, false), (S_UNSUPP, 1));
        header(&mem, 0x100, T_GET_ID, 0);
        let id = Request::parse(&mem, 0, &chain).unwrap();
        assert_eq!(id.execute(&mem, &file, 8, false), (S_OK, 21));
    }
}
