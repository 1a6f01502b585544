//! virtio-gpu tests against QEMU's device (1280x800 by default).

use super::protocol::{self, Rect};
use super::{Framebuffer, GpuDeviceError, device};
use crate::{check, check_eq, check_ok, ktest};

/// The device, or the test is skipped: a machine without a GPU is not a
/// failure.
fn gpu() -> Result<&'static super::GpuDevice, crate::ktest::TestFailure> {
    device().ok_or_else(|| {
        crate::ktest::skip("no virtio-gpu device").expect_err("a skip is an error value")
    })
}

ktest!(
    fn display_info_reports_an_enabled_scanout() {
        let device = gpu()?;
        let display = device.display();
        check!(!display.is_empty());
        let info = check_ok!(device.execute(&protocol::GetDisplayInfo, None));
        check!(info.0[0].is_enabled);
        check_eq!(info.0[0].rect, display);
        Ok(())
    }
);

ktest!(
    fn framebuffer_presents_full_and_damaged_frames() {
        let device = gpu()?;
        let mut framebuffer = check_ok!(Framebuffer::new(device));
        let (front, back) = framebuffer.resources();
        check!(front != back);
        framebuffer.back_pixels().fill(0x00ff_0000);
        check_ok!(framebuffer.present(framebuffer.full()));
        // The flip swapped the roles.
        check_eq!(framebuffer.resources(), (back, front));
        // The new back buffer was brought up to date with the last frame.
        check!(framebuffer.back_pixels().iter().all(|&pixel| pixel == 0x00ff_0000));
        let damage = Rect { x: 10, y: 20, width: 64, height: 64 };
        for row in 20..84 {
            let start = row * framebuffer.full().width as usize + 10;
            framebuffer.back_pixels()[start..start + 64].fill(0x0000_ff00);
        }
        check_ok!(framebuffer.present(damage));
        // A full redraw must be presented whole.
        framebuffer.back_pixels_for_full_redraw().fill(0);
        check_eq!(framebuffer.present(damage), Err(GpuDeviceError::BadRect));
        check_ok!(framebuffer.present(framebuffer.full()));
        Ok(())
    }
);

ktest!(
    fn bad_damage_and_bad_resources_are_errors() {
        let device = gpu()?;
        let mut framebuffer = check_ok!(Framebuffer::new(device));
        let full = framebuffer.full();
        let outside = Rect { x: full.width - 1, y: 0, width: 2, height: 1 };
        check_eq!(framebuffer.present(outside), Err(GpuDeviceError::BadRect));
        check_eq!(framebuffer.present(Rect::default()), Err(GpuDeviceError::BadRect));
        // A resource that does not exist: the device answers with an error
        // response (VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID), which is ours.
        let flush = protocol::ResourceFlush {
            rect: Rect { x: 0, y: 0, width: 1, height: 1 },
            resource: 0xdead,
        };
        check_eq!(
            device.execute(&flush, None).map(drop),
            Err(GpuDeviceError::Device(protocol::GpuError::Response(0x1203)))
        );
        // The device is still usable afterwards.
        check_ok!(framebuffer.present(Rect { x: 0, y: 0, width: 8, height: 8 }));
        // Another command while that frame is still in flight: its caller
        // sets the frame's answers aside, and the frame's wait finds them.
        check_ok!(device.execute(&protocol::GetDisplayInfo, None));
        check_ok!(framebuffer.wait_idle());
        check_ok!(framebuffer.wait_idle());
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
        device.acquire();
        let reset = {
            let mut control = device.control.lock();
            let idle = control.queue.in_flight() == 0 && control.finished.is_empty();
            let mut transport = device.virtio.transport();
            match idle.then(|| control.queue.reset_queue(&mut *transport)) {
                None => Err("control queue not idle".into()),
                Some(Err(vireo_virtio::Error::QueueResetUnsupported)) => Ok(false),
                Some(Err(e)) => Err(alloc::format!("reset: {e}")),
                Some(Ok(proof)) => {
                    let reclaimed = control.queue.reclaim(&proof, |_, _| ());
                    let restarted = control.queue.restart(&mut *transport);
                    let polled = control.queue.disable_interrupts();
                    match (reclaimed, restarted, polled) {
                        (Ok(0), Ok(()), Ok(())) => Ok(true),
                        other => Err(alloc::format!("{other:?}")),
                    }
                }
            }
        };
        device.release();
        let was_reset = reset.map_err(crate::ktest::TestFailure::new)?;
        if !was_reset {
            log::warn!("skip: VIRTIO_F_RING_RESET not negotiated");
            return Ok(());
        }
        let info = check_ok!(device.execute(&protocol::GetDisplayInfo, None));
        check_eq!(info.0[0].rect, device.display());
        let stats = device.control.lock().queue.stats();
        check!(stats.queue_resets >= 1);
        Ok(())
    }
);
