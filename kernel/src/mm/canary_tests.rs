//! In-kernel tests of canary frames (`canary.rs`): a write into a freed
//! frame is caught on reuse and on demand, and an intact one passes.

use super::frame::{self, set_canaries, verify_free};
use super::{PAGE_SIZE, PhysAddr, phys_to_virt};
use crate::{check, check_eq, check_ok, ktest};

/// Runs `body` with canaries on, then puts the switch back as it was.
fn with_canaries(body: impl FnOnce() -> crate::ktest::TestResult) -> crate::ktest::TestResult {
    let was_on = frame::canary_stats().enabled;
    check_ok!(set_canaries(true));
    let result = body();
    check_ok!(set_canaries(was_on));
    result
}

/// Writes into a frame the kernel has freed, as a late DMA would.
fn scribble(phys: PhysAddr, offset: usize) {
    // SAFETY: `phys` is a RAM frame this test allocated and freed; no one
    // holds it (the allocator hands it out only to the next `alloc`), and
    // the direct map covers it. The write stands for a device's late DMA.
    unsafe { phys_to_virt(phys + offset as u64).as_mut_ptr::<u8>().write_volatile(0x5a) };
}

ktest!(
    fn an_untouched_freed_frame_passes_its_check_on_reuse() {
        with_canaries(|| {
            let frame = check_ok!(frame::alloc());
            frame::free(frame, 1);
            let marked = frame::canary_stats();
            check!(marked.marked > 0, "freed frame not marked: {:?}", marked);
            let again = check_ok!(frame::alloc());
            let after = frame::canary_stats();
            frame::free(again, 1);
            check_eq!(again, frame);
            check_eq!(after.checked, marked.checked + 1);
            check_eq!(after.changed, marked.changed);
            Ok(())
        })
    }
);

ktest!(
    fn a_write_to_a_freed_frame_is_caught_on_reuse() {
        with_canaries(|| {
            let frame = check_ok!(frame::alloc());
            frame::free(frame, 1);
            scribble(frame, 123);
            let before = frame::canary_stats();
            let again = check_ok!(frame::alloc());
            let after = frame::canary_stats();
            frame::free(again, 1);
            check_eq!(again, frame);
            check_eq!(after.changed, before.changed + 1);
            check!(after.first_changed.is_some());
            Ok(())
        })
    }
);

ktest!(
    fn verify_free_finds_a_write_to_a_frame_still_free() {
        with_canaries(|| {
            let run = check_ok!(frame::alloc_contiguous(4, 1));
            frame::free(run, 4);
            scribble(run + 3 * PAGE_SIZE, PAGE_SIZE as usize - 1);
            let before = frame::canary_stats();
            let after = verify_free();
            check!(after.checked >= before.checked + 4, "{:?} -> {:?}", before, after);
            check_eq!(after.changed, before.changed + 1);
            // A second look finds the same frame changed again, and
            // nothing else.
            check_eq!(verify_free().changed, after.changed + 1);
            // Take the changed frame out of canary duty so later checks
            // in this boot see only new changes.
            let taken = check_ok!(frame::alloc_contiguous(4, 1));
            frame::free(taken, 4);
            Ok(())
        })
    }
);

ktest!(
    fn a_copied_canary_is_not_mistaken_for_the_frames_own() {
        with_canaries(|| {
            let run = check_ok!(frame::alloc_contiguous(2, 1));
            frame::free(run, 2);
            // SAFETY: both frames are RAM this test freed; no one holds
            // them. The copy stands for a device writing a stale frame's
            // contents into another one.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    phys_to_virt(run).as_ptr::<u8>(),
                    phys_to_virt(run + PAGE_SIZE).as_mut_ptr::<u8>(),
                    PAGE_SIZE as usize,
                );
            }
            let before = frame::canary_stats();
            let taken = check_ok!(frame::alloc_contiguous(2, 1));
            let after = frame::canary_stats();
            frame::free(taken, 2);
            check_eq!(taken, run);
            check_eq!(after.changed, before.changed + 1);
            Ok(())
        })
    }
);

ktest!(
    fn switched_off_canaries_mark_nothing() {
        let was_on = frame::canary_stats().enabled;
        check_ok!(set_canaries(false));
        let frame = check_ok!(frame::alloc());
        frame::free(frame, 1);
        let stats = frame::canary_stats();
        check_ok!(set_canaries(was_on));
        check!(!stats.enabled);
        check_eq!(stats.marked, 0);
        Ok(())
    }
);
