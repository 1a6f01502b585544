//! The split ring against a device nobody here wrote: rust-vmm's
//! `virtio-queue` (device side) over `vm-memory`, running in another thread
//! over shared memory. Every byte and length of every request is checked.

mod common;

use std::thread;

use common::{Device, Q, TIMEOUT, TestTransport, Traffic, guest, serve};
use vireo_virtio::{
    DeviceStatus, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy, negotiate_features,
};

#[derive(Clone, Copy)]
struct Cfg {
    size: u16,
    indirect: bool,
    event_idx: bool,
    total: u64,
    max_batch: usize,
    max_segs: usize,
    max_len: usize,
    seed: u64,
}

fn run(cfg: Cfg) {
    let hal = guest();
    let dev = Device::new(1);
    let mut t = TestTransport { dev: dev.clone() };
    let mut wanted = Features::empty();
    if cfg.indirect {
        wanted |= Features::INDIRECT_DESC;
    }
    if cfg.event_idx {
        wanted |= Features::EVENT_IDX;
    }
    let features = negotiate_features(&mut t, wanted).unwrap();
    assert_eq!(features, wanted | Features::VERSION_1);
    let qc = QueueConfig {
        index: 0,
        size: cfg.size,
        features,
        indirect_max: cfg.size.min(8),
        used_len: UsedLenPolicy::Strict,
    };
    let mut q: Q = SplitQueue::new(&hal, &mut t, qc).unwrap();
    let s = t.status();
    t.set_status(s | DeviceStatus::DRIVER_OK);
    let dev_thread = {
        let (dev, hal) = (dev.clone(), hal.clone());
        let jitter = cfg.total < 10_000;
        thread::spawn(move || serve(dev, 0, hal, cfg.event_idx, jitter))
    };
    let pool_len = usize::from(cfg.size).clamp(2, 600);
    let mut traffic = Traffic::new(&hal, pool_len, cfg.seed, cfg.max_segs, cfg.max_len);
    let irq = &dev.queues[0].irq;
    let mut issued = 0u64;
    while traffic.completed < cfg.total {
        let batch = traffic.rng().range(1, cfg.max_batch).min((cfg.total - issued) as usize);
        issued += traffic.add(&mut q, batch) as u64;
        q.kick(&mut t).unwrap();
        let mut got = 0;
        loop {
            got += traffic.drain(&mut q);
            let more = !traffic.pool.is_empty() && traffic.rng().next().is_multiple_of(2);
            if traffic.in_flight() == 0 || (got > 0 && more) {
                break;
            }
            if traffic.rng().next().is_multiple_of(4) {
                thread::yield_now();
                continue;
            }
            // Sleep until interrupted: re-enable, recheck, wait.
            let seen = irq.get();
            if !q.enable_interrupts().unwrap() {
                assert!(
                    irq.wait_change(seen, TIMEOUT),
                    "driver waited {TIMEOUT:?}: lost interrupt"
                );
            }
            q.disable_interrupts().unwrap();
        }
    }
    dev.shut_down();
    let handled = dev_thread.join().expect("device thread");
    assert_eq!(handled, cfg.total);
    let st = q.stats();
    assert_eq!(st.added, cfg.total);
    assert_eq!(st.completions, cfg.total);
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.num_free(), cfg.size);
    // Tear down with proof, so the rings are freed rather than leaked.
    let proof = t.reset().unwrap();
    assert_eq!(q.reclaim(&proof, |_, _| panic!("nothing was in flight")), Ok(0));
}

fn cfg(size: u16, indirect: bool, event_idx: bool) -> Cfg {
    Cfg {
        size,
        indirect,
        event_idx,
        total: 3000,
        max_batch: 16,
        max_segs: 8,
        max_len: 900,
        seed: 0x1234_5678
            ^ u64::from(size)
            ^ ((indirect as u64) << 40)
            ^ ((event_idx as u64) << 41),
    }
}

#[test]
fn direct_event_idx() {
    run(cfg(256, false, true));
}

#[test]
fn direct_flags() {
    run(cfg(64, false, false));
}

#[test]
fn indirect_event_idx() {
    run(cfg(16, true, true));
}

#[test]
fn indirect_flags() {
    run(cfg(8, true, false));
}

#[test]
fn tiny_queues() {
    for size in [1, 2, 4] {
        for event_idx in [false, true] {
            run(Cfg { total: 800, ..cfg(size, size == 4, event_idx) });
        }
    }
}

#[test]
fn wraps_past_65535() {
    for event_idx in [true, false] {
        run(Cfg {
            total: 70_000,
            max_batch: 8,
            max_segs: 3,
            max_len: 16,
            ..cfg(8, false, event_idx)
        });
    }
}

#[test]
fn max_size_32768() {
    run(Cfg { total: 4000, max_batch: 512, max_len: 64, ..cfg(32768, true, true) });
}
