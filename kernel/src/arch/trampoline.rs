//! The application-processor start-up trampoline.
//!
//! An AP starts in 16-bit real mode at `vector * 4096` after the STARTUP
//! IPI. This code is copied to `TRAMPOLINE_PHYS` (below 1 MiB) and goes
//! straight from real mode to long mode (PAE, EFER.LME and CR0.PG|PE set
//! together, then a far jump to a 64-bit code segment), using page tables
//! that identity-map the trampoline page and share the kernel's upper half.
//! It then jumps to the 64-bit entry with the stack and argument the boot
//! CPU wrote into the trampoline's parameter block.

/// Where the trampoline runs: page 8, i.e. STARTUP vector 0x08.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

core::arch::global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .global vireo_trampoline_start, vireo_trampoline_end
    .set TRAMPOLINE, 0x8000
    .code16
vireo_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (trampoline_gdt_pointer - vireo_trampoline_start)
    /* CR4: PAE, PGE, OSFXSR, OSXMMEXCPT (SSE for the precompiled core). */
    movl ${cr4}, %eax
    movl %eax, %cr4
    movl (trampoline_cr3 - vireo_trampoline_start), %eax
    movl %eax, %cr3
    /* EFER: LME and NXE. */
    movl ${efer_msr}, %ecx
    rdmsr
    orl ${efer}, %eax
    wrmsr
    /* CR0: PG, WP, MP, PE; EM clear. */
    movl ${cr0}, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(TRAMPOLINE + trampoline_long_mode - vireo_trampoline_start)

    .code64
trampoline_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq (TRAMPOLINE + trampoline_stack - vireo_trampoline_start), %rsp
    movq (TRAMPOLINE + trampoline_argument - vireo_trampoline_start), %rdi
    movq (TRAMPOLINE + trampoline_entry - vireo_trampoline_start), %rax
    pushq $0
    jmp *%rax

    .p2align 3
trampoline_gdt:
    .quad 0
    .quad {gdt_code}              /* 0x08: 64-bit code */
    .quad {gdt_data}              /* 0x10: data */
trampoline_gdt_pointer:
    .word trampoline_gdt_pointer - trampoline_gdt - 1
    .long TRAMPOLINE + trampoline_gdt - vireo_trampoline_start
    .p2align 3
    .global vireo_trampoline_params
vireo_trampoline_params:
trampoline_cr3:      .quad 0
trampoline_stack:    .quad 0
trampoline_entry:    .quad 0
trampoline_argument: .quad 0
vireo_trampoline_end:
    .code64
    "#,
    cr4 = const super::long_mode::CR4_FLAGS,
    efer_msr = const super::long_mode::EFER_MSR,
    efer = const super::long_mode::EFER_FLAGS,
    cr0 = const super::long_mode::CR0_FLAGS,
    gdt_code = const super::long_mode::GDT_CODE64,
    gdt_data = const super::long_mode::GDT_DATA,
    options(att_syntax)
);

unsafe extern "C" {
    static vireo_trampoline_start: u8;
    static vireo_trampoline_end: u8;
    static vireo_trampoline_params: u8;
}

/// What the trampoline hands to the AP's 64-bit code.
#[repr(C)]
pub struct TrampolineParams {
    /// Physical address of the start-up PML4 (below 4 GiB).
    pub cr3: u64,
    /// Initial stack pointer (kernel virtual).
    pub stack_top: u64,
    /// 64-bit entry point: `extern "C" fn(argument: u64) -> !`.
    pub entry: u64,
    /// Passed in rdi.
    pub argument: u64,
}

/// Copies the trampoline to `TRAMPOLINE_PHYS`, through `target`, and fills
/// in its parameters.
///
/// # Safety
/// `target` must be a writable, page-aligned mapping of the page at
/// `TRAMPOLINE_PHYS`; no AP may be executing the trampoline, and that page
/// must be reserved for it (the frame allocator never hands out memory
/// below 1 MiB).
pub unsafe fn install(target: *mut u8, params: &TrampolineParams) {
    let start = &raw const vireo_trampoline_start;
    let len = &raw const vireo_trampoline_end as usize - start as usize;
    let params_offset = &raw const vireo_trampoline_params as usize - start as usize;
    // SAFETY: the caller maps and reserves the page; the code is under one
    // page (checked), the parameter block is 8-byte aligned inside it.
    unsafe {
        assert!(len <= 4096, "trampoline larger than a page");
        core::ptr::copy_nonoverlapping(start, target, len);
        target.add(params_offset).cast::<TrampolineParams>().write_volatile(TrampolineParams {
            cr3: params.cr3,
            stack_top: params.stack_top,
            entry: params.entry,
            argument: params.argument,
        });
    }
}
