//! virtio-gpu benchmarks, the same workloads as the Linux peer guest
//! (`../shared/peers/linux-guest/run-peer.sh gpu`): every pixel redrawn and
//! presented each frame, and one 64x64 rectangle redrawn and presented.

use crate::drivers::virtio::gpu::protocol::Rect;
use crate::drivers::virtio::gpu::{self, Framebuffer};
use crate::platform::time;

/// Draws and presents frames for `run_us`.
fn run(
    framebuffer: &mut Framebuffer,
    run_us: u64,
    name: &str,
    mut frame: impl FnMut(&mut Framebuffer, u32) -> Rect,
) {
    let start = time::rdtsc();
    let end = start + time::tsc_hz() * run_us / 1_000_000;
    let mut frames = 0u32;
    let mut frame_ticks = alloc::vec::Vec::with_capacity(100_000);
    while time::rdtsc() < end {
        let begun = time::rdtsc();
        let damage = frame(framebuffer, frames);
        if let Err(error) = framebuffer.present(damage) {
            crate::kprintln!("BENCH gpu_{} failed: {:?}", name, error);
            return;
        }
        frame_ticks.push(time::rdtsc() - begun);
        frames += 1;
    }
    let seconds = time::ticks_to_ns(time::rdtsc() - start) as f64 / 1e9;
    let (p50, p99) = super::Stats::percentiles_us(&mut frame_ticks);
    crate::kprintln!(
        "BENCH gpu_{} fps={:.1} frames={} frame_us_p50={} frame_us_p99={}",
        name,
        f64::from(frames) / seconds,
        frames,
        p50,
        p99
    );
}

/// Runs both workloads on the first virtio-gpu, `run_us` each.
pub fn all(run_us: u64) {
    let Some(device) = gpu::device() else {
        crate::kprintln!("BENCH gpu skipped (no virtio-gpu device)");
        return;
    };
    let mut framebuffer = match Framebuffer::new(device) {
        Ok(framebuffer) => framebuffer,
        Err(error) => {
            crate::kprintln!("BENCH gpu skipped ({:?})", error);
            return;
        }
    };
    let full = framebuffer.full();
    let full_name = alloc::format!("full_{}x{}", full.width, full.height);
    run(&mut framebuffer, run_us, &full_name, |fb, frame| {
        fb.back_pixels_for_full_redraw().fill(frame.wrapping_mul(0x0001_0307) & 0x00ff_ffff);
        fb.full()
    });
    run(&mut framebuffer, run_us, "damage64_64x64", |fb, frame| {
        let full = fb.full();
        let x = (frame * 64) % (full.width - 64);
        let y = (frame * 16) % (full.height - 64);
        let width = full.width as usize;
        let color = frame.wrapping_mul(0x0003_0501) & 0x00ff_ffff;
        let pixels = fb.back_pixels();
        for row in y as usize..y as usize + 64 {
            let start = row * width + x as usize;
            pixels[start..start + 64].fill(color);
        }
        Rect { x, y, width: 64, height: 64 }
    });
}
