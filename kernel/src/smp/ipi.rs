//! Inter-processor interrupts: reschedule, halt (on panic), and an echo
//! pair used to measure IPI round trips.

use crate::arch::interrupts::{self, InterruptFrame};
use crate::arch::percpu;
use crate::platform::apic::{self, lapic};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Vector of the echo request (answered with `ECHO_REPLY`).
pub const ECHO_REQUEST: u8 = apic::CALL_FUNCTION_IPI;
/// Vector of the echo reply.
pub const ECHO_REPLY: u8 = apic::CALL_FUNCTION_IPI + 1;

fn apic_id_of(cpu: u32) -> Option<u32> {
    percpu::cpu(cpu as usize).map(|block| block.apic_id.load(Ordering::Relaxed))
}

/// Sends `vector` to CPU `cpu`; false if no such CPU.
pub fn send(cpu: u32, vector: u8) -> bool {
    let Some(apic_id) = apic_id_of(cpu) else {
        return false;
    };
    crate::count_event!(ipis_sent);
    match lapic::send_ipi(apic_id, vector) {
        Ok(()) => true,
        Err(error) => {
            log::warn!("ipi: vector {vector:#x} to CPU {cpu} not sent: {error:?}");
            false
        }
    }
}

/// Asks `cpu` to reschedule (wakes it from idle).
pub fn send_reschedule(cpu: u32) {
    if cpu as usize >= super::online_cpus() {
        return;
    }
    send(cpu, apic::RESCHEDULE_IPI);
}

/// INIT to a CPU that is not running yet.
pub fn send_init(apic_id: u32) {
    if let Err(error) = lapic::send_init(apic_id) {
        log::warn!("ipi: INIT to APIC id {apic_id} not sent: {error:?}");
    }
}

/// STARTUP to a CPU, entering real mode at `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    if let Err(error) = lapic::send_startup(apic_id, page) {
        log::warn!("ipi: STARTUP to APIC id {apic_id} not sent: {error:?}");
    }
}

/// Stops every other CPU (NMI, so even CPUs with interrupts off stop).
pub fn halt_others() {
    if super::online_cpus() > 1 {
        // Best effort: this runs on the way down, there is no one to tell.
        let _ = lapic::send_nmi_all_but_self();
    }
}

fn on_reschedule(_: &mut InterruptFrame) {
    crate::count_event!(ipis_received);
    percpu::set_need_resched();
    lapic::eoi();
}

/// CPU that sent the last echo request (one echo in flight at a time).
static ECHO_REQUESTER: AtomicU32 = AtomicU32::new(0);
/// Echo replies received, on any CPU.
static ECHO_REPLIES: AtomicU64 = AtomicU64::new(0);

fn on_echo_request(_: &mut InterruptFrame) {
    crate::count_event!(ipis_received);
    lapic::eoi();
    send(ECHO_REQUESTER.load(Ordering::Acquire), ECHO_REPLY);
}

fn on_echo_reply(_: &mut InterruptFrame) {
    crate::count_event!(ipis_received);
    ECHO_REPLIES.fetch_add(1, Ordering::Release);
    lapic::eoi();
}

/// Sends an echo request to `cpu` and spins until the reply arrives.
/// Returns the round trip in TSC ticks, or None if `cpu` does not exist or
/// no reply came within 100 ms. Needs interrupts on (the reply is one).
pub fn echo_round_trip(cpu: u32) -> Option<u64> {
    let guard = crate::sync::PreemptGuard::new();
    if cpu == guard.cpu_id() {
        return None;
    }
    ECHO_REQUESTER.store(guard.cpu_id(), Ordering::Release);
    let before = ECHO_REPLIES.load(Ordering::Acquire);
    let start = crate::platform::time::rdtsc();
    if !send(cpu, ECHO_REQUEST) {
        return None;
    }
    let timeout = crate::platform::time::tsc_hz() / 10;
    while ECHO_REPLIES.load(Ordering::Acquire) == before {
        if crate::platform::time::rdtsc() - start > timeout {
            return None;
        }
        core::hint::spin_loop();
    }
    Some(crate::platform::time::rdtsc() - start)
}

/// Installs the IPI handlers (once, on the boot CPU: the IDT is shared).
pub fn init() {
    let handlers: [(u8, interrupts::IrqHandler); 4] = [
        (apic::RESCHEDULE_IPI, on_reschedule),
        (apic::TLB_SHOOTDOWN_IPI, super::tlb::on_shootdown_ipi),
        (ECHO_REQUEST, on_echo_request),
        (ECHO_REPLY, on_echo_reply),
    ];
    for (vector, handler) in handlers {
        interrupts::register_irq(vector, handler).expect("IPI vector taken");
    }
}
