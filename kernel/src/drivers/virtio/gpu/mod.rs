//! virtio-gpu 2D (VirtIO 1.2 §5.7): display info, resources backed by
//! guest memory, and a double-buffered, damage-tracking, fenced
//! [`Framebuffer`].
//!
//! Control commands run one at a time: a sleeping lock serialises callers,
//! the command and its response share one DMA page, and the caller polls
//! the control queue for the answer (QEMU answers from its main loop, so
//! the wait is short and an interrupt would cost more than it saves).

pub mod protocol;

use super::bringup::{
    self, BringUpError, ConfigFields, DeviceConfig, Failed, Queue, QueueInterrupt, QueueLimits,
    QueueSpec, Running, VirtioDevice, VirtioDriver,
};
use super::hal::KernelHal;
use super::pci::QueueNotifier;
use crate::sched::WaitQueue;
use crate::sync::SpinLock;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use protocol::{Encoder, GpuError, GpuRequest, GpuResponse, Rect};
use vireo_virtio::{Dma, DmaChain, Features, SplitQueue, UsedLenPolicy};

const CONTROL_QUEUE: u16 = 0;
const QUEUE_SIZE: u16 = 64;
/// Commands at the start of the page, responses from here.
const RESPONSE_OFFSET: usize = 2048;
/// Most commands sent as one batch.
const MAX_BATCH: usize = 4;
/// A device that does not answer a command within this is declared broken.
const COMMAND_TIMEOUT_US: u64 = 2_000_000;

/// virtio-gpu as bring-up sees it: one polled control queue.
struct GpuDriver;

impl VirtioDriver for GpuDriver {
    const NAME: &'static str = "virtio-gpu";
    const DEVICE_ID: u16 = 16;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features = Features::EVENT_IDX.union(Features::RING_RESET);
    type Config = GpuConfig;
    type Buffers = DmaChain<KernelHal, 2>;

    fn queues(_: &GpuConfig, _: Features, _: &QueueLimits) -> Vec<QueueSpec> {
        alloc::vec![QueueSpec {
            index: CONTROL_QUEUE,
            size: QUEUE_SIZE,
            indirect_max: 0,
            interrupt: QueueInterrupt::Polled,
            // Strict: the used length says how much of a response to decode,
            // so a device claiming more than the response buffer is lying
            // about the response itself; the queue breaks rather than decode
            // garbage.
            used_len: UsedLenPolicy::Strict,
        }]
    }
}

/// What the driver takes from `struct virtio_gpu_config` (§5.7.4).
struct GpuConfig {
    num_scanouts: u32,
}

impl DeviceConfig for GpuConfig {
    fn read(fields: &mut ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        const NUM_SCANOUTS: usize = 8;
        let num_scanouts = fields.u32(NUM_SCANOUTS)?;
        // §5.7.4: at least 1, at most 16 (VIRTIO_GPU_MAX_SCANOUTS).
        if !(1..=16).contains(&num_scanouts) {
            return Err(BringUpError::BadConfig("num_scanouts outside 1..=16"));
        }
        Ok(Self { num_scanouts })
    }
}

/// Why the GPU could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDeviceError {
    /// The device answered with an error, or broke the protocol.
    Device(GpuError),
    /// The device did not answer in time; the driver stopped using it.
    Timeout,
    /// The control queue broke (a protocol violation by the device).
    QueueBroken,
    /// A rectangle outside the framebuffer, or an impossible size.
    BadRect,
    /// An empty batch, or more commands than one batch may hold.
    InvalidBatch,
    /// No DMA memory for a framebuffer or command page.
    OutOfMemory,
}

/// Judges one answer of a batch: (index, response bytes, written length,
/// the fence the command carried).
type ResponseCheck<'a> =
    dyn FnMut(usize, &[u8], u32, Option<u64>) -> Result<(), GpuDeviceError> + 'a;

/// Tokens of one batch, in submission order.
type Tokens = [Option<vireo_virtio::Token>; MAX_BATCH];

/// A submitted batch. Other commands may run meanwhile; their callers set
/// this batch's answers aside for it.
#[must_use = "wait for the batch to learn whether it worked"]
pub struct InFlight {
    device: &'static GpuDevice,
    tokens: Tokens,
    fence: Option<u64>,
    is_done: bool,
}

impl InFlight {
    /// Waits for every command of the batch and checks the answers.
    ///
    /// # Errors
    /// The first error response, or a timeout / broken queue.
    pub fn wait(mut self) -> Result<(), GpuDeviceError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), GpuDeviceError> {
        if self.is_done {
            return Ok(());
        }
        self.is_done = true;
        self.device.acquire();
        let result = self.device.collect_locked(
            &self.tokens,
            self.fence,
            &mut |_, bytes, written, fence| {
                protocol::check_header(bytes, written, protocol::RESP_OK_NODATA, fence)
                    .map_err(GpuDeviceError::Device)
            },
        );
        self.device.release();
        result
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Never leave the command path reserved.
        let _ = self.finish();
    }
}

/// Any command, type-erased so a batch can mix them.
pub trait EncodeRequest {
    /// Its code.
    fn command(&self) -> protocol::Command;
    /// Writes its body.
    fn encode(&self, out: &mut Encoder);
}

impl<R: GpuRequest> EncodeRequest for R {
    fn command(&self) -> protocol::Command {
        R::COMMAND
    }
    fn encode(&self, out: &mut Encoder) {
        self.encode_body(out);
    }
}

impl From<GpuError> for GpuDeviceError {
    fn from(error: GpuError) -> Self {
        Self::Device(error)
    }
}

struct Control {
    queue: SplitQueue<KernelHal, DmaChain<KernelHal, 2>>,
    notifier: QueueNotifier,
    /// Command pages (command, then response) not in flight.
    pages: alloc::vec::Vec<DmaChain<KernelHal, 2>>,
    /// Answers popped by one caller that belong to another's batch.
    finished: alloc::vec::Vec<vireo_virtio::Used<DmaChain<KernelHal, 2>>>,
}

/// A virtio-gpu device.
pub struct GpuDevice {
    control: SpinLock<Control>,
    busy: AtomicBool,
    idle: WaitQueue,
    is_broken: AtomicBool,
    next_fence: AtomicU64,
    next_resource: AtomicU32,
    display: Rect,
    /// Transport, owned for the device's lifetime.
    virtio: VirtioDevice,
}

static DEVICE: spin::Once<Option<GpuDevice>> = spin::Once::new();

/// Finds and starts the first virtio-gpu; later calls return it.
pub fn init() -> Option<&'static GpuDevice> {
    DEVICE
        .call_once(|| match GpuDevice::probe() {
            Ok(device) => {
                log::info!(
                    "virtio-gpu: scanout 0 is {}x{}",
                    device.display.width,
                    device.display.height
                );
                Some(device)
            }
            Err(error) => {
                log::warn!("virtio-gpu: not available: {error}");
                None
            }
        })
        .as_ref()
}

/// The device started by `init`, if any.
pub fn device() -> Option<&'static GpuDevice> {
    DEVICE.get().and_then(Option::as_ref)
}

impl GpuDevice {
    fn probe() -> Result<Self, Failed> {
        let Running { device: virtio, config, mut queues, .. } = bringup::probe::<GpuDriver>()?;
        let Queue { ring, notifier, .. } = queues.pop().expect("one queue planned");
        let page = match Dma::new(KernelHal, 1) {
            Ok(dma) => DmaChain::new(dma),
            Err(_) => {
                return Err(virtio.fail(alloc::vec![ring], BringUpError::Driver("no DMA memory")));
            }
        };
        let mut device = Self {
            control: SpinLock::new(Control {
                queue: ring,
                notifier,
                pages: alloc::vec![page],
                finished: alloc::vec::Vec::new(),
            }),
            busy: AtomicBool::new(false),
            idle: WaitQueue::new(),
            is_broken: AtomicBool::new(false),
            next_fence: AtomicU64::new(1),
            next_resource: AtomicU32::new(1),
            display: Rect::default(),
            virtio,
        };
        match device.find_display(config.num_scanouts) {
            Ok(display) => {
                device.display = display;
                Ok(device)
            }
            Err(why) => Err(device.abandon(why)),
        }
    }

    /// The first enabled scanout's mode (§5.7.6.8, GET_DISPLAY_INFO).
    fn find_display(&self, scanouts: u32) -> Result<Rect, &'static str> {
        let info = self.execute(&protocol::GetDisplayInfo, None).map_err(|_| "no display info")?;
        let display = info
            .0
            .iter()
            .take(scanouts as usize)
            .find(|d| d.is_enabled)
            .ok_or("no enabled scanout")?;
        if display.rect.is_empty() || display.rect.width > 8192 || display.rect.height > 8192 {
            return Err("implausible display size");
        }
        Ok(display.rect)
    }

    /// Hands a device that failed after DRIVER_OK back to bring-up's
    /// failure path, with its queue (and whatever the device still holds in
    /// it). Only before the device is published.
    fn abandon(self, why: &'static str) -> Failed {
        let Self { control, virtio, .. } = self;
        let Control { queue, .. } = control.into_inner();
        virtio.fail(alloc::vec![queue], BringUpError::Driver(why))
    }

    /// Scanout 0's mode.
    pub fn display(&self) -> Rect {
        self.display
    }

    /// A fresh resource id.
    fn new_resource_id(&self) -> u32 {
        self.next_resource.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs one control command and decodes its response. With `fenced`,
    /// the command carries a new fence and completes only once its effect
    /// is done (§5.7.6.8); the echoed fence is checked.
    ///
    /// # Errors
    /// [`GpuDeviceError`] for error responses, timeouts or a broken queue.
    pub fn execute<R: GpuRequest>(
        &self,
        request: &R,
        fenced: Option<()>,
    ) -> Result<R::Response, GpuDeviceError> {
        let mut response = None;
        self.run_batch(
            &[request as &dyn EncodeRequest],
            fenced.is_some(),
            |_, bytes, written, fence| {
                protocol::check_header(bytes, written, R::Response::TYPE, fence)?;
                response = Some(R::Response::decode(bytes, written)?);
                Ok(())
            },
        )?;
        response.ok_or(GpuDeviceError::QueueBroken)
    }

    /// Queues `requests` (at most `MAX_BATCH`), notifies once, collects every
    /// answer and hands each to `check` (index, response bytes, written
    /// length, fence). Commands run one batch at a time.
    fn run_batch(
        &self,
        requests: &[&dyn EncodeRequest],
        fence_last: bool,
        mut check: impl FnMut(usize, &[u8], u32, Option<u64>) -> Result<(), GpuDeviceError>,
    ) -> Result<(), GpuDeviceError> {
        self.check_batch(requests)?;
        self.acquire();
        let fence = fence_last.then(|| self.next_fence.fetch_add(1, Ordering::Relaxed));
        let result = self
            .submit_locked(requests, fence)
            .and_then(|tokens| self.collect_locked(&tokens, fence, &mut check));
        self.release();
        result
    }

    /// A batch the command path can take: 1..=MAX_BATCH commands, and a
    /// queue the device has not broken.
    fn check_batch(&self, requests: &[&dyn EncodeRequest]) -> Result<(), GpuDeviceError> {
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(GpuDeviceError::InvalidBatch);
        }
        if self.is_broken.load(Ordering::Acquire) {
            return Err(GpuDeviceError::QueueBroken);
        }
        Ok(())
    }

    fn acquire(&self) {
        // A sleeping lock: commands may take a while (a full-frame copy).
        self.idle.wait_until(|| {
            self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        });
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
        self.idle.wake_one();
    }

    /// Queues `OK_NODATA` commands as one batch with a fence on the last and
    /// returns without waiting: the caller overlaps its next frame with the
    /// device's work and calls [`InFlight::wait`] before it needs the result.
    ///
    /// # Errors
    /// [`GpuDeviceError::InvalidBatch`] or a broken queue.
    pub fn submit_batch(
        &'static self,
        requests: &[&dyn EncodeRequest],
    ) -> Result<InFlight, GpuDeviceError> {
        self.check_batch(requests)?;
        self.acquire();
        let fence = Some(self.next_fence.fetch_add(1, Ordering::Relaxed));
        let submitted = self.submit_locked(requests, fence);
        self.release();
        Ok(InFlight { device: self, tokens: submitted?, fence, is_done: false })
    }

    /// Queues the commands and notifies once; the caller holds `busy`.
    fn submit_locked(
        &self,
        requests: &[&dyn EncodeRequest],
        fence: Option<u64>,
    ) -> Result<Tokens, GpuDeviceError> {
        let last = requests.len() - 1;
        let mut tokens = [None; MAX_BATCH];
        {
            let mut control = self.control.lock();
            for (index, request) in requests.iter().enumerate() {
                let mut page = match control.pages.pop() {
                    Some(page) => page,
                    None => DmaChain::new(
                        Dma::new(KernelHal, 1).map_err(|_| GpuDeviceError::OutOfMemory)?,
                    ),
                };
                let command_fence = if index == last { fence } else { None };
                let command_len = {
                    let bytes = page.region_mut();
                    let mut encoder = Encoder::new(
                        &mut bytes[..RESPONSE_OFFSET],
                        request.command(),
                        command_fence,
                    );
                    request.encode(&mut encoder);
                    encoder.len()
                };
                let segments =
                    page.set_segments(&[(0, command_len)], &[(RESPONSE_OFFSET, RESPONSE_OFFSET)]);
                if segments.is_err() {
                    control.pages.push(page);
                    return Err(GpuDeviceError::QueueBroken);
                }
                match control.queue.add(page) {
                    Ok(token) => tokens[index] = Some(token),
                    Err(rejected) => {
                        control.pages.push(rejected.buffers);
                        drop(control);
                        return self.broken();
                    }
                }
            }
            match control.queue.should_notify() {
                Ok(true) => control.notifier.notify(),
                Ok(false) => {}
                Err(_) => {
                    drop(control);
                    return self.broken();
                }
            }
        }
        Ok(tokens)
    }

    /// Collects the answers to `tokens` and checks each; the caller holds
    /// `busy`.
    fn collect_locked(
        &self,
        tokens: &Tokens,
        fence: Option<u64>,
        check: &mut ResponseCheck,
    ) -> Result<(), GpuDeviceError> {
        let count = tokens.iter().flatten().count();
        let last = count.saturating_sub(1);
        let deadline = crate::platform::time::uptime_us() + COMMAND_TIMEOUT_US;
        let mut outstanding = count;
        let mut result = Ok(());
        while outstanding > 0 {
            let next = {
                let mut control = self.control.lock();
                // Answers another caller popped for us wait in `finished`.
                match control.finished.iter().position(|used| tokens.contains(&Some(used.token))) {
                    Some(position) => Ok(Some(control.finished.swap_remove(position))),
                    None => control.queue.pop_used(),
                }
            };
            match next {
                Ok(Some(used)) => {
                    let Some(index) = tokens.iter().position(|token| *token == Some(used.token))
                    else {
                        // Someone else's batch: leave it for its waiter.
                        self.control.lock().finished.push(used);
                        continue;
                    };
                    outstanding -= 1;
                    let command_fence = if index == last { fence } else { None };
                    let checked =
                        check(index, used.buffers.bytes(1), used.written_len, command_fence);
                    if result.is_ok() {
                        result = checked;
                    }
                    self.control.lock().pages.push(used.buffers);
                }
                Ok(None) if crate::platform::time::uptime_us() > deadline => {
                    // The pages stay with the queue: the device may still
                    // write them.
                    self.is_broken.store(true, Ordering::Release);
                    return Err(GpuDeviceError::Timeout);
                }
                Ok(None) => core::hint::spin_loop(),
                Err(_) => return self.broken(),
            }
        }
        result
    }

    fn broken<T>(&self) -> Result<T, GpuDeviceError> {
        if !self.is_broken.swap(true, Ordering::AcqRel) {
            log::error!("virtio-gpu: control queue broken by the device; driver stopped");
        }
        Err(GpuDeviceError::QueueBroken)
    }
}

mod framebuffer;
pub use framebuffer::Framebuffer;

mod tests;
