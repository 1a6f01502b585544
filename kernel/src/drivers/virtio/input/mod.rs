//! virtio-input keyboards (VirtIO 1.2 §5.8): the event queue, kept full of
//! 8-byte buffers the device fills with `struct virtio_input_event`, and
//! the translation of key events into the bytes a terminal would send, so
//! the shell reads the window's keyboard like the serial port.
//!
//! The queue is polled: the shell already polls its input at 1 kHz, and a
//! keystroke waiting a millisecond is not noticed.

mod keymap;
mod tests;

use super::bringup::{
    self, BringUpError, ConfigFields, DeviceConfig, Failed, Queue, QueueInterrupt, QueueLimits,
    QueueSpec, Running, VirtioDevice, VirtioDriver,
};
use super::hal::KernelHal;
use super::pci::QueueNotifier;
use crate::sync::SpinLock;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
pub use keymap::{KeyEvent, Keymap};
use vireo_virtio::device::input::EVENT_BYTES;
use vireo_virtio::{Dma, DmaChain, Features, SplitQueue, UsedLenPolicy};

const EVENT_QUEUE: u16 = 0;
const STATUS_QUEUE: u16 = 1;
/// QEMU's virtio-input queues have 64 descriptors.
const QUEUE_SIZE: u16 = 64;
/// Event buffers kept with the device.
const EVENT_BUFFERS: usize = 32;
/// Bytes translated but not yet read, at most; more is dropped (and
/// counted), never grown without bound.
const MAX_PENDING: usize = 256;

type EventBuffer = DmaChain<KernelHal, 1>;

struct InputDriver;

impl VirtioDriver for InputDriver {
    const NAME: &'static str = "virtio-input";
    const DEVICE_ID: u16 = 18;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::EVENT_IDX;
    type Config = InputConfig;
    type Buffers = EventBuffer;

    fn queues(_: &InputConfig, _: Features, _: &QueueLimits) -> Vec<QueueSpec> {
        [EVENT_QUEUE, STATUS_QUEUE]
            .into_iter()
            .map(|index| QueueSpec {
                index,
                size: QUEUE_SIZE,
                indirect_max: 0,
                interrupt: QueueInterrupt::Polled,
                // Strict: an event is exactly 8 bytes; a longer claim is a lie.
                used_len: UsedLenPolicy::Strict,
            })
            .collect()
    }
}

/// The driver needs nothing from `struct virtio_input_config` (§5.8.4): it
/// takes key events from whichever input device it finds.
struct InputConfig;

impl DeviceConfig for InputConfig {
    fn read(_: &ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        Ok(Self)
    }
}

/// Counters, for the shell and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Events the device delivered.
    pub events: u64,
    /// Events shorter than 8 bytes (dropped).
    pub short_events: u64,
    /// Bytes dropped because nobody read them.
    pub dropped_bytes: u64,
}

struct Events {
    queue: SplitQueue<KernelHal, EventBuffer>,
    notifier: QueueNotifier,
    keymap: Keymap,
    pending: VecDeque<u8>,
    stats: InputStats,
}

/// A virtio-input device.
pub struct InputDevice {
    events: SpinLock<Events>,
    /// Kept for the device's lifetime (the status queue is never used:
    /// the driver sets no LEDs).
    _status: SplitQueue<KernelHal, EventBuffer>,
    _virtio: VirtioDevice,
}

static DEVICE: spin::Once<Option<InputDevice>> = spin::Once::new();

/// Finds and starts the first virtio-input device; later calls return it.
pub fn init() -> Option<&'static InputDevice> {
    DEVICE
        .call_once(|| match InputDevice::probe() {
            Ok(device) => {
                log::info!("virtio-input: keyboard ready");
                Some(device)
            }
            Err(error) => {
                log::info!("virtio-input: not available: {error}");
                None
            }
        })
        .as_ref()
}

/// The device started by `init`, if any.
pub fn device() -> Option<&'static InputDevice> {
    DEVICE.get().and_then(Option::as_ref)
}

impl InputDevice {
    fn probe() -> Result<Self, Failed> {
        let Running { device: virtio, mut queues, .. } = bringup::probe::<InputDriver>()?;
        let status = queues.pop().expect("two queues planned");
        let Queue { ring, notifier, .. } = queues.pop().expect("two queues planned");
        let mut events = Events {
            queue: ring,
            notifier,
            keymap: Keymap::default(),
            pending: VecDeque::with_capacity(MAX_PENDING),
            stats: InputStats::default(),
        };
        // §5.8.6.2: the driver fills the event queue with buffers first.
        for _ in 0..EVENT_BUFFERS {
            if let Err(why) = events.give_buffer(None) {
                let rings = alloc::vec![events.queue, status.ring];
                return Err(virtio.fail(rings, BringUpError::Driver(why)));
            }
        }
        events.kick();
        Ok(Self { events: SpinLock::new(events), _status: status.ring, _virtio: virtio })
    }

    /// Collects the device's events and returns the next byte they typed.
    pub fn read_byte(&self) -> Option<u8> {
        let mut events = self.events.lock();
        events.collect();
        events.pending.pop_front()
    }

    /// Counters so far.
    pub fn stats(&self) -> InputStats {
        self.events.lock().stats
    }

    /// Buffers the device holds for events.
    pub fn buffers_posted(&self) -> u16 {
        self.events.lock().queue.in_flight()
    }
}

impl Events {
    /// Hands an (empty) event buffer to the device: `reuse` or a new page.
    fn give_buffer(&mut self, reuse: Option<EventBuffer>) -> Result<(), &'static str> {
        let mut buffer = match reuse {
            Some(buffer) => buffer,
            None => DmaChain::new(Dma::new(KernelHal, 1).map_err(|_| "no DMA memory")?),
        };
        buffer.region_mut()[..EVENT_BYTES].fill(0);
        buffer.set_segments(&[], &[(0, EVENT_BYTES)]).map_err(|_| "bad event buffer")?;
        self.queue.add(buffer).map(drop).map_err(|_| "event queue refused a buffer")
    }

    fn kick(&mut self) {
        if self.queue.should_notify().unwrap_or(false) {
            self.notifier.notify();
        }
    }

    /// Pops every event, translates it, and gives the buffer back.
    fn collect(&mut self) {
        let mut returned = false;
        while let Ok(Some(used)) = self.queue.pop_used() {
            self.stats.events += 1;
            if (used.written_len as usize) < EVENT_BYTES {
                self.stats.short_events += 1;
            } else if let Some(event) = KeyEvent::decode(&used.buffers.bytes(0)[..EVENT_BYTES]) {
                let mut out = [0u8; 8];
                let len = self.keymap.translate(event, &mut out);
                for &byte in &out[..len] {
                    if self.pending.len() < MAX_PENDING {
                        self.pending.push_back(byte);
                    } else {
                        self.stats.dropped_bytes += 1;
                    }
                }
            }
            returned |= self.give_buffer(Some(used.buffers)).is_ok();
        }
        if returned {
            self.kick();
        }
    }
}
