//! The physical frame allocator: one bit per 4 KiB frame of RAM.
//!
//! A bitmap (set = in use) rather than a free list, because DMA needs
//! physically contiguous, aligned runs, which a bitmap finds by scanning.
//! Frames below 1 MiB stay reserved (firmware areas, and the AP start-up
//! trampoline later). The bitmap lives in the first RAM it fits in above the
//! kernel image. Freeing a frame that is already free is a kernel bug and
//! panics.

use super::canary::{self, CanaryStats};
use super::{OutOfMemory, PAGE_SIZE, PhysAddr, phys_to_virt};
use crate::arch::boot_info::BootInfo;

const LOW_MEMORY_END: u64 = 1 << 20;

struct Bitmap {
    words: &'static mut [u64],
    frame_count: u64,
    free_frames: u64,
    usable_frames: u64,
    /// Where the next single-frame search starts (a word index).
    hint: usize,
    /// Canary marks, one bit per frame (set = free and holding its canary);
    /// allocated when canaries are first switched on.
    marks: Option<&'static mut [u64]>,
    /// Whether frames freed now get a canary.
    canaries_on: bool,
    /// Frames marked now.
    marked: u64,
}

impl Bitmap {
    fn is_used(&self, frame: u64) -> bool {
        self.words[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    fn set_used(&mut self, frame: u64, used: bool) {
        let word = &mut self.words[(frame / 64) as usize];
        if used {
            *word |= 1 << (frame % 64);
        } else {
            *word &= !(1 << (frame % 64));
        }
    }

    /// Leaves canary duty for `frame`, which is being handed out: checks
    /// and unmarks it when it holds a canary.
    fn take_canary(&mut self, frame: u64) {
        let Some(marks) = self.marks.as_deref_mut() else { return };
        let (word, bit) = ((frame / 64) as usize, 1 << (frame % 64));
        if marks[word] & bit != 0 {
            marks[word] &= !bit;
            self.marked -= 1;
            // SAFETY: the frame is RAM and still free (marked by free_run, not
            // yet returned to a caller), and the allocator lock is held.
            unsafe { canary::check(frame) };
        }
    }

    /// Gives a frame that was just freed its canary, when canaries are on.
    fn give_canary(&mut self, frame: u64) {
        if !self.canaries_on {
            return;
        }
        let Some(marks) = self.marks.as_deref_mut() else { return };
        let (word, bit) = ((frame / 64) as usize, 1 << (frame % 64));
        // SAFETY: the frame is RAM and was freed just now, under the allocator
        // lock the caller holds: its owner gave up every reference to it.
        unsafe { canary::fill(frame) };
        marks[word] |= bit;
        self.marked += 1;
    }

    fn alloc_one(&mut self) -> Option<u64> {
        let count = self.words.len();
        for offset in 0..count {
            let index = (self.hint + offset) % count;
            let word = self.words[index];
            if word != u64::MAX {
                let frame = index as u64 * 64 + u64::from(word.trailing_ones());
                if frame >= self.frame_count {
                    continue;
                }
                self.set_used(frame, true);
                self.free_frames -= 1;
                self.hint = index;
                self.take_canary(frame);
                return Some(frame);
            }
        }
        None
    }

    fn alloc_run(&mut self, count: u64, align_frames: u64) -> Option<u64> {
        let mut start = 0;
        while start + count <= self.frame_count {
            match (start..start + count).find(|&frame| self.is_used(frame)) {
                // Restart past the used frame, at the next aligned frame.
                Some(used) => start = (used + 1).next_multiple_of(align_frames),
                None => {
                    for frame in start..start + count {
                        self.set_used(frame, true);
                        self.take_canary(frame);
                    }
                    self.free_frames -= count;
                    return Some(start);
                }
            }
        }
        None
    }

    fn free_run(&mut self, first: u64, count: u64) {
        for frame in first..first + count {
            assert!(
                frame < self.frame_count && self.is_used(frame),
                "freeing frame {frame:#x} that is not allocated"
            );
            self.set_used(frame, false);
            self.give_canary(frame);
        }
        self.free_frames += count;
    }
}

static FRAMES: spin::Mutex<Option<Bitmap>> = spin::Mutex::new(None);

fn with_bitmap<R>(f: impl FnOnce(&mut Bitmap) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        f(FRAMES.lock().as_mut().expect("frame allocator used before init"))
    })
}

/// Builds the bitmap from the boot memory map.
pub fn init(boot_info: &BootInfo) {
    let max_phys = boot_info.ram_regions().map(|region| region.end().as_u64()).max().unwrap_or(0);
    let frame_count = max_phys / PAGE_SIZE;
    let word_count = frame_count.div_ceil(64);
    let bitmap_bytes = (word_count * 8).next_multiple_of(PAGE_SIZE);
    let (kernel_start, kernel_end) = super::kernel_image_phys();

    // The first page-aligned RAM range above 1 MiB, clear of the kernel.
    let bitmap_phys = boot_info
        .ram_regions()
        .find_map(|region| {
            let mut start = region.start.as_u64().max(LOW_MEMORY_END).next_multiple_of(PAGE_SIZE);
            if start < kernel_end.as_u64() && start + bitmap_bytes > kernel_start.as_u64() {
                start = kernel_end.as_u64().next_multiple_of(PAGE_SIZE);
            }
            (start + bitmap_bytes <= region.end().as_u64()).then_some(start)
        })
        .expect("no RAM region can hold the frame bitmap");

    // SAFETY: the range is RAM reserved below for the bitmap alone, mapped by
    // the boot direct map (it lies under 4 GiB: the first fitting region).
    let words = unsafe {
        core::slice::from_raw_parts_mut(
            phys_to_virt(PhysAddr::new(bitmap_phys)).as_mut_ptr::<u64>(),
            word_count as usize,
        )
    };
    words.fill(u64::MAX);
    let mut bitmap = Bitmap {
        words,
        frame_count,
        free_frames: 0,
        usable_frames: 0,
        hint: 0,
        marks: None,
        canaries_on: false,
        marked: 0,
    };
    for region in boot_info.ram_regions() {
        let first = region.start.as_u64().max(LOW_MEMORY_END).div_ceil(PAGE_SIZE);
        let end = region.end().as_u64() / PAGE_SIZE;
        for frame in first..end {
            let phys = frame * PAGE_SIZE;
            let in_kernel = (kernel_start.as_u64()..kernel_end.as_u64()).contains(&phys);
            let in_bitmap = (bitmap_phys..bitmap_phys + bitmap_bytes).contains(&phys);
            if !in_kernel && !in_bitmap && bitmap.is_used(frame) {
                bitmap.set_used(frame, false);
                bitmap.free_frames += 1;
            }
        }
    }
    bitmap.usable_frames = bitmap.free_frames;
    log::debug!(
        "frames: {} usable ({} MiB), bitmap {} KiB at {:#x}",
        bitmap.usable_frames,
        (bitmap.usable_frames * PAGE_SIZE) >> 20,
        bitmap_bytes >> 10,
        bitmap_phys
    );
    *FRAMES.lock() = Some(bitmap);
}

/// Allocates one frame (not zeroed).
///
/// # Errors
/// [`OutOfMemory`] when no frame is free.
pub fn alloc() -> Result<PhysAddr, OutOfMemory> {
    with_bitmap(|bitmap| bitmap.alloc_one())
        .map(|frame| PhysAddr::new(frame * PAGE_SIZE))
        .ok_or(OutOfMemory)
}

/// Allocates `count` physically contiguous frames whose first frame is
/// aligned to `align_frames` frames (a power of two).
///
/// # Errors
/// [`OutOfMemory`] when no such run is free (or `count` is 0).
pub fn alloc_contiguous(count: u64, align_frames: u64) -> Result<PhysAddr, OutOfMemory> {
    if count == 0 || !align_frames.is_power_of_two() {
        return Err(OutOfMemory);
    }
    with_bitmap(|bitmap| bitmap.alloc_run(count, align_frames))
        .map(|frame| PhysAddr::new(frame * PAGE_SIZE))
        .ok_or(OutOfMemory)
}

/// Returns `count` frames starting at `start` to the allocator.
///
/// Panics if any of them is not allocated: a double free is a kernel bug.
pub fn free(start: PhysAddr, count: u64) {
    assert!(start.is_aligned(PAGE_SIZE), "freeing unaligned frame {start:?}");
    with_bitmap(|bitmap| bitmap.free_run(start.as_u64() / PAGE_SIZE, count));
}

/// Frame accounting, read on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames the allocator manages.
    pub usable: u64,
    /// Frames free now.
    pub free: u64,
}

/// The current frame counts.
pub fn stats() -> FrameStats {
    with_bitmap(|bitmap| FrameStats { usable: bitmap.usable_frames, free: bitmap.free_frames })
}

/// Whether the frame at `phys` is currently allocated (for tests and checks).
pub fn is_allocated(phys: PhysAddr) -> bool {
    with_bitmap(|bitmap| {
        let frame = phys.as_u64() / PAGE_SIZE;
        frame < bitmap.frame_count && bitmap.is_used(frame)
    })
}

/// Switches canary frames on or off (see [`super::canary`]). The first
/// switch-on takes the mark bitmap from free frames; switching off forgets
/// every mark (the frames keep their pattern, unchecked).
///
/// # Errors
/// [`OutOfMemory`] when the mark bitmap does not fit.
pub fn set_canaries(on: bool) -> Result<(), OutOfMemory> {
    with_bitmap(|bitmap| {
        if on && bitmap.marks.is_none() {
            let pages = bitmap.words.len().div_ceil(WORDS_PER_PAGE) as u64;
            let first = bitmap.alloc_run(pages, 1).ok_or(OutOfMemory)?;
            let phys = PhysAddr::new(first * PAGE_SIZE);
            // SAFETY: `pages` frames just taken from the allocator for this
            // bitmap alone, never freed; RAM, so under the direct map.
            let marks = unsafe {
                core::slice::from_raw_parts_mut(
                    phys_to_virt(phys).as_mut_ptr::<u64>(),
                    bitmap.words.len(),
                )
            };
            marks.fill(0);
            bitmap.marks = Some(marks);
        }
        if !on && let Some(marks) = bitmap.marks.as_deref_mut() {
            marks.fill(0);
            bitmap.marked = 0;
        }
        bitmap.canaries_on = on;
        Ok(())
    })
}

/// Checks the canary of every marked free frame now, and returns the
/// counters (a change found here is counted and logged as on reuse).
pub fn verify_free() -> CanaryStats {
    with_bitmap(|bitmap| {
        if let Some(marks) = bitmap.marks.as_deref() {
            for (index, &word) in marks.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let frame = index as u64 * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    // SAFETY: a marked frame is free RAM (marks are cleared
                    // before a frame is handed out), and the lock is held.
                    unsafe { canary::check(frame) };
                }
            }
        }
        canary::stats(bitmap.canaries_on, bitmap.marked)
    })
}

/// The canary counters, without checking anything.
pub fn canary_stats() -> CanaryStats {
    with_bitmap(|bitmap| canary::stats(bitmap.canaries_on, bitmap.marked))
}

const WORDS_PER_PAGE: usize = (PAGE_SIZE / 8) as usize;

mod tests {
    use super::*;
    use crate::{check, check_eq, check_ok, ktest};
    use alloc::vec::Vec;

    ktest!(
        fn alloc_returns_aligned_ram_frame() {
            let frame = check_ok!(alloc());
            check!(frame.is_aligned(PAGE_SIZE));
            check!(frame.as_u64() >= LOW_MEMORY_END, "frame {:?} below 1 MiB", frame);
            let in_ram = crate::arch::boot_info::get()
                .ram_regions()
                .any(|region| region.start <= frame && frame + PAGE_SIZE <= region.end());
            free(frame, 1);
            check!(in_ram, "frame {:?} outside RAM", frame);
            Ok(())
        }
    );

    ktest!(
        fn alloc_free_restores_free_count() {
            let before = stats().free;
            let frames: Vec<_> = (0..100).map(|_| alloc()).collect::<Result<_, _>>().unwrap();
            check_eq!(stats().free, before - 100);
            for &frame in &frames {
                free(frame, 1);
            }
            check_eq!(stats().free, before);
            Ok(())
        }
    );

    ktest!(
        fn allocated_frames_are_distinct() {
            let mut frames: Vec<_> = (0..64).map(|_| alloc().unwrap()).collect();
            frames.sort();
            let distinct = frames.windows(2).all(|pair| pair[0] != pair[1]);
            for &frame in &frames {
                free(frame, 1);
            }
            check!(distinct);
            Ok(())
        }
    );

    ktest!(
        fn kernel_image_is_never_free() {
            let (start, end) = crate::mm::kernel_image_phys();
            let mut phys = start.align_down(PAGE_SIZE);
            while phys < end {
                check!(is_allocated(phys), "kernel frame {:?} is free", phys);
                phys += PAGE_SIZE;
            }
            Ok(())
        }
    );

    ktest!(
        fn contiguous_run_is_aligned_and_marked() {
            let before = stats().free;
            let start = check_ok!(alloc_contiguous(33, 16));
            check!(start.is_aligned(16 * PAGE_SIZE));
            let all_marked = (0..33).all(|i| is_allocated(start + i * PAGE_SIZE));
            check_eq!(stats().free, before - 33);
            free(start, 33);
            check!(all_marked);
            check!(!is_allocated(start));
            check_eq!(stats().free, before);
            Ok(())
        }
    );

    ktest!(
        fn freed_frame_is_reused() {
            let first = check_ok!(alloc());
            free(first, 1);
            let second = check_ok!(alloc());
            free(second, 1);
            check_eq!(first, second);
            Ok(())
        }
    );

    ktest!(
        fn oversized_request_is_an_error() {
            let before = stats();
            check_eq!(alloc_contiguous(before.usable + 1, 1), Err(OutOfMemory));
            check_eq!(alloc_contiguous(0, 1), Err(OutOfMemory));
            check_eq!(stats(), before);
            Ok(())
        }
    );

    ktest!(
        fn exhaustion_returns_error_and_recovers() {
            let mut frames = Vec::new();
            // Reserve first: the heap must not need frames while none are
            // left. The reservation itself takes frames from the heap (8
            // bytes per free frame: 4 MiB at -m 2G, 16 MiB at -m 8G), so
            // the count to expect is taken after it.
            check_ok!(frames.try_reserve_exact(stats().free as usize));
            let before = stats().free;
            while let Ok(frame) = alloc() {
                frames.push(frame);
            }
            let exhausted = stats().free == 0 && alloc() == Err(OutOfMemory);
            for &frame in &frames {
                free(frame, 1);
            }
            check!(exhausted, "allocator not exhausted after {} frames", frames.len());
            check_eq!(frames.len() as u64, before);
            check_eq!(stats().free, before);
            Ok(())
        }
    );
}
