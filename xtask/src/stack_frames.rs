//! The kernel's stack frames must fit its smallest stacks.
//!
//! Interrupts run on 16 KiB IST stacks and the boot CPU starts on a 64 KiB
//! stack that sits right above the boot page tables, with no guard page in
//! between: one function with a huge frame (a large value built on the
//! stack before `Box::new` moves it) silently overwrites page tables. It
//! happened once, when an unrelated change let LLVM inline an 80 KiB
//! `IstStacks` temporary into `smp::start_aps`. This reads the built
//! kernel's disassembly and fails if any frame exceeds [`MAX_FRAME_BYTES`].

use std::path::Path;
use std::process::Command;

/// The largest frame allowed: the IST stacks' size.
pub const MAX_FRAME_BYTES: u64 = 16 * 1024;

/// The largest frame in `objdump -d` output: (bytes, function). A frame is
/// what a function subtracts from `%rsp`, summed (LLVM probes frames over a
/// page one `sub $0x1000,%rsp` at a time), plus for large frames LLVM's
/// probe loop bound in `%r11` (`sub $n,%r11`; its loop's own page step is
/// then counted once more: the sum errs on the large side).
pub fn largest_frame(disassembly: &str) -> Option<(u64, String)> {
    let mut frames: Vec<(u64, String)> = Vec::new();
    for line in disassembly.lines() {
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            frames.push((0, name.1.to_string()));
            continue;
        }
        let Some((_, operands)) = line.split_once("sub ") else { continue };
        let operands = operands.trim();
        let Some(imm) = operands
            .strip_suffix(",%rsp")
            .or_else(|| operands.strip_suffix(",%r11"))
            .and_then(|imm| imm.strip_prefix("$0x"))
        else {
            continue;
        };
        // Negative immediates (sign-extended) are additions, not frames.
        let Ok(bytes) = u64::from_str_radix(imm, 16) else { continue };
        if let Some((frame, _)) = frames.last_mut()
            && bytes < 1 << 40
        {
            *frame += bytes;
        }
    }
    frames.into_iter().filter(|(bytes, _)| *bytes > 0).max_by_key(|(bytes, _)| *bytes)
}

/// `Ok` with the largest frame, or why the kernel fails the budget.
pub fn check(kernel: &Path) -> Result<String, String> {
    let output = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(kernel)
        .output()
        .map_err(|e| format!("objdump (binutils) not runnable: {e}"))?;
    if !output.status.success() {
        return Err(format!("objdump failed on {}", kernel.display()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (bytes, function) = largest_frame(&text).ok_or("no stack frame found")?;
    if bytes > MAX_FRAME_BYTES {
        return Err(format!("{function} has a {bytes}-byte frame (at most {MAX_FRAME_BYTES})"));
    }
    Ok(format!(" (largest {bytes} bytes, {function})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_frame_counts_probed_frames_and_skips_additions() {
        let text = "\
ffffffff80100000 <small>:
ffffffff80100004:\tsub    $0x158,%rsp
ffffffff80100010 <vireo::smp::start_aps>:
ffffffff80100014:\tmov    %rsp,%r11
ffffffff80100017:\tsub    $0x14000,%r11
ffffffff8010001e:\tsub    $0x1000,%rsp
ffffffff80100030 <negative>:
ffffffff80100034:\tsub    $0xffffffffffffff80,%rsp
ffffffff80100038:\tsub    $0x20,%rax
";
        assert_eq!(largest_frame(text), Some((0x15000, "vireo::smp::start_aps".into())));
        let two_steps = "x <kernel_entry>:\n\tsub    $0x1000,%rsp\n\tsub    $0x168,%rsp\n";
        assert_eq!(largest_frame(two_steps), Some((0x1168, "kernel_entry".into())));
        assert_eq!(largest_frame("x <f>:\n\tsub    $0x10,%rsp\n"), Some((16, "f".into())));
        assert_eq!(largest_frame("nothing here"), None);
    }
}
