//! `hostile-blk`: a vhost-user virtio-blk device (VirtIO 1.2 §5.2) for
//! QEMU's `vhost-user-blk-pci`, serving a raw image file — honestly, or
//! lying to the guest in the way one `--scenario` says.
//!
//! QEMU hands the backend the guest memory, the virtqueues, the kick and
//! call eventfds and the config space, so the backend owns the used ring
//! and the interrupts and can misbehave exactly as a real device could.
//! The runner (`cargo xtask hostile`) starts it, waits for `--socket`,
//! boots QEMU against it and judges the guest's serial log; this process
//! logs every lie it tells to stderr.

mod config;
mod config_change;
mod device;
mod late;
mod lies;
mod request;
mod scenario;
mod used_ring;

use clap::{Parser, ValueEnum};
use device::{HostileBlk, Settings, log};
use scenario::{Planner, Scenario, Start};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

/// Connections a reconnecting scenario serves before it stops listening.
const MAX_CONNECTIONS: u32 = 4;

#[derive(Parser)]
#[command(name = "hostile-blk", about = "A vhost-user virtio-blk device that can lie")]
struct Cli {
    /// Print every scenario as `name<TAB>description<TAB>unreachable reason` and exit.
    #[arg(long)]
    list: bool,
    /// The vhost-user socket to listen on (QEMU connects to it).
    #[arg(long, required_unless_present = "list")]
    socket: Option<PathBuf>,
    /// The raw disk image to serve; its size is the capacity.
    #[arg(long, required_unless_present = "list")]
    image: Option<PathBuf>,
    /// Request queues the device offers (QEMU's num-queues must not exceed it).
    #[arg(long, default_value_t = 4)]
    queues: usize,
    /// Offer VIRTIO_BLK_F_RO and refuse writes.
    #[arg(long)]
    read_only: bool,
    /// What to lie about.
    #[arg(long, value_enum, default_value_t = Scenario::Honest)]
    scenario: Scenario,
    /// First request (counted over all queues from 0) a request lie may
    /// hit; without it, the first request after the process gets SIGUSR1.
    #[arg(long)]
    at: Option<u64>,
    /// Seed of every random choice (which requests, which lie).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Delay of the `late` completion.
    #[arg(long, default_value_t = 3000)]
    late_ms: u64,
}

fn main() {
    let cli = Cli::parse();
    if cli.list {
        for scenario in Scenario::value_variants() {
            let reason = scenario.unreachable_reason().unwrap_or("");
            println!("{}\t{}\t{reason}", scenario.name(), scenario.description());
        }
        return;
    }
    if let Err(error) = run(&cli) {
        log(format_args!("error: {error}"));
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let (Some(socket), Some(image_path)) = (&cli.socket, &cli.image) else {
        return Err("--socket and --image are required".into());
    };
    let image = File::options()
        .read(true)
        .write(!cli.read_only)
        .open(image_path)
        .map_err(|e| format!("cannot open {}: {e}", image_path.display()))?;
    let bytes = image.metadata().map_err(|e| e.to_string())?.len();
    let settings = Settings {
        image: Arc::new(image),
        capacity_sectors: bytes / 512,
        read_only: cli.read_only,
        queues: cli.queues.max(1),
        scenario: cli.scenario,
        late_ms: cli.late_ms,
    };
    let start = match cli.at {
        Some(at) => Start::At(at),
        None => {
            arm_on_sigusr1();
            Start::WhenArmed
        }
    };
    log(format_args!(
        "scenario {} (seed {}, lies from {}), {} sectors, {} queues{}",
        cli.scenario.name(),
        cli.seed,
        match start {
            Start::At(at) => format!("request {at}"),
            Start::WhenArmed => "SIGUSR1".into(),
        },
        settings.capacity_sectors,
        settings.queues,
        if cli.read_only { ", read-only" } else { "" }
    ));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let planner = Planner::new(cli.scenario, start, cli.seed);
    let backend = Arc::new(Mutex::new(HostileBlk::new(settings, planner, mem.clone())));
    let hang_up = backend.lock().expect("backend").hang_up_slot();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let mut listener =
        Listener::new(socket, true).map_err(|e| format!("cannot listen on {socket}: {e}"))?;
    log(format_args!("listening on {socket}"));
    for connection in 1.. {
        // A fresh daemon per connection: the library's handler keeps
        // per-connection state (owner, rings) that a reconnection must not see.
        let mut daemon = VhostUserDaemon::new("hostile-blk".into(), backend.clone(), mem.clone())
            .map_err(|e| format!("cannot create the daemon: {e}"))?;
        daemon.start(&mut listener).map_err(|e| format!("accept failed: {e}"))?;
        log(format_args!("QEMU connected (connection {connection})"));
        *hang_up.lock().expect("hang-up slot") = daemon.shutdown_handle();
        let ended = daemon.wait();
        log(format_args!(
            "connection {connection} closed ({}): {}",
            match &ended {
                Ok(()) => "cleanly".to_string(),
                Err(e) => e.to_string(),
            },
            backend.lock().expect("backend").summary()
        ));
        if !cli.scenario.reconnects() || connection == MAX_CONNECTIONS {
            break;
        }
        log(format_args!("waiting for QEMU to reconnect"));
    }
    Ok(())
}

/// SIGUSR1 arms the request lies ([`scenario::arm`]).
fn arm_on_sigusr1() {
    extern "C" fn on_signal(_: libc::c_int) {
        scenario::arm();
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; it lives for the whole program.
    unsafe {
        libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
    }
}
