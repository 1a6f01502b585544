//! virtio-gpu benchmarks: the Linux peer guest's workloads
//! (`../shared/peers/linux-guest/run-peer.sh gpu`) — every pixel redrawn and
//! presented each frame, and one 64x64 rectangle at (0, 0) redrawn and
//! presented — plus a 64x64 rectangle moving over the screen (damage: where
//! it was and where it is). Frames stay in flight; the clock stops only
//! once the device has answered the last one, so every counted frame was
//! done by the device.

use crate::drivers::virtio::gpu::protocol::Rect;
use crate::drivers::virtio::gpu::{self, Framebuffer, GpuDevice};
use crate::platform::time;

/// Per-frame costs, from the control queue's counters.
struct Costs {
    kicks: u64,
    fences: u64,
    barriers: u64,
    commands: u64,
}

fn costs(device: &GpuDevice) -> Costs {
    let stats = device.queue_stats();
    Costs {
        kicks: stats.kicks,
        fences: device.fences_used(),
        barriers: stats.full_barriers,
        commands: stats.added,
    }
}

/// Draws and presents frames for `run_us`, then waits for the last.
fn run(
    device: &GpuDevice,
    framebuffer: &mut Framebuffer,
    run_us: u64,
    name: &str,
    mut frame: impl FnMut(&mut Framebuffer, u32) -> Result<Rect, gpu::GpuDeviceError>,
) {
    if let Err(error) = framebuffer.wait_idle() {
        crate::kprintln!("BENCH gpu_{} failed: {:?}", name, error);
        return;
    }
    let before = costs(device);
    let completed_before = framebuffer.stats().completed;
    let waits_before = framebuffer.stats().waits;
    let start = time::rdtsc();
    let end = start + time::tsc_hz() * run_us / 1_000_000;
    let mut frames = 0u32;
    let mut frame_ticks = alloc::vec::Vec::with_capacity(200_000);
    let mut begun = start;
    while begun < end {
        let shown = frame(framebuffer, frames).and_then(|damage| framebuffer.present(damage));
        if let Err(error) = shown {
            crate::kprintln!("BENCH gpu_{} failed: {:?}", name, error);
            return;
        }
        let now = time::rdtsc();
        frame_ticks.push(now - begun);
        begun = now;
        frames += 1;
    }
    // Every counted frame must be on screen before the clock stops.
    if let Err(error) = framebuffer.wait_idle() {
        crate::kprintln!("BENCH gpu_{} failed: {:?}", name, error);
        return;
    }
    let seconds = time::ticks_to_ns(time::rdtsc() - start) as f64 / 1e9;
    let after = costs(device);
    let completed = framebuffer.stats().completed - completed_before;
    let per_frame = |a: u64, b: u64| (a - b) as f64 / f64::from(frames.max(1));
    let (p50, p99) = super::Stats::percentiles_us(&mut frame_ticks);
    crate::kprintln!(
        "BENCH gpu_{} fps={:.1} frames={} completed={} frame_us_p50={} frame_us_p99={} \
         kicks_per_frame={:.3} fences_per_frame={:.3} barriers_per_frame={:.3} \
         commands_per_frame={:.3} waits_per_frame={:.3}",
        name,
        f64::from(frames) / seconds,
        frames,
        completed,
        p50,
        p99,
        per_frame(after.kicks, before.kicks),
        per_frame(after.fences, before.fences),
        per_frame(after.barriers, before.barriers),
        per_frame(after.commands, before.commands),
        per_frame(framebuffer.stats().waits, waits_before),
    );
}

fn fill(pixels: &mut [u32], width: u32, rect: Rect, color: u32) {
    for row in rect.y..rect.y + rect.height {
        let start = (row * width + rect.x) as usize;
        pixels[start..start + rect.width as usize].fill(color);
    }
}

/// Fills `pixels` 128 bytes per loop turn: under TCG each turn of a loop
/// costs a translated-block hop, so fewer, wider turns draw faster.
fn fill_wide(pixels: &mut [u32], color: u32) {
    let mut chunks = pixels.chunks_exact_mut(32);
    for chunk in &mut chunks {
        chunk.fill(color);
    }
    chunks.into_remainder().fill(color);
}

/// Runs the workloads on the first virtio-gpu, `run_us` each.
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
    run(device, &mut framebuffer, run_us, &full_name, |fb, frame| {
        fill_wide(fb.back_pixels_for_full_redraw()?, frame.wrapping_mul(0x0001_0307) & 0x00ff_ffff);
        Ok(fb.full())
    });
    let square = Rect { x: 0, y: 0, width: 64, height: 64 };
    run(device, &mut framebuffer, run_us, "damage64_64x64", |fb, frame| {
        // The square is redrawn whole each frame: no catch-up copy needed.
        let color = frame.wrapping_mul(0x0003_0501) & 0x00ff_ffff;
        fill(fb.back_pixels_redrawing(square)?, full.width, square, color);
        Ok(square)
    });
    let mut last = square;
    run(device, &mut framebuffer, run_us, "moving64_64x64", |fb, frame| {
        let x = (frame * 8) % (full.width - 64);
        let y = (frame * 3) % (full.height - 64);
        let now = Rect { x, y, width: 64, height: 64 };
        // `now` is drawn whole: the catch-up copy may skip it.
        let pixels = fb.back_pixels_redrawing(now)?;
        fill(pixels, full.width, last, 0);
        fill(pixels, full.width, now, 0x00ff_ffff ^ frame);
        let damage = last.union(now);
        last = now;
        Ok(damage)
    });
}
