//! Interrupt and exception entry: 256 stubs, one IDT, one Rust dispatcher.
//!
//! Every vector enters on an IST stack (the red zone rule, see `gdt`). Two
//! entry paths:
//! - *Moving* (most vectors): the stub copies the CPU's frame from the IST
//!   stack onto the interrupted stack, below its 128-byte red zone, and
//!   continues there. The IST stack is then free again, so handlers may nest
//!   (an exception inside an IRQ handler) and may later switch threads.
//! - *Staying* (NMI, #DF, #MC, #PF): these run on their own IST stack, since
//!   the interrupted stack may be the very thing that is broken.
//!
//! Both paths save every general register and the full FPU/SSE state
//! (`fxsave64`) before calling Rust, because interrupted code may be in the
//! middle of using any of them.

use crate::arch::percpu;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Saved state of the interrupted code, as the entry stubs lay it out.
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector number the stub pushed.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Vectors that stay on their own IST stack instead of moving.
pub const NMI_VECTOR: u8 = 2;
/// Double fault.
pub const DOUBLE_FAULT_VECTOR: u8 = 8;
/// Page fault.
pub const PAGE_FAULT_VECTOR: u8 = 14;
/// Machine check.
pub const MACHINE_CHECK_VECTOR: u8 = 18;

// The stub table: 256 stubs of 16 bytes each. Vectors where the CPU pushes
// an error code (8, 10-14, 17, 21, 29, 30) skip the dummy push.
core::arch::global_asm!(
    r#"
    .section .text
    .p2align 4
    .global vireo_interrupt_stubs
vireo_interrupt_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    .if (vector == 2) || (vector == 8) || (vector == 14) || (vector == 18)
    jmp vireo_interrupt_stay
    .else
    jmp vireo_interrupt_move
    .endif
    .set vector, vector + 1
    .endr

    /* Frame on the IST stack: vector, error, rip, cs, rflags, rsp, ss. */
vireo_interrupt_move:
    pushq %rax
    pushq %rcx
    pushq %rsi
    pushq %rdi
    cld
    /* New frame: below the interrupted red zone, 16-byte aligned, room for
       the 4 scratch registers plus the 7-word frame. */
    movq 72(%rsp), %rdi
    subq $128, %rdi
    andq $~15, %rdi
    subq $88, %rdi
    movq %rsp, %rsi
    movl $11, %ecx
    rep movsq
    leaq -88(%rdi), %rsp
    popq %rdi
    popq %rsi
    popq %rcx
    popq %rax
vireo_interrupt_stay:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rbp
    subq $512, %rsp
    andq $~15, %rsp
    fxsave64 (%rsp)
    movq %rbp, %rdi
    cld
    call vireo_interrupt_dispatch
    fxrstor64 (%rsp)
    movq %rbp, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static vireo_interrupt_stubs: [u8; 256 * 16];
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl IdtEntry {
    const INTERRUPT_GATE_PRESENT: u8 = 0x8e;

    fn new(handler: u64, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: 0x08, // kernel code, see gdt
            ist,
            type_attributes: Self::INTERRUPT_GATE_PRESENT,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([IdtEntry; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

fn ist_for(vector: u8) -> u8 {
    use super::gdt::ist;
    match vector {
        NMI_VECTOR => ist::NMI,
        DOUBLE_FAULT_VECTOR => ist::DOUBLE_FAULT,
        MACHINE_CHECK_VECTOR => ist::MACHINE_CHECK,
        PAGE_FAULT_VECTOR => ist::PAGE_FAULT,
        _ => ist::GENERAL,
    }
}

/// Loads the (shared) IDT on this CPU. Its IST slots must be set up first.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        let stubs = &raw const vireo_interrupt_stubs as u64;
        Idt(core::array::from_fn(|vector| {
            IdtEntry::new(stubs + vector as u64 * 16, ist_for(vector as u8))
        }))
    });
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT is 'static and every entry points at a stub above,
    // with the kernel code selector and a valid IST slot.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// A handler for a device interrupt vector (32..=255).
pub type IrqHandler = fn(&mut InterruptFrame);

/// First vector available to devices; 0..32 are CPU exceptions.
pub const FIRST_IRQ_VECTOR: u8 = 32;

static IRQ_HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static UNHANDLED_IRQS: AtomicUsize = AtomicUsize::new(0);

/// Why a handler could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqError {
    /// Vectors below 32 are exceptions.
    ReservedVector(u8),
    /// Another handler owns the vector.
    InUse(u8),
    /// No run of free device vectors is long enough.
    NoFreeVectors,
}

/// Device vectors handed out by `allocate_irq_vectors`: above the legacy
/// PIC range, below the system vectors (timer, IPIs) at 0xe0 and up.
const DEVICE_VECTORS: core::ops::Range<u8> = 0x60..0xe0;

/// Finds `count` consecutive free device vectors, installs `handler` on all
/// of them and returns the first. The handler tells them apart by
/// `frame.vector`.
///
/// # Errors
/// [`IrqError::NoFreeVectors`] when no such run is free.
pub fn allocate_irq_vectors(count: u8, handler: IrqHandler) -> Result<u8, IrqError> {
    let last_start = DEVICE_VECTORS.end.checked_sub(count).ok_or(IrqError::NoFreeVectors)?;
    'search: for first in DEVICE_VECTORS.start..=last_start {
        for offset in 0..count {
            if register_irq(first + offset, handler).is_err() {
                // Taken meanwhile or before: undo our part of this run.
                for undo in 0..offset {
                    unregister_irq(first + undo);
                }
                continue 'search;
            }
        }
        return Ok(first);
    }
    Err(IrqError::NoFreeVectors)
}

/// Installs `handler` for `vector`.
///
/// # Errors
/// [`IrqError`] if the vector is an exception vector or already taken.
pub fn register_irq(vector: u8, handler: IrqHandler) -> Result<(), IrqError> {
    if vector < FIRST_IRQ_VECTOR {
        return Err(IrqError::ReservedVector(vector));
    }
    IRQ_HANDLERS[usize::from(vector)]
        .compare_exchange(0, handler as usize, Ordering::AcqRel, Ordering::Acquire)
        .map(drop)
        .map_err(|_| IrqError::InUse(vector))
}

/// Removes the handler for `vector`.
pub fn unregister_irq(vector: u8) {
    IRQ_HANDLERS[usize::from(vector)].store(0, Ordering::Release);
}

/// Interrupts that arrived with no handler installed.
pub fn unhandled_irq_count() -> usize {
    UNHANDLED_IRQS.load(Ordering::Relaxed)
}

#[unsafe(no_mangle)]
extern "C" fn vireo_interrupt_dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    if vector < FIRST_IRQ_VECTOR {
        super::exceptions::handle(frame);
        return;
    }
    percpu::irq_enter();
    let handler = IRQ_HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    if handler == 0 {
        UNHANDLED_IRQS.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: only `IrqHandler` function pointers are stored (register_irq).
        let handler: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(handler) };
        handler(frame);
    }
    // Preempt only on the way out of the outermost handler: the frame is on
    // the interrupted thread's own stack (the moving entry path), so
    // switching threads here is a normal switch of that thread. With
    // preemption disabled, the last `PreemptGuard` reschedules instead.
    if percpu::irq_exit() && percpu::need_resched() {
        if percpu::preempt_count() == 0 {
            super::upcalls::reschedule();
        } else {
            crate::count_event!(preemptions_deferred);
        }
    }
}
