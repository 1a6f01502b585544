//! virtio-gpu tests against QEMU's device (1280x800 by default): the
//! command path and the protocol.

use super::protocol::{self, Rect};
use super::{GpuDeviceError, device};
use crate::{check, check_eq, check_ok, ktest};

/// The device, or the test is skipped: a machine without a GPU is not a
/// failure.
pub(super) fn gpu() -> Result<&'static super::GpuDevice, crate::ktest::TestFailure> {
    device().ok_or_else(|| {
        crate::ktest::skip("no virtio-gpu device").expect_err("a skip is an error value")
    })
}

ktest!(
    fn display_info_reports_an_enabled_scanout() {
        let device = gpu()?;
        let scanout = device.scanout();
        check!(!scanout.rect.is_empty());
        let info = check_ok!(device.display_info());
        let first = info.iter().position(|d| d.is_enabled);
        check_eq!(first, Some(scanout.id as usize));
        check_eq!(info[scanout.id as usize].rect.width, scanout.rect.width);
        check_eq!(info[scanout.id as usize].rect.height, scanout.rect.height);
        Ok(())
    }
);

ktest!(
    fn bad_resources_are_device_errors_and_the_device_stays_usable() {
        let device = gpu()?;
        // A resource that does not exist: the device answers with an error
        // response (VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID).
        let flush = protocol::ResourceFlush {
            rect: Rect { x: 0, y: 0, width: 1, height: 1 },
            resource: 0xdead,
        };
        check_eq!(
            device.execute(&flush, false).map(drop),
            Err(GpuDeviceError::Device(protocol::GpuError::Response(
                protocol::RESP_ERR_INVALID_RESOURCE_ID
            )))
        );
        check_ok!(device.execute(&protocol::GetDisplayInfo, false));
        Ok(())
    }
);

ktest!(
    fn a_disabled_or_missing_scanout_is_refused() {
        let device = gpu()?;
        let info = check_ok!(device.display_info());
        // Scanout 16 never exists (VIRTIO_GPU_MAX_SCANOUTS).
        let set = protocol::SetScanout {
            rect: Rect { x: 0, y: 0, width: 8, height: 8 },
            scanout: 16,
            resource: 0,
        };
        check_eq!(
            device.execute(&set, false).map(drop),
            Err(GpuDeviceError::Device(protocol::GpuError::Response(
                protocol::RESP_ERR_INVALID_SCANOUT_ID
            )))
        );
        if info.iter().all(|d| d.is_enabled) {
            return crate::ktest::skip("every scanout is enabled");
        }
        Ok(())
    }
);

ktest!(
    fn refreshing_the_scanout_finds_the_same_mode() {
        let device = gpu()?;
        let before = device.scanout();
        let after = check_ok!(device.refresh_scanout());
        check_eq!(before, after);
        Ok(())
    }
);

ktest!(
    fn a_mode_the_device_refuses_is_an_error() {
        let device = gpu()?;
        // A pixel format the device does not know: refused with
        // INVALID_PARAMETER (§5.7.6.8); nothing is created.
        let resource = device.new_resource_id();
        let create = protocol::ResourceCreate2d { resource, format: 0x7777, width: 16, height: 16 };
        check_eq!(
            device.execute(&create, false).map(drop),
            Err(GpuDeviceError::Device(protocol::GpuError::Response(
                protocol::RESP_ERR_INVALID_PARAMETER
            )))
        );
        check_eq!(
            super::check_mode(Rect { x: 0, y: 0, width: 0, height: 600 }),
            Err(GpuDeviceError::BadMode)
        );
        check_eq!(
            super::check_mode(Rect { x: 0, y: 0, width: 9000, height: 600 }),
            Err(GpuDeviceError::BadMode)
        );
        check_ok!(device.execute(&protocol::GetDisplayInfo, false));
        Ok(())
    }
);

ktest!(
    fn batches_in_flight_are_matched_by_sequence_not_head() {
        let device = gpu()?;
        // Three batches at once, collected in reverse: each waiter finds
        // its own answers among those the others popped.
        let batches: alloc::vec::Vec<_> = (0..3)
            .map(|_| device.submit(&[&protocol::GetDisplayInfo, &protocol::GetDisplayInfo], false))
            .collect();
        for batch in batches.into_iter().rev() {
            let batch = check_ok!(batch);
            let mut seen = 0;
            check_ok!(device.wait(batch, &mut |_, bytes, written, _| {
                seen += 1;
                protocol::check_header(bytes, written, protocol::RESP_OK_DISPLAY_INFO, None)?;
                Ok(())
            }));
            check_eq!(seen, 2);
        }
        check!(device.control.lock().answered.is_empty());
        Ok(())
    }
);

ktest!(
    fn a_batch_is_all_or_nothing() {
        let device = gpu()?;
        check_eq!(device.submit(&[], false), Err(GpuDeviceError::InvalidBatch));
        let five: [&dyn super::EncodeRequest; 5] = [&protocol::GetDisplayInfo; 5];
        check_eq!(device.submit(&five, false), Err(GpuDeviceError::InvalidBatch));
        let free = device.control.lock().queue.num_free();
        // A fenced batch of two: the fence is on the last, echoed.
        let batch =
            check_ok!(device.submit(&[&protocol::GetDisplayInfo, &protocol::GetDisplayInfo], true));
        check_ok!(device.wait(batch, &mut |index, bytes, written, fence| {
            if index == 0 && fence.is_some() {
                return Err(GpuDeviceError::InvalidBatch);
            }
            protocol::check_header(bytes, written, protocol::RESP_OK_DISPLAY_INFO, fence)?;
            Ok(())
        }));
        check_eq!(device.control.lock().queue.num_free(), free);
        Ok(())
    }
);

ktest!(
    fn pooled_pages_come_back_with_cleared_responses() {
        let device = gpu()?;
        let pooled = device.control.lock().pages.len();
        check_ok!(device.execute(&protocol::GetDisplayInfo, false));
        check_eq!(device.control.lock().pages.len(), pooled);
        // A page whose last answer is still in it: preparing the next
        // command clears the response, so a device that writes less cannot
        // pass the old answer off as new.
        let mut page = check_ok!(device.control.lock().pages.pop().ok_or("empty pool"));
        let at = super::control::RESPONSE_OFFSET;
        page.region_mut()[at..at + 24].fill(0xab);
        let prepared = super::control::prepare(&mut page, &protocol::GetDisplayInfo, None, 77);
        let cleared = page.region()[at..at + 24].iter().all(|&b| b == 0);
        let sequence = super::control::sequence_of(&page);
        device.control.lock().pages.push(page);
        check_ok!(prepared);
        check!(cleared);
        check_eq!(sequence, 77);
        Ok(())
    }
);

ktest!(
    fn edid_gives_the_preferred_mode() {
        let device = gpu()?;
        if !device.has_edid() {
            return crate::ktest::skip("VIRTIO_GPU_F_EDID not offered");
        }
        let id = device.scanout().id;
        let edid = check_ok!(device.edid(id));
        check!(edid.bytes.len() >= 128, "EDID of {} bytes", edid.bytes.len());
        let mode = edid.preferred_mode();
        check!(mode.is_some(), "no preferred mode");
        let (width, height) = mode.unwrap_or_default();
        check!(width >= 640 && height >= 480, "{width}x{height}");
        Ok(())
    }
);

ktest!(
    fn rect_union_and_fit() {
        let a = Rect { x: 10, y: 10, width: 10, height: 10 };
        let b = Rect { x: 30, y: 5, width: 5, height: 5 };
        check_eq!(a.union(b), Rect { x: 10, y: 5, width: 25, height: 15 });
        check_eq!(a.union(Rect::default()), a);
        check!(a.fits(20, 20) && !a.fits(19, 20));
        check!(!Rect { x: u32::MAX, y: 0, width: 2, height: 1 }.fits(u32::MAX, 1));
        Ok(())
    }
);

ktest!(
    fn lying_responses_are_rejected() {
        let mut response = [0u8; 24];
        response[0..4].copy_from_slice(&protocol::RESP_OK_NODATA.to_le_bytes());
        check_ok!(protocol::check_header(&response, 24, protocol::RESP_OK_NODATA, None));
        check!(protocol::check_header(&response, 23, protocol::RESP_OK_NODATA, None).is_err());
        // Fenced command, but the fence was not echoed.
        check!(protocol::check_header(&response, 24, protocol::RESP_OK_NODATA, Some(7)).is_err());
        response[4..8].copy_from_slice(&protocol::FLAG_FENCE.to_le_bytes());
        response[8..16].copy_from_slice(&7u64.to_le_bytes());
        check_ok!(protocol::check_header(&response, 24, protocol::RESP_OK_NODATA, Some(7)));
        // Display info shorter than its table.
        use protocol::GpuResponse;
        check!(protocol::DisplayInfo::decode(&response, 24).is_err());
        Ok(())
    }
);

ktest!(
    fn edid_decoding_checks_size_header_and_checksum() {
        use protocol::GpuResponse;
        let mut response = [0u8; 24 + 8 + 128];
        response[0..4].copy_from_slice(&protocol::RESP_OK_EDID.to_le_bytes());
        response[24..28].copy_from_slice(&2000u32.to_le_bytes());
        check!(protocol::Edid::decode(&response, response.len() as u32).is_err());
        response[24..28].copy_from_slice(&128u32.to_le_bytes());
        check!(protocol::Edid::decode(&response, 100).is_err());
        let mut edid = check_ok!(protocol::Edid::decode(&response, response.len() as u32));
        check_eq!(edid.preferred_mode(), None);
        // A valid header, 1024x768 in the first detailed timing, checksum.
        edid.bytes[..8].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        edid.bytes[54] = 0x64;
        edid.bytes[56] = 0x00;
        edid.bytes[58] = 0x40;
        edid.bytes[59] = 0x00;
        edid.bytes[61] = 0x30;
        let sum = edid.bytes[..127].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        edid.bytes[127] = 0u8.wrapping_sub(sum);
        check_eq!(edid.preferred_mode(), Some((1024, 768)));
        edid.bytes[127] ^= 1;
        check_eq!(edid.preferred_mode(), None);
        Ok(())
    }
);

ktest!(
    fn transport_checks_hold_on_a_live_device() {
        use vireo_virtio::Transport;
        let device = gpu()?;
        let mut transport = device.virtio.transport();
        let queues = transport.num_queues();
        check!(queues >= 2, "controlq and cursorq expected");
        check_eq!(transport.max_queue_size(queues), 0);
        check!(transport.queue_used(0));
        let mut scanouts = [0u8; 4];
        // struct virtio_gpu_config: num_scanouts at offset 8 (§5.7.4).
        check_ok!(transport.read_config(8, &mut scanouts));
        check!(u32::from_le_bytes(scanouts) >= 1);
        check!(transport.read_config(usize::MAX, &mut scanouts).is_err());
        check!(transport.read_config(4096, &mut scanouts).is_err());
        check!(transport.queue_notifier(0).is_some());
        Ok(())
    }
);

ktest!(
    fn control_queue_reset_while_idle_then_commands_work() {
        let device = gpu()?;
        // Idle first: QEMU's virtio-gpu, like its virtio-blk, has no
        // queue-reset hook and would answer commands it holds into the
        // re-enabled ring (see blk/reset.rs), so reset only a quiet queue.
        let reset = {
            let mut control = device.control.lock();
            let idle = control.queue.in_flight() == 0 && control.answered.is_empty();
            let mut transport = device.virtio.transport();
            match idle.then(|| control.queue.reset_queue(&mut *transport)) {
                None => Ok(None),
                Some(Err(vireo_virtio::Error::QueueResetUnsupported)) => Ok(Some(false)),
                Some(Err(e)) => Err(alloc::format!("reset: {e}")),
                Some(Ok(proof)) => {
                    let reclaimed = control.queue.reclaim(&proof, |_, _| ());
                    let restarted = control.queue.restart(&mut *transport);
                    let polled = control.queue.disable_interrupts();
                    match (reclaimed, restarted, polled) {
                        (Ok(0), Ok(()), Ok(())) => Ok(Some(true)),
                        other => Err(alloc::format!("{other:?}")),
                    }
                }
            }
        };
        match reset.map_err(crate::ktest::TestFailure::new)? {
            None => return crate::ktest::skip("control queue busy (the console is drawing)"),
            Some(false) => return crate::ktest::skip("VIRTIO_F_RING_RESET not negotiated"),
            Some(true) => {}
        }
        let info = check_ok!(device.display_info());
        check_eq!(info[device.scanout().id as usize].rect.width, device.display().width);
        let stats = device.control.lock().queue.stats();
        check!(stats.queue_resets >= 1);
        Ok(())
    }
);
