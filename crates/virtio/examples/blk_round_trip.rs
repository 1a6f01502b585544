//! A virtio-blk write and read back (VirtIO 1.2 §5.2) against a tiny
//! RAM-disk model, through the crate's public API only: negotiate, read the
//! configuration, set up a queue, write two sectors, read them back, check
//! every byte, shut down with a reset proof.
//!
//! It runs twice with the same driver code: over the coherent `FakeHal`
//! (a kernel on x86 without an IOMMU: buffers go to the device as they are)
//! and over `BounceHal` (the device sees only what was shared, and every
//! buffer is bounced through a copy, as under an IOMMU or in a
//! confidential guest).
//!
//! Run: `cargo run -p vireo-virtio --example blk_round_trip`

use vireo_virtio::config::{ConfigFields, DeviceConfig, read_config};
use vireo_virtio::fake::{
    BounceHal, DeviceMemory, DeviceModel, FakeHal, FakeTransport, Reply, Request,
};
use vireo_virtio::{
    DeviceStatus, Dma, DmaBuffers, DmaChain, Error, Features, Hal, QueueConfig, QueueNotifiers,
    SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};

const SECTOR: usize = 512;
/// Request types and status values (§5.2.6).
const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;

/// The device: sectors in memory, answering §5.2.6 requests (header
/// `type, reserved, sector`, then data, then one status byte).
struct RamDisk {
    bytes: Vec<u8>,
}

impl RamDisk {
    fn answer(&mut self, request: &mut Request<'_>) -> Option<u32> {
        let input = request.readable();
        let kind = u32::from_le_bytes(input.get(0..4)?.try_into().ok()?);
        let start = usize::try_from(u64::from_le_bytes(input.get(8..16)?.try_into().ok()?)).ok()?;
        let at = start.checked_mul(SECTOR)?;
        match kind {
            VIRTIO_BLK_T_OUT => {
                let data = input.get(16..)?.to_vec();
                self.bytes.get_mut(at..at.checked_add(data.len())?)?.copy_from_slice(&data);
                request.writable()[0] = VIRTIO_BLK_S_OK;
                Some(1)
            }
            VIRTIO_BLK_T_IN => {
                let out = request.writable();
                let (data, status) = out.split_at_mut(out.len().checked_sub(1)?);
                data.copy_from_slice(self.bytes.get(at..at.checked_add(data.len())?)?);
                status[0] = VIRTIO_BLK_S_OK;
                Some(out.len() as u32)
            }
            _ => None,
        }
    }
}

impl DeviceModel for RamDisk {
    fn features(&self) -> u64 {
        (Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX).bits()
    }

    fn serve(&mut self, request: &mut Request<'_>) -> Reply {
        match self.answer(request) {
            Some(written) => Reply::Done { written },
            None => {
                // Out of range or unknown: an I/O error in the status byte.
                let out = request.writable();
                if let Some(status) = out.last_mut() {
                    *status = VIRTIO_BLK_S_IOERR;
                }
                Reply::Done { written: out.len() as u32 }
            }
        }
    }
}

/// The configuration the driver needs (§5.2.4): the capacity.
struct BlkConfig {
    capacity_sectors: u64,
}

impl DeviceConfig for BlkConfig {
    type Error = Error;
    fn read(fields: &ConfigFields<'_>, _: Features) -> Result<Self, Error> {
        Ok(Self { capacity_sectors: fields.u64(0)? })
    }
}

/// One request's memory: header at 0, status at 16, data from 512.
type BlkRequest<H> = DmaChain<H, 3>;

fn request<H: Hal>(hal: &H, kind: u32, sector: u64, data: &[u8]) -> Result<BlkRequest<H>, Error> {
    let mut chain = DmaChain::new(Dma::with_bytes(hal.clone(), SECTOR + data.len())?);
    let region = chain.region_mut();
    region[0..4].copy_from_slice(&kind.to_le_bytes());
    region[8..16].copy_from_slice(&sector.to_le_bytes());
    region[16] = 0xff; // the device must overwrite it
    region[SECTOR..SECTOR + data.len()].copy_from_slice(data);
    let (header, status, payload) = ((0, 16), (16, 1), (SECTOR, data.len()));
    // §2.7.4.2: device-readable segments first, then device-writable ones.
    if kind == VIRTIO_BLK_T_OUT {
        chain.set_segments(&[header, payload], &[status])?;
    } else {
        chain.set_segments(&[header], &[payload, status])?;
    }
    Ok(chain)
}

/// Brings the device up, writes two sectors, reads them back.
fn round_trip<H: Hal>(hal: H, memory: &DeviceMemory) -> Result<(), Error> {
    let disk = RamDisk { bytes: vec![0; 64 * SECTOR] };
    let mut transport = FakeTransport::new(memory, disk, &[64]);
    transport.set_config(&(64u64).to_le_bytes());

    // §3.1.1 steps 1-6, then the configuration (generation-checked), the
    // queue (step 7) and DRIVER_OK (step 8).
    let features =
        negotiate_features(&mut transport, Features::INDIRECT_DESC | Features::EVENT_IDX)?;
    let config: BlkConfig = read_config(&transport, features)?;
    let queue_config = QueueConfig {
        index: 0,
        size: 64,
        features,
        indirect_max: 4,
        used_len: UsedLenPolicy::Strict,
    };
    let mut queue: SplitQueue<H, BlkRequest<H>> =
        SplitQueue::new(&hal, &mut transport, queue_config)?;
    let notifier = transport.notifier(0)?;
    transport.set_status(transport.status() | DeviceStatus::DRIVER_OK);

    let data: Vec<u8> = (0..2 * SECTOR).map(|i| (i * 7 + 3) as u8).collect();
    let last = config.capacity_sectors - 2;
    let mut submit = |chain: BlkRequest<H>| -> Result<BlkRequest<H>, Error> {
        queue.add(chain).map_err(|rejected| rejected.error)?;
        queue.kick_with(&notifier)?;
        // The fake answers during the kick; a real driver sleeps until the
        // interrupt and then pops.
        let used = queue.pop_used()?.ok_or(Error::Broken)?;
        let status = used.buffers.segment_count() - 1; // the last segment
        assert_eq!(used.buffers.bytes(status), [VIRTIO_BLK_S_OK]);
        Ok(used.buffers)
    };
    submit(request(&hal, VIRTIO_BLK_T_OUT, last, &data)?)?;
    let read = submit(request(&hal, VIRTIO_BLK_T_IN, last, &vec![0; data.len()])?)?;
    assert_eq!(read.bytes(1), &data[..], "read back what was written");

    // Shutting down: the reset proof lets the queue free its rings.
    let stopped = transport.reset()?;
    queue.reclaim(&stopped, |_, _| unreachable!("nothing in flight"))?;
    Ok(())
}

fn main() {
    let coherent = FakeHal::new();
    round_trip(coherent.clone(), coherent.memory()).expect("coherent round trip");
    let bouncing = BounceHal::new();
    round_trip(bouncing.clone(), bouncing.memory()).expect("bounced round trip");
    for (name, memory) in [("FakeHal", coherent.memory()), ("BounceHal", bouncing.memory())] {
        let stats = memory.stats();
        println!("{name}: {stats:?}");
        // Everything freed and unshared; the device never strayed.
        assert_eq!((stats.live_allocations, stats.live_coherent, stats.live_bounces), (0, 0, 0));
        assert!(memory.faults().is_empty());
    }
    assert!(bouncing.stats().bytes_out > 0, "the read came back through a bounce");
    println!("blk round trip: ok with both HALs");
}

#[test]
fn runs() {
    main();
}
