//! Loom model of the notification protocol in both directions: driver
//! add → publish `avail.idx` → notify decision, device complete → interrupt
//! decision, driver re-enable interrupts → recheck → sleep.
//!
//! The driver steps mirror `SplitQueue::{add, should_notify,
//! enable_interrupts}` one for one and use the crate's real
//! `vring_need_event`; the device steps mirror rust-vmm `virtio-queue`
//! (`enable_notification`, `needs_notification`). Shared ring fields are
//! `Relaxed` atomics, and the crate's barriers are modelled by their
//! C11 meaning: `virtio_wmb` = `fence(Release)`, `virtio_rmb` =
//! `fence(Acquire)`, `virtio_mb` = `fence(SeqCst)`. Loom (0.7) lets a
//! relaxed load return any store not yet ordered before it, so it explores
//! store buffering (the store→load reordering x86 really does); its
//! `fence(SeqCst)` joins a global causality clock, which forbids exactly
//! that outcome. `loom_models_store_buffering` below checks both facts, so
//! a green model is evidence, not an artefact of a weak checker.
//!
//! Doorbell (kick) and interrupt line are modelled as sticky flags: a
//! sleeping side is woken by them even if they are raised after it slept,
//! so the final check after both threads stop is:
//! - lost kick: the device sleeps with `avail.idx` ahead of what it saw and
//!   no kick pending;
//! - lost interrupt: the driver sleeps with `used.idx` ahead of what it saw
//!   and no interrupt pending.
//!
//! The doorbells are raised with `fetch_or` and consumed with `swap`, never
//! with a plain `store`: loom 0.7.3 lets a `swap` racing with a plain store
//! from another thread miss it entirely (both the swap and a later load
//! after `join` read the old value — an outcome C11 forbids; reproduced in
//! a 10-line model while writing this). RMW-only doorbells are modelled
//! correctly, and MMIO doorbell writes / interrupt delivery are not
//! reorderable stores anyway.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU16, Ordering::*, fence};
use loom::thread;
use vireo_virtio::queue::event::vring_need_event;

const N: u16 = 2;
/// `used_event` value meaning "far away": interrupts effectively off.
const FAR: u16 = 0x8000;

#[derive(Clone, Copy, Debug)]
struct Knobs {
    event_idx: bool,
    /// `virtio_mb` in `should_notify` (§2.7.13.4.1).
    kick_mb: bool,
    /// `virtio_mb` in `enable_interrupts` (§2.7.14).
    irq_mb: bool,
    /// Re-read `used.idx` after re-enabling interrupts (§2.7.14).
    recheck: bool,
}

const GOOD: Knobs = Knobs { event_idx: true, kick_mb: true, irq_mb: true, recheck: true };

#[derive(Default)]
struct Shared {
    // Driver area.
    avail_idx: AtomicU16,
    avail_flags: AtomicU16,
    used_event: AtomicU16,
    // Device area.
    used_idx: AtomicU16,
    used_flags: AtomicU16,
    avail_event: AtomicU16,
    // Doorbell and interrupt line.
    kick: AtomicBool,
    irq: AtomicBool,
    // What each side had seen when it went to sleep.
    device_saw: AtomicU16,
    driver_saw: AtomicU16,
}

fn driver(s: &Shared, k: Knobs) {
    let mut old = 0u16;
    for new in 1..=N {
        // add(): descriptors + ring entry, virtio_wmb, publish avail.idx.
        fence(Release);
        s.avail_idx.store(new, Relaxed);
        // should_notify()
        if k.kick_mb {
            fence(SeqCst);
        }
        let kick = if k.event_idx {
            vring_need_event(s.avail_event.load(Relaxed), new, old)
        } else {
            s.used_flags.load(Relaxed) & 1 == 0
        };
        old = new;
        if kick {
            s.kick.fetch_or(true, AcqRel);
        }
    }
    // Completion loop with interrupts initially off (NAPI style).
    let mut last_used = 0u16;
    loop {
        let u = s.used_idx.load(Relaxed);
        if u != last_used {
            fence(Acquire); // virtio_rmb before reading entries
            last_used = u;
        }
        if last_used == N {
            break;
        }
        // enable_interrupts()
        if k.event_idx {
            s.used_event.store(last_used, Relaxed);
        } else {
            s.avail_flags.store(0, Relaxed);
        }
        if k.irq_mb {
            fence(SeqCst);
        }
        let raced = k.recheck && s.used_idx.load(Relaxed) != last_used;
        if !raced {
            // Sleep until interrupted.
            if !s.irq.swap(false, AcqRel) {
                break;
            }
        }
        // disable_interrupts(), then poll again.
        if k.event_idx {
            s.used_event.store(FAR, Relaxed);
        } else {
            s.avail_flags.store(1, Relaxed);
        }
    }
    s.driver_saw.store(last_used, Relaxed);
}

fn device(s: &Shared, k: Knobs) {
    let mut next_avail = 0u16;
    let mut used = 0u16;
    loop {
        // disable_notification()
        if !k.event_idx {
            s.used_flags.store(1, Relaxed);
        }
        loop {
            let a = s.avail_idx.load(Relaxed);
            fence(Acquire);
            while next_avail != a && next_avail != N {
                next_avail += 1;
                // add_used(): entry, wmb, used.idx
                fence(Release);
                used += 1;
                s.used_idx.store(used, Relaxed);
                // needs_notification(): mb, then read the driver's wish.
                fence(SeqCst);
                let irq = if k.event_idx {
                    vring_need_event(s.used_event.load(Relaxed), used, used - 1)
                } else {
                    s.avail_flags.load(Relaxed) & 1 == 0
                };
                if irq {
                    s.irq.fetch_or(true, AcqRel);
                }
            }
            // enable_notification(): publish, mb, recheck.
            if k.event_idx {
                s.avail_event.store(next_avail, Relaxed);
            } else {
                s.used_flags.store(0, Relaxed);
            }
            fence(SeqCst);
            if s.avail_idx.load(Relaxed) == next_avail {
                break;
            }
            if !k.event_idx {
                s.used_flags.store(1, Relaxed);
            }
        }
        // Sleep until kicked.
        if !s.kick.swap(false, AcqRel) {
            break;
        }
    }
    s.device_saw.store(next_avail, Relaxed);
}

fn check(k: Knobs) {
    let mut b = loom::model::Builder::new();
    // Bounded for the regular suite (a fraction of a second); raise it with
    // VIREO_LOOM_PREEMPTIONS=N (unbounded runs take far too long).
    b.preemption_bound = Some(
        std::env::var("VIREO_LOOM_PREEMPTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3),
    );
    b.check(move || {
        let s = Arc::new(Shared::default());
        s.used_event.store(FAR, Relaxed);
        s.avail_flags.store(1, Relaxed);
        let d = {
            let s = s.clone();
            thread::spawn(move || device(&s, k))
        };
        driver(&s, k);
        d.join().unwrap();
        let avail = s.avail_idx.load(Relaxed);
        let used = s.used_idx.load(Relaxed);
        let dev_saw = s.device_saw.load(Relaxed);
        let drv_saw = s.driver_saw.load(Relaxed);
        if dev_saw != avail && !s.kick.swap(false, AcqRel) {
            panic!("lost kick: device asleep at {dev_saw}, avail.idx {avail}, no kick ({k:?})");
        }
        if drv_saw != used && !s.irq.swap(false, AcqRel) {
            panic!(
                "lost interrupt: driver asleep at {drv_saw}, used.idx {used}, none pending ({k:?})"
            );
        }
    });
}

#[test]
fn protocol_is_safe_event_idx() {
    check(GOOD);
}

#[test]
fn protocol_is_safe_flags() {
    check(Knobs { event_idx: false, ..GOOD });
}

#[test]
#[should_panic(expected = "lost kick")]
fn without_kick_barrier_event_idx_loses_kick() {
    check(Knobs { kick_mb: false, ..GOOD });
}

#[test]
#[should_panic(expected = "lost kick")]
fn without_kick_barrier_flags_loses_kick() {
    check(Knobs { event_idx: false, kick_mb: false, ..GOOD });
}

#[test]
#[should_panic(expected = "lost interrupt")]
fn without_enable_barrier_loses_interrupt() {
    check(Knobs { irq_mb: false, ..GOOD });
}

#[test]
#[should_panic(expected = "lost interrupt")]
fn without_recheck_loses_interrupt() {
    check(Knobs { recheck: false, ..GOOD });
}

/// Store-buffering litmus: proves loom explores the store→load reordering
/// without a full fence and rules it out with `fence(SeqCst)` on both sides.
fn store_buffering(fences: bool) {
    loom::model(move || {
        let x = Arc::new(AtomicU16::new(0));
        let y = Arc::new(AtomicU16::new(0));
        let t = {
            let (x, y) = (x.clone(), y.clone());
            thread::spawn(move || {
                x.store(1, Relaxed);
                if fences {
                    fence(SeqCst);
                }
                y.load(Relaxed)
            })
        };
        y.store(1, Relaxed);
        if fences {
            fence(SeqCst);
        }
        let r1 = x.load(Relaxed);
        let r2 = t.join().unwrap();
        assert!(r1 == 1 || r2 == 1, "store buffering observed");
    });
}

#[test]
#[should_panic(expected = "store buffering observed")]
fn loom_models_store_buffering() {
    store_buffering(false);
}

#[test]
fn loom_seqcst_fence_forbids_store_buffering() {
    store_buffering(true);
}
