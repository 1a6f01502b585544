//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's `PerCpu` block is allocated once and never freed; its address
//! is written to `IA32_GS_BASE` (vireo has no user mode, so GS is never
//! swapped). The hot fields sit at fixed offsets and are read and updated by
//! single `gs:`-relative instructions: an instruction cannot be split by an
//! interrupt or a migration, so "read my CPU's counter, then update my CPU's
//! counter" can never straddle two CPUs. Only the owning CPU writes these
//! fields; other CPUs may read them (counters) with plain loads, which are
//! atomic for aligned 8-byte values on x86.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The most CPUs vireo brings up.
pub const MAX_CPUS: usize = 64;

/// Per-CPU event counters, cheap to bump (one unlocked `inc gs:[..]`) and
/// read remotely as a snapshot.
#[repr(C)]
pub struct CpuCounters {
    /// Thread switches performed on this CPU.
    pub context_switches: AtomicU64,
    /// Local timer interrupts taken.
    pub timer_ticks: AtomicU64,
    /// IPIs this CPU sent.
    pub ipis_sent: AtomicU64,
    /// IPIs this CPU received.
    pub ipis_received: AtomicU64,
    /// Reschedules deferred because a `PreemptGuard` was held.
    pub preemptions_deferred: AtomicU64,
    /// Reschedules performed when the last guard dropped.
    pub deferred_reschedules_run: AtomicU64,
    /// Threads this CPU stole from another CPU's run queue.
    pub threads_stolen: AtomicU64,
    /// TLB shootdown requests served.
    pub tlb_shootdowns: AtomicU64,
    /// Times the idle loop halted the CPU.
    pub idle_halts: AtomicU64,
}

/// A copy of one CPU's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CounterSnapshot {
    pub context_switches: u64,
    pub timer_ticks: u64,
    pub ipis_sent: u64,
    pub ipis_received: u64,
    pub preemptions_deferred: u64,
    pub deferred_reschedules_run: u64,
    pub threads_stolen: u64,
    pub tlb_shootdowns: u64,
    pub idle_halts: u64,
}

impl CpuCounters {
    const fn new() -> Self {
        Self {
            context_switches: AtomicU64::new(0),
            timer_ticks: AtomicU64::new(0),
            ipis_sent: AtomicU64::new(0),
            ipis_received: AtomicU64::new(0),
            preemptions_deferred: AtomicU64::new(0),
            deferred_reschedules_run: AtomicU64::new(0),
            threads_stolen: AtomicU64::new(0),
            tlb_shootdowns: AtomicU64::new(0),
            idle_halts: AtomicU64::new(0),
        }
    }

    /// Reads every counter (each individually atomic).
    pub fn snapshot(&self) -> CounterSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CounterSnapshot {
            context_switches: read(&self.context_switches),
            timer_ticks: read(&self.timer_ticks),
            ipis_sent: read(&self.ipis_sent),
            ipis_received: read(&self.ipis_received),
            preemptions_deferred: read(&self.preemptions_deferred),
            deferred_reschedules_run: read(&self.deferred_reschedules_run),
            threads_stolen: read(&self.threads_stolen),
            tlb_shootdowns: read(&self.tlb_shootdowns),
            idle_halts: read(&self.idle_halts),
        }
    }
}

/// One CPU's private block. `repr(C)` keeps the `gs:` offsets below fixed.
#[repr(C)]
pub struct PerCpu {
    /// Points at this block, so `gs:0` yields a normal pointer.
    self_pointer: AtomicPtr<PerCpu>,
    /// Dense CPU index, 0 for the boot CPU.
    pub cpu_id: u32,
    /// The local APIC id.
    pub apic_id: AtomicU32,
    /// Nesting depth of preemption-disabling sections; 0 = preemptible.
    preempt_count: AtomicU32,
    /// Non-zero when this CPU should reschedule at the next chance.
    need_resched: AtomicU32,
    /// Nesting depth of interrupt handlers running on this CPU.
    irq_depth: AtomicU32,
    _pad: u32,
    /// The running thread (an `Arc<Thread>` raw pointer owned by the
    /// scheduler), null before the scheduler starts.
    pub(crate) current_thread: AtomicUsize,
    /// Event counters.
    pub counters: CpuCounters,
}

macro_rules! gs_offset {
    ($field:ident) => {
        core::mem::offset_of!(PerCpu, $field)
    };
}

impl PerCpu {
    const fn new(cpu_id: u32) -> Self {
        Self {
            self_pointer: AtomicPtr::new(core::ptr::null_mut()),
            cpu_id,
            apic_id: AtomicU32::new(0),
            preempt_count: AtomicU32::new(0),
            need_resched: AtomicU32::new(0),
            irq_depth: AtomicU32::new(0),
            _pad: 0,
            current_thread: AtomicUsize::new(0),
            counters: CpuCounters::new(),
        }
    }
}

static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The boot CPU's block is static, so GS works from the first instructions
/// of `kernel_entry`, before the heap exists (the heap's lock uses it).
static BOOT_CPU_BLOCK: PerCpu = PerCpu::new(0);

/// Makes `block` findable by `cpu()` and counted by `cpu_count()`.
pub fn publish(block: &'static PerCpu) {
    let pointer = core::ptr::from_ref(block).cast_mut();
    block.self_pointer.store(pointer, Ordering::Relaxed);
    // Release: a CPU that finds the pointer sees the initialized block.
    CPUS[block.cpu_id as usize].store(pointer, Ordering::Release);
    CPU_COUNT.fetch_max(block.cpu_id as usize + 1, Ordering::AcqRel);
}

/// Installs the boot CPU's static block; the first thing `kernel_entry` does.
pub fn init_boot_cpu() {
    publish(&BOOT_CPU_BLOCK);
    install(&BOOT_CPU_BLOCK);
}

/// Allocates the block of application processor `cpu_id` (published by
/// the AP itself once it runs, see `publish`).
pub fn allocate_ap(cpu_id: u32, apic_id: u32) -> &'static PerCpu {
    assert!((cpu_id as usize) < MAX_CPUS, "CPU id {cpu_id} beyond MAX_CPUS");
    let block: &'static PerCpu =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(PerCpu::new(cpu_id)));
    block.apic_id.store(apic_id, Ordering::Relaxed);
    block
}

/// Points this CPU's GS base at `block`.
pub fn install(block: &'static PerCpu) {
    let address = x86_64::VirtAddr::from_ptr(block);
    x86_64::registers::model_specific::GsBase::write(address);
}

/// This CPU's block.
pub fn this_cpu() -> &'static PerCpu {
    let pointer: *const PerCpu;
    // SAFETY: gs:0 holds the self pointer of this CPU's block, installed
    // before any caller runs; the block lives forever.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) pointer, options(nostack, readonly, preserves_flags));
        &*pointer
    }
}

/// This CPU's dense id (0 for the boot CPU). Callers that act on the answer
/// must hold a `PreemptGuard`, or the thread may have moved since.
pub fn cpu_id() -> u32 {
    let id: u32;
    // SAFETY: one load from this CPU's block (see `this_cpu`).
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) id, off = const gs_offset!(cpu_id),
                         options(nostack, readonly, preserves_flags));
    }
    id
}

/// CPU `cpu_id`'s block, if that CPU was registered.
pub fn cpu(cpu_id: usize) -> Option<&'static PerCpu> {
    let pointer = CPUS.get(cpu_id)?.load(Ordering::Acquire);
    // SAFETY: registered blocks are leaked boxes, valid forever.
    unsafe { pointer.as_ref() }
}

/// Number of CPUs registered so far (ids are dense from 0).
pub fn cpu_count() -> usize {
    CPU_COUNT.load(Ordering::Acquire)
}

/// Every registered CPU's block.
pub fn all_cpus() -> impl Iterator<Item = &'static PerCpu> {
    (0..cpu_count()).filter_map(cpu)
}

// The fields below are touched by single gs-relative instructions. The asm
// blocks are not `nomem`, so they are compiler barriers too: the compiler
// cannot move memory accesses of a critical section across them. No CPU
// fence is needed: only this CPU reads or writes these fields (interrupts
// on this CPU see its own stores in program order).

/// `inc dword gs:[field]`: one unlocked increment of this CPU's field.
macro_rules! gs_inc {
    ($field:ident) => {
        // SAFETY: one increment of a u32 field of this CPU's block, which
        // only this CPU writes.
        unsafe {
            core::arch::asm!("inc dword ptr gs:[{off}]", off = const gs_offset!($field), options(nostack))
        }
    };
}

/// `dec dword gs:[field]`, evaluating to whether the result is zero (ZF).
macro_rules! gs_dec_is_zero {
    ($field:ident) => {{
        let zero: u8;
        // SAFETY: one decrement of a u32 field of this CPU's block, which
        // only this CPU writes.
        unsafe {
            core::arch::asm!("dec dword ptr gs:[{off}]", "setz {zero}", off = const gs_offset!($field),
                             zero = out(reg_byte) zero, options(nostack));
        }
        zero != 0
    }};
}

/// `mov r32, gs:[field]`: one load of this CPU's field.
macro_rules! gs_read {
    ($field:ident) => {{
        let value: u32;
        // SAFETY: one load of a u32 field of this CPU's block.
        unsafe {
            core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) value, off = const gs_offset!($field),
                             options(nostack, preserves_flags));
        }
        value
    }};
}

/// Raises this CPU's preemption count by one.
#[inline(always)]
pub(crate) fn preempt_count_inc() {
    gs_inc!(preempt_count);
}

/// Lowers this CPU's preemption count; returns true when it reached zero.
#[inline(always)]
pub(crate) fn preempt_count_dec() -> bool {
    gs_dec_is_zero!(preempt_count)
}

/// This CPU's preemption count.
#[inline(always)]
pub fn preempt_count() -> u32 {
    gs_read!(preempt_count)
}

/// Marks this CPU as needing to reschedule.
#[inline(always)]
pub fn set_need_resched() {
    // SAFETY: one store to this CPU's block.
    unsafe {
        core::arch::asm!("mov dword ptr gs:[{off}], 1", off = const gs_offset!(need_resched), options(nostack, preserves_flags))
    };
}

/// Clears this CPU's reschedule request and returns whether it was set, in
/// one instruction (`xchg`), so a request from an interrupt is never lost.
#[inline(always)]
pub fn take_need_resched() -> bool {
    let mut flag: u32 = 0;
    // SAFETY: one exchange on this CPU's block.
    unsafe {
        core::arch::asm!("xchg dword ptr gs:[{off}], {flag:e}", off = const gs_offset!(need_resched),
                         flag = inout(reg) flag, options(nostack, preserves_flags));
    }
    flag != 0
}

/// Whether a reschedule is pending on this CPU.
#[inline(always)]
pub fn need_resched() -> bool {
    gs_read!(need_resched) != 0
}

/// Enters an interrupt handler.
#[inline(always)]
pub(crate) fn irq_enter() {
    gs_inc!(irq_depth);
}

/// Leaves an interrupt handler; returns true when no handler is active.
#[inline(always)]
pub(crate) fn irq_exit() -> bool {
    gs_dec_is_zero!(irq_depth)
}

/// Current interrupt nesting depth on this CPU.
pub fn irq_depth() -> u32 {
    gs_read!(irq_depth)
}

/// Bumps one of this CPU's counters with a single unlocked `inc`.
#[macro_export]
macro_rules! count_event {
    ($counter:ident) => {{
        const OFFSET: usize = core::mem::offset_of!($crate::arch::percpu::PerCpu, counters)
            + core::mem::offset_of!($crate::arch::percpu::CpuCounters, $counter);
        // SAFETY: one increment of a counter in this CPU's block; only this
        // CPU writes it, remote readers use aligned atomic loads.
        unsafe { core::arch::asm!("inc qword ptr gs:[{off}]", off = const OFFSET, options(nostack)) };
    }};
}
