//! Framebuffer tests: frames in flight, catch-up of slots, per-frame cost,
//! bad input, memory given back, the cursor.

use super::protocol::Rect;
use super::tests::gpu;
use super::{FRAMES_IN_FLIGHT, Framebuffer, GpuDeviceError, MAX_FRAMES_IN_FLIGHT};
use crate::{check, check_eq, check_ok, ktest};

/// Fills `rect` of a frame `width` pixels wide.
fn fill(pixels: &mut [u32], width: u32, rect: Rect, color: u32) {
    for row in rect.y..rect.y + rect.height {
        let start = (row * width + rect.x) as usize;
        pixels[start..start + rect.width as usize].fill(color);
    }
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect { x, y, width, height }
}

ktest!(
    fn the_back_buffer_always_equals_the_screen() {
        let mut fb = check_ok!(Framebuffer::new(gpu()?));
        let width = fb.full().width;
        check_eq!(fb.scanout(), gpu()?.scanout());
        check!(fb.resource() != 0);
        // Each frame changes one rectangle; every later back buffer, in
        // whichever slot, must show all earlier changes.
        let rects = [rect(0, 0, 8, 8), rect(100, 50, 16, 4), rect(5, 300, 40, 2), rect(0, 0, 2, 2)];
        for (index, &r) in rects.iter().enumerate() {
            fill(check_ok!(fb.back_pixels()), width, r, 0x10 + index as u32);
            check_ok!(fb.present(r));
        }
        let pixels = check_ok!(fb.back_pixels());
        check_eq!(pixels[0], 0x13);
        check_eq!(pixels[(2 * width + 2) as usize], 0x10);
        check_eq!(pixels[(50 * width + 100) as usize], 0x11);
        check_eq!(pixels[(301 * width + 44) as usize], 0x12);
        check_eq!(pixels[(400 * width + 400) as usize], 0);
        check_ok!(fb.wait_idle());
        Ok(())
    }
);

ktest!(
    fn frames_stay_in_flight_and_all_complete() {
        let mut fb = check_ok!(Framebuffer::new(gpu()?));
        check_ok!(fb.wait_idle());
        let before = fb.stats();
        let width = fb.full().width;
        for frame in 0..40u32 {
            fill(check_ok!(fb.back_pixels()), width, rect(0, 0, 64, 64), frame);
            check_ok!(fb.present(rect(0, 0, 64, 64)));
            check!(fb.frames_in_flight() <= FRAMES_IN_FLIGHT + 1);
        }
        check_ok!(fb.wait_idle());
        let after = fb.stats();
        check_eq!(after.presented - before.presented, 40);
        check!(after.waits <= after.presented);
        check_eq!(after.completed, after.presented);
        check_eq!(fb.frames_in_flight(), 0);
        Ok(())
    }
);

ktest!(
    fn a_frame_costs_one_kick_one_fence_two_commands() {
        let device = gpu()?;
        let mut fb = check_ok!(Framebuffer::new(device));
        check_ok!(fb.wait_idle());
        let (stats, fences) = (device.queue_stats(), device.fences_used());
        const FRAMES: u64 = 50;
        for frame in 0..FRAMES {
            let x = (frame as u32 * 8) % (fb.full().width - 32);
            let width = fb.full().width;
            fill(check_ok!(fb.back_pixels()), width, rect(x, 0, 32, 32), 0xff);
            check_ok!(fb.present(rect(x, 0, 32, 32)));
        }
        check_ok!(fb.wait_idle());
        let now = device.queue_stats();
        // Other tests' commands may interleave on other CPUs; only this
        // thread draws, so bounds hold on the totals.
        check!(now.kicks - stats.kicks <= FRAMES + 8, "kicks {}", now.kicks - stats.kicks);
        check!(device.fences_used() - fences >= FRAMES);
        check!(now.added - stats.added >= 2 * FRAMES);
        Ok(())
    }
);

ktest!(
    fn bad_damage_is_refused_and_the_framebuffer_keeps_working() {
        let mut fb = check_ok!(Framebuffer::new(gpu()?));
        let full = fb.full();
        check_ok!(fb.back_pixels());
        check_eq!(fb.present(rect(full.width - 1, 0, 2, 1)), Err(GpuDeviceError::BadRect));
        check_eq!(fb.present(rect(0, full.height, 1, 1)), Err(GpuDeviceError::BadRect));
        check_eq!(fb.present(rect(3, 3, 0, 5)), Err(GpuDeviceError::BadRect));
        check_eq!(fb.present(rect(u32::MAX, 0, 2, 2)), Err(GpuDeviceError::BadRect));
        check_ok!(fb.present(rect(0, 0, 8, 8)));
        // A full redraw must be presented whole.
        check_ok!(fb.back_pixels_for_full_redraw()).fill(0x00ff_0000);
        check_eq!(fb.present(rect(0, 0, 8, 8)), Err(GpuDeviceError::BadRect));
        check_ok!(fb.present(full));
        // Presenting without drawing is refused too.
        check_eq!(fb.present(rect(0, 0, 8, 8)), Err(GpuDeviceError::BadRect));
        check_ok!(fb.back_pixels());
        check_ok!(fb.present(rect(0, 0, 8, 8)));
        check_ok!(fb.wait_idle());
        Ok(())
    }
);

ktest!(
    fn a_dropped_framebuffer_gives_its_memory_back() {
        let device = gpu()?;
        // Warm up once: the first framebuffer may grow the page tables.
        drop(check_ok!(Framebuffer::new(device)));
        let free = crate::mm::frame::stats().free;
        for _ in 0..3 {
            let mut fb = check_ok!(Framebuffer::new(device));
            check_ok!(fb.back_pixels());
            check_ok!(fb.present(rect(0, 0, 4, 4)));
            // Dropped with the frame still in flight.
        }
        let now = crate::mm::frame::stats().free;
        // Virtual ranges are never reused (mm::vmap), so each framebuffer
        // leaves the page tables that mapped it: one per 2 MiB, plus a few
        // upper levels. Its slots' pixels must all come back.
        let full = device.display();
        let slots = FRAMES_IN_FLIGHT as u64 + 1;
        let pages = u64::from(full.width) * u64::from(full.height) * 4 * slots / 4096;
        let page_tables = 3 * (pages / 512 + 3);
        check!(now + page_tables >= free, "{} frames missing", free - now);
        Ok(())
    }
);

ktest!(
    fn backing_is_a_scatter_list_covering_every_page() {
        let backing = check_ok!(super::Backing::new(1 << 20));
        let entries = backing.entries();
        let total: u64 = entries.iter().map(|&(_, len)| u64::from(len)).sum();
        check_eq!(total, 1 << 20);
        check!(entries.iter().all(|&(address, len)| address % 4096 == 0 && len % 4096 == 0));
        check!(backing.as_bytes().iter().all(|&b| b == 0));
        Ok(())
    }
);

ktest!(
    fn other_commands_interleave_with_frames_on_every_cpu() {
        let device = gpu()?;
        let mut fb = check_ok!(Framebuffer::new(device));
        let done = alloc::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
        let cpus = crate::smp::online_cpus() as u32;
        let mut helpers = alloc::vec::Vec::new();
        for cpu in 1..cpus {
            let done = done.clone();
            let spawned =
                crate::sched::spawn("gpu-query", crate::sched::Placement::Pinned(cpu), move || {
                    while !done.load(core::sync::atomic::Ordering::Acquire) {
                        if device.display_info().is_err() {
                            log::error!("display info failed beside frames");
                            break;
                        }
                    }
                });
            helpers.push(check_ok!(spawned.map_err(|e| alloc::format!("{e:?}"))));
        }
        let mut result = Ok(());
        let width = fb.full().width;
        for frame in 0..100u32 {
            let step = fb.back_pixels().map(|p| fill(p, width, rect(0, 0, 16, 16), frame));
            result = step.and_then(|()| fb.present(rect(0, 0, 16, 16)));
            if result.is_err() {
                break;
            }
        }
        done.store(true, core::sync::atomic::Ordering::Release);
        for helper in helpers {
            helper.join();
        }
        check_ok!(result);
        check_ok!(fb.wait_idle());
        check!(!device.is_broken());
        Ok(())
    }
);

ktest!(
    fn the_cursor_is_set_moved_and_hidden() {
        let device = gpu()?;
        let image = alloc::vec![0xff00_ff00u32; (super::CURSOR_SIZE * super::CURSOR_SIZE) as usize];
        check_eq!(device.set_cursor(&image[1..], (0, 0), (0, 0)), Err(GpuDeviceError::BadRect));
        check_eq!(device.set_cursor(&image, (0, 0), (64, 0)), Err(GpuDeviceError::BadRect));
        check_ok!(device.set_cursor(&image, (100, 100), (0, 0)));
        check_ok!(device.move_cursor(200, 150));
        check_ok!(device.hide_cursor());
        Ok(())
    }
);

ktest!(
    fn a_framebuffer_at_another_mode_and_back() {
        let device = gpu()?;
        let mut console = check_ok!(Framebuffer::new(device));
        let mut scanout = device.scanout();
        scanout.rect = rect(0, 0, 640, 480);
        let mut small = check_ok!(Framebuffer::with_mode(device, scanout));
        check_eq!(small.full(), rect(0, 0, 640, 480));
        check_ok!(small.back_pixels()).fill(0x0000_00ff);
        check_ok!(small.present(rect(0, 0, 640, 480)));
        check_ok!(small.wait_idle());
        drop(small);
        check_ok!(console.show());
        // A mode of no size, or beyond 8192, is refused before the device
        // sees it.
        scanout.rect = rect(0, 0, 0, 480);
        check_eq!(Framebuffer::with_mode(device, scanout).err(), Some(GpuDeviceError::BadMode));
        scanout.rect = rect(0, 0, 9000, 480);
        check_eq!(Framebuffer::with_mode(device, scanout).err(), Some(GpuDeviceError::BadMode));
        Ok(())
    }
);

ktest!(
    fn a_long_scatter_list_goes_in_a_command_of_its_own() {
        let device = gpu()?;
        // 300 pages named one by one: 16 bytes each, more than a pooled
        // page's command area holds.
        let backing = check_ok!(super::Backing::new(300 * 4096));
        let entries: alloc::vec::Vec<(u64, u32)> = backing
            .entries()
            .iter()
            .flat_map(|&(start, len)| {
                (0..u64::from(len) / 4096).map(move |page| (start + page * 4096, 4096))
            })
            .collect();
        check_eq!(entries.len(), 300);
        let attach = super::protocol::AttachBacking { resource: 0, entries: &entries };
        check!(super::EncodeRequest::extra_bytes(&attach) > 0);
        let resource = device.new_resource_id();
        let format = super::protocol::FORMAT_B8G8R8X8;
        let create =
            super::protocol::ResourceCreate2d { resource, format, width: 320, height: 240 };
        check_ok!(device.execute(&create, false));
        let attach = super::protocol::AttachBacking { resource, entries: &entries };
        let attached = device.execute(&attach, false);
        let detached = device.execute(&super::protocol::DetachBacking { resource }, false);
        let unref = device.execute(&super::protocol::ResourceUnref { resource }, false);
        check_ok!(attached);
        check_ok!(detached);
        check_ok!(unref);
        drop(backing);
        Ok(())
    }
);

ktest!(
    fn no_display_event_means_no_mode_change() {
        let device = gpu()?;
        // No change was signalled during the tests: nothing to follow.
        check_eq!(check_ok!(device.take_display_change()), None);
        check_eq!(device.scanout().rect, device.display());
        Ok(())
    }
);

ktest!(
    fn errors_of_frames_in_flight_surface_at_the_next_call() {
        let device = gpu()?;
        let mut fb = check_ok!(Framebuffer::new(device));
        check_ok!(fb.back_pixels());
        check_ok!(fb.present(rect(0, 0, 4, 4)));
        check_ok!(fb.wait_idle());
        // A second wait has nothing left to report.
        check_ok!(fb.wait_idle());
        check_eq!(fb.frames_in_flight(), 0);
        Ok(())
    }
);

ktest!(
    fn a_promised_redraw_skips_the_catch_up_copy_and_must_be_presented() {
        let device = gpu()?;
        let mut fb = check_ok!(Framebuffer::with_depth(device, device.scanout(), 4));
        let width = fb.full().width;
        let (big, small) = (rect(0, 0, 16, 16), rect(0, 0, 8, 8));
        // Frames 1 and 2 (after the zeroed first one) paint `big`.
        for color in [1, 2] {
            fill(check_ok!(fb.back_pixels()), width, big, color);
            check_ok!(fb.present(big));
        }
        // Frame 3's slot was never drawn: the copy brings in everything
        // but the promised `small`, which keeps the slot's zeroes.
        let pixels = check_ok!(fb.back_pixels_redrawing(small));
        check_eq!(pixels[0], 0);
        check_eq!(pixels[(7 * width + 7) as usize], 0);
        check_eq!(pixels[8], 2);
        check_eq!(pixels[(15 * width + 15) as usize], 2);
        // Damage that leaves part of the promise out would hide pixels
        // never shown; the promise covered is fine.
        check_eq!(fb.present(rect(0, 0, 4, 4)), Err(GpuDeviceError::BadRect));
        fill(check_ok!(fb.back_pixels()), width, small, 3);
        check_ok!(fb.present(small));
        // A promise outside the surface is refused before anything changes.
        let outside = rect(width - 4, 0, 8, 8);
        check_eq!(fb.back_pixels_redrawing(outside).err(), Some(GpuDeviceError::BadRect));
        let pixels = check_ok!(fb.back_pixels());
        check_eq!(pixels[0], 3);
        check_eq!(pixels[8], 2);
        check_ok!(fb.present(small));
        check_ok!(fb.wait_idle());
        Ok(())
    }
);

ktest!(
    fn the_depth_is_checked_and_every_depth_completes_its_frames() {
        let device = gpu()?;
        let scanout = device.scanout();
        for bad in [0, 1, MAX_FRAMES_IN_FLIGHT + 1] {
            let made = Framebuffer::with_depth(device, scanout, bad);
            check_eq!(made.err(), Some(GpuDeviceError::BadDepth));
        }
        let full = device.display();
        let frame_pages = u64::from(full.width) * u64::from(full.height) * 4 / 4096;
        for depth in [2, MAX_FRAMES_IN_FLIGHT] {
            let free = crate::mm::frame::stats().free;
            let mut fb = check_ok!(Framebuffer::with_depth(device, scanout, depth));
            // The backing holds the frames in flight and the one drawn.
            let taken = free - crate::mm::frame::stats().free;
            check!(
                taken >= (depth as u64 + 1) * frame_pages,
                "depth {} took {} pages",
                depth,
                taken
            );
            check!(
                taken < (depth as u64 + 2) * frame_pages,
                "depth {} took {} pages",
                depth,
                taken
            );
            let width = fb.full().width;
            for frame in 0..3 * depth as u32 {
                let square = rect(frame % 64, 0, 16, 16);
                fill(check_ok!(fb.back_pixels_redrawing(square)), width, square, frame);
                check_ok!(fb.present(square));
                check!(fb.frames_in_flight() <= depth + 1);
            }
            check_ok!(fb.wait_idle());
            check_eq!(fb.stats().completed, fb.stats().presented);
        }
        Ok(())
    }
);
