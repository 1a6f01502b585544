//! The vhost-user backend: features, config space, and the queue loop that
//! takes each request off the ring and either serves it honestly or hands
//! it to the lie the [`Planner`] picked.
//!
//! One worker thread serves every queue (the library's default), so the
//! per-request state below needs no locking beyond the backend's own mutex;
//! late completions and interrupt storms run on threads of their own.

use crate::config::BlkConfig;
use crate::config_change::{self, Flapper};
use crate::lies::{self, Ctx};
use crate::request::{Request, Segment};
use crate::scenario::{Planner, ProtocolLie, Scenario};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use vhost::vhost_user::Backend;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{ShutdownHandle, VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX,
};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

/// The largest ring QEMU may ask for (its `queue-size` property defaults
/// to 128).
const MAX_QUEUE_SIZE: usize = 1024;
/// Descriptors per request the device accepts: the queue size less header
/// and status, as QEMU's own virtio-blk reports.
const SEG_MAX: u32 = 126;

/// What the backend was started with.
pub struct Settings {
    pub image: Arc<File>,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub queues: usize,
    pub scenario: Scenario,
    pub late_ms: u64,
}

/// The device.
pub struct HostileBlk {
    settings: Settings,
    config: BlkConfig,
    event_idx: bool,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    planner: Planner,
    /// Requests held back on purpose, per queue: still the device's.
    pub(crate) held: Vec<Vec<u16>>,
    lies_told: u64,
    /// Closes the vhost-user connection (set once QEMU connected).
    hang_up: Arc<Mutex<Option<ShutdownHandle>>>,
    /// `generation-unsettled`: the flapping capacity and the channel to
    /// tell QEMU about it.
    flapper: Option<Arc<Flapper>>,
    backend_channel: Option<OwnedFd>,
}

impl HostileBlk {
    pub fn new(
        settings: Settings,
        planner: Planner,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
    ) -> Self {
        let honest = BlkConfig {
            capacity_sectors: settings.capacity_sectors,
            seg_max: SEG_MAX,
            blk_size_bytes: 512,
            num_queues: settings.queues as u16,
        };
        let config = settings.scenario.config_lie().map_or(honest, |lie| lie.apply(honest));
        if config != honest {
            log(format_args!("config lie: {:?} (honest: {:?})", config, honest));
        }
        let held = vec![Vec::new(); settings.queues];
        let flapper = (settings.scenario.protocol_lie() == Some(ProtocolLie::GenerationUnsettled))
            .then(|| Flapper::new(config.capacity_sectors));
        Self {
            flapper,
            backend_channel: None,
            settings,
            config,
            event_idx: false,
            mem,
            planner,
            held,
            lies_told: 0,
            hang_up: Arc::new(Mutex::new(None)),
        }
    }

    /// Where the connection's shutdown handle goes once QEMU connected.
    pub fn hang_up_slot(&self) -> Arc<Mutex<Option<ShutdownHandle>>> {
        self.hang_up.clone()
    }

    /// Closes the vhost-user socket: QEMU sees the device disconnect.
    pub(crate) fn hang_up(&self) {
        match self.hang_up.lock().expect("hang-up slot").as_ref() {
            Some(handle) => handle.shutdown(),
            None => log(format_args!("hang-up requested before QEMU connected")),
        }
    }

    pub fn summary(&self) -> String {
        format!("{} requests, {} lies told", self.planner.requests(), self.lies_told)
    }

    /// Takes every available request off `vring`. With EVENT_IDX, loops
    /// until re-enabling notifications finds nothing new (§2.7.10), so a
    /// request made available in between is never missed.
    fn drain(&mut self, queue: usize, vring: &VringRwLock) {
        loop {
            if self.event_idx {
                let _ = vring.disable_notification();
            }
            let mut served = 0;
            loop {
                let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(self.mem.memory());
                let Some(chain) = chain else { break };
                served += 1;
                let head = chain.head_index();
                let descriptors: Vec<(Segment, bool)> = chain
                    .map(|d| (Segment { addr: d.addr(), len: d.len() }, d.is_write_only()))
                    .collect();
                self.serve(queue, vring, head, &descriptors);
            }
            if !self.event_idx || !vring.enable_notification().unwrap_or(false) {
                break;
            }
            if served == 0 {
                // New requests are announced but none can be taken: the
                // available ring is unreadable (an index more than the
                // queue size ahead, say). Looping would hold the backend's
                // lock forever and hang QEMU's next vhost-user request (a
                // device reset) with the guest's vCPU inside it.
                let state = vring.get_ref();
                let ring = state.get_queue();
                let mem = self.mem.memory();
                log(format_args!(
                    "queue {queue}: available ring unreadable (avail.idx {:?}, next_avail {}, size {}); waiting for the next kick",
                    ring.avail_idx(&*mem, Ordering::Acquire).map(|w| w.0),
                    ring.next_avail(),
                    ring.size()
                ));
                break;
            }
        }
    }

    fn serve(
        &mut self,
        queue: usize,
        vring: &VringRwLock,
        head: u16,
        descriptors: &[(Segment, bool)],
    ) {
        let mem = self.mem.memory();
        let number = self.planner.requests();
        let lie = self.planner.next();
        let request = match Request::parse(&*mem, head, descriptors) {
            Ok(request) => request,
            Err(why) => {
                // The driver's fault, not a lie: complete it with nothing
                // written, as a careful device would.
                log(format_args!("queue {queue} head {head}: malformed request ({why:?})"));
                let _ = vring.add_used(head, 0);
                let _ = vring.signal_used_queue();
                return;
            }
        };
        let ctx = Ctx {
            mem: &mem,
            atomic: &self.mem,
            vring,
            queue,
            image: &self.settings.image,
            capacity_sectors: self.settings.capacity_sectors,
            read_only: self.settings.read_only,
            late_ms: self.settings.late_ms,
        };
        match lie {
            None => lies::honest(&ctx, &request),
            Some(lie) => {
                self.lies_told += 1;
                log(format_args!(
                    "lie {}: request {number} queue {queue} head {head} {}: {lie:?}",
                    self.lies_told,
                    describe(&request)
                ));
                let outcome = lies::tell(&ctx, &request, lie, &self.held[queue]);
                match outcome {
                    lies::Outcome::Done => {}
                    lies::Outcome::Held => self.held[queue].push(head),
                    lies::Outcome::HangUp => self.hang_up(),
                }
            }
        }
    }
}

fn describe(request: &Request) -> String {
    format!(
        "(type {} sector {} bytes {})",
        request.kind,
        request.sector,
        request.writable_bytes() - 1
    )
}

/// Backend log line (stderr; the runner keeps it beside the serial log).
pub fn log(args: std::fmt::Arguments) {
    eprintln!("hostile-blk: {args}");
}

impl VhostUserBackendMut for HostileBlk {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.settings.queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let mut bits = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_FLUSH,
        ]
        .iter()
        .fold(0u64, |all, &bit| all | 1 << bit);
        if self.settings.queues > 1 {
            bits |= 1 << VIRTIO_BLK_F_MQ;
        }
        if self.settings.read_only {
            bits |= 1 << VIRTIO_BLK_F_RO;
        }
        // Without PROTOCOL_FEATURES QEMU cannot ask for the config space.
        bits | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        log(format_args!("features acked: {features:#x}"));
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // QEMU 7.2's vhost-user-blk needs CONFIG (it fails realize without
        // GET_CONFIG) and MQ (GET_QUEUE_NUM, for num-queues > 1);
        // REPLY_ACK lets it check each memory-table update; BACKEND_REQ
        // gives the backend a channel to report config changes on.
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::BACKEND_REQ
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {
        if self.flapper.is_some() {
            self.backend_channel = config_change::find_backend_channel();
        }
    }

    /// Lets the library stop the queue worker when a connection ends (it
    /// joins the worker then), so a reconnection gets a fresh one.
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut config = self.config;
        if let Some(flapper) = &self.flapper {
            config.capacity_sectors = flapper.capacity_sectors.load(Ordering::Relaxed);
        }
        config.read(offset, size)
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        log(format_args!("memory table set (device start)"));
        // QEMU starts the device at DRIVER_OK with SET_FEATURES (the
        // driver's features) and then the memory table; it also sends a
        // SET_FEATURES of its own when it connects, so the memory table is
        // the first message that is surely the driver's device start.
        if self.settings.scenario.protocol_lie() == Some(ProtocolLie::RefuseFeatures) {
            log(format_args!("lie: refusing to start with the driver's features: hanging up"));
            self.hang_up();
            return Err(std::io::Error::other("features refused"));
        }
        if let (Some(flapper), Some(channel)) = (&self.flapper, self.backend_channel.take()) {
            log(format_args!("lie: capacity flaps from now on; config change every 2 ms"));
            flapper.start(channel);
        }
        self.mem = mem;
        Ok(())
    }

    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        log(format_args!("queue {queue_index} stopped (GET_VRING_BASE)"));
        // Only a reset after real I/O: QEMU also stops the device once
        // during the driver's probe, and the lie is about the reset path.
        if self.settings.scenario.protocol_lie() == Some(ProtocolLie::ResetNeverFinishes)
            && self.planner.past_honest_start()
        {
            log(format_args!("lie: never answering GET_VRING_BASE for queue {queue_index}"));
            loop {
                std::thread::park();
            }
        }
        // Requests held back stay unanswered: a stopped device drops them.
        if let Some(held) = self.held.get_mut(queue_index as usize) {
            held.clear();
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        // One worker serves every queue, so the event is the queue index.
        let queue = usize::from(device_event);
        if let Some(vring) = vrings.get(queue) {
            self.drain(queue, vring);
        }
        Ok(())
    }
}
