//! Resets against rust-vmm's device model: one queue reset (RING_RESET)
//! again and again with requests in flight while another queue of the same
//! device keeps running, and a device reset whose proof every queue
//! consumes. Every request comes back exactly once — completed with its
//! bytes checked, or reclaimed untouched — and I/O works afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Device, GHal, Q, TIMEOUT, TestTransport, Traffic, guest, serve};
use vireo_virtio::{
    DeviceStatus, Error, Features, QueueConfig, SplitQueue, Transport, UsedLenPolicy,
    negotiate_features,
};

fn features(t: &mut TestTransport) -> Features {
    let wanted = Features::INDIRECT_DESC | Features::EVENT_IDX | Features::RING_RESET;
    let f = negotiate_features(t, wanted).unwrap();
    assert_eq!(f, wanted | Features::VERSION_1);
    f
}

fn queue(hal: &GHal, t: &mut TestTransport, index: u16, size: u16, features: Features) -> Q {
    let used_len = UsedLenPolicy::Strict;
    let config = QueueConfig { index, size, features, indirect_max: size.min(4), used_len };
    SplitQueue::new(hal, t, config).unwrap()
}

fn driver_ok(t: &mut TestTransport) {
    let s = t.status();
    t.set_status(s | DeviceStatus::DRIVER_OK);
}

/// A device thread per queue of `dev` (EVENT_IDX on).
fn serve_all(dev: &Arc<Device>, hal: &GHal, jitter: bool) -> Vec<thread::JoinHandle<u64>> {
    (0..dev.queues.len() as u16)
        .map(|i| {
            let (dev, hal) = (dev.clone(), hal.clone());
            thread::spawn(move || serve(dev, i, hal, true, jitter))
        })
        .collect()
}

/// Polls `q` until at least one request completed (bounded).
fn first_completion(q: &mut Q, traffic: &mut Traffic) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let n = traffic.drain(q);
        if n > 0 {
            return n;
        }
        assert!(Instant::now() < deadline, "no request completed");
        thread::yield_now();
    }
}

/// Polls `q` until nothing is in flight (bounded).
fn finish(q: &mut Q, traffic: &mut Traffic, t: &mut TestTransport) {
    let deadline = Instant::now() + TIMEOUT;
    while traffic.in_flight() > 0 {
        q.kick(t).unwrap();
        traffic.drain(q);
        assert!(Instant::now() < deadline, "requests never completed");
        thread::yield_now();
    }
}

#[test]
fn one_queue_resets_with_requests_in_flight_while_the_other_runs() {
    let hal = guest();
    let dev = Device::new(2);
    let mut t = TestTransport { dev: dev.clone() };
    let f = features(&mut t);
    let mut q0 = queue(&hal, &mut t, 0, 64, f);
    let mut q1 = queue(&hal, &mut t, 1, 16, f);
    driver_ok(&mut t);
    let servers = serve_all(&dev, &hal, true);

    // Queue 0: steady verified traffic in its own thread until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let other = {
        let (stop, progress, hal) = (stop.clone(), progress.clone(), hal.clone());
        let mut t0 = t.clone();
        thread::spawn(move || {
            let mut traffic = Traffic::new(&hal, 48, 7, 4, 300);
            q0.disable_interrupts().unwrap();
            while !stop.load(Ordering::SeqCst) {
                traffic.add(&mut q0, 8);
                q0.kick(&mut t0).unwrap();
                progress.fetch_add(traffic.drain(&mut q0), Ordering::SeqCst);
                thread::yield_now();
            }
            finish(&mut q0, &mut traffic, &mut t0);
            (q0, traffic.completed)
        })
    };

    // Queue 1: bursts, each cut short by a queue reset.
    let mut traffic = Traffic::new(&hal, 16, 11, 8, 900);
    let mut other_ran = 0;
    for round in 0..150 {
        traffic.add(&mut q1, 1 + round % 16);
        // Some rounds reset right after the kick, some once the device is
        // busy, and some without a kick at all: the device, idle, never
        // looks, so those requests are surely in flight at the reset.
        if round % 4 != 3 {
            q1.kick(&mut t).unwrap();
        }
        match round % 4 {
            0 => drop(first_completion(&mut q1, &mut traffic)),
            1 => thread::sleep(Duration::from_micros(50)),
            _ => {}
        }
        let before = progress.load(Ordering::SeqCst);
        let proof = q1.reset_queue(&mut t).unwrap();
        // What the device finished before it stopped still pops (checked
        // byte for byte); the rest comes back untouched.
        traffic.drain(&mut q1);
        let in_flight = traffic.in_flight();
        assert_eq!(q1.reclaim(&proof, |tok, c| traffic.reclaimed(tok, c)), Ok(in_flight));
        assert_eq!((traffic.in_flight(), q1.num_free()), (0, 16));
        q1.restart(&mut t).unwrap();
        thread::sleep(Duration::from_micros(20));
        other_ran += u64::from(progress.load(Ordering::SeqCst) > before);
    }
    assert!(traffic.reclaimed > 0, "no reset caught a request in flight");
    assert!(traffic.completed > 0, "no request completed before a reset");
    assert_eq!(q1.stats().queue_resets, 150);
    // After all that, the queue still works end to end.
    let done = traffic.completed;
    let added = traffic.add(&mut q1, 16) as u64;
    finish(&mut q1, &mut traffic, &mut t);
    assert!(added > 0);
    assert_eq!(traffic.completed, done + added);

    stop.store(true, Ordering::SeqCst);
    let (q0, completed0) = other.join().expect("queue 0 driver");
    assert!(other_ran > 10, "queue 0 stalled while queue 1 was reset ({other_ran} of 150)");
    assert_eq!((q0.stats().completions, q0.stats().queue_resets), (completed0, 0));
    dev.shut_down();
    servers.into_iter().for_each(|s| assert!(s.join().is_ok(), "device thread"));
    let proof = t.reset().unwrap();
    let mut q0 = q0;
    assert_eq!(q0.reclaim(&proof, |_, _| ()), Ok(0));
    assert_eq!(q1.reclaim(&proof, |_, _| ()), Ok(0));
}

#[test]
fn device_reset_proof_reclaims_every_queue_then_both_restart() {
    let hal = guest();
    let dev = Device::new(2);
    let mut t = TestTransport { dev: dev.clone() };
    let f = features(&mut t);
    let mut qs = [queue(&hal, &mut t, 0, 32, f), queue(&hal, &mut t, 1, 8, f)];
    driver_ok(&mut t);
    let servers = serve_all(&dev, &hal, false);
    let mut traffic = [Traffic::new(&hal, 32, 3, 6, 500), Traffic::new(&hal, 8, 5, 8, 500)];
    let (mut reclaimed, mut completed) = (0, 0);
    for round in 0..40 {
        dev.queues[1].hold.store(round % 2 == 1, Ordering::SeqCst);
        for (q, tr) in qs.iter_mut().zip(&mut traffic) {
            tr.add(q, 32);
            q.kick(&mut t).unwrap();
        }
        // Half the time wait for the device to be under way; the other half
        // the device holds queue 1's requests, so the reset must hand back
        // requests the device never took, however the threads are timed.
        if round % 2 == 0 {
            completed += first_completion(&mut qs[0], &mut traffic[0]);
        }
        let proof = t.reset().unwrap();
        for (q, tr) in qs.iter_mut().zip(&mut traffic) {
            completed += tr.drain(q);
            let n = tr.in_flight();
            assert_eq!(q.reclaim(&proof, |tok, c| tr.reclaimed(tok, c)), Ok(n));
            reclaimed += n;
            assert!(q.is_stopped());
        }
        // The device was reset: initialise it again, then restart both.
        assert_eq!(features(&mut t), f);
        for q in &mut qs {
            q.restart(&mut t).unwrap();
            // This reset began before the restart: it covers it no more.
            assert_eq!(q.reclaim(&proof, |_, _| ()), Err(Error::WrongResetProof));
        }
        driver_ok(&mut t);
    }
    dev.queues[1].hold.store(false, Ordering::SeqCst);
    assert!(reclaimed > 0 && completed > 0, "reclaimed {reclaimed}, completed {completed}");
    for (q, tr) in qs.iter_mut().zip(&mut traffic) {
        let done = tr.completed;
        let added = tr.add(q, 8) as u64;
        finish(q, tr, &mut t);
        assert!(added > 0);
        assert_eq!(tr.completed, done + added);
    }
    dev.shut_down();
    servers.into_iter().for_each(|s| assert!(s.join().is_ok(), "device thread"));
}
