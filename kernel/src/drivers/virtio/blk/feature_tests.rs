//! The device features beyond read and write (VirtIO 1.2 §5.2): GET_ID,
//! DISCARD, WRITE_ZEROES, the cache mode, configuration fields, the
//! configuration-change interrupt, and where completions interrupt.

use super::io_tests::{first_wrong, stamp};
use super::tests::{blk, filled, scratch, writable};
use super::{BlkError, CacheMode, SECTOR_BYTES, feature};
use crate::sched::{Placement, spawn};
use crate::smp::online_cpus;
use crate::{check, check_eq, check_ok, ktest};
use alloc::vec::Vec;

fn stamped_write(
    device: &'static super::BlkDevice,
    first: u64,
    sectors: u64,
    seed: u8,
) -> Result<(), BlkError> {
    let bytes = (sectors * SECTOR_BYTES) as usize;
    let mut buffer = filled(0, bytes.div_ceil(4096) as u64);
    stamp(&mut buffer.as_mut_slice()[..bytes], first, seed);
    device.write(first, buffer, bytes).map(drop).map_err(|e| e.0)
}

fn is_zero(device: &'static super::BlkDevice, first: u64, sectors: u64) -> Result<bool, BlkError> {
    let bytes = (sectors * SECTOR_BYTES) as usize;
    let read =
        device.read(first, filled(0xaa, bytes.div_ceil(4096) as u64), bytes).map_err(|e| e.0)?;
    Ok(read.as_slice()[..bytes].iter().all(|&b| b == 0))
}

ktest!(
    fn get_id_answers_with_a_printable_serial() {
        let device = blk()?;
        match device.serial() {
            Ok(serial) => {
                check!(serial.len() <= super::ID_BYTES);
                check!(serial.chars().all(|c| c.is_ascii() && c != '\0'), "serial {:?}", serial);
                log::info!("virtio-blk serial: {serial:?}");
                Ok(())
            }
            Err(BlkError::Unsupported) => {
                crate::ktest::skip("the device answers GET_ID with UNSUPP")
            }
            Err(error) => Err(crate::ktest::TestFailure::new(alloc::format!("GET_ID: {error:?}"))),
        }
    }
);

ktest!(
    fn write_zeroes_zeroes_exactly_its_sectors() {
        let device = writable()?;
        if !device.has(feature::WRITE_ZEROES) {
            check_eq!(device.write_zeroes(scratch(device), 8, false), Err(BlkError::Unsupported));
            return crate::ktest::skip("no VIRTIO_BLK_F_WRITE_ZEROES");
        }
        let first = scratch(device) + 1536;
        check_ok!(stamped_write(device, first, 24, 0x61));
        check_ok!(device.write_zeroes(first + 8, 8, false));
        check_eq!(is_zero(device, first + 8, 8), Ok(true));
        let read = check_ok!(
            device.read(first, filled(0, 6), 24 * SECTOR_BYTES as usize).map_err(|e| e.0)
        );
        let bytes = read.as_slice();
        check_eq!(first_wrong(&bytes[..4096], first, 0x61), None);
        check_eq!(first_wrong(&bytes[8192..12288], first + 16, 0x61), None);
        Ok(())
    }
);

ktest!(
    fn write_zeroes_with_unmap_reads_back_zeroes() {
        let device = writable()?;
        if !device.has(feature::WRITE_ZEROES) {
            return crate::ktest::skip("no VIRTIO_BLK_F_WRITE_ZEROES");
        }
        let first = scratch(device) + 1600;
        check_ok!(stamped_write(device, first, 16, 0x62));
        // UNMAP only when the device says it may (§5.2.6); zeroes either way.
        check_eq!(
            device.write_zeroes_may_unmap(),
            device.config().write_zeroes.is_some_and(|w| w.2)
        );
        check_ok!(device.write_zeroes(first, 16, true));
        check_eq!(is_zero(device, first, 16), Ok(true));
        Ok(())
    }
);

ktest!(
    fn discard_is_accepted_and_later_io_works() {
        let device = writable()?;
        if !device.has(feature::DISCARD) {
            check_eq!(device.discard(scratch(device), 8), Err(BlkError::Unsupported));
            return crate::ktest::skip("no VIRTIO_BLK_F_DISCARD");
        }
        let first = scratch(device) + 1664;
        check_ok!(stamped_write(device, first, 16, 0x63));
        check_ok!(device.discard(first, 16));
        // The contents are now unspecified; a new write reads back.
        check_ok!(stamped_write(device, first, 16, 0x64));
        let read = check_ok!(device.read(first, filled(0, 2), 8192).map_err(|e| e.0));
        check_eq!(first_wrong(read.as_slice(), first, 0x64), None);
        Ok(())
    }
);

ktest!(
    fn discard_and_write_zeroes_check_their_range() {
        let device = writable()?;
        let end = device.capacity_sectors();
        if device.has(feature::DISCARD) {
            check_eq!(device.discard(end - 4, 8), Err(BlkError::BadRange));
            check_eq!(device.discard(0, 0), Err(BlkError::BadRange));
        }
        if device.has(feature::WRITE_ZEROES) {
            check_eq!(device.write_zeroes(end, 1, false), Err(BlkError::BadRange));
        }
        if !device.has(feature::DISCARD) && !device.has(feature::WRITE_ZEROES) {
            return crate::ktest::skip("neither DISCARD nor WRITE_ZEROES");
        }
        Ok(())
    }
);

ktest!(
    fn the_cache_mode_can_be_read_and_set() {
        let device = writable()?;
        let before = device.cache_mode();
        if !device.has(feature::CONFIG_WCE) {
            check_eq!(device.set_cache_mode(CacheMode::WriteThrough), Err(BlkError::Unsupported));
            return crate::ktest::skip("no VIRTIO_BLK_F_CONFIG_WCE");
        }
        check_ok!(device.set_cache_mode(CacheMode::WriteThrough));
        check_eq!(device.cache_mode(), CacheMode::WriteThrough);
        check_ok!(stamped_write(device, scratch(device), 1, 0x65));
        check_ok!(device.set_cache_mode(CacheMode::WriteBack));
        check_eq!(device.cache_mode(), CacheMode::WriteBack);
        check_ok!(device.set_cache_mode(before));
        Ok(())
    }
);

ktest!(
    fn configuration_fields_are_consistent_with_the_features() {
        let device = blk()?;
        let config = device.config();
        check!(config.seg_max >= 1);
        check!(config.size_max >= 4096);
        check_eq!(config.topology.is_some(), device.has(feature::TOPOLOGY));
        check_eq!(config.writeback.is_some(), device.has(feature::CONFIG_WCE));
        check_eq!(config.discard.is_some(), device.has(feature::DISCARD));
        check_eq!(config.write_zeroes.is_some(), device.has(feature::WRITE_ZEROES));
        check_eq!(config.capacity_sectors, device.capacity_sectors());
        check!(device.features().contains(vireo_virtio::Features::VERSION_1));
        check!(device.features().contains(vireo_virtio::Features::INDIRECT_DESC));
        let names = device.feature_names();
        check_eq!(names.contains(&"flush"), device.has(feature::FLUSH));
        check_eq!(names.contains(&"mq"), device.has(feature::MQ));
        if let Some((exp, _, _, _)) = config.topology {
            check!(exp < 16, "physical_block_exp {}", exp);
        }
        Ok(())
    }
);

ktest!(
    fn a_config_change_interrupt_makes_the_driver_read_the_configuration_again() {
        let device = blk()?;
        let Some(vector) = device.virtio.config_vector() else {
            return crate::ktest::skip("no MSI-X: configuration changes come on the shared line");
        };
        let before = device.config_changes();
        check_ok!(crate::platform::apic::lapic::send_ipi(
            crate::platform::apic::lapic::id(),
            vector
        ));
        let deadline = crate::platform::time::uptime_us() + 1_000_000;
        while device.config_changes() == before {
            check!(crate::platform::time::uptime_us() < deadline, "no config interrupt");
            core::hint::spin_loop();
        }
        check!(device.config_stale.load(core::sync::atomic::Ordering::Acquire));
        let capacity = device.capacity_sectors();
        check!(!device.config_stale.load(core::sync::atomic::Ordering::Acquire), "not re-read");
        check_eq!(capacity, device.config().capacity_sectors);
        Ok(())
    }
);

ktest!(
    fn completions_interrupt_the_cpu_that_submitted() {
        let device = writable()?;
        if device.is_polled(0) {
            return crate::ktest::skip("the queues are polled (no MSI-X or line)");
        }
        if device.is_vector_shared {
            return crate::ktest::skip("one shared line: every queue interrupts one CPU");
        }
        let queues = device.queue_count();
        let cpus = online_cpus().min(queues);
        let before: Vec<Vec<u64>> = (0..queues)
            .map(|q| (0..online_cpus()).map(|cpu| device.interrupts_taken(q, cpu)).collect())
            .collect();
        let handles: Vec<_> = (0..cpus as u32)
            .map(|cpu| {
                spawn("blk-irq", Placement::Pinned(cpu), move || {
                    // Flushes after writes: slow enough that the poll gives up
                    // and the waiter sleeps on the interrupt.
                    let sector = scratch(device) + 1700 + 8 * u64::from(cpu);
                    for _ in 0..8 {
                        let _ = device.write(sector, filled(cpu as u8, 1), 4096);
                        let _ = device.flush();
                    }
                })
                .expect("spawn failed")
            })
            .collect();
        for handle in handles {
            handle.join();
        }
        for (queue, counts) in before.iter().enumerate().take(cpus) {
            for (cpu, old) in counts.iter().enumerate() {
                let taken = device.interrupts_taken(queue, cpu) - old;
                if cpu == queue {
                    check!(taken > 0, "queue {} took no interrupt on its CPU", queue);
                } else {
                    check!(taken == 0, "queue {} interrupted CPU {} {} times", queue, cpu, taken);
                }
            }
        }
        Ok(())
    }
);
