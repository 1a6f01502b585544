//! virtio-gpu 2D (VirtIO 1.2 §5.7): display info and EDID, resources backed
//! by scattered guest pages, the cursor queue, and a [`Framebuffer`] that
//! keeps frames in flight.
//!
//! Commands go through `control`: any caller may queue a batch and collect
//! it later, answers are matched by sequence number, and waits sleep. The
//! queues are polled: QEMU answers from its main loop within microseconds,
//! and the frame path collects answers while it draws, so an interrupt per
//! answer would cost more than it saves.

pub mod protocol;

mod backing;
mod control;
mod cursor;
mod display;
mod frame_tests;
mod framebuffer;
mod tests;

use super::bringup::{
    self, BringUpError, ConfigFields, DeviceConfig, Failed, Queue, QueueInterrupt, QueueLimits,
    QueueSpec, Running, VirtioDevice, VirtioDriver,
};
use crate::sync::SpinLock;
use alloc::vec::Vec;
use control::{Control, POOL_PAGES};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use protocol::{GpuError, GpuRequest, GpuResponse, Rect};
use vireo_virtio::{Dma, DmaChain, Features, UsedLenPolicy};

pub use backing::Backing;
pub use control::EncodeRequest;
pub use cursor::CURSOR_SIZE;
pub use framebuffer::{FRAMES_IN_FLIGHT, Framebuffer, MAX_FRAMES_IN_FLIGHT};

const CONTROL_QUEUE: u16 = 0;
const CURSOR_QUEUE: u16 = 1;
const QUEUE_SIZE: u16 = 64;
/// QEMU's cursor queue has 16 descriptors; one command is out at a time.
const CURSOR_QUEUE_SIZE: u16 = 16;
/// `VIRTIO_GPU_F_EDID` (§5.7.3): GET_EDID is supported.
const F_EDID: u64 = 1 << 1;

/// virtio-gpu as bring-up sees it: the control queue and the cursor queue,
/// both polled.
struct GpuDriver;

impl VirtioDriver for GpuDriver {
    const NAME: &'static str = "virtio-gpu";
    const DEVICE_ID: u16 = 16;
    const REQUIRED: Features = Features::empty();
    const OPTIONAL: Features =
        Features::EVENT_IDX.union(Features::RING_RESET).union(Features::from_bits_retain(F_EDID));
    const ON_CONFIG_CHANGE: Option<fn()> = Some(display::on_config_change);
    type Config = GpuConfig;
    type Buffers = DmaChain<super::hal::KernelHal, 2>;

    fn queues(_: &GpuConfig, _: Features, _: &QueueLimits) -> Vec<QueueSpec> {
        [CONTROL_QUEUE, CURSOR_QUEUE]
            .into_iter()
            .map(|index| QueueSpec {
                index,
                size: if index == CURSOR_QUEUE { CURSOR_QUEUE_SIZE } else { QUEUE_SIZE },
                indirect_max: 0,
                interrupt: QueueInterrupt::Polled,
                // Strict: the used length says how much of a response to
                // decode, so a device claiming more than the response buffer
                // is lying about the response itself; the queue breaks
                // rather than decode garbage.
                used_len: UsedLenPolicy::Strict,
            })
            .collect()
    }
}

/// What the driver takes from `struct virtio_gpu_config` (§5.7.4).
struct GpuConfig {
    num_scanouts: u32,
}

impl DeviceConfig for GpuConfig {
    fn read(fields: &ConfigFields<'_>, _: Features) -> Result<Self, BringUpError> {
        const NUM_SCANOUTS: usize = 8;
        let num_scanouts = fields.u32(NUM_SCANOUTS)?;
        // §5.7.4: at least 1, at most 16 (VIRTIO_GPU_MAX_SCANOUTS).
        if !(1..=16).contains(&num_scanouts) {
            return Err(BringUpError::BadConfig("num_scanouts outside 1..=16"));
        }
        Ok(Self { num_scanouts })
    }
}

/// Why the GPU could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDeviceError {
    /// The device answered with an error, or broke the protocol.
    Device(GpuError),
    /// The device did not answer in time; the driver stopped using it.
    Timeout,
    /// The control queue broke (a protocol violation by the device).
    QueueBroken,
    /// No room in the control queue for the batch.
    QueueFull,
    /// A rectangle outside the framebuffer, or an empty one.
    BadRect,
    /// An empty batch, or more commands than one batch may hold.
    InvalidBatch,
    /// No DMA memory for a framebuffer or command page.
    OutOfMemory,
    /// The scanout has no display connected (GET_DISPLAY_INFO says so).
    ScanoutDisabled,
    /// A mode of zero size or larger than the driver accepts (8192x8192).
    BadMode,
    /// Frames in flight outside 2..=[`MAX_FRAMES_IN_FLIGHT`].
    BadDepth,
}

/// A scanout and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scanout {
    /// Its index (`scanout_id`).
    pub id: u32,
    /// Its mode, at (0, 0).
    pub rect: Rect,
}

/// A virtio-gpu device.
pub struct GpuDevice {
    control: SpinLock<Control>,
    cursor: SpinLock<cursor::CursorQueue>,
    is_broken: AtomicBool,
    next_fence: AtomicU64,
    next_resource: AtomicU32,
    num_scanouts: u32,
    has_edid: bool,
    /// The first enabled scanout, updated on a display change.
    scanout: SpinLock<Scanout>,
    /// Transport, owned for the device's lifetime.
    virtio: VirtioDevice,
}

static DEVICE: spin::Once<Option<GpuDevice>> = spin::Once::new();

/// Finds and starts the first virtio-gpu; later calls return it.
pub fn init() -> Option<&'static GpuDevice> {
    DEVICE
        .call_once(|| match GpuDevice::probe() {
            Ok(device) => {
                let Scanout { id, rect } = device.scanout();
                log::info!("virtio-gpu: scanout {id} is {}x{}", rect.width, rect.height);
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
        let Running { device: virtio, config, mut queues, features } =
            bringup::probe::<GpuDriver>()?;
        let cursor_queue = queues.pop().expect("two queues planned");
        let Queue { ring, notifier, .. } = queues.pop().expect("two queues planned");
        let pages: Result<Vec<_>, _> = (0..POOL_PAGES + cursor::PAGES)
            .map(|_| Dma::new(super::hal::KernelHal, 1).map(DmaChain::new))
            .collect();
        let Ok(mut pages) = pages else {
            let rings = alloc::vec![ring, cursor_queue.ring];
            return Err(virtio.fail(rings, BringUpError::Driver("no DMA memory")));
        };
        let cursor = cursor::CursorQueue::new(cursor_queue, pages.split_off(POOL_PAGES));
        let device = Self {
            control: SpinLock::new(Control {
                queue: ring,
                notifier,
                pages,
                answered: Vec::new(),
                next_sequence: 1,
            }),
            cursor: SpinLock::new(cursor),
            is_broken: AtomicBool::new(false),
            next_fence: AtomicU64::new(1),
            next_resource: AtomicU32::new(1),
            num_scanouts: config.num_scanouts,
            has_edid: features.bits() & F_EDID != 0,
            scanout: SpinLock::new(Scanout::default()),
            virtio,
        };
        match device.find_scanout() {
            Ok(scanout) => {
                *device.scanout.lock() = scanout;
                Ok(device)
            }
            Err(why) => Err(device.abandon(why)),
        }
    }

    /// Every scanout the device reports (§5.7.6.8, GET_DISPLAY_INFO).
    ///
    /// # Errors
    /// The command's error.
    pub fn display_info(&self) -> Result<Vec<protocol::Display>, GpuDeviceError> {
        let info = self.execute(&protocol::GetDisplayInfo, false)?;
        Ok(info.0.iter().take(self.num_scanouts as usize).copied().collect())
    }

    /// The first enabled scanout, with a mode the driver accepts.
    fn find_scanout(&self) -> Result<Scanout, &'static str> {
        let displays = self.display_info().map_err(|_| "no display info")?;
        let (id, display) =
            displays.iter().enumerate().find(|(_, d)| d.is_enabled).ok_or("no enabled scanout")?;
        check_mode(display.rect).map_err(|_| "implausible display size")?;
        Ok(Scanout { id: id as u32, rect: Rect { x: 0, y: 0, ..display.rect } })
    }

    /// Asks the device again which scanout is enabled and at what mode
    /// (after a display-change event): the new scanout, or why it is unusable.
    ///
    /// # Errors
    /// [`GpuDeviceError::ScanoutDisabled`] with no enabled scanout,
    /// [`GpuDeviceError::BadMode`] for an implausible mode.
    pub fn refresh_scanout(&self) -> Result<Scanout, GpuDeviceError> {
        let displays = self.display_info()?;
        let (id, display) = displays
            .iter()
            .enumerate()
            .find(|(_, d)| d.is_enabled)
            .ok_or(GpuDeviceError::ScanoutDisabled)?;
        check_mode(display.rect)?;
        let scanout = Scanout { id: id as u32, rect: Rect { x: 0, y: 0, ..display.rect } };
        *self.scanout.lock() = scanout;
        Ok(scanout)
    }

    /// The EDID of `scanout` and its preferred mode, when the device offers
    /// `VIRTIO_GPU_F_EDID`.
    ///
    /// # Errors
    /// [`GpuDeviceError::Device`] when unsupported or refused.
    pub fn edid(&self, scanout: u32) -> Result<protocol::Edid, GpuDeviceError> {
        if !self.has_edid {
            return Err(GpuDeviceError::Device(GpuError::Response(0)));
        }
        self.execute(&protocol::GetEdid { scanout }, false)
    }

    /// Whether GET_EDID was negotiated.
    pub fn has_edid(&self) -> bool {
        self.has_edid
    }

    /// Hands a device that failed after DRIVER_OK back to bring-up's
    /// failure path, with its queues (and whatever the device still holds in
    /// them). Only before the device is published.
    fn abandon(self, why: &'static str) -> Failed {
        let Self { control, cursor, virtio, .. } = self;
        let queue = control.into_inner().queue;
        let cursor = cursor.into_inner().into_ring();
        virtio.fail(alloc::vec![queue, cursor], BringUpError::Driver(why))
    }

    /// The scanout the driver shows frames on, and its mode.
    pub fn scanout(&self) -> Scanout {
        *self.scanout.lock()
    }

    /// The scanout's mode.
    pub fn display(&self) -> Rect {
        self.scanout().rect
    }

    /// Control-queue counters: commands, kicks, full barriers.
    pub fn queue_stats(&self) -> vireo_virtio::QueueStats {
        self.control.lock().queue.stats()
    }

    /// Fences handed out so far.
    pub fn fences_used(&self) -> u64 {
        self.next_fence.load(Ordering::Relaxed) - 1
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
        fenced: bool,
    ) -> Result<R::Response, GpuDeviceError> {
        let batch = self.submit(&[request as &dyn EncodeRequest], fenced)?;
        let mut response = None;
        self.wait(batch, &mut |_, bytes, written, fence| {
            protocol::check_header(bytes, written, R::Response::TYPE, fence)?;
            response = Some(R::Response::decode(bytes, written)?);
            Ok(())
        })?;
        response.ok_or(GpuDeviceError::QueueBroken)
    }
}

/// A mode the driver can show: non-empty, at most 8192 x 8192.
fn check_mode(rect: Rect) -> Result<(), GpuDeviceError> {
    if rect.is_empty() || rect.width > 8192 || rect.height > 8192 {
        return Err(GpuDeviceError::BadMode);
    }
    Ok(())
}
