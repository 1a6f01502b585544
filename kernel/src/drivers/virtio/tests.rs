//! The virtio crate driving QEMU's virtio-blk through the kernel's HAL and
//! virtio-pci transport: feature negotiation, config space, a write/read
//! round trip polled to completion, and an MSI-X completion interrupt.

use super::hal::KernelHal;
use super::pci::{NO_VECTOR, VirtioPci};
use crate::arch::interrupts::{self, InterruptFrame};
use crate::pci::msix::MsiX;
use crate::{check, check_eq, check_ok, ktest, time};
use core::sync::atomic::{AtomicU32, Ordering};
use vireo_virtio::{
    DeviceStatus, Dma, DmaChain, Features, QueueConfig, SplitQueue, Transport, negotiate_features,
};

const VIRTIO_BLK: u16 = 0x1042;
const SECTOR_BYTES: usize = 512;
const REQUEST_IN: u32 = 0;
const REQUEST_OUT: u32 = 1;
/// Header at 0, data at 512, status byte at 1024 of one DMA page.
const HEADER: (usize, usize) = (0, 16);
const DATA: (usize, usize) = (512, SECTOR_BYTES);
const STATUS: (usize, usize) = (1024, 1);

type Request = DmaChain<KernelHal, 3>;
type BlkQueue = SplitQueue<KernelHal, Request>;

fn blk_device() -> Result<VirtioPci, crate::ktest::TestFailure> {
    let function = crate::pci::find(0x1af4, VIRTIO_BLK)
        .next()
        .ok_or_else(|| crate::ktest::TestFailure::new("no virtio-blk".into()))?;
    VirtioPci::new(function)
        .map_err(|error| crate::ktest::TestFailure::new(alloc::format!("{error:?}")))
}

fn start(transport: &mut VirtioPci) -> Result<BlkQueue, vireo_virtio::Error> {
    let features = negotiate_features(transport, Features::INDIRECT_DESC | Features::EVENT_IDX)?;
    let queue = SplitQueue::new(
        &KernelHal,
        transport,
        QueueConfig { index: 0, size: 64, features, indirect_max: 4 },
    )?;
    let status = transport.status();
    transport.set_status(status | DeviceStatus::DRIVER_OK);
    Ok(queue)
}

fn request(kind: u32, sector: u64, fill: u8) -> Result<Request, vireo_virtio::Error> {
    let mut chain = DmaChain::new(Dma::new(KernelHal, 1)?);
    if kind == REQUEST_IN {
        chain.set_segments(&[HEADER], &[DATA, STATUS])?;
    } else {
        chain.set_segments(&[HEADER, DATA], &[STATUS])?;
        chain.bytes_mut(1).fill(fill);
    }
    let header = chain.bytes_mut(0);
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    Ok(chain)
}

/// Submits one request and polls until the device returns it.
fn submit_and_poll(
    queue: &mut BlkQueue,
    transport: &mut VirtioPci,
    chain: Request,
) -> Result<(Request, u32), alloc::string::String> {
    let token = queue.add(chain).map_err(|rejected| alloc::format!("{:?}", rejected.error))?;
    queue.kick(transport).map_err(|error| alloc::format!("{error:?}"))?;
    let deadline = time::uptime_us() + 2_000_000;
    loop {
        match queue.pop_used() {
            Ok(Some(used)) if used.token == token => return Ok((used.buffers, used.written_len)),
            Ok(Some(_)) => return Err("unexpected token".into()),
            Ok(None) if time::uptime_us() > deadline => return Err("device never answered".into()),
            Ok(None) => core::hint::spin_loop(),
            Err(error) => return Err(alloc::format!("{error:?}")),
        }
    }
}

ktest!(
    fn blk_negotiates_and_reports_capacity() {
        let mut transport = blk_device()?;
        check!(transport.num_queues() >= 1);
        let offered = Features::from_bits_retain(transport.read_device_features());
        check!(offered.contains(Features::VERSION_1));
        let features = check_ok!(negotiate_features(&mut transport, Features::EVENT_IDX));
        check!(features.contains(Features::VERSION_1));
        check!(transport.status().contains(DeviceStatus::FEATURES_OK));
        let mut capacity = [0u8; 8];
        check_ok!(transport.read_config(0, &mut capacity));
        // The runner's disk is 64 MiB: 131072 sectors.
        check_eq!(u64::from_le_bytes(capacity), 131_072);
        check!(transport.read_config(usize::MAX, &mut capacity).is_err());
        check_ok!(transport.reset());
        Ok(())
    }
);

ktest!(
    fn blk_write_then_read_round_trips() {
        let mut transport = blk_device()?;
        let mut queue = check_ok!(start(&mut transport));
        let sector = 131_071; // the last sector: scratch space for tests
        let stamp = (time::rdtsc() as u8) | 1;
        let (written, _) = check_ok!(submit_and_poll(
            &mut queue,
            &mut transport,
            check_ok!(request(REQUEST_OUT, sector, stamp))
        ));
        check_eq!(written.bytes(2)[0], 0);
        let (read, written_len) = check_ok!(submit_and_poll(
            &mut queue,
            &mut transport,
            check_ok!(request(REQUEST_IN, sector, 0))
        ));
        check_eq!(read.bytes(2)[0], 0);
        check_eq!(written_len, SECTOR_BYTES as u32 + 1);
        check!(read.bytes(1).iter().all(|&byte| byte == stamp), "read back other data");
        let stats = queue.stats();
        check_eq!(stats.completions, 2);
        check_ok!(queue.reset(&mut transport, |_, _| {}));
        Ok(())
    }
);

static COMPLETION_IRQS: AtomicU32 = AtomicU32::new(0);
const TEST_VECTOR: u8 = 0x50;

fn count_completion(_: &mut InterruptFrame) {
    COMPLETION_IRQS.fetch_add(1, Ordering::Relaxed);
    crate::arch::apic::lapic::eoi();
}

ktest!(
    fn blk_completion_arrives_as_msix_interrupt() {
        let mut transport = blk_device()?;
        let msix = check_ok!(MsiX::new(transport.function()));
        check_ok!(interrupts::register_irq(TEST_VECTOR, count_completion));
        check_ok!(msix.route(1, TEST_VECTOR, crate::arch::apic::lapic::id()));
        check_ok!(msix.enable());
        let result = (|| {
            let features = check_ok!(negotiate_features(&mut transport, Features::empty()));
            check!(transport.set_config_msix_vector(NO_VECTOR));
            check!(transport.set_queue_msix_vector(0, 1), "device refused MSI-X entry 1");
            let mut queue: BlkQueue = check_ok!(SplitQueue::new(
                &KernelHal,
                &mut transport,
                QueueConfig { index: 0, size: 16, features, indirect_max: 0 }
            ));
            let status = transport.status();
            transport.set_status(status | DeviceStatus::DRIVER_OK);
            let before = COMPLETION_IRQS.load(Ordering::Relaxed);
            check_ok!(submit_and_poll(
                &mut queue,
                &mut transport,
                check_ok!(request(REQUEST_IN, 0, 0))
            ));
            let deadline = time::uptime_us() + 1_000_000;
            while COMPLETION_IRQS.load(Ordering::Relaxed) == before && time::uptime_us() < deadline
            {
                core::hint::spin_loop();
            }
            check_ok!(queue.reset(&mut transport, |_, _| {}));
            check!(COMPLETION_IRQS.load(Ordering::Relaxed) > before, "no MSI-X interrupt");
            Ok(())
        })();
        check_ok!(msix.disable());
        interrupts::unregister_irq(TEST_VECTOR);
        result
    }
);
