//! Ending a run through QEMU's `isa-debug-exit` device (port 0xf4).
//!
//! QEMU exits with status `(code << 1) | 1`, so `Success` (0x10) is status 33
//! and `Failure` (0x11) status 35; a triple fault under `-no-reboot` gives 0.
//! The runner (xtask) decodes these.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the kernel is ending the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of this boot succeeded.
    Success = 0x10,
    /// A test failed, or the kernel panicked or took a fatal exception.
    Failure = 0x11,
}

/// Ends the QEMU process; halts forever if the exit device is absent.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: writing the exit device's port only ends the VM; without the
    // device the write is ignored and we halt below.
    unsafe { Port::new(DEBUG_EXIT_PORT).write(code as u32) };
    super::halt_forever()
}
