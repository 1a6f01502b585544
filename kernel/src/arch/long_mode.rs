//! The control-register and descriptor values both entry paths (the boot
//! CPU's PVH stub and the APs' trampoline) use to reach long mode, shared so
//! the two cannot drift apart. Bit positions: Intel SDM Vol. 3A §2.5 (CR0,
//! CR4) and §2.2.1 (EFER).

/// CR4: PAE (bit 5, required for long mode), PGE (7, global pages),
/// OSFXSR (9) and OSXMMEXCPT (10): SSE on, which the precompiled `core` needs.
pub const CR4_FLAGS: u32 = (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10);
/// The EFER model-specific register.
pub const EFER_MSR: u32 = 0xc000_0080;
/// EFER: LME (bit 8, long mode) and NXE (11, no-execute pages).
pub const EFER_FLAGS: u32 = (1 << 8) | (1 << 11);
/// CR0: PG (31), WP (16, write-protect in ring 0) and MP (1); with PE (0).
pub const CR0_FLAGS: u32 = (1 << 31) | (1 << 16) | (1 << 1) | (1 << 0);
/// CR0.EM (bit 2): must be clear for SSE.
pub const CR0_EM: u32 = 1 << 2;
/// GDT entry 0x08: 64-bit ring-0 code segment.
pub const GDT_CODE64: u64 = 0x00af_9a00_0000_ffff;
/// GDT entry 0x10: ring-0 data segment.
pub const GDT_DATA: u64 = 0x00cf_9200_0000_ffff;
