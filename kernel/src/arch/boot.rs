//! PVH entry: from QEMU's 32-bit protected-mode handoff to Rust in long mode.
//!
//! QEMU's `-kernel` finds the entry point through a Xen ELF note of type
//! `XEN_ELFNOTE_PHYS32_ENTRY` (18) and jumps there in 32-bit protected mode,
//! paging off, with the physical address of the `hvm_start_info` in `ebx`.
//! The stub below:
//! 1. records the TSC (the boot clock's zero) and zeroes `.bss`;
//! 2. builds boot page tables: physical 0..4 GiB mapped with 2 MiB pages at
//!    both 0 (identity, to survive the switch) and the direct map
//!    `HHDM_BASE`, and physical 0..1 GiB at `KERNEL_VMA` for the kernel image;
//! 3. enables PAE, SSE (the precompiled `core` uses it), NX, long mode and
//!    paging, then far-jumps to 64-bit code and on to the higher half;
//! 4. calls `kernel_entry(start_info_phys, boot_tsc)` on the boot stack.
//!
//! Memory management later replaces the identity and direct maps with one
//! that covers only RAM (see `mm::paging`).

core::arch::global_asm!(
    r#"
    .set KERNEL_VMA, 0xffffffff80000000

    .section .note.Xen, "a"
    .p2align 2
    .long 4                       /* name size: "Xen\0" */
    .long 8                       /* descriptor size */
    .long 18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32 - KERNEL_VMA
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    rdtsc
    movl %eax, %esi               /* boot TSC, low half */
    movl %edx, %ebp               /* boot TSC, high half */

    /* Zero .bss: it holds the boot page tables and stack. */
    cld
    movl $(__bss_start - KERNEL_VMA), %edi
    movl $(__bss_end - KERNEL_VMA), %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* Four page directories mapping physical 0..4 GiB with 2 MiB pages. */
    movl $(boot_pd - KERNEL_VMA), %edi
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax               /* present | writable | huge */
    movl %eax, (%edi, %ecx, 8)
    movl %ecx, %eax
    shrl $11, %eax
    movl %eax, 4(%edi, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    /* Low PDPT: four entries, one per page directory. */
    movl $(boot_pdpt_low - KERNEL_VMA), %edi
    movl $(boot_pd - KERNEL_VMA + 3), %eax
    movl %eax, 0(%edi)
    addl $4096, %eax
    movl %eax, 8(%edi)
    addl $4096, %eax
    movl %eax, 16(%edi)
    addl $4096, %eax
    movl %eax, 24(%edi)

    /* High PDPT: entry 510 (KERNEL_VMA) maps physical 0..1 GiB. */
    movl $(boot_pd - KERNEL_VMA + 3), %eax
    movl %eax, (boot_pdpt_high - KERNEL_VMA + 510 * 8)

    /* PML4: identity (0), direct map (256), kernel image (511). */
    movl $(boot_pdpt_low - KERNEL_VMA + 3), %eax
    movl %eax, (boot_pml4 - KERNEL_VMA)
    movl %eax, (boot_pml4 - KERNEL_VMA + 256 * 8)
    movl $(boot_pdpt_high - KERNEL_VMA + 3), %eax
    movl %eax, (boot_pml4 - KERNEL_VMA + 511 * 8)

    /* CR4: PAE (5), PGE (7), OSFXSR (9), OSXMMEXCPT (10). */
    movl %cr4, %eax
    orl ${cr4}, %eax
    movl %eax, %cr4

    movl $(boot_pml4 - KERNEL_VMA), %eax
    movl %eax, %cr3

    /* EFER: LME (8) and NXE (11). */
    movl ${efer_msr}, %ecx
    rdmsr
    orl ${efer}, %eax
    wrmsr

    /* CR0: PG (31), WP (16), MP (1); clear EM (2) so SSE works. */
    movl %cr0, %eax
    andl $~{cr0_em}, %eax
    orl ${cr0}, %eax
    movl %eax, %cr0

    lgdt (boot_gdt_pointer - KERNEL_VMA)
    ljmp $0x08, $(long_mode_low - KERNEL_VMA)

    .code64
long_mode_low:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabs $long_mode_high, %rax
    jmp *%rax

long_mode_high:
    movabs $boot_stack_top, %rsp
    xorl %eax, %eax
    pushq %rax                    /* a zero return address ends stack walks */
    movl %ebx, %edi               /* start_info_phys (zero-extended) */
    shlq $32, %rbp
    movl %esi, %esi
    orq %rbp, %rsi                /* boot_tsc */
    xorl %ebp, %ebp
    movabs $kernel_entry, %rax
    jmp *%rax

    .section .rodata
    .p2align 3
boot_gdt:
    .quad 0
    .quad {gdt_code}              /* 0x08: 64-bit code */
    .quad {gdt_data}              /* 0x10: data */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KERNEL_VMA

    .section .bss
    .p2align 12
    .global boot_pml4
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096
    .p2align 4
boot_stack:     .skip 64 * 1024
boot_stack_top:
    "#,
    cr4 = const long_mode::CR4_FLAGS,
    efer_msr = const long_mode::EFER_MSR,
    efer = const long_mode::EFER_FLAGS,
    cr0 = const long_mode::CR0_FLAGS,
    cr0_em = const long_mode::CR0_EM,
    gdt_code = const long_mode::GDT_CODE64,
    gdt_data = const long_mode::GDT_DATA,
    options(att_syntax)
);

use super::long_mode;
