//! The context switch, and the initial stack of a new thread.
//!
//! `vireo_switch_context(prev_rsp, next_rsp)` saves what the System V ABI
//! says a callee must preserve (rbx, rbp, r12-r15), plus RFLAGS (so each
//! thread keeps its own interrupt-enable state) and the full FPU/SSE state
//! with `fxsave64`. Strictly, the ABI makes the vector registers
//! caller-saved and only MXCSR/x87 control word callee-saved, but saving the
//! whole area costs little and keeps the rule simple: a thread's FPU state
//! is never seen by another. (A preempted thread's full register state is
//! also on its stack, saved by the interrupt entry stub.)

use super::thread::Thread;
use core::arch::global_asm;

global_asm!(
    r#"
    .section .text
    .global vireo_switch_context
vireo_switch_context:
    pushfq
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $512, %rsp
    fxsave64 (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fxrstor64 (%rsp)
    addq $512, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    popfq
    ret

    /* First code of every thread: r12 holds the Thread pointer. */
    .global vireo_thread_start
vireo_thread_start:
    andq $~15, %rsp
    movq %r12, %rdi
    call vireo_thread_entry
    ud2
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn vireo_switch_context(prev_rsp: *mut u64, next_rsp: u64);
    fn vireo_thread_start();
}

/// Switches from the thread whose stack pointer is saved to `prev_rsp` to
/// the thread whose saved stack pointer is `next_rsp`. Returns when some CPU
/// switches back to the caller.
///
/// # Safety
/// Interrupts must be off; `next_rsp` must come from a previous switch away
/// from a thread that is not running, or from [`initial_stack`]; `prev_rsp`
/// must stay valid until the thread is switched back in.
pub unsafe fn switch_context(prev_rsp: *mut u64, next_rsp: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { vireo_switch_context(prev_rsp, next_rsp) }
}

const FXSAVE_BYTES: usize = 512;
/// Default x87 control word (all exceptions masked, 64-bit precision).
const DEFAULT_FCW: u16 = 0x037f;
/// Default MXCSR (all SSE exceptions masked, round to nearest).
const DEFAULT_MXCSR: u32 = 0x1f80;

/// Lays out a new thread's stack so that the first switch to it "returns"
/// into `vireo_thread_start` with `thread` in r12 and interrupts off.
/// Returns the stack pointer to switch to.
///
/// # Safety
/// `stack_top` must be the 16-byte-aligned top of a mapped stack that no one
/// else uses, with room for the frame (about 600 bytes).
pub unsafe fn initial_stack(stack_top: u64, thread: *const Thread) -> u64 {
    let words_above_fx: [u64; 10] = [
        0,                                      // r15
        0,                                      // r14
        0,                                      // r13
        thread as u64,                          // r12
        0,                                      // rbx
        0,                                      // rbp
        0x2,                                    // rflags: IF off, reserved bit 1 set
        vireo_thread_start as *const () as u64, // return address of the switch
        0,                                      // a zero return address ends traces
        0,                                      // padding: keeps the fxsave area 16-aligned
    ];
    let rsp = stack_top - (words_above_fx.len() * 8 + FXSAVE_BYTES) as u64;
    // SAFETY: the caller gives us the stack; all writes fall inside its top
    // 592 bytes. 10 words + 512 bytes keep the fxsave area 16-byte aligned,
    // as fxrstor64 requires.
    unsafe {
        let fx = rsp as *mut u8;
        fx.write_bytes(0, FXSAVE_BYTES);
        fx.cast::<u16>().write(DEFAULT_FCW);
        fx.add(24).cast::<u32>().write(DEFAULT_MXCSR);
        let words = (rsp + FXSAVE_BYTES as u64) as *mut u64;
        for (index, word) in words_above_fx.iter().enumerate() {
            words.add(index).write(*word);
        }
    }
    rsp
}
