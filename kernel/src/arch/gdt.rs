//! Per-CPU GDT and TSS, with the interrupt stack table (IST).
//!
//! The precompiled `core` uses the 128-byte red zone below `rsp`, so no
//! interrupt may push its frame onto the interrupted stack: every IDT vector
//! enters on an IST stack (see `interrupts`). Four vectors keep a stack of
//! their own because they can arrive at any moment, even mid-entry of
//! another vector: NMI, double fault, machine check and page fault (a page
//! fault can hit while the general stub is still copying its frame).

use core::cell::UnsafeCell;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based, as the IDT encodes them).
pub mod ist {
    /// Every vector without a slot of its own.
    pub const GENERAL: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Double fault.
    pub const DOUBLE_FAULT: u8 = 3;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 4;
    /// Page fault.
    pub const PAGE_FAULT: u8 = 5;
    /// How many slots are in use.
    pub const COUNT: usize = 5;
}

/// Bytes per IST stack.
pub const IST_STACK_BYTES: usize = 16 * 1024;

/// Stack memory for one CPU's IST slots, written by the CPU itself.
#[repr(C, align(16))]
pub struct IstStacks(UnsafeCell<[[u8; IST_STACK_BYTES]; ist::COUNT]>);

// SAFETY: the stacks are only ever used by the CPU that owns them, through
// the TSS; Rust code never reads or writes them.
unsafe impl Sync for IstStacks {}

impl IstStacks {
    /// Zeroed stacks (placed in `.bss` when static).
    pub const fn new() -> Self {
        Self(UnsafeCell::new([[0; IST_STACK_BYTES]; ist::COUNT]))
    }

    /// Zeroed stacks on the heap, built in place. `Box::new(Self::new())`
    /// may build the value on the caller's stack first: 80 KiB on a 64 KiB
    /// boot stack, whose overflow runs into the boot page tables just
    /// below it (it did, once inlining moved it into `smp::start_aps`).
    pub fn new_boxed() -> alloc::boxed::Box<Self> {
        let zeroed = alloc::boxed::Box::<Self>::new_zeroed();
        // SAFETY: all-zero bytes are a valid `IstStacks` (an array of bytes
        // in an `UnsafeCell`), exactly what `new` builds.
        unsafe { zeroed.assume_init() }
    }

    fn top(&self, slot: u8) -> VirtAddr {
        let base = self.0.get().cast::<u8>() as u64;
        VirtAddr::new(base + u64::from(slot) * IST_STACK_BYTES as u64)
    }
}

impl Default for IstStacks {
    fn default() -> Self {
        Self::new()
    }
}

/// One CPU's descriptor tables.
pub struct CpuTables {
    gdt: spin::Once<(GlobalDescriptorTable, Selectors)>,
    tss: TaskStateSegment,
}

#[derive(Clone, Copy)]
struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

impl CpuTables {
    /// Builds tables whose IST entries point into `stacks`.
    pub fn new(stacks: &'static IstStacks) -> Self {
        let mut tss = TaskStateSegment::new();
        for slot in 1..=ist::COUNT as u8 {
            // IST entries hold the stack top; slot N's stack is the Nth.
            tss.interrupt_stack_table[usize::from(slot - 1)] = stacks.top(slot);
        }
        Self { gdt: spin::Once::new(), tss }
    }

    /// Builds the GDT and loads GDT, segments and TSS on this CPU. The tables
    /// must live forever, since the CPU keeps pointers to them.
    pub fn load(&'static self) {
        let (gdt, selectors) = self.gdt.call_once(|| {
            let mut gdt = GlobalDescriptorTable::new();
            let code = gdt.append(Descriptor::kernel_code_segment());
            let data = gdt.append(Descriptor::kernel_data_segment());
            let tss = gdt.append(Descriptor::tss_segment(&self.tss));
            (gdt, Selectors { code, data, tss })
        });
        gdt.load();
        // SAFETY: the selectors index the GDT just loaded, which describes a
        // flat 64-bit code segment, a data segment and a valid, 'static TSS.
        unsafe {
            CS::set_reg(selectors.code);
            SS::set_reg(selectors.data);
            DS::set_reg(selectors.data);
            ES::set_reg(selectors.data);
            load_tss(selectors.tss);
        }
    }
}
